/* pb.h: a bounds-checked reader of the protobuf wire format, enough for ONNX. Every read checks
 * the remaining length, so truncated or random bytes end in an error, never an overrun. */
#ifndef ZCI_PB_H
#define ZCI_PB_H

#include <stddef.h>
#include <stdint.h>

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

typedef struct pb_reader {
    const uint8_t *p, *end;
} pb_reader;

static inline pb_reader pb_make(const void *data, size_t size)
{
    pb_reader r = {(const uint8_t *)data, (const uint8_t *)data + size};
    return r;
}

/* 0 on success, -1 on truncation or a varint longer than 10 bytes. */
static inline int pb_varint(pb_reader *r, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

static inline int pb_fixed(pb_reader *r, void *v, size_t n)
{
    if ((size_t)(r->end - r->p) < n) return -1;
    for (size_t i = 0; i < n; i++) ((uint8_t *)v)[i] = r->p[i]; /* wire format is little-endian */
    r->p += n;
    return 0;
}

/* A length-delimited field: its bytes as a sub-reader. */
static inline int pb_len(pb_reader *r, pb_reader *sub)
{
    uint64_t n;
    if (pb_varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
    sub->p = r->p;
    sub->end = r->p + n;
    r->p += n;
    return 0;
}

/* Next field's number and wire type: 1 if read, 0 at the end, -1 on corrupt input. */
static inline int pb_field(pb_reader *r, uint32_t *field, uint32_t *wire)
{
    if (r->p >= r->end) return 0;
    uint64_t key;
    if (pb_varint(r, &key)) return -1;
    *field = (uint32_t)(key >> 3);
    *wire = (uint32_t)(key & 7);
    if (*field == 0) return -1;
    return 1;
}

static inline int pb_skip(pb_reader *r, uint32_t wire)
{
    uint64_t v;
    pb_reader sub;
    uint8_t buf[8];
    switch (wire) {
    case PB_VARINT: return pb_varint(r, &v);
    case PB_FIXED64: return pb_fixed(r, buf, 8);
    case PB_LEN: return pb_len(r, &sub);
    case PB_FIXED32: return pb_fixed(r, buf, 4);
    default: return -1; /* groups (3, 4) are not used by ONNX */
    }
}

#endif
