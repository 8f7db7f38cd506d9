#ifndef OUTRIDER_CINJECTION_H
#define OUTRIDER_CINJECTION_H
#include <stddef.h>

/* libinjection (SQLi/XSS detection) as exported by Debian's libmodsecurity3, resolved with dlopen
   on first use so the binary runs without it when no rule uses @detectSQLi/@detectXSS.
   Returns 1 when the library was found. */
int cinjection_available(void);
/* 1 = SQLi detected (fingerprint gets up to 8 bytes + NUL), 0 = not, -1 = library missing. */
int cinjection_sqli(const char *s, size_t len, char fingerprint[8]);
/* 1 = XSS detected, 0 = not, -1 = library missing. */
int cinjection_xss(const char *s, size_t len);
#endif
