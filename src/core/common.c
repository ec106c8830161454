/* common.c: last-error messages, checked allocation, shapes, fp16 conversion. */
#define _POSIX_C_SOURCE 200809L
#include "core/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* One message per thread: the API promises a per-thread last error. */
static _Thread_local char last_error[4096];

const char *zci_last_error(void) { return last_error; }

zci_status zci_error(zci_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return code;
}

zci_status zci_error_prefix(zci_status code, const char *fmt, ...)
{
    char prefix[1024], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    snprintf(last_error, sizeof last_error, "%.1000s: %.3000s", prefix, old); /* both bounded: no truncation warning */
    return code;
}

const char *zci_status_name(zci_status status)
{
    switch (status) {
#define ZCI_NAME_CASE_(name, value, text)                                                          \
    case ZCI_##name: return "ZCI_" #name;
        ZCI_STATUS_MAP(ZCI_NAME_CASE_)
#undef ZCI_NAME_CASE_
    }
    return "ZCI_UNKNOWN";
}

const char *zci_status_string(zci_status status)
{
    switch (status) {
#define ZCI_TEXT_CASE_(name, value, text)                                                          \
    case ZCI_##name: return text;
        ZCI_STATUS_MAP(ZCI_TEXT_CASE_)
#undef ZCI_TEXT_CASE_
    }
    return "unknown status";
}

const char *zci_version(void) { return ZCI_VERSION_STRING; }
int zci_version_number(void) { return ZCI_VERSION_NUMBER; }

size_t zci_dtype_size(zci_dtype dtype)
{
    switch (dtype) {
    case ZCI_FLOAT32: case ZCI_INT32: case ZCI_UINT32: return 4;
    case ZCI_UINT8: case ZCI_INT8: case ZCI_BOOL: return 1;
    case ZCI_UINT16: case ZCI_INT16: case ZCI_FLOAT16: return 2;
    case ZCI_INT64: case ZCI_FLOAT64: case ZCI_UINT64: return 8;
    default: return 0;
    }
}

const char *zci_dtype_name(zci_dtype dtype)
{
    switch (dtype) {
    case ZCI_FLOAT32: return "float";
    case ZCI_UINT8: return "uint8";
    case ZCI_INT8: return "int8";
    case ZCI_UINT16: return "uint16";
    case ZCI_INT16: return "int16";
    case ZCI_INT32: return "int32";
    case ZCI_INT64: return "int64";
    case ZCI_STRING: return "string";
    case ZCI_BOOL: return "bool";
    case ZCI_FLOAT16: return "float16";
    case ZCI_FLOAT64: return "double";
    case ZCI_UINT32: return "uint32";
    case ZCI_UINT64: return "uint64";
    default: return "undefined";
    }
}

void *zci_malloc(size_t size, const char *what)
{
    void *p = malloc(size ? size : 1);
    if (!p) zci_error(ZCI_OUT_OF_MEMORY, "out of host memory allocating %zu bytes for %s", size, what);
    return p;
}

void *zci_calloc(size_t n, size_t size, const char *what)
{
    if (size && n > SIZE_MAX / size) {
        zci_error(ZCI_OUT_OF_MEMORY, "allocation size overflow for %s (%zu x %zu)", what, n, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) zci_error(ZCI_OUT_OF_MEMORY, "out of host memory allocating %zu bytes for %s", n * size, what);
    return p;
}

void *zci_realloc(void *p, size_t size, const char *what)
{
    void *q = realloc(p, size ? size : 1);
    if (!q) zci_error(ZCI_OUT_OF_MEMORY, "out of host memory growing %s to %zu bytes", what, size);
    return q;
}

char *zci_strdup(const char *s) { return zci_strndup(s ? s : "", s ? strlen(s) : 0); }

char *zci_strndup(const char *s, size_t n)
{
    char *d = zci_malloc(n + 1, "string");
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = 0;
    return d;
}

zci_status zci_grow(void **items, int n, int *cap, size_t elem)
{
    if (n < *cap) return ZCI_OK;
    int ncap = *cap ? *cap * 2 : 16;
    void *p = zci_realloc(*items, (size_t)ncap * elem, "array");
    if (!p) return ZCI_OUT_OF_MEMORY;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(ncap - *cap) * elem);
    *items = p;
    *cap = ncap;
    return ZCI_OK;
}

int64_t zci_shape_numel(const int64_t *dims, int ndim)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] && n > INT64_MAX / dims[i]) return -1;
        n *= dims[i];
    }
    return n;
}

char *zci_shape_str(const int64_t *dims, int ndim, char *buf, size_t size)
{
    if (ndim == 0) {
        snprintf(buf, size, "scalar");
        return buf;
    }
    size_t pos = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && pos < size; i++)
        pos += (size_t)snprintf(buf + pos, size - pos, i ? "x%lld" : "%lld", (long long)dims[i]);
    return buf;
}

uint16_t zci_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t mant = x & 0x7fffffu;
    int32_t exp = (int32_t)((x >> 23) & 0xff);
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0)); /* inf / nan */
    exp = exp - 127 + 15;
    if (exp >= 0x1f) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (exp <= 0) {
        /* subnormal half (or zero): shift the implicit-1 mantissa into place, round to even */
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* may carry into exponent: correct */
    return (uint16_t)half;
}

float zci_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (!mant) {
            x = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                exp--;
            }
            x = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

void zci_log(int verbose, const char *fmt, ...)
{
    const char *env = getenv("ZCI_VERBOSE");
    if (!verbose && !(env && *env && strcmp(env, "0"))) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("zcinfer: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double zci_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
