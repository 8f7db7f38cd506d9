#ifndef OUTRIDER_CPCRE2_SHIM_H
#define OUTRIDER_CPCRE2_SHIM_H
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

/* Macros Swift cannot import, as functions/constants. */
static inline size_t cpcre2_zero_terminated(void) { return PCRE2_ZERO_TERMINATED; }
static inline uint32_t cpcre2_dotall(void) { return PCRE2_DOTALL; }
static inline uint32_t cpcre2_multiline(void) { return PCRE2_MULTILINE; }
static inline uint32_t cpcre2_caseless(void) { return PCRE2_CASELESS; }
static inline uint32_t cpcre2_jit_complete(void) { return PCRE2_JIT_COMPLETE; }
static inline uint32_t cpcre2_no_utf_check(void) { return PCRE2_NO_UTF_CHECK; }
static inline size_t cpcre2_unset(void) { return PCRE2_UNSET; }

static inline pcre2_code *cpcre2_compile(const unsigned char *pattern, size_t length, uint32_t options,
                                         int *errorcode, size_t *erroroffset) {
    return pcre2_compile((PCRE2_SPTR)pattern, length, options, errorcode, (PCRE2_SIZE *)erroroffset, NULL);
}
static inline int cpcre2_error_message(int code, unsigned char *buffer, size_t size) {
    return pcre2_get_error_message(code, (PCRE2_UCHAR *)buffer, size);
}
static inline void cpcre2_code_free(pcre2_code *code) { pcre2_code_free(code); }
static inline int cpcre2_jit_compile(pcre2_code *code) { return pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); }

/* One scratch per thread: match data (ovector) and a match context with a JIT stack and limits. */
typedef struct cpcre2_scratch {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} cpcre2_scratch;

static inline cpcre2_scratch *cpcre2_scratch_create(uint32_t pairs, uint32_t match_limit) {
    cpcre2_scratch *s = (cpcre2_scratch *)calloc(1, sizeof(cpcre2_scratch));
    if (!s) return NULL;
    s->md = pcre2_match_data_create(pairs, NULL);
    s->mc = pcre2_match_context_create(NULL);
    s->js = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    if (!s->md || !s->mc) {
        if (s->md) pcre2_match_data_free(s->md);
        if (s->mc) pcre2_match_context_free(s->mc);
        if (s->js) pcre2_jit_stack_free(s->js);
        free(s);
        return NULL;
    }
    if (s->js) pcre2_jit_stack_assign(s->mc, NULL, s->js);
    pcre2_set_match_limit(s->mc, match_limit);
    pcre2_set_depth_limit(s->mc, match_limit);
    return s;
}
static inline void cpcre2_scratch_free(cpcre2_scratch *s) {
    if (!s) return;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mc);
    if (s->js) pcre2_jit_stack_free(s->js);
    free(s);
}
/* Returns pcre2_match's result; on success ovector pairs are readable with cpcre2_ovector. */
/* JIT-compiled code goes straight to pcre2_jit_match (the documented fast path: no option
   checks, same result); code the JIT refused falls back to the interpreter. */
static inline int cpcre2_match(const pcre2_code *code, const unsigned char *subject, size_t length, cpcre2_scratch *s) {
    PCRE2_SPTR subj = (PCRE2_SPTR)(subject ? subject : (const unsigned char *)"");
    int rc = pcre2_jit_match(code, subj, length, 0, 0, s->md, s->mc);
    if (rc == PCRE2_ERROR_JIT_BADOPTION) rc = pcre2_match(code, subj, length, 0, PCRE2_NO_UTF_CHECK, s->md, s->mc);
    return rc;
}
static inline size_t *cpcre2_ovector(cpcre2_scratch *s) { return (size_t *)pcre2_get_ovector_pointer(s->md); }
static inline uint32_t cpcre2_ovector_count(cpcre2_scratch *s) { return pcre2_get_ovector_count(s->md); }
#endif
