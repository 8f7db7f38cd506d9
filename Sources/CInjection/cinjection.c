#include "cinjection.h"
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

typedef int (*sqli_fn)(const char *, size_t, char *);
typedef int (*xss_fn)(const char *, size_t);
static sqli_fn p_sqli;
static xss_fn p_xss;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void resolve(void) {
    static const char *names[] = {"libmodsecurity.so.3", "libmodsecurity.so", NULL};
    for (int i = 0; names[i]; i++) {
        void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!h) continue;
        sqli_fn s = (sqli_fn)dlsym(h, "libinjection_sqli");
        xss_fn x = (xss_fn)dlsym(h, "libinjection_xss");
        if (s && x) { p_sqli = s; p_xss = x; return; }
        dlclose(h);
    }
}

int cinjection_available(void) {
    pthread_once(&once, resolve);
    return p_sqli != NULL && p_xss != NULL;
}

int cinjection_sqli(const char *s, size_t len, char fingerprint[8]) {
    if (!cinjection_available()) return -1;
    char fp[8];
    memset(fp, 0, sizeof fp);
    int r = p_sqli(s ? s : "", len, fp);
    fp[7] = 0;
    memcpy(fingerprint, fp, 8);
    return r ? 1 : 0;
}

int cinjection_xss(const char *s, size_t len) {
    if (!cinjection_available()) return -1;
    return p_xss(s ? s : "", len) ? 1 : 0;
}
