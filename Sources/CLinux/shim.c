// Shims that need _GNU_SOURCE (cpu_set_t macros, pthread_setname_np). Kept out of the
// public header so Swift's Glibc module and CLinux agree on every struct layout.
#define _GNU_SOURCE
#include <sched.h>
#include <pthread.h>
#include <malloc.h>
#include "CLinux.h"

int clinux_available_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

void clinux_set_thread_name(const char *name) {
    char buf[16];
    int i = 0;
    for (; name[i] && i < 15; i++) buf[i] = name[i];
    buf[i] = 0;
    pthread_setname_np(pthread_self(), buf);
}

#include <sys/socket.h>
// accept4 is a GNU extension, hidden from Swift's Glibc module.
int clinux_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    return accept4(fd, addr, len, flags);
}

int clinux_malloc_trim(void) { return malloc_trim(0); }
