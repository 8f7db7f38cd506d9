#ifndef OUTRIDER_CNGHTTP2_SHIM_H
#define OUTRIDER_CNGHTTP2_SHIM_H
/* libnghttp2 behind one door: only the HTTP2 target imports this module.
 * Macros the Swift importer cannot see (or imports with the wrong type) are wrapped here as
 * prefixed functions, as swift-nio-http2's CNIONghttp2 shims do. */
#include <stdint.h>
#include <stddef.h>
#include <nghttp2/nghttp2.h>

/* The version the headers describe (the library actually loaded: nghttp2_version(0)). */
static inline int CNghttp2Shim_NGHTTP2_VERSION_NUM(void) { return NGHTTP2_VERSION_NUM; }

/* Client connection preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" and its length (24). */
static inline const char *CNghttp2Shim_NGHTTP2_CLIENT_MAGIC(void) { return NGHTTP2_CLIENT_MAGIC; }
static inline size_t CNghttp2Shim_NGHTTP2_CLIENT_MAGIC_LEN(void) { return NGHTTP2_CLIENT_MAGIC_LEN; }

static inline uint32_t CNghttp2Shim_NGHTTP2_DEFAULT_WEIGHT(void) { return NGHTTP2_DEFAULT_WEIGHT; }
static inline int32_t CNghttp2Shim_NGHTTP2_MAX_WINDOW_SIZE(void) { return NGHTTP2_MAX_WINDOW_SIZE; }
static inline uint32_t CNghttp2Shim_NGHTTP2_INITIAL_WINDOW_SIZE(void) { return NGHTTP2_INITIAL_WINDOW_SIZE; }
static inline uint32_t CNghttp2Shim_NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE(void) { return NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE; }

/* The frame union: Swift sees it, but reading the common header through these keeps the
 * Swift side free of union punning. */
static inline uint8_t CNghttp2Shim_frame_type(const nghttp2_frame *f) { return f->hd.type; }
static inline uint8_t CNghttp2Shim_frame_flags(const nghttp2_frame *f) { return f->hd.flags; }
static inline int32_t CNghttp2Shim_frame_stream_id(const nghttp2_frame *f) { return f->hd.stream_id; }
static inline size_t CNghttp2Shim_frame_length(const nghttp2_frame *f) { return f->hd.length; }
static inline int CNghttp2Shim_headers_category(const nghttp2_frame *f) { return (int)f->headers.cat; }
static inline uint32_t CNghttp2Shim_rst_stream_error_code(const nghttp2_frame *f) { return f->rst_stream.error_code; }
static inline int32_t CNghttp2Shim_goaway_last_stream_id(const nghttp2_frame *f) { return f->goaway.last_stream_id; }
static inline uint32_t CNghttp2Shim_goaway_error_code(const nghttp2_frame *f) { return f->goaway.error_code; }
static inline size_t CNghttp2Shim_data_padlen(const nghttp2_frame *f) { return f->data.padlen; }

/* A data provider whose source is the stream id (the Swift side finds its queue by id). */
static inline nghttp2_data_provider CNghttp2Shim_data_provider(nghttp2_data_source_read_callback cb) {
    nghttp2_data_provider p;
    p.source.ptr = NULL;
    p.read_callback = cb;
    return p;
}
#endif
