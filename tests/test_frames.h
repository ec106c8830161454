/* test_frames.h: the geometry of a test frame's planes, shared by the CPU and GPU vision tests
 * (test_vision.c, gpu/test_vision_gpu.c). Written out here rather than taken from the library's
 * zv_row_bytes and friends, so that a mistake there cannot shape the frames that test it. */
#ifndef ZCI_TEST_FRAMES_H
#define ZCI_TEST_FRAMES_H

#include <stddef.h>

#include "zcinfer_vision.h"

/* Bytes of a packed row of plane k of a w-pixel-wide frame. */
static inline size_t row_len(int fmt, int w, int k)
{
    size_t half = (size_t)(w + 1) / 2;
    switch (fmt) {
    case ZCI_PIXEL_NV12: return k ? 2 * half : (size_t)w;
    case ZCI_PIXEL_I420: return k ? half : (size_t)w;
    case ZCI_PIXEL_UYVY:
    case ZCI_PIXEL_YUYV: return 4 * half;
    case ZCI_PIXEL_RGB:
    case ZCI_PIXEL_BGR: return 3 * (size_t)w;
    default: return 4 * (size_t)w;
    }
}

static inline int n_planes(int fmt) { return fmt == ZCI_PIXEL_NV12 ? 2 : fmt == ZCI_PIXEL_I420 ? 3 : 1; }
/* Rows of plane k of an h-row frame (the chroma planes of NV12 and I420 have half). */
static inline int n_rows(int fmt, int h, int k) { return k && fmt <= ZCI_PIXEL_I420 ? (h + 1) / 2 : h; }

#endif
