/* vision.h: what the vision files share: the postprocessor object, the per-frame
 * preprocessing job, and the pixel, decoding and IoU math that the CPU (C) and the GPU (CUDA)
 * versions both compile from this one source, so that they agree.
 *
 * Exactness: the postprocessing math below must give bit-identical results on both sides
 * (identical NMS sets). On the GPU the ZV_ macros are the round-to-nearest intrinsics, which
 * nvcc never contracts into FMAs; on the CPU they are plain operators, one per statement, and
 * the C files are built in ISO C mode (-std=c11), where GCC does not contract either. */
#ifndef ZCI_VISION_H
#define ZCI_VISION_H

#include "core/common.h"
#include "zcinfer_vision.h"

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define ZV_HD static inline __host__ __device__
#else
#define ZV_HD static inline
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__CUDA_ARCH__)
#define ZV_MUL(a, b) __fmul_rn((a), (b))
#define ZV_ADD(a, b) __fadd_rn((a), (b))
#define ZV_SUB(a, b) __fsub_rn((a), (b))
#define ZV_DIV(a, b) __fdiv_rn((a), (b))
#else
#define ZV_MUL(a, b) ((a) * (b))
#define ZV_ADD(a, b) ((a) + (b))
#define ZV_SUB(a, b) ((a) - (b))
#define ZV_DIV(a, b) ((a) / (b))
#endif

/* The largest output a postprocessor takes: the GPU's NMS bit matrix grows as N^2 / 8 bytes
 * (2 GB at this limit). */
#define ZV_MAX_CANDIDATES (1 << 17)
/* Frames per preprocessing launch: their jobs travel as one kernel parameter (< 4 KB). */
#define ZV_MAX_FRAMES_PER_LAUNCH 24

/* ---------------------------------------------------------------- preprocessing */

/* Everything the kernel needs of one frame, computed on the host by zv_prepare_jobs. */
typedef struct zv_frame_job {
    const uint8_t *plane[3];
    long long pitch[3];
    int format;
    int crop_x, crop_y, crop_w, crop_h;
    int content_x, content_y, content_w, content_h; /* where the crop lands in the output */
    float step_x, step_y;                           /* crop pixels per output pixel */
    /* YUV -> RGB: y' = (Y - y_off) * y_mul, u' = (U - 128) * c_mul, v' likewise;
     * R = y' + r_v v', G = y' - g_u u' - g_v v', B = y' + b_u u' */
    float y_off, y_mul, c_mul, r_v, g_u, g_v, b_u;
} zv_frame_job;

/* What all frames of one call share. Output channel c = rgb[src[c]] * mul[c] + add[c]. */
typedef struct zv_pre_common {
    int out_w, out_h;
    int half; /* 1 = FP16 output */
    int src[3];
    float mul[3], add[3];
    float pad[3]; /* the normalised padding value per output channel */
} zv_pre_common;

/* Checks frames and params and fills jobs[n] and *common; transforms may be NULL.
 * `where` names the caller in messages. Needs dst_bytes >= the output's size. */
zci_status zv_prepare_jobs(const zci_frame *frames, int n, const zci_preprocess_params *p, size_t dst_bytes,
                           zv_frame_job *jobs, zv_pre_common *common, zci_letterbox *transforms,
                           const char *where);

/* Frame geometry: planes of a format, bytes of a packed row of plane k (the smallest pitch),
 * rows of plane k. */
int zv_plane_count(zci_pixel_format f);
size_t zv_row_bytes(zci_pixel_format f, int width, int k);
int zv_plane_rows(zci_pixel_format f, int height, int k);
/* Checks a frame's format, size, colour settings, planes and pitches (frame i of a call). */
zci_status zv_check_frame(const zci_frame *f, int i, const char *where);
/* CUDA builds: ZCI_INVALID_ARGUMENT unless p is memory the device can read (device, managed
 * or registered host memory); `what` names it in the message. */
zci_status zv_cuda_check_device_ptr(const void *p, const char *what, const char *where);

/* The RGB value (0..255) of frame pixel (x, y), x and y absolute and inside the frame. */
ZV_HD void zv_fetch_rgb(const zv_frame_job *j, int x, int y, float *r, float *g, float *b)
{
    const uint8_t *p0 = j->plane[0] + (size_t)y * (size_t)j->pitch[0];
    float Y, U, V;
    switch (j->format) {
    case ZCI_PIXEL_NV12: {
        const uint8_t *uv = j->plane[1] + (size_t)(y >> 1) * (size_t)j->pitch[1] + (size_t)(x & ~1);
        Y = p0[x];
        U = uv[0];
        V = uv[1];
        break;
    }
    case ZCI_PIXEL_I420: {
        size_t off1 = (size_t)(y >> 1) * (size_t)j->pitch[1] + (size_t)(x >> 1);
        size_t off2 = (size_t)(y >> 1) * (size_t)j->pitch[2] + (size_t)(x >> 1);
        Y = p0[x];
        U = j->plane[1][off1];
        V = j->plane[2][off2];
        break;
    }
    case ZCI_PIXEL_UYVY: {
        const uint8_t *q = p0 + (size_t)(x >> 1) * 4;
        U = q[0];
        Y = q[1 + 2 * (x & 1)];
        V = q[2];
        break;
    }
    case ZCI_PIXEL_YUYV: {
        const uint8_t *q = p0 + (size_t)(x >> 1) * 4;
        Y = q[2 * (x & 1)];
        U = q[1];
        V = q[3];
        break;
    }
    case ZCI_PIXEL_RGB:
    case ZCI_PIXEL_BGR:
    case ZCI_PIXEL_RGBA:
    case ZCI_PIXEL_BGRA:
    default: {
        int bpp = j->format >= ZCI_PIXEL_RGBA ? 4 : 3;
        const uint8_t *q = p0 + (size_t)x * (size_t)bpp;
        int swap = j->format == ZCI_PIXEL_BGR || j->format == ZCI_PIXEL_BGRA;
        *r = q[swap ? 2 : 0];
        *g = q[1];
        *b = q[swap ? 0 : 2];
        return;
    }
    }
    float yy = (Y - j->y_off) * j->y_mul, u = (U - 128.0f) * j->c_mul, v = (V - 128.0f) * j->c_mul;
    float rr = yy + j->r_v * v, gg = yy - j->g_u * u - j->g_v * v, bb = yy + j->b_u * u;
    *r = rr < 0.0f ? 0.0f : rr > 255.0f ? 255.0f : rr;
    *g = gg < 0.0f ? 0.0f : gg > 255.0f ? 255.0f : gg;
    *b = bb < 0.0f ? 0.0f : bb > 255.0f ? 255.0f : bb;
}

/* Source coordinate of output pixel `o` along one axis: crop-relative integer x0, its neighbour
 * x1 (clamped) and the weight of x1 (half-pixel centres, clamped at the borders). */
ZV_HD void zv_axis(int o, int content_start, float step, int crop_len, int *i0, int *i1, float *w1)
{
    float s = ((float)(o - content_start) + 0.5f) * step - 0.5f;
    float hi = (float)(crop_len - 1);
    s = s < 0.0f ? 0.0f : s > hi ? hi : s;
    int a = (int)s;
    *i0 = a;
    *i1 = a < crop_len - 1 ? a + 1 : a;
    *w1 = s - (float)a;
}

/* Bilinear RGB at output pixel (ox, oy), which must lie inside the job's content rectangle. */
ZV_HD void zv_sample_rgb(const zv_frame_job *j, int ox, int oy, float rgb[3])
{
    int x0, x1, y0, y1;
    float fx, fy;
    zv_axis(ox, j->content_x, j->step_x, j->crop_w, &x0, &x1, &fx);
    zv_axis(oy, j->content_y, j->step_y, j->crop_h, &y0, &y1, &fy);
    x0 += j->crop_x;
    x1 += j->crop_x;
    y0 += j->crop_y;
    y1 += j->crop_y;
    float a[3], b[3], c[3], d[3];
    zv_fetch_rgb(j, x0, y0, &a[0], &a[1], &a[2]);
    zv_fetch_rgb(j, x1, y0, &b[0], &b[1], &b[2]);
    zv_fetch_rgb(j, x0, y1, &c[0], &c[1], &c[2]);
    zv_fetch_rgb(j, x1, y1, &d[0], &d[1], &d[2]);
    for (int k = 0; k < 3; k++) {
        float top = a[k] + (b[k] - a[k]) * fx;
        float bot = c[k] + (d[k] - c[k]) * fx;
        rgb[k] = top + (bot - top) * fy;
    }
}

/* ---------------------------------------------------------------- postprocessing */

/* A YOLO output as the decoder reads it. */
typedef struct zv_yolo {
    int layout;   /* ZCI_YOLO_V5 or ZCI_YOLO_V8 */
    int n;        /* candidates (rows of V5, columns of V8) */
    int nc;       /* classes */
    int nattr;    /* 5 + nc or 4 + nc */
    int half;     /* float16 elements */
    int batch;    /* images in the tensor */
    size_t image_elems; /* elements per image */
} zv_yolo;

/* Reads the layout from a tensor's shape and type (layout override from params). */
zci_status zv_parse_yolo(const zci_tensor_info *info, zci_yolo_layout layout, zv_yolo *y, const char *where);
/* Checks thresholds and top_k against pp; *top_k gets the effective limit. */
zci_status zv_check_post(const zci_postprocessor *pp, const zci_postprocess_params *p, const zv_yolo *y,
                         int batch_index, int *top_k, const char *where);

ZV_HD float zv_load(const void *data, int half, size_t i)
{
#if defined(__CUDA_ARCH__)
    if (half) return __half2float(((const __half *)data)[i]);
    return ((const float *)data)[i];
#else
    if (half) return zci_f16_to_f32(((const uint16_t *)data)[i]);
    return ((const float *)data)[i];
#endif
}

/* The corners of the box (cx, cy, w, h) whose first element is at `row`, the next ones `step`
 * elements apart. The GPU's decoders call it too, so that both sides round alike. */
ZV_HD void zv_decode_box(const void *data, int half, size_t row, size_t step, float box[4])
{
    float cx = zv_load(data, half, row), cy = zv_load(data, half, row + step);
    float hw = ZV_MUL(zv_load(data, half, row + 2 * step), 0.5f);
    float hh = ZV_MUL(zv_load(data, half, row + 3 * step), 0.5f);
    box[0] = ZV_SUB(cx, hw);
    box[1] = ZV_SUB(cy, hh);
    box[2] = ZV_ADD(cx, hw);
    box[3] = ZV_ADD(cy, hh);
}

/* Decodes candidate i of one image's output `data`. Returns 1 (and the box in model input
 * coordinates, the score and the class) when the candidate is above the threshold:
 * YOLOv5: objectness > thr and objectness * best class score > thr (YOLOv5's own rule);
 * YOLOv8: best class score > thr. The best class is the first of the highest scores. */
ZV_HD int zv_decode(const void *data, const zv_yolo *y, int i, float thr, float box[4], float *score, int *cls)
{
    size_t row = y->layout == ZCI_YOLO_V5 ? (size_t)i * (size_t)y->nattr : (size_t)i;
    size_t step = y->layout == ZCI_YOLO_V5 ? 1 : (size_t)y->n;
    int first = y->layout == ZCI_YOLO_V5 ? 5 : 4;
    float obj = 1.0f;
    if (y->layout == ZCI_YOLO_V5) {
        obj = zv_load(data, y->half, row + 4 * step);
        if (!(obj > thr)) return 0;
    }
    float best = zv_load(data, y->half, row + (size_t)first * step);
    int bc = 0;
    for (int c = 1; c < y->nc; c++) {
        float v = zv_load(data, y->half, row + (size_t)(first + c) * step);
        if (v > best) {
            best = v;
            bc = c;
        }
    }
    float s = y->layout == ZCI_YOLO_V5 ? ZV_MUL(obj, best) : best;
    if (!(s > thr)) return 0;
    zv_decode_box(data, y->half, row, step, box);
    *score = s;
    *cls = bc;
    return 1;
}

/* Sort key: ascending key = descending score, then ascending candidate index. The score's
 * bits are mapped to an unsigned integer of the same order, then inverted. */
ZV_HD uint64_t zv_sort_key(float score, int index, int index_bits)
{
    uint32_t u;
    memcpy(&u, &score, sizeof u);
    uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)(~ordered) << index_bits) | (uint64_t)(uint32_t)index;
}

/* Bits needed to hold candidate indices 0 .. n-1 (at least 1). */
ZV_HD int zv_index_bits(int n)
{
    int b = 1;
    while (b < 31 && (1 << b) < n) b++;
    return b;
}

/* 1 when box b (a later candidate) is suppressed by box a (a kept one): IoU > thr, thr >= 0.
 * A zero-area union gives NaN, which suppresses nothing. Boxes that do not overlap (most pairs)
 * leave early: their IoU would be 0 or NaN, never above thr. */
ZV_HD int zv_suppresses(float ax1, float ay1, float ax2, float ay2, float bx1, float by1, float bx2, float by2,
                        float thr)
{
    float l = ax1 > bx1 ? ax1 : bx1, r = ax2 < bx2 ? ax2 : bx2;
    float t = ay1 > by1 ? ay1 : by1, b = ay2 < by2 ? ay2 : by2;
    float iw = ZV_SUB(r, l), ih = ZV_SUB(b, t);
    if (!(iw > 0.0f) || !(ih > 0.0f)) return 0;
    float inter = ZV_MUL(iw, ih);
    float area_a = ZV_MUL(ZV_SUB(ax2, ax1), ZV_SUB(ay2, ay1));
    float area_b = ZV_MUL(ZV_SUB(bx2, bx1), ZV_SUB(by2, by1));
    float uni = ZV_SUB(ZV_ADD(area_a, area_b), inter);
    return ZV_DIV(inter, uni) > thr;
}

/* The mapping of model input coordinates to the frame (identity without a transform). */
typedef struct zv_map {
    int on;
    float pad_x, pad_y, scale_x, scale_y;
    float x0, y0, x1, y1; /* the crop rectangle, for clipping */
} zv_map;

static inline zv_map zv_map_from(const zci_letterbox *t)
{
    zv_map m;
    memset(&m, 0, sizeof m);
    if (t) {
        m.on = 1;
        m.pad_x = t->pad_x;
        m.pad_y = t->pad_y;
        m.scale_x = t->scale_x;
        m.scale_y = t->scale_y;
        m.x0 = (float)t->crop.x;
        m.y0 = (float)t->crop.y;
        m.x1 = (float)(t->crop.x + t->crop.width);
        m.y1 = (float)(t->crop.y + t->crop.height);
    }
    return m;
}

ZV_HD float zv_clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Fills a detection from a model-space box, mapped to the frame and clipped to the crop. */
ZV_HD void zv_emit(const zv_map *m, const float box[4], float score, int cls, zci_detection *d)
{
    if (m->on) {
        d->x1 = zv_clampf(ZV_ADD(ZV_DIV(ZV_SUB(box[0], m->pad_x), m->scale_x), m->x0), m->x0, m->x1);
        d->y1 = zv_clampf(ZV_ADD(ZV_DIV(ZV_SUB(box[1], m->pad_y), m->scale_y), m->y0), m->y0, m->y1);
        d->x2 = zv_clampf(ZV_ADD(ZV_DIV(ZV_SUB(box[2], m->pad_x), m->scale_x), m->x0), m->x0, m->x1);
        d->y2 = zv_clampf(ZV_ADD(ZV_DIV(ZV_SUB(box[3], m->pad_y), m->scale_y), m->y0), m->y0, m->y1);
    } else {
        d->x1 = box[0];
        d->y1 = box[1];
        d->x2 = box[2];
        d->y2 = box[3];
    }
    d->score = score;
    d->class_id = cls;
}

/* ---------------------------------------------------------------- the postprocessor */

/* One decoded candidate on the CPU. */
typedef struct zv_candidate {
    uint64_t key;
    float box[4];
    float score;
    int cls;
} zv_candidate;

struct zv_cuda_pp; /* nms.cu's state */

struct zci_postprocessor {
    zci_device device;
    int max_candidates, max_detections;
    zv_candidate *cands; /* CPU: max_candidates */
    int *kept;           /* CPU: indices into cands of the boxes kept so far */
    void *host_in, *host_out; /* zci_detect on CPU sessions: the tensors' host staging */
    size_t host_in_bytes, host_out_bytes;
    struct zv_cuda_pp *cuda; /* CUDA postprocessors */
};

/* CUDA parts (nms.cu, preprocess.cu; vision_nocuda.c without CUDA). */
zci_status zv_cuda_pp_create(zci_postprocessor *pp);
void zv_cuda_pp_destroy(zci_postprocessor *pp);
/* Copies a host frame into pp's device staging (grown as needed) on `stream` and describes
 * the copy in *dev. Returns once the copy is queued (pageable sources copy synchronously). */
zci_status zv_cuda_upload_frame(zci_postprocessor *pp, const zci_frame *host, zci_frame *dev, void *stream);
/* The stream NULL means for pp. */
void *zv_cuda_pp_stream(zci_postprocessor *pp, void *stream);

#ifdef __cplusplus
}
#endif

#endif
