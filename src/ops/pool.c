/* pool.c: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (1 to 3 spatial dimensions).
 *
 * The window geometry (strides, dilations, pads, auto_pad, ceil_mode) is Conv's: see
 * zci_window_init in conv.h. Kernels work on output rows, separably (see pool_row below): the
 * window's input rows are combined first, then its columns, each sweep over the span of output
 * columns whose input is in bounds, a plain (at stride 1 contiguous) loop the compiler
 * vectorises. MaxPool also takes uint8 and int8 (opset 12); its optional Indices output is not
 * supported. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/conv.h"
#include "ops/op.h"

/* Max and mean over rows are selects and adds: see conv.c for why this pragma. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* Below this many window reads a pool runs on one thread. */
#define PAR_MIN_WORK ((int64_t)1 << 15)

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

static int64_t ceil_div64(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

/* ================================================================ infer */

enum { POOL_MAX, POOL_AVG };

static zci_status pool_infer(zci_graph *g, zci_node *n, int kind)
{
    ZCI_TRY(zci_check_arity(n, 1, 1, kind == POOL_MAX ? 2 : 1));
    if (n->n_out > 1 && n->out[1] >= 0)
        return zci_error(ZCI_UNSUPPORTED, "MaxPool's Indices output is not supported by zcinfer");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int int_ok = kind == POOL_MAX && (x->dtype == ZCI_UINT8 || x->dtype == ZCI_INT8);
    if (x->dtype != ZCI_FLOAT32 && !int_ok)
        return zci_error(ZCI_UNSUPPORTED, "X ('%s') is %s; zcinfer pools float32%s", tname(x),
                         zci_dtype_name(x->dtype), kind == POOL_MAX ? ", uint8 and int8" : "");
    if (x->ndim < 3 || x->ndim > 5)
        return zci_error(ZCI_UNSUPPORTED, "X ('%s') has rank %d; zcinfer pools 1 to 3 spatial dimensions (rank 3 to 5)",
                         tname(x), x->ndim);
    int nsp = x->ndim - 2;
    zci_status st = ZCI_OK;
    int cnt = 0;
    const int64_t *kernel = zci_attr_ints(n, "kernel_shape", &cnt, &st);
    if (st != ZCI_OK || !kernel)
        return zci_error(ZCI_INVALID_MODEL, "attribute 'kernel_shape' (a list of ints) is required");
    if (cnt != nsp)
        return zci_error(ZCI_INVALID_MODEL, "attribute 'kernel_shape' has %d values, X ('%s') has %d spatial dimensions",
                         cnt, tname(x), nsp);
    int ceil_mode = (int)zci_attr_int(n, "ceil_mode", 0, &st);
    int count_include_pad = (int)zci_attr_int(n, "count_include_pad", 0, &st);
    int storage_order = (int)zci_attr_int(n, "storage_order", 0, &st);
    if (st != ZCI_OK) return zci_error(st, "attributes 'ceil_mode', 'count_include_pad' and 'storage_order' must be ints");
    (void)storage_order; /* only affects Indices */
    zci_pool_params *p = zci_calloc(1, sizeof *p, "pool params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    st = zci_window_init(n, nsp, x->dims + 2, kernel, ceil_mode, &p->w);
    if (st != ZCI_OK) {
        free(p);
        return st;
    }
    p->batch = x->dims[0];
    p->channels = x->dims[1];
    p->ceil_mode = ceil_mode != 0;
    p->count_include_pad = count_include_pad != 0;
    int64_t ydims[5] = {p->batch, p->channels};
    for (int i = 0; i < nsp; i++) ydims[2 + i] = p->w.out[i];
    free(n->params);
    n->params = p;
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, ydims, x->ndim);
    return ZCI_OK;
}

static zci_status maxpool_infer(zci_graph *g, zci_node *n) { return pool_infer(g, n, POOL_MAX); }
static zci_status avgpool_infer(zci_graph *g, zci_node *n) { return pool_infer(g, n, POOL_AVG); }

static zci_status global_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    if (x->dtype != ZCI_FLOAT32)
        return zci_error(ZCI_UNSUPPORTED, "X ('%s') is %s; zcinfer pools float32", tname(x), zci_dtype_name(x->dtype));
    if (x->ndim < 2)
        return zci_error(ZCI_INVALID_MODEL, "X ('%s') has rank %d, expected at least 2 (N, C, ...)", tname(x), x->ndim);
    int64_t ydims[ZCI_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) ydims[i] = i < 2 ? x->dims[i] : 1;
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), ZCI_FLOAT32, ydims, x->ndim);
    return ZCI_OK;
}

/* ================================================================ window kernels */

/* The window as 3-D (conv.h's zci_win3: a 2-D pool is D = 1). */
typedef zci_win3 win3;

/* Output columns [*lo, *hi) whose input column o * s + off lies in [0, in). */
static void valid_span(int64_t off, int64_t s, int64_t in, int64_t out, int64_t *lo, int64_t *hi)
{
    *lo = off >= 0 ? 0 : ceil_div64(-off, s);
    *hi = off > in - 1 ? 0 : (in - 1 - off) / s + 1;
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}

/* Kernel offsets of dimension i whose input index o * s - pb + k * d lies in [lo_bound,
 * hi_bound): their count (the average's divisor is a product of these). */
static int64_t taps_within(const win3 *g, int i, int64_t o, int64_t lo_bound, int64_t hi_bound)
{
    int64_t c = 0;
    for (int64_t k = 0; k < g->k[i]; k++) {
        int64_t at = o * g->s[i] - g->pb[i] + k * g->d[i];
        c += at >= lo_bound && at < hi_bound;
    }
    return c;
}

static int pool_threads(const win3 *g, int64_t rows, int nthreads)
{
    int64_t work = rows * g->out[2] * g->k[0] * g->k[1] * g->k[2];
    return work < PAR_MIN_WORK ? 1 : nthreads;
}

/* pool_row: a window is separable: each output row first combines the in-bounds input rows of its window
 * into one row of the input's width (on the stack, up to ROW_MAX floats), then combines that
 * row's taps, kd * kh + kw sweeps instead of kd * kh * kw. The spans of output columns each
 * kernel column reads in bounds depend on the column only: computed once per call (up to
 * MAX_TAPS columns, else per row). */
#define ROW_MAX 4096
#define MAX_TAPS 64

typedef struct col_spans {
    int n;                     /* kernel columns with a precomputed span, 0: compute per row */
    int64_t lo[MAX_TAPS], hi[MAX_TAPS], off[MAX_TAPS];
} col_spans;

static void col_spans_init(const win3 *g, col_spans *cs)
{
    cs->n = g->k[2] <= MAX_TAPS ? (int)g->k[2] : 0;
    for (int kx = 0; kx < cs->n; kx++) {
        cs->off[kx] = kx * g->d[2] - g->pb[2];
        valid_span(cs->off[kx], g->s[2], g->in[2], g->out[2], &cs->lo[kx], &cs->hi[kx]);
    }
}

static void col_span(const win3 *g, const col_spans *cs, int64_t kx, int64_t *off, int64_t *lo, int64_t *hi)
{
    if (kx < cs->n) {
        *off = cs->off[kx];
        *lo = cs->lo[kx];
        *hi = cs->hi[kx];
    } else {
        *off = kx * g->d[2] - g->pb[2];
        valid_span(*off, g->s[2], g->in[2], g->out[2], lo, hi);
    }
}

/* One output row of a pool for one element type: T the type, INIT the neutral value, COMBINE the
 * reduction (max or +). row receives the reduction over the window (no divisor). */
#define ZCI_DEFINE_POOL_ROW_(name, T, INIT, COMBINE)                                                             \
    static void name(const win3 *g, const col_spans *cs, const T *xp, int64_t oz, int64_t oy, T *row)             \
    {                                                                                                            \
        const int64_t ow = g->out[2], iw = g->in[2], sx = g->s[2];                                               \
        const T *rows[MAX_TAPS];                                                                                 \
        int nrows = 0, separable = iw <= ROW_MAX;                                                                \
        for (int64_t kz = 0; kz < g->k[0]; kz++) {                                                               \
            int64_t iz = oz * g->s[0] - g->pb[0] + kz * g->d[0];                                                 \
            if (iz < 0 || iz >= g->in[0]) continue;                                                              \
            for (int64_t ky = 0; ky < g->k[1]; ky++) {                                                           \
                int64_t iy = oy * g->s[1] - g->pb[1] + ky * g->d[1];                                             \
                if (iy < 0 || iy >= g->in[1]) continue;                                                          \
                if (nrows < MAX_TAPS) rows[nrows] = xp + (iz * g->in[1] + iy) * iw;                              \
                nrows++;                                                                                         \
            }                                                                                                    \
        }                                                                                                        \
        if (nrows > MAX_TAPS) separable = 0;                                                                     \
        for (int64_t ox = 0; ox < ow; ox++) row[ox] = INIT;                                                      \
        if (separable) {                                                                                         \
            T tmp[ROW_MAX];                                                                                      \
            for (int64_t ix = 0; ix < iw; ix++) tmp[ix] = INIT;                                                  \
            for (int r = 0; r < nrows; r++) {                                                                    \
                const T *xr = rows[r];                                                                           \
                for (int64_t ix = 0; ix < iw; ix++) tmp[ix] = COMBINE(tmp[ix], xr[ix]);                          \
            }                                                                                                    \
            if (!nrows) return;                                                                                  \
            for (int64_t kx = 0; kx < g->k[2]; kx++) {                                                           \
                int64_t off, lo, hi;                                                                             \
                col_span(g, cs, kx, &off, &lo, &hi);                                                             \
                if (sx == 1) {                                                                                   \
                    const T *ts = tmp + off;                                                                     \
                    for (int64_t ox = lo; ox < hi; ox++) row[ox] = COMBINE(row[ox], ts[ox]);                     \
                } else {                                                                                         \
                    for (int64_t ox = lo; ox < hi; ox++) row[ox] = COMBINE(row[ox], tmp[ox * sx + off]);         \
                }                                                                                                \
            }                                                                                                    \
            return;                                                                                              \
        }                                                                                                        \
        for (int64_t kz = 0; kz < g->k[0]; kz++) {                                                               \
            int64_t iz = oz * g->s[0] - g->pb[0] + kz * g->d[0];                                                 \
            if (iz < 0 || iz >= g->in[0]) continue;                                                              \
            for (int64_t ky = 0; ky < g->k[1]; ky++) {                                                           \
                int64_t iy = oy * g->s[1] - g->pb[1] + ky * g->d[1];                                             \
                if (iy < 0 || iy >= g->in[1]) continue;                                                          \
                const T *xr = xp + (iz * g->in[1] + iy) * iw;                                                    \
                for (int64_t kx = 0; kx < g->k[2]; kx++) {                                                       \
                    int64_t off, lo, hi;                                                                         \
                    col_span(g, cs, kx, &off, &lo, &hi);                                                         \
                    for (int64_t ox = lo; ox < hi; ox++) row[ox] = COMBINE(row[ox], xr[ox * sx + off]);          \
                }                                                                                                \
            }                                                                                                    \
        }                                                                                                        \
    }

#define ZCI_MAX_(a, b) ((b) > (a) ? (b) : (a))
#define ZCI_ADD_(a, b) ((a) + (b))
ZCI_DEFINE_POOL_ROW_(max_row_f32, float, -INFINITY, ZCI_MAX_)
ZCI_DEFINE_POOL_ROW_(max_row_u8, uint8_t, 0, ZCI_MAX_)
ZCI_DEFINE_POOL_ROW_(max_row_i8, int8_t, INT8_MIN, ZCI_MAX_)
ZCI_DEFINE_POOL_ROW_(sum_row_f32, float, 0.0f, ZCI_ADD_)

/* MaxPool over every output row for one element type. */
#define ZCI_DEFINE_MAXPOOL_(name, row_fn, T)                                                                     \
    static void name(const win3 *g, int64_t planes, const T *x, T *y, int nthreads)                              \
    {                                                                                                            \
        const int64_t rows = planes * g->out[0] * g->out[1], ow = g->out[2];                                     \
        const int64_t in_plane = g->in[0] * g->in[1] * g->in[2], out_plane = g->out[0] * g->out[1] * ow;        \
        col_spans cs;                                                                                            \
        col_spans_init(g, &cs);                                                                                  \
        _Pragma("omp parallel for num_threads(pool_threads(g, rows, nthreads)) schedule(static)")               \
        for (int64_t r = 0; r < rows; r++) {                                                                     \
            int64_t oy = r % g->out[1], oz = (r / g->out[1]) % g->out[0], plane = r / (g->out[1] * g->out[0]);  \
            row_fn(g, &cs, x + plane * in_plane, oz, oy, y + plane * out_plane + (oz * g->out[1] + oy) * ow);   \
        }                                                                                                        \
    }

ZCI_DEFINE_MAXPOOL_(maxpool_f32, max_row_f32, float)
ZCI_DEFINE_MAXPOOL_(maxpool_u8, max_row_u8, uint8_t)
ZCI_DEFINE_MAXPOOL_(maxpool_i8, max_row_i8, int8_t)

static void avgpool_f32(const win3 *g, int64_t planes, int count_include_pad, const float *x, float *y, int nthreads)
{
    const int64_t rows = planes * g->out[0] * g->out[1], ow = g->out[2];
    const int64_t in_plane = g->in[0] * g->in[1] * g->in[2], out_plane = g->out[0] * g->out[1] * ow;
    col_spans cs;
    col_spans_init(g, &cs);
#pragma omp parallel for num_threads(pool_threads(g, rows, nthreads)) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oy = r % g->out[1], oz = (r / g->out[1]) % g->out[0], plane = r / (g->out[1] * g->out[0]);
        float *row = y + plane * out_plane + (oz * g->out[1] + oy) * ow;
        sum_row_f32(g, &cs, x + plane * in_plane, oz, oy, row);
        /* the divisor counts the taps inside the input, or with count_include_pad inside the
         * padded input (a ceil_mode window may still reach beyond that) */
        int64_t cz, cy;
        if (count_include_pad) {
            cz = taps_within(g, 0, oz, -g->pb[0], g->in[0] + g->pe[0]);
            cy = taps_within(g, 1, oy, -g->pb[1], g->in[1] + g->pe[1]);
        } else {
            cz = taps_within(g, 0, oz, 0, g->in[0]);
            cy = taps_within(g, 1, oy, 0, g->in[1]);
        }
        for (int64_t ox = 0; ox < ow; ox++) {
            int64_t cx = count_include_pad ? taps_within(g, 2, ox, -g->pb[2], g->in[2] + g->pe[2])
                                           : taps_within(g, 2, ox, 0, g->in[2]);
            int64_t cnt = cz * cy * cx;
            row[ox] = cnt > 0 ? row[ox] / (float)cnt : 0.0f;
        }
    }
}

int zci_pool_blockable(const zci_graph *g, const zci_node *n)
{
    const zci_pool_params *p = n->params;
    return !strcmp(n->op_type, "MaxPool") && !*n->domain && p && p->w.nsp == 2 && p->batch == 1 && n->n_out == 1 &&
           ZCI_IN(g, n, 0)->dtype == ZCI_FLOAT32;
}

/* The channel block of MaxPool's input, found once at planning (ops/conv.h's storage rule). */
static zci_status maxpool_prepare(const zci_graph *g, const zci_node *n, int nthreads, void **state)
{
    int block = zci_conv_tensor_block(g, n->in[0]);
    if (block < 0) return zci_error(ZCI_OUT_OF_MEMORY, "cannot plan the tensor layout");
    *state = NULL;
    if (!block) return ZCI_OK;
    if (block > 64) return zci_error(ZCI_INTERNAL, "MaxPool: channel block %d above 64", block);
    int *b = zci_malloc(sizeof *b, "MaxPool state");
    if (!b) return ZCI_OUT_OF_MEMORY;
    *b = block;
    *state = b;
    return ZCI_OK;
}

/* MaxPool of a channel-blocked tensor (planes of H x W x B values, B lanes = channels): each
 * window tap is one B-wide max, which the compiler vectorises across the lanes. 2-D windows
 * only (g's leading axis is 1); padding taps are skipped. */
static void maxpool_blocked_f32(const win3 *g, int64_t planes, int64_t B, const float *x, float *y, int nthreads)
{
    const int64_t H = g->in[1], W = g->in[2], OH = g->out[1], OW = g->out[2];
    int nt = planes * OH * OW * B * g->k[1] * g->k[2] < PAR_MIN_WORK ? 1 : nthreads;
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t oy = 0; oy < OH; oy++) {
            const float *xp = x + pl * H * W * B;
            float *yrow = y + (pl * OH + oy) * OW * B;
            for (int64_t ox = 0; ox < OW; ox++) {
                float acc[64];
                for (int64_t l = 0; l < B; l++) acc[l] = -INFINITY;
                for (int64_t ky = 0; ky < g->k[1]; ky++) {
                    int64_t iy = oy * g->s[1] - g->pb[1] + ky * g->d[1];
                    if (iy < 0 || iy >= H) continue;
                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                        int64_t ix = ox * g->s[2] - g->pb[2] + kx * g->d[2];
                        if (ix < 0 || ix >= W) continue;
                        const float *src = xp + (iy * W + ix) * B;
                        for (int64_t l = 0; l < B; l++) acc[l] = src[l] > acc[l] ? src[l] : acc[l];
                    }
                }
                for (int64_t l = 0; l < B; l++) yrow[ox * B + l] = acc[l];
            }
        }
}

/* The same for undilated windows whose plane fits SEP_MAX values, in two passes: the max over
 * each row's kw taps for every input row (once), then over kh of those rows. kh + kw taps per
 * output instead of kh * kw: SPPF's 5x5 windows cost 10 vector maxes instead of 25. The B lanes
 * are a multiple of 8 (AVX2's width), so each lane loop is whole vectors. */
#define SEP_MAX 8192
static void maxpool_blocked_sep_f32(const win3 *g, int64_t planes, int64_t B, const float *x, float *y,
                                    int nthreads)
{
    const int64_t H = g->in[1], W = g->in[2], OH = g->out[1], OW = g->out[2];
    const int64_t kh = g->k[1], kw = g->k[2], sh = g->s[1], sw = g->s[2], ph = g->pb[1], pw = g->pb[2];
    int nt = planes * OH * OW * B * (kh + kw) < PAR_MIN_WORK ? 1 : nthreads;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        float h[SEP_MAX];
        const float *xp = x + pl * H * W * B;
        for (int64_t iy = 0; iy < H; iy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                float *hv = h + (iy * OW + ox) * B;
                for (int64_t l = 0; l < B; l++) hv[l] = -INFINITY;
                for (int64_t kx = 0; kx < kw; kx++) {
                    int64_t ix = ox * sw - pw + kx;
                    if (ix < 0 || ix >= W) continue;
                    const float *src = xp + (iy * W + ix) * B;
                    for (int64_t l = 0; l < B; l++) hv[l] = src[l] > hv[l] ? src[l] : hv[l];
                }
            }
        float *yp = y + pl * OH * OW * B;
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                float *yv = yp + (oy * OW + ox) * B;
                for (int64_t l = 0; l < B; l++) yv[l] = -INFINITY;
                for (int64_t ky = 0; ky < kh; ky++) {
                    int64_t iy = oy * sh - ph + ky;
                    if (iy < 0 || iy >= H) continue;
                    const float *hv = h + (iy * OW + ox) * B;
                    for (int64_t l = 0; l < B; l++) yv[l] = hv[l] > yv[l] ? hv[l] : yv[l];
                }
            }
    }
}

static zci_status maxpool_cpu(const zci_kernel_ctx *k)
{
    const zci_pool_params *p = k->n->params;
    win3 g = zci_window_3d(&p->w);
    int64_t planes = p->batch * p->channels;
    if (k->state) {
        const int64_t B = *(const int *)k->state;
        if (B % 8 == 0 && g.d[1] == 1 && g.d[2] == 1 && g.in[1] * g.out[2] * B <= SEP_MAX)
            maxpool_blocked_sep_f32(&g, planes / B, B, ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0), k->nthreads);
        else
            maxpool_blocked_f32(&g, planes / B, B, ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0), k->nthreads);
        return ZCI_OK;
    }
    const void *x = ZCI_KIN_DATA(k, 0);
    void *y = ZCI_KOUT_DATA(k, 0);
    switch (ZCI_KIN(k, 0)->dtype) {
    case ZCI_FLOAT32: maxpool_f32(&g, planes, x, y, k->nthreads); break;
    case ZCI_UINT8: maxpool_u8(&g, planes, x, y, k->nthreads); break;
    case ZCI_INT8: maxpool_i8(&g, planes, x, y, k->nthreads); break;
    default: return zci_error(ZCI_INTERNAL, "MaxPool: element type %s passed infer", zci_dtype_name(ZCI_KIN(k, 0)->dtype));
    }
    return ZCI_OK;
}

static zci_status avgpool_cpu(const zci_kernel_ctx *k)
{
    const zci_pool_params *p = k->n->params;
    win3 g = zci_window_3d(&p->w);
    avgpool_f32(&g, p->batch * p->channels, p->count_include_pad, ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0),
                k->nthreads);
    return ZCI_OK;
}

/* ================================================================ global pools */

static zci_status global_cpu(const zci_kernel_ctx *k, int kind)
{
    const zci_tensor *xt = ZCI_KIN(k, 0);
    const float *x = ZCI_KIN_DATA(k, 0);
    float *y = ZCI_KOUT_DATA(k, 0);
    int64_t planes = xt->dims[0] * xt->dims[1];
    int64_t size = 1;
    for (int i = 2; i < xt->ndim; i++) size *= xt->dims[i];
    int nt = planes * size < PAR_MIN_WORK ? 1 : k->nthreads;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * size;
        if (kind == POOL_MAX) {
            float m = size > 0 ? xp[0] : -INFINITY;
            for (int64_t i = 1; i < size; i++) m = xp[i] > m ? xp[i] : m;
            y[pl] = m;
        } else {
            /* summed in double: a large plane summed in float loses digits */
            double s = 0.0;
            for (int64_t i = 0; i < size; i++) s += xp[i];
            y[pl] = size > 0 ? (float)(s / (double)size) : 0.0f;
        }
    }
    return ZCI_OK;
}

static zci_status globalmax_cpu(const zci_kernel_ctx *k) { return global_cpu(k, POOL_MAX); }
static zci_status globalavg_cpu(const zci_kernel_ctx *k) { return global_cpu(k, POOL_AVG); }

/* clang-format off */
const zci_op zci_op_MaxPool = {
    .type = "MaxPool", .domain = "", .since = 1,
    .infer = maxpool_infer, .cpu = maxpool_cpu,
    .cpu_prepare = maxpool_prepare, .cpu_release = free,
};
const zci_op zci_op_AveragePool = {
    .type = "AveragePool", .domain = "", .since = 1, .infer = avgpool_infer, .cpu = avgpool_cpu,
};
const zci_op zci_op_GlobalAveragePool = {
    .type = "GlobalAveragePool", .domain = "", .since = 1, .infer = global_infer, .cpu = globalavg_cpu,
};
const zci_op zci_op_GlobalMaxPool = {
    .type = "GlobalMaxPool", .domain = "", .since = 1, .infer = global_infer, .cpu = globalmax_cpu,
};
/* clang-format on */
