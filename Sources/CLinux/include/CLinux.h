// Linux APIs Swift's Glibc module does not export: epoll, eventfd, timerfd, inotify,
// and SO_ORIGINAL_DST for transparent redirection. Plus small shims for macros and
// packed structs the clang importer handles poorly.
#ifndef OUTRIDER_CLINUX_H
#define OUTRIDER_CLINUX_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/netfilter_ipv4.h>

#include <stdint.h>

// epoll_event is __attribute__((packed)) on x86_64; reading its union through these
// helpers keeps the layout question out of Swift.
static inline uint64_t clinux_epoll_event_data(const struct epoll_event *ev) { return ev->data.u64; }
static inline uint32_t clinux_epoll_event_events(const struct epoll_event *ev) { return ev->events; }
static inline struct epoll_event *clinux_epoll_event_at(struct epoll_event *base, int i) { return base + i; }
static inline int clinux_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}
static inline size_t clinux_epoll_event_size(void) { return sizeof(struct epoll_event); }

// Number of CPUs this process may run on (sched_getaffinity), the default worker count.
// Defined in shim.c, which needs _GNU_SOURCE: defining it in this header would change
// struct layouts against Swift's Glibc module.
int clinux_available_cpus(void);

// Names the calling thread (visible in top -H, /proc/PID/task/*/comm). Same reason as above.
void clinux_set_thread_name(const char *name);

// accept4 (GNU extension), defined in shim.c.
int clinux_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);

/* glibc's malloc_trim: returns free heap pages to the kernel (1 if any were released). */
int clinux_malloc_trim(void);

#endif
