/* common.h: error reporting, allocation and small helpers shared by every layer. */
#ifndef ZCI_COMMON_H
#define ZCI_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "zcinfer.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ZCI_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ZCI_PRINTF(a, b)
#endif

/* Sets the calling thread's last-error message and returns `code`, so a failure reads
 * `return zci_error(ZCI_INVALID_MODEL, "tensor '%s': ...", name);`. */
zci_status zci_error(zci_status code, const char *fmt, ...) ZCI_PRINTF(2, 3);

/* Puts "<prefix>: " in front of the current last-error message and returns `code`; used by
 * callers that add context (file, node) to an error raised deeper down. */
zci_status zci_error_prefix(zci_status code, const char *fmt, ...) ZCI_PRINTF(2, 3);

/* Checked allocation: NULL with a ZCI_OUT_OF_MEMORY last-error on failure. `what` names the
 * allocation in the message. zci_calloc zero-fills and checks n * size for overflow. */
void *zci_malloc(size_t size, const char *what);
void *zci_calloc(size_t n, size_t size, const char *what);
void *zci_realloc(void *p, size_t size, const char *what);
char *zci_strdup(const char *s);
char *zci_strndup(const char *s, size_t n);

/* Grows a dynamic array *items (count *n, capacity *cap) so that one more element of
 * `elem` bytes fits; new space is zeroed. ZCI_OUT_OF_MEMORY on failure. */
zci_status zci_grow(void **items, int n, int *cap, size_t elem);

#define ZCI_TRY(expr)                                                                              \
    do {                                                                                           \
        zci_status zci_try_st_ = (expr);                                                           \
        if (zci_try_st_ != ZCI_OK) return zci_try_st_;                                             \
    } while (0)

/* Element count of a shape; -1 if a dimension is negative or the product overflows int64. */
int64_t zci_shape_numel(const int64_t *dims, int ndim);

/* Formats a shape as "1x3x640x640" ("scalar" for ndim 0) into buf; returns buf. */
char *zci_shape_str(const int64_t *dims, int ndim, char *buf, size_t size);

/* IEEE half <-> float, round to nearest even. */
uint16_t zci_f32_to_f16(float f);
float zci_f16_to_f32(uint16_t h);

/* Aligns x up to a multiple of a (a power of two). */
static inline size_t zci_align(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

/* Prints "zcinfer: <message>" on stderr when `verbose` is non-zero or the environment variable
 * ZCI_VERBOSE is set to a non-zero value; otherwise nothing. */
void zci_log(int verbose, const char *fmt, ...) ZCI_PRINTF(2, 3);

/* Monotonic clock in seconds. */
double zci_now(void);

#ifdef __cplusplus
}
#endif

#endif
