// libhiredis (Debian's libhiredis-dev, 0.14) for the rate-limit filter's global mode: the
// async API, driven by Outrider's own event loop through the adapter hooks in
// `redisAsyncContext.ev` (addRead/delRead/addWrite/delWrite/cleanup). Only
// Sources/Filters/RateLimit imports this module.
#ifndef OUTRIDER_CHIREDIS_H
#define OUTRIDER_CHIREDIS_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <stddef.h>

// The hook slots are plain function pointers inside a nested anonymous struct; setting them
// here keeps that layout out of Swift.
typedef void (*chiredis_hook_fn)(void *privdata);

static inline void chiredis_attach(redisAsyncContext *ac, void *data,
                                   chiredis_hook_fn add_read, chiredis_hook_fn del_read,
                                   chiredis_hook_fn add_write, chiredis_hook_fn del_write,
                                   chiredis_hook_fn cleanup) {
    ac->data = data;
    ac->ev.data = data;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
}

static inline void *chiredis_data(const redisAsyncContext *ac) { return ac->data; }
static inline int chiredis_fd(const redisAsyncContext *ac) { return ac->c.fd; }
static inline int chiredis_err(const redisAsyncContext *ac) { return ac->err; }
static inline const char *chiredis_errstr(const redisAsyncContext *ac) { return ac->errstr ? ac->errstr : ""; }

// Replies arrive as `void *`; these read the fields the filter needs.
static inline int chiredis_reply_type(const void *reply) { return ((const redisReply *)reply)->type; }
static inline long long chiredis_reply_integer(const void *reply) { return ((const redisReply *)reply)->integer; }
static inline const char *chiredis_reply_str(const void *reply) {
    const redisReply *r = (const redisReply *)reply;
    return r->str ? r->str : "";
}

// One command of three arguments (INCRBY key n, EXPIRE key ttl): hiredis copies the
// arguments into its output buffer, so the pointers need only live for the call.
static inline int chiredis_command3(redisAsyncContext *ac, redisCallbackFn *fn, void *privdata,
                                    const char *a0, size_t l0, const char *a1, size_t l1,
                                    const char *a2, size_t l2) {
    const char *argv[3] = { a0, a1, a2 };
    size_t lens[3] = { l0, l1, l2 };
    return redisAsyncCommandArgv(ac, fn, privdata, 3, argv, lens);
}

static inline int chiredis_reply_integer_type(void) { return REDIS_REPLY_INTEGER; }
static inline int chiredis_reply_error_type(void) { return REDIS_REPLY_ERROR; }
static inline int chiredis_ok(void) { return REDIS_OK; }

#endif
