/* test_vision.c: the vision stage on the CPU.
 *   - preprocessing of every pixel format, colour matrix and range, with odd sizes, pitches
 *     and crops, letterbox and stretch, FP32 and FP16, RGB and BGR order, batches of mixed
 *     frames, against a straightforward double-precision reference written here (its own
 *     pixel fetching, textbook conversion matrices, bilinear resize with half-pixel centres);
 *   - the letterbox transform, and boxes mapped back through it;
 *   - YOLOv5 and YOLOv8 decoding and NMS on hand-made cases (class-aware and agnostic,
 *     thresholds, ties, top-K and capacity, FP16 outputs, batch index), against a plain
 *     O(n^2) greedy NMS on random inputs, and the worst case where all 25,200 candidates
 *     pass the threshold;
 *   - bad arguments. */
#include <math.h>
#include <stdlib.h>

#include "core/common.h"
#include "test_util.h"
#include "test_frames.h"
#include "zcinfer_vision.h"

/* ---------------------------------------------------------------- random numbers */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

static int rnd_int(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }
static float rnd_float(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() >> 8) / 16777216.0f; }

/* ---------------------------------------------------------------- frames for the tests */

static const char *fmt_names[] = {"NV12", "I420", "UYVY", "YUYV", "RGB", "BGR", "RGBA", "BGRA"};

/* A frame with its own allocations, each exactly as large as the frame spans, so that an
 * out-of-bounds read shows up under the address sanitizer. */
typedef struct test_frame {
    zci_frame f;
    uint8_t *mem[3];
    size_t size[3];
} test_frame;


static void make_frame(test_frame *t, int fmt, int w, int h, int padded, int matrix, int range)
{
    memset(t, 0, sizeof *t);
    t->f.format = fmt;
    t->f.width = w;
    t->f.height = h;
    t->f.matrix = matrix;
    t->f.range = range;
    for (int k = 0; k < n_planes(fmt); k++) {
        size_t rl = row_len(fmt, w, k), pitch = padded ? rl + (size_t)rnd_int(1, 13) : 0;
        size_t p = pitch ? pitch : rl;
        t->size[k] = p * (size_t)(n_rows(fmt, h, k) - 1) + rl;
        t->mem[k] = malloc(t->size[k]);
        for (size_t i = 0; i < t->size[k]; i++) t->mem[k][i] = (uint8_t)rnd();
        t->f.planes[k] = t->mem[k];
        t->f.pitch[k] = pitch;
    }
}

static void free_frame(test_frame *t)
{
    for (int k = 0; k < 3; k++) free(t->mem[k]);
}

/* ---------------------------------------------------------------- the reference */

static const uint8_t *at(const zci_frame *f, int k, int x_bytes, int y)
{
    size_t pitch = f->pitch[k] ? f->pitch[k] : row_len(f->format, f->width, k);
    return (const uint8_t *)f->planes[k] + (size_t)y * pitch + (size_t)x_bytes;
}

/* RGB (0..255, double) of frame pixel (x, y), by the textbook formulas. */
static void ref_pixel(const zci_frame *f, int x, int y, double rgb[3])
{
    double Y, U, V;
    switch (f->format) {
    case ZCI_PIXEL_NV12:
        Y = *at(f, 0, x, y);
        U = *at(f, 1, 2 * (x / 2), y / 2);
        V = *at(f, 1, 2 * (x / 2) + 1, y / 2);
        break;
    case ZCI_PIXEL_I420:
        Y = *at(f, 0, x, y);
        U = *at(f, 1, x / 2, y / 2);
        V = *at(f, 2, x / 2, y / 2);
        break;
    case ZCI_PIXEL_UYVY:
        Y = *at(f, 0, 2 * x + 1, y);
        U = *at(f, 0, 4 * (x / 2), y);
        V = *at(f, 0, 4 * (x / 2) + 2, y);
        break;
    case ZCI_PIXEL_YUYV:
        Y = *at(f, 0, 2 * x, y);
        U = *at(f, 0, 4 * (x / 2) + 1, y);
        V = *at(f, 0, 4 * (x / 2) + 3, y);
        break;
    default: {
        int bpp = f->format >= ZCI_PIXEL_RGBA ? 4 : 3, bgr = f->format == ZCI_PIXEL_BGR || f->format == ZCI_PIXEL_BGRA;
        const uint8_t *p = at(f, 0, bpp * x, y);
        rgb[0] = p[bgr ? 2 : 0];
        rgb[1] = p[1];
        rgb[2] = p[bgr ? 0 : 2];
        return;
    }
    }
    double yy = Y, u = U - 128.0, v = V - 128.0;
    if (f->range == ZCI_RANGE_LIMITED) {
        yy = (Y - 16.0) * 255.0 / 219.0;
        u *= 255.0 / 224.0;
        v *= 255.0 / 224.0;
    }
    if (f->matrix == ZCI_COLOR_BT709) {
        rgb[0] = yy + 1.5748 * v;
        rgb[1] = yy - 0.187324 * u - 0.468124 * v;
        rgb[2] = yy + 1.8556 * u;
    } else {
        rgb[0] = yy + 1.402 * v;
        rgb[1] = yy - 0.344136 * u - 0.714136 * v;
        rgb[2] = yy + 1.772 * u;
    }
    for (int c = 0; c < 3; c++) rgb[c] = rgb[c] < 0 ? 0 : rgb[c] > 255 ? 255 : rgb[c];
}

/* Source position along one axis of output pixel o: half-pixel centres, clamped. */
static void ref_axis(int o, int pad, int content, int crop, int *i0, int *i1, double *w)
{
    double s = (o - pad + 0.5) * crop / content - 0.5;
    if (s < 0) s = 0;
    if (s > crop - 1) s = crop - 1;
    *i0 = (int)floor(s);
    *i1 = *i0 + 1 < crop ? *i0 + 1 : *i0;
    *w = s - *i0;
}

/* Compares one frame's output against the reference; returns the largest error in pixel
 * levels (0..255 scale). */
static double compare_frame(const zci_frame *f, const zci_preprocess_params *p, const void *out, int *bad)
{
    int ow = p->out_width, oh = p->out_height;
    zci_rect crop = p->crop.width && p->crop.height ? p->crop : (zci_rect){0, 0, f->width, f->height};
    int cw = ow, ch = oh, px = 0, py = 0;
    if (p->resize == ZCI_RESIZE_LETTERBOX) {
        double r = fmin((double)ow / crop.width, (double)oh / crop.height);
        cw = (int)floor(crop.width * r + 0.5);
        ch = (int)floor(crop.height * r + 0.5);
        cw = cw < 1 ? 1 : cw > ow ? ow : cw;
        ch = ch < 1 ? 1 : ch > oh ? oh : ch;
        px = (ow - cw) / 2;
        py = (oh - ch) / 2;
    }
    double worst = 0;
    size_t plane = (size_t)ow * oh;
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++) {
            double pix[3];
            if (ox >= px && ox < px + cw && oy >= py && oy < py + ch) {
                int x0, x1, y0, y1;
                double fx, fy, a[3], b[3], c[3], d[3];
                ref_axis(ox, px, cw, crop.width, &x0, &x1, &fx);
                ref_axis(oy, py, ch, crop.height, &y0, &y1, &fy);
                ref_pixel(f, crop.x + x0, crop.y + y0, a);
                ref_pixel(f, crop.x + x1, crop.y + y0, b);
                ref_pixel(f, crop.x + x0, crop.y + y1, c);
                ref_pixel(f, crop.x + x1, crop.y + y1, d);
                for (int k = 0; k < 3; k++)
                    pix[k] = (1 - fy) * ((1 - fx) * a[k] + fx * b[k]) + fy * ((1 - fx) * c[k] + fx * d[k]);
            } else {
                pix[0] = pix[1] = pix[2] = p->pad_value;
            }
            for (int k = 0; k < 3; k++) {
                int src = p->bgr ? 2 - k : k;
                double want = (pix[src] * p->scale - p->mean[k]) / p->std[k];
                size_t i = (size_t)k * plane + (size_t)oy * ow + ox;
                double got = p->out_dtype == ZCI_FLOAT16 ? zci_f16_to_f32(((const uint16_t *)out)[i])
                                                         : ((const float *)out)[i];
                /* error in pixel levels; FP16 adds its own rounding (half an ulp of the value) */
                double levels = fabs(got - want) / fabs(p->scale / p->std[k]);
                double allow = 0.1;
                if (p->out_dtype == ZCI_FLOAT16) allow += fabs(want) * (1.0 / 2048) / fabs(p->scale / p->std[k]);
                if (levels > allow) (*bad)++;
                if (levels - allow + 0.1 > worst) worst = levels - allow + 0.1;
            }
        }
    return worst;
}

/* ---------------------------------------------------------------- preprocessing tests */

static void random_params(zci_preprocess_params *p, const zci_frame *f, int variant)
{
    static const int sizes[][2] = {{64, 48}, {33, 65}, {16, 16}, {41, 41}, {7, 90}};
    int s = rnd_int(0, 4);
    zci_preprocess_params_init(p, sizes[s][0], sizes[s][1]);
    p->resize = variant & 1 ? ZCI_RESIZE_STRETCH : ZCI_RESIZE_LETTERBOX;
    p->out_dtype = variant & 2 ? ZCI_FLOAT16 : ZCI_FLOAT32;
    p->bgr = (variant >> 2) & 1;
    if (variant & 8) {
        for (int c = 0; c < 3; c++) {
            p->mean[c] = rnd_float(0.3f, 0.6f);
            p->std[c] = rnd_float(0.2f, 0.3f);
        }
        p->pad_value = 0;
    }
    if (variant & 16) {
        int cw = rnd_int(1, f->width), ch = rnd_int(1, f->height);
        p->crop = (zci_rect){rnd_int(0, f->width - cw), rnd_int(0, f->height - ch), cw, ch};
    }
}

static void test_preprocess_formats(void)
{
    static const int frame_sizes[][2] = {{37, 23}, {1, 1}, {2, 3}, {101, 57}, {16, 9}, {5, 130}, {200, 3}};
    int cases = 0, bad_total = 0;
    double worst = 0;
    for (int fmt = 0; fmt <= ZCI_PIXEL_BGRA; fmt++)
        for (int mr = 0; mr < 4; mr++) {
            if (fmt >= ZCI_PIXEL_RGB && mr) continue; /* matrix and range do not apply */
            for (int s = 0; s < 7; s++)
                for (int variant = 0; variant < 32; variant += 1 + (int)(rnd() % 3)) {
                    test_frame t;
                    make_frame(&t, fmt, frame_sizes[s][0], frame_sizes[s][1], variant & 4, mr & 1, mr >> 1);
                    zci_preprocess_params p;
                    random_params(&p, &t.f, variant);
                    size_t bytes = 3 * (size_t)p.out_width * p.out_height * (p.out_dtype == ZCI_FLOAT16 ? 2 : 4);
                    void *out = malloc(bytes);
                    zci_letterbox lb;
                    zci_status st = zci_preprocess_cpu(&t.f, 1, &p, out, bytes, &lb);
                    CHECK(st == ZCI_OK, "%s %dx%d: %s", fmt_names[fmt], t.f.width, t.f.height, zci_last_error());
                    if (st == ZCI_OK) {
                        int bad = 0;
                        double w = compare_frame(&t.f, &p, out, &bad);
                        worst = w > worst ? w : worst;
                        CHECK(bad == 0,
                              "%s %dx%d (matrix %d range %d) -> %dx%d %s %s crop %d,%d %dx%d: %d elements off, "
                              "worst %.3f levels",
                              fmt_names[fmt], t.f.width, t.f.height, mr & 1, mr >> 1, p.out_width, p.out_height,
                              p.resize ? "stretch" : "letterbox", zci_dtype_name(p.out_dtype), p.crop.x, p.crop.y,
                              p.crop.width, p.crop.height, bad, w);
                        bad_total += bad;
                    }
                    cases++;
                    free(out);
                    free_frame(&t);
                }
        }
    printf("preprocessing: %d cases against the reference, worst error %.4f pixel levels, %d bad elements\n", cases,
           worst, bad_total);
}

/* A batch of frames of different formats, sizes and pitches in one call. */
static void test_preprocess_batch(void)
{
    enum { N = 5 };
    test_frame t[N];
    zci_frame frames[N];
    for (int i = 0; i < N; i++) {
        make_frame(&t[i], (i * 3) % 8, rnd_int(1, 90), rnd_int(1, 70), i & 1, i & 1, (i >> 1) & 1);
        frames[i] = t[i].f;
    }
    zci_preprocess_params p;
    zci_preprocess_params_init(&p, 40, 30);
    size_t one = 3 * 40 * 30 * sizeof(float);
    float *out = malloc(N * one);
    zci_letterbox lb[N];
    CHECK_OK(zci_preprocess_cpu(frames, N, &p, out, N * one, lb));
    for (int i = 0; i < N; i++) {
        int bad = 0;
        compare_frame(&frames[i], &p, (char *)out + i * one, &bad);
        CHECK(bad == 0, "batch frame %d (%s): %d elements off", i, fmt_names[frames[i].format], bad);
        zci_letterbox single;
        CHECK_OK(zci_letterbox_compute(&p, frames[i].width, frames[i].height, &single));
        CHECK(!memcmp(&single, &lb[i], sizeof single), "batch frame %d: transform differs", i);
    }
    CHECK_FAILS(zci_preprocess_cpu(frames, N, &p, out, N * one - 1, NULL), ZCI_INVALID_ARGUMENT, "destination");
    free(out);
    for (int i = 0; i < N; i++) free_frame(&t[i]);
}

static void test_letterbox(void)
{
    zci_preprocess_params p;
    zci_letterbox t;
    zci_preprocess_params_init(&p, 640, 640);
    CHECK_OK(zci_letterbox_compute(&p, 1920, 1080, &t));
    CHECK(t.content_width == 640 && t.content_height == 360 && t.pad_x == 0 && t.pad_y == 140,
          "1920x1080: content %dx%d pad %g,%g", t.content_width, t.content_height, t.pad_x, t.pad_y);
    CHECK(fabsf(t.scale_x - 1.0f / 3) < 1e-7f && fabsf(t.scale_y - 1.0f / 3) < 1e-7f, "scale %g %g", t.scale_x,
          t.scale_y);
    CHECK(t.crop.x == 0 && t.crop.width == 1920 && t.crop.height == 1080, "crop defaults to the frame");
    /* YOLOv5's letterbox: 1000x501 -> 640x321 (320.64 rounds up), pad (640-321)/2 = 159 */
    CHECK_OK(zci_letterbox_compute(&p, 1000, 501, &t));
    CHECK(t.content_width == 640 && t.content_height == 321 && t.pad_y == 159, "1000x501: %dx%d pad %g",
          t.content_width, t.content_height, t.pad_y);
    CHECK(t.scale_y == (float)(321.0 / 501), "scale_y %g", t.scale_y);
    /* upscaling a small frame, portrait */
    CHECK_OK(zci_letterbox_compute(&p, 30, 60, &t));
    CHECK(t.content_width == 320 && t.content_height == 640 && t.pad_x == 160 && t.pad_y == 0, "30x60: %dx%d pad %g",
          t.content_width, t.content_height, t.pad_x);
    p.crop = (zci_rect){100, 50, 800, 400};
    CHECK_OK(zci_letterbox_compute(&p, 1920, 1080, &t));
    CHECK(t.content_width == 640 && t.content_height == 320 && t.pad_y == 160 && t.crop.x == 100 && t.crop.y == 50,
          "crop: %dx%d pad %g", t.content_width, t.content_height, t.pad_y);
    p.crop = (zci_rect){1900, 0, 100, 10};
    CHECK_FAILS(zci_letterbox_compute(&p, 1920, 1080, &t), ZCI_INVALID_ARGUMENT, "not inside");
    p.crop = (zci_rect){0, 0, 0, 0};
    p.resize = ZCI_RESIZE_STRETCH;
    CHECK_OK(zci_letterbox_compute(&p, 1920, 1080, &t));
    CHECK(t.content_width == 640 && t.content_height == 640 && t.pad_x == 0 && t.pad_y == 0 &&
              t.scale_x == (float)(640.0 / 1920) && t.scale_y == (float)(640.0 / 1080),
          "stretch: %dx%d scale %g %g", t.content_width, t.content_height, t.scale_x, t.scale_y);
}

static void test_preprocess_errors(void)
{
    uint8_t px[64] = {0};
    zci_frame f;
    CHECK(zci_frame_packed(&f, ZCI_PIXEL_NV12, 4, 3, px) == 4 * 3 + 4 * 2, "NV12 4x3 packed size");
    CHECK(zci_frame_packed(&f, ZCI_PIXEL_I420, 5, 3, px) == 15 + 3 * 2 * 2, "I420 5x3 packed size");
    CHECK(zci_frame_packed(&f, ZCI_PIXEL_UYVY, 3, 2, px) == 8 * 2, "UYVY 3x2 packed size");
    CHECK(zci_frame_packed(&f, ZCI_PIXEL_RGBA, 3, 2, px) == 24, "RGBA 3x2 packed size");
    CHECK(zci_frame_packed(&f, (zci_pixel_format)99, 3, 2, px) == 0, "bad format");
    zci_frame_packed(&f, ZCI_PIXEL_RGB, 4, 4, px);
    zci_preprocess_params p;
    zci_preprocess_params_init(&p, 8, 8);
    float out[3 * 64];
    CHECK_OK(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL));
    CHECK_FAILS(zci_preprocess_cpu(NULL, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "no frames");
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, NULL, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "params");
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, NULL, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "dst");
    f.pitch[0] = 11;
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "pitch 11");
    f.pitch[0] = 0;
    f.planes[0] = NULL;
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "plane 0 is NULL");
    zci_frame_packed(&f, ZCI_PIXEL_RGB, 4, 4, px);
    f.width = 0;
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "size 0x4");
    f.width = 4;
    p.std[1] = 0;
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "std[1]");
    p.std[1] = 1;
    p.out_dtype = ZCI_INT8;
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "out_dtype");
    p.out_dtype = ZCI_FLOAT32;
    f.matrix = (zci_color_matrix)5;
    CHECK_FAILS(zci_preprocess_cpu(&f, 1, &p, out, sizeof out, NULL), ZCI_INVALID_ARGUMENT, "colour matrix");
    int ndev = -1;
    CHECK_OK(zci_cuda_device_count(&ndev));
    if (ndev == 0) { /* no CUDA in this build or on this machine: the CUDA entry points say so */
        f.matrix = ZCI_COLOR_BT601;
        CHECK_FAILS(zci_preprocess_cuda(&f, 1, &p, out, sizeof out, NULL, NULL), ZCI_NO_DEVICE, "CUDA");
        zci_postprocessor *pp = (zci_postprocessor *)&f;
        CHECK_FAILS(zci_postprocessor_create(ZCI_DEVICE_CUDA, 100, 10, &pp), ZCI_NO_DEVICE, "CUDA");
        CHECK(pp == NULL, "out-pointer cleared on failure");
    }
}

/* ---------------------------------------------------------------- postprocessing */

/* A YOLOv5-style output [1, n, 5 + nc] (row-major floats). */
typedef struct yolo_out {
    int n, nc;
    float *v;
} yolo_out;

static yolo_out yolo_new(int n, int nc)
{
    yolo_out y = {n, nc, calloc((size_t)n * (5 + nc), sizeof(float))};
    return y;
}

static void yolo_set(yolo_out *y, int i, float cx, float cy, float w, float h, float obj, int cls, float cls_score)
{
    float *r = y->v + (size_t)i * (5 + y->nc);
    r[0] = cx;
    r[1] = cy;
    r[2] = w;
    r[3] = h;
    r[4] = obj;
    for (int c = 0; c < y->nc; c++) r[5 + c] = 0.01f;
    r[5 + cls] = cls_score;
}

static zci_tensor_info v5_info(const yolo_out *y)
{
    zci_tensor_info t = {"output0", ZCI_FLOAT32, 3, {1, y->n, 5 + y->nc}, 0};
    t.bytes = (size_t)y->n * (5 + y->nc) * 4;
    return t;
}

/* The same data as a YOLOv8 output [1, 4 + nc, n] (objectness folded into the class scores). */
static float *to_v8(const yolo_out *y, zci_tensor_info *t)
{
    int a = 4 + y->nc;
    float *v = malloc((size_t)a * y->n * sizeof(float));
    for (int i = 0; i < y->n; i++) {
        const float *r = y->v + (size_t)i * (5 + y->nc);
        for (int k = 0; k < 4; k++) v[(size_t)k * y->n + i] = r[k];
        for (int c = 0; c < y->nc; c++) v[(size_t)(4 + c) * y->n + i] = r[4] * r[5 + c];
    }
    *t = (zci_tensor_info){"output0", ZCI_FLOAT32, 3, {1, a, y->n}, (size_t)a * y->n * 4};
    return v;
}

/* The plain greedy NMS the library's must match: candidates by score descending, then index;
 * every kept one suppresses the later ones of its class above the IoU threshold. Written
 * independently (suppression flags, O(n^2)). Returns the kept candidates' indices. */
typedef struct ref_cand {
    int index, cls;
    float score, box[4];
} ref_cand;

static int cmp_ref(const void *a, const void *b)
{
    const ref_cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->index - y->index;
}

static float ref_iou(const float *a, const float *b)
{
    float l = fmaxf(a[0], b[0]), r = fminf(a[2], b[2]), t = fmaxf(a[1], b[1]), bt = fminf(a[3], b[3]);
    float iw = r - l > 0 ? r - l : 0, ih = bt - t > 0 ? bt - t : 0;
    float inter = iw * ih;
    float area_a = (a[2] - a[0]) * (a[3] - a[1]);
    float area_b = (b[2] - b[0]) * (b[3] - b[1]);
    float uni = area_a + area_b - inter;
    return inter / uni;
}

static int ref_nms(const float *v, int n, int nc, int v8, float thr, float iou, int agnostic, ref_cand *out)
{
    ref_cand *c = malloc((size_t)n * sizeof *c);
    int m = 0;
    for (int i = 0; i < n; i++) {
        float get[128];
        for (int k = 0; k < 4 + nc + !v8; k++) get[k] = v8 ? v[(size_t)k * n + i] : v[(size_t)i * (5 + nc) + k];
        const float *cls = get + (v8 ? 4 : 5);
        int best = 0;
        for (int k = 1; k < nc; k++)
            if (cls[k] > cls[best]) best = k;
        float score = v8 ? cls[best] : get[4] * cls[best];
        if ((!v8 && !(get[4] > thr)) || !(score > thr)) continue;
        float hw = get[2] * 0.5f, hh = get[3] * 0.5f;
        c[m++] = (ref_cand){i, best, score, {get[0] - hw, get[1] - hh, get[0] + hw, get[1] + hh}};
    }
    qsort(c, (size_t)m, sizeof *c, cmp_ref);
    char *gone = calloc((size_t)m + 1, 1);
    int kept = 0;
    for (int i = 0; i < m; i++) {
        if (gone[i]) continue;
        out[kept++] = c[i];
        for (int j = i + 1; j < m; j++)
            if ((agnostic || c[j].cls == c[i].cls) && ref_iou(c[i].box, c[j].box) > iou) gone[j] = 1;
    }
    free(gone);
    free(c);
    return kept;
}

static int same_det(const zci_detection *d, const ref_cand *r)
{
    return d->x1 == r->box[0] && d->y1 == r->box[1] && d->x2 == r->box[2] && d->y2 == r->box[3] &&
           d->score == r->score && d->class_id == r->cls;
}

static void test_hand_made(void)
{
    zci_postprocessor *pp;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CPU, 100, 10, &pp));
    yolo_out y = yolo_new(8, 3);
    yolo_set(&y, 0, 50, 50, 20, 20, 0.9f, 0, 0.9f);  /* 0.81, kept */
    yolo_set(&y, 1, 52, 50, 20, 20, 0.95f, 0, 0.9f); /* 0.855, kept first: suppresses 0 */
    yolo_set(&y, 2, 52, 51, 20, 20, 0.9f, 1, 0.9f);  /* same place, class 1: kept */
    yolo_set(&y, 3, 150, 50, 20, 20, 0.2f, 2, 1.0f); /* objectness below 0.25: dropped */
    yolo_set(&y, 4, 150, 90, 20, 20, 0.5f, 2, 0.4f); /* 0.2: below the threshold */
    yolo_set(&y, 5, 10, 10, 4, 4, 0.5f, 2, 0.8f);    /* 0.4, kept */
    yolo_set(&y, 6, 60, 50, 20, 20, 0.9f, 0, 0.8f);  /* 0.72, IoU with 1 = 0.43 < 0.45: kept */
    yolo_set(&y, 7, 200, 200, 10, 10, 0.5f, 1, 0.5f); /* exactly 0.25: not above, dropped */
    zci_tensor_info info = v5_info(&y);
    zci_postprocess_params q;
    zci_postprocess_params_init(&q);
    q.layout = ZCI_YOLO_V5; /* 8 x 8: the shape alone cannot tell */
    zci_detection d[10];
    zci_detect_counts cnt;
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 10, &cnt));
    CHECK(cnt.candidates == 5 && cnt.after_nms == 4 && cnt.count == 4, "counts %d %d %d", cnt.candidates,
          cnt.after_nms, cnt.count);
    float s1 = 0.95f * 0.9f, s2 = 0.9f * 0.9f, s6 = 0.9f * 0.8f, s5 = 0.5f * 0.8f;
    CHECK(d[0].score == s1 && d[0].class_id == 0 && d[0].x1 == 42 && d[0].y1 == 40 && d[0].x2 == 62 && d[0].y2 == 60,
          "first: %g cls %d [%g %g %g %g]", d[0].score, d[0].class_id, d[0].x1, d[0].y1, d[0].x2, d[0].y2);
    CHECK(d[1].score == s2 && d[1].class_id == 1, "second: %g cls %d", d[1].score, d[1].class_id);
    CHECK(d[2].score == s6 && d[2].class_id == 0 && d[2].x1 == 50, "third: %g cls %d x1 %g", d[2].score,
          d[2].class_id, d[2].x1);
    CHECK(d[3].score == s5 && d[3].class_id == 2, "fourth: %g cls %d", d[3].score, d[3].class_id);

    /* class-agnostic: box 2 (class 1) now falls to box 1 */
    q.class_agnostic = 1;
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 10, &cnt));
    CHECK(cnt.after_nms == 3 && d[1].score == s6, "agnostic: %d kept, second %g", cnt.after_nms, d[1].score);
    q.class_agnostic = 0;

    /* top-K and capacity: the counts still say what was found */
    q.top_k = 2;
    memset(d, 0, sizeof d);
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 10, &cnt));
    CHECK(cnt.count == 2 && cnt.after_nms == 4 && d[2].score == 0, "top_k 2: count %d after_nms %d", cnt.count,
          cnt.after_nms);
    q.top_k = 0;
    memset(d, 0, sizeof d);
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 1, &cnt));
    CHECK(cnt.count == 4 && d[0].score == s1 && d[1].score == 0, "capacity 1: count %d", cnt.count);
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, NULL, 0, &cnt));
    CHECK(cnt.count == 4, "capacity 0 still counts");

    /* IoU threshold: 0.4 makes box 6 (IoU 0.43 with box 1) suppressed */
    q.iou_threshold = 0.4f;
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 10, &cnt));
    CHECK(cnt.after_nms == 3, "iou 0.4: %d kept", cnt.after_nms);
    q.iou_threshold = 0.45f;

    /* the same as YOLOv8 [1, 4+C, N] */
    q.layout = ZCI_YOLO_V8;
    zci_tensor_info i8;
    float *v8 = to_v8(&y, &i8);
    zci_detection d8[10];
    zci_detect_counts c8;
    CHECK_OK(zci_postprocess_cpu(pp, v8, &i8, 0, &q, NULL, d8, 10, &c8));
    ref_cand r[10];
    int kr = ref_nms(v8, y.n, y.nc, 1, 0.25f, 0.45f, 0, r);
    CHECK(c8.after_nms == kr, "v8: %d kept, reference %d", c8.after_nms, kr);
    for (int i = 0; i < kr && i < c8.count; i++) CHECK(same_det(&d8[i], &r[i]), "v8 detection %d differs", i);
    /* forcing the wrong layout on a shape that allows it reads other numbers, but safely */
    q.layout = ZCI_YOLO_V5;
    CHECK_OK(zci_postprocess_cpu(pp, v8, &i8, 0, &q, NULL, d8, 10, &c8));
    free(v8);

    /* ties: equal scores come out in index order, whatever the input order */
    yolo_out t = yolo_new(6, 2);
    for (int i = 0; i < 6; i++) yolo_set(&t, i, 30.0f * i + 10, 10, 8, 8, 0.6f, i & 1, 0.5f);
    zci_tensor_info ti = v5_info(&t);
    CHECK_OK(zci_postprocess_cpu(pp, t.v, &ti, 0, &q, NULL, d, 10, &cnt));
    int ordered = cnt.count == 6;
    for (int i = 0; i < cnt.count; i++) ordered &= d[i].x1 == 30.0f * i + 6;
    CHECK(ordered, "ties in index order (count %d)", cnt.count);
    /* identical boxes with equal scores: the lowest index survives */
    for (int i = 0; i < 6; i++) yolo_set(&t, i, 10, 10, 8, 8 + 0.001f * i, 0.6f, 0, 0.5f);
    CHECK_OK(zci_postprocess_cpu(pp, t.v, &ti, 0, &q, NULL, d, 10, &cnt));
    CHECK(cnt.after_nms == 1 && d[0].y2 == 14.0f, "identical boxes: %d kept, y2 %g", cnt.after_nms, d[0].y2);
    free(t.v);

    /* FP16 output and batch index */
    int rowlen = 5 + y.nc;
    uint16_t *h = malloc((size_t)2 * y.n * rowlen * 2);
    for (int i = 0; i < y.n * rowlen; i++) {
        h[i] = zci_f32_to_f16(0);
        h[y.n * rowlen + i] = zci_f32_to_f16(y.v[i]);
    }
    zci_tensor_info hi = {"output0", ZCI_FLOAT16, 3, {2, y.n, rowlen}, (size_t)2 * y.n * rowlen * 2};
    float *back = malloc((size_t)y.n * rowlen * sizeof(float));
    for (int i = 0; i < y.n * rowlen; i++) back[i] = zci_f16_to_f32(h[y.n * rowlen + i]);
    CHECK_OK(zci_postprocess_cpu(pp, h, &hi, 1, &q, NULL, d, 10, &cnt));
    kr = ref_nms(back, y.n, y.nc, 0, 0.25f, 0.45f, 0, r);
    CHECK(cnt.after_nms == kr, "fp16: %d kept, reference %d", cnt.after_nms, kr);
    for (int i = 0; i < kr && i < cnt.count; i++) CHECK(same_det(&d[i], &r[i]), "fp16 detection %d differs", i);
    CHECK_OK(zci_postprocess_cpu(pp, h, &hi, 0, &q, NULL, d, 10, &cnt));
    CHECK(cnt.candidates == 0 && cnt.count == 0, "batch 0 is all zeros: %d candidates", cnt.candidates);
    CHECK_FAILS(zci_postprocess_cpu(pp, h, &hi, 2, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "batch_index 2");
    free(h);
    free(back);

    /* errors */
    CHECK_FAILS(zci_postprocess_cpu(pp, NULL, &info, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &info, 0, NULL, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "params");
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, NULL, 10, &cnt), ZCI_INVALID_ARGUMENT, "dets");
    q.top_k = 11;
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "top_k 11");
    q.top_k = 0;
    q.iou_threshold = NAN;
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "iou_threshold");
    q.iou_threshold = 0.45f;
    zci_tensor_info bad = info;
    bad.dtype = ZCI_INT64;
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &bad, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "int64");
    bad = info;
    bad.ndim = 4;
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &bad, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "not a YOLO");
    bad = info;
    bad.shape[2] = 5;
    bad.shape[1] = 4;
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &bad, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "no class");
    bad = info;
    bad.shape[1] = 101;
    CHECK_FAILS(zci_postprocess_cpu(pp, y.v, &bad, 0, &q, NULL, d, 10, &cnt), ZCI_INVALID_ARGUMENT, "at most 100");
    zci_postprocessor *bad_pp = (zci_postprocessor *)&info;
    CHECK_FAILS(zci_postprocessor_create(ZCI_DEVICE_CPU, 0, 1, &bad_pp), ZCI_INVALID_ARGUMENT, "max_candidates");
    CHECK(bad_pp == NULL, "out-pointer cleared");
    CHECK_FAILS(zci_postprocessor_create(ZCI_DEVICE_CPU, 10, 11, &bad_pp), ZCI_INVALID_ARGUMENT, "max_detections");
    /* a CPU postprocessor on the CUDA path: refused (or no CUDA at all in this build) */
    CHECK(zci_postprocess_cuda(pp, y.v, &info, 0, &q, NULL, NULL) != ZCI_OK, "CUDA run with a CPU postprocessor");
    zci_postprocessor_destroy(NULL);
    free(y.v);
    zci_postprocessor_destroy(pp);
}

/* Boxes mapped back to the frame through a letterbox transform, and clipped to the crop. */
static void test_mapping(void)
{
    zci_preprocess_params p;
    zci_preprocess_params_init(&p, 640, 640);
    zci_letterbox lb;
    CHECK_OK(zci_letterbox_compute(&p, 1280, 720, &lb)); /* scale 0.5, pad_y 140 */
    zci_postprocessor *pp;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CPU, 16, 16, &pp));
    yolo_out y = yolo_new(2, 1);
    yolo_set(&y, 0, 200, 300, 100, 200, 0.9f, 0, 0.9f);  /* [150,200,250,400] -> [300,120,500,520] */
    yolo_set(&y, 1, 600, 150, 100, 40, 0.8f, 0, 0.9f);   /* [550,130,650,170]: clipped to x 1280, y 0 */
    zci_tensor_info info = v5_info(&y);
    zci_postprocess_params q;
    zci_postprocess_params_init(&q);
    q.layout = ZCI_YOLO_V5;
    zci_detection d[2];
    zci_detect_counts c;
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, &lb, d, 2, &c));
    CHECK(c.count == 2 && d[0].x1 == 300 && d[0].y1 == 120 && d[0].x2 == 500 && d[0].y2 == 520,
          "mapped [%g %g %g %g]", d[0].x1, d[0].y1, d[0].x2, d[0].y2);
    CHECK(d[1].x1 == 1100 && d[1].x2 == 1280 && d[1].y1 == 0 && d[1].y2 == 60, "clipped [%g %g %g %g]", d[1].x1,
          d[1].y1, d[1].x2, d[1].y2);
    /* with a crop, boxes land in the crop's place in the frame and stay inside it */
    p.crop = (zci_rect){100, 200, 640, 320};
    CHECK_OK(zci_letterbox_compute(&p, 1280, 720, &lb)); /* scale 1, pad_y 160 */
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, &lb, d, 2, &c));
    CHECK(d[0].x1 == 250 && d[0].y1 == 240 && d[0].x2 == 350 && d[0].y2 == 440, "crop mapped [%g %g %g %g]", d[0].x1,
          d[0].y1, d[0].x2, d[0].y2);
    CHECK(d[1].x2 == 740 && d[1].y1 == 200, "crop clipped [%g %g %g %g]", d[1].x1, d[1].y1, d[1].x2, d[1].y2);
    free(y.v);
    zci_postprocessor_destroy(pp);
}

/* Random outputs with many overlapping boxes of a few classes, against the reference. */
static void test_random_vs_reference(void)
{
    zci_postprocessor *pp;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CPU, 5000, 5000, &pp));
    ref_cand *r = malloc(5000 * sizeof *r);
    zci_detection *d = malloc(5000 * sizeof *d);
    int total = 0;
    for (int round = 0; round < 40; round++) {
        int n = rnd_int(1, 5000), nc = rnd_int(1, 6), v8 = round & 1, agnostic = (round >> 1) & 1;
        yolo_out y = yolo_new(n, nc);
        for (int i = 0; i < n; i++) {
            /* clustered boxes with coarse scores so that ties and near-threshold IoUs happen */
            float cx = (float)rnd_int(0, 20) * 16 + rnd_float(-4, 4), cy = (float)rnd_int(0, 20) * 16;
            yolo_set(&y, i, cx, cy, (float)rnd_int(4, 40), (float)rnd_int(4, 40), (float)rnd_int(0, 16) / 16,
                     rnd_int(0, nc - 1), (float)rnd_int(0, 8) / 8);
        }
        zci_tensor_info info = v5_info(&y);
        float *data = y.v;
        float *v8data = NULL;
        if (v8) data = v8data = to_v8(&y, &info);
        zci_postprocess_params q;
        zci_postprocess_params_init(&q);
        if (n < 64) q.layout = v8 ? ZCI_YOLO_V8 : ZCI_YOLO_V5; /* larger ones: from the shape */
        q.score_threshold = rnd_float(0.05f, 0.5f);
        q.iou_threshold = rnd_float(0.2f, 0.7f);
        q.class_agnostic = agnostic;
        zci_detect_counts c;
        CHECK_OK(zci_postprocess_cpu(pp, data, &info, 0, &q, NULL, d, 5000, &c));
        int kr = ref_nms(data, n, nc, v8, q.score_threshold, q.iou_threshold, agnostic, r);
        int same = c.after_nms == kr && c.count == kr;
        for (int i = 0; same && i < kr; i++) same = same_det(&d[i], &r[i]);
        CHECK(same, "round %d (n %d, %s, %s): %d kept, reference %d", round, n, v8 ? "v8" : "v5",
              agnostic ? "agnostic" : "per class", c.after_nms, kr);
        total += kr;
        free(v8data);
        free(y.v);
    }
    printf("random NMS: 40 rounds, %d detections, identical to the reference\n", total);
    free(r);
    free(d);
    zci_postprocessor_destroy(pp);
}

/* YOLOv5s at 640: 25,200 candidates, 80 classes, every one above the threshold, all with the
 * same score. Clusters of four overlapping boxes: NMS keeps the first of each (6,300), and
 * top-K returns the first 300 in index order. Nothing is dropped silently. */
static void test_worst_case(void)
{
    enum { N = 25200, NC = 80 };
    zci_postprocessor *pp;
    CHECK_OK(zci_postprocessor_create(ZCI_DEVICE_CPU, N, 300, &pp));
    yolo_out y = yolo_new(N, NC);
    for (int i = 0; i < N; i++) {
        int cluster = i / 4, member = i % 4;
        float cx = (float)(cluster % 90) * 20 + 10 + member, cy = (float)(cluster / 90) * 20 + 10;
        yolo_set(&y, i, cx, cy, 12, 12, 0.9f, cluster % NC, 0.9f);
    }
    zci_tensor_info info = v5_info(&y);
    zci_postprocess_params q;
    zci_postprocess_params_init(&q);
    zci_detection *d = malloc(300 * sizeof *d);
    zci_detect_counts c;
    double t0 = zci_now();
    CHECK_OK(zci_postprocess_cpu(pp, y.v, &info, 0, &q, NULL, d, 300, &c));
    double ms = (zci_now() - t0) * 1e3;
    CHECK(c.candidates == N && c.after_nms == N / 4 && c.count == 300, "worst case: %d candidates, %d kept, %d returned",
          c.candidates, c.after_nms, c.count);
    int ok = 1;
    for (int k = 0; k < 300; k++) ok &= d[k].x1 == (float)(k % 90) * 20 + 4 && d[k].class_id == k % NC;
    CHECK(ok, "worst case: the first box of each of the first 300 clusters, in order");
    printf("worst case: 25,200 candidates above the threshold -> %d kept, %d returned, %.1f ms on the CPU\n",
           c.after_nms, c.count, ms);
    free(d);
    free(y.v);
    zci_postprocessor_destroy(pp);
}

int main(void)
{
    test_letterbox();
    test_preprocess_formats();
    test_preprocess_batch();
    test_preprocess_errors();
    test_hand_made();
    test_mapping();
    test_random_vs_reference();
    test_worst_case();
    return test_summary("test_vision");
}
