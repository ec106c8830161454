/* normalize.c: operators that normalise or reduce along axes: Softmax, ReduceMean and
 * BatchNormalization (inference form). float32.
 *
 * Axes are resolved at planning (ReduceMean's axes input must be constant, as every shape is
 * fixed then) and kept in n->params; the kernels walk the tensor as (outer, axis, inner) blocks
 * and keep the innermost loop contiguous so it vectorises. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/op.h"

/* Below this many elements of work a kernel runs on one thread: waking a team costs more. */
#define PAR_MIN_ELEMS ((int64_t)1 << 16)
/* Columns of the (axis, inner) layout Softmax processes together: its running max and sum for
 * that many columns live on the stack. */
#define SOFTMAX_COLS 64
/* Elements of a contiguous row one task handles in ReduceMean and BatchNormalization, so a
 * single large row still spreads over threads. */
#define ROW_CHUNK ((int64_t)1 << 14)

/* ================================================================ small helpers */

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

/* Replaces n->params (a flat struct: free() releases it). */
static void set_params(zci_node *n, void *p)
{
    free(n->params);
    n->params = p;
}

static int64_t dims_prod(const int64_t *dims, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= dims[i];
    return p;
}

static zci_status require_f32(const char *op, const zci_tensor *t)
{
    if (t->dtype != ZCI_FLOAT32)
        return zci_error(ZCI_UNSUPPORTED, "tensor '%s' has element type %s; zcinfer's %s supports float", tname(t),
                         zci_dtype_name(t->dtype), op);
    return ZCI_OK;
}

typedef void (*range_fn)(const void *ctx, int64_t lo, int64_t hi);

/* Runs fn over the items [0, n) in contiguous ranges, one per thread when the work (elements
 * touched by all items together) is large enough. */
static void par_for(int64_t n, int64_t work, int nthreads, range_fn fn, const void *ctx)
{
    int nt = nthreads < 1 ? 1 : nthreads;
    if (work < PAR_MIN_ELEMS) nt = 1;
    else if (work / (PAR_MIN_ELEMS / 4) < nt) nt = (int)(work / (PAR_MIN_ELEMS / 4));
    if (n < nt) nt = (int)n;
    if (nt <= 1) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) fn(ctx, n * t / nt, n * (t + 1) / nt);
}

/* ================================================================ Softmax */

typedef struct softmax_params {
    int axis; /* normalised */
} softmax_params;

/* Before opset 13 Softmax flattens the input to 2-D at `axis` (default 1) and normalises each
 * row; from 13 it normalises along `axis` alone (default -1). */
static zci_status softmax_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    ZCI_TRY(require_f32("Softmax", x));
    zci_status st = ZCI_OK;
    int64_t axis = zci_attr_int(n, "axis", n->opset < 13 ? 1 : -1, &st);
    if (st != ZCI_OK) return st;
    int ax = 0;
    if (x->ndim > 0) ZCI_TRY(zci_norm_axis(axis, x->ndim, &ax));
    softmax_params *p = zci_malloc(sizeof *p, "Softmax params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->axis = ax;
    set_params(n, p);
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, x->dims, x->ndim);
    return ZCI_OK;
}

typedef struct softmax_job {
    const float *x;
    float *y;
    int64_t len, inner; /* softmax length, distance between its elements */
    int64_t col_tasks;  /* column blocks per outer index (inner > 1) */
} softmax_job;

/* Rows whose elements are contiguous (inner == 1). */
static void softmax_rows(const void *ctx, int64_t lo, int64_t hi)
{
    const softmax_job *j = ctx;
    const int64_t len = j->len;
    for (int64_t r = lo; r < hi; r++) {
        const float *x = j->x + r * len;
        float *y = j->y + r * len;
        float m = -INFINITY;
        for (int64_t i = 0; i < len; i++) m = x[i] > m ? x[i] : m;
        float s = 0.0f;
        for (int64_t i = 0; i < len; i++) {
            y[i] = expf(x[i] - m);
            s += y[i];
        }
        const float inv = 1.0f / s;
        for (int64_t i = 0; i < len; i++) y[i] *= inv;
    }
}

/* Blocks of up to SOFTMAX_COLS columns (inner > 1): each pass over the axis reads contiguous
 * column runs instead of striding through memory one column at a time. */
static void softmax_cols(const void *ctx, int64_t lo, int64_t hi)
{
    const softmax_job *j = ctx;
    const int64_t len = j->len, inner = j->inner;
    float m[SOFTMAX_COLS], s[SOFTMAX_COLS];
    for (int64_t t = lo; t < hi; t++) {
        int64_t o = t / j->col_tasks, c0 = (t % j->col_tasks) * SOFTMAX_COLS;
        int64_t w = inner - c0 < SOFTMAX_COLS ? inner - c0 : SOFTMAX_COLS;
        const float *x = j->x + o * len * inner + c0;
        float *y = j->y + o * len * inner + c0;
        for (int64_t c = 0; c < w; c++) {
            m[c] = -INFINITY;
            s[c] = 0.0f;
        }
        for (int64_t k = 0; k < len; k++)
            for (int64_t c = 0; c < w; c++) m[c] = x[k * inner + c] > m[c] ? x[k * inner + c] : m[c];
        for (int64_t k = 0; k < len; k++)
            for (int64_t c = 0; c < w; c++) {
                float e = expf(x[k * inner + c] - m[c]);
                y[k * inner + c] = e;
                s[c] += e;
            }
        for (int64_t c = 0; c < w; c++) s[c] = 1.0f / s[c];
        for (int64_t k = 0; k < len; k++)
            for (int64_t c = 0; c < w; c++) y[k * inner + c] *= s[c];
    }
}

static zci_status softmax_cpu(const zci_kernel_ctx *k)
{
    const softmax_params *p = k->n->params;
    const zci_tensor *xt = ZCI_KIN(k, 0);
    int64_t total = zci_tensor_numel(xt);
    if (total <= 0) return ZCI_OK;
    int64_t outer = dims_prod(xt->dims, 0, p->axis), len, inner;
    if (k->n->opset < 13) {
        len = dims_prod(xt->dims, p->axis, xt->ndim);
        inner = 1;
    } else {
        len = xt->ndim ? xt->dims[p->axis] : 1;
        inner = dims_prod(xt->dims, p->axis + 1, xt->ndim);
    }
    softmax_job j = {ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0), len, inner, (inner + SOFTMAX_COLS - 1) / SOFTMAX_COLS};
    if (inner == 1)
        par_for(outer, total, k->nthreads, softmax_rows, &j);
    else
        par_for(outer * j.col_tasks, total, k->nthreads, softmax_cols, &j);
    return ZCI_OK;
}

/* ================================================================ ReduceMean */

typedef struct reduce_params {
    unsigned mask; /* bit i: input axis i is reduced */
    bool noop;     /* empty axes with noop_with_empty_axes: the output is the input */
} reduce_params;

/* Axes: an attribute before opset 18, an optional constant input from 18. No axes reduce every
 * axis, unless noop_with_empty_axes (18) asks for the identity. */
static zci_status reduce_mean_infer(zci_graph *g, zci_node *n)
{
    const bool axes_input = n->opset >= 18;
    ZCI_TRY(zci_check_arity(n, 1, axes_input ? 2 : 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    ZCI_TRY(require_f32("ReduceMean", x));
    zci_status st = ZCI_OK;
    int64_t keepdims = zci_attr_int(n, "keepdims", 1, &st);
    int64_t noop_empty = axes_input ? zci_attr_int(n, "noop_with_empty_axes", 0, &st) : 0;
    if (st != ZCI_OK) return st;

    int64_t *owned = NULL, count = 0;
    const int64_t *axes = NULL;
    if (axes_input) {
        if (ZCI_HAS_IN(n, 1)) ZCI_TRY(zci_const_ints(g, n, 1, &owned, &count));
        axes = owned;
    } else {
        int c = 0;
        axes = zci_attr_ints(n, "axes", &c, &st);
        if (st != ZCI_OK) return st;
        count = c;
    }
    unsigned mask = 0;
    for (int64_t i = 0; i < count && st == ZCI_OK; i++) {
        int ax;
        st = zci_norm_axis(axes[i], x->ndim, &ax);
        if (st == ZCI_OK && (mask >> ax) & 1u)
            st = zci_error(ZCI_INVALID_MODEL, "axis %lld is listed twice", (long long)axes[i]);
        if (st == ZCI_OK) mask |= 1u << ax;
    }
    free(owned);
    if (st != ZCI_OK) return st;

    reduce_params *p = zci_malloc(sizeof *p, "ReduceMean params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->noop = count == 0 && noop_empty;
    p->mask = count == 0 ? (1u << x->ndim) - 1u : mask;
    if (p->noop) p->mask = 0;
    set_params(n, p);

    int64_t dims[ZCI_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (!((p->mask >> i) & 1u))
            dims[nd++] = x->dims[i];
        else if (keepdims)
            dims[nd++] = 1;
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, nd);
    return ZCI_OK;
}

/* The input seen as groups of neighbouring axes that are all reduced or all kept (axes of size 1
 * dropped). The output keeps the kept groups in order, so it is contiguous over them. */
typedef struct reduce_plan {
    int nk, nr;                                    /* kept and reduced groups, outermost first */
    int64_t kdim[ZCI_MAX_DIMS], kst[ZCI_MAX_DIMS]; /* kept: size, input stride */
    int64_t rdim[ZCI_MAX_DIMS], rst[ZCI_MAX_DIMS]; /* reduced: size, input stride */
    int64_t rcount;                                /* elements averaged per output */
    bool last_reduced;                             /* the innermost group is reduced */
    int64_t row;                                   /* length of the innermost group */
} reduce_plan;

static void reduce_plan_make(reduce_plan *p, const zci_tensor *x, unsigned mask)
{
    int64_t gdim[ZCI_MAX_DIMS], gst[ZCI_MAX_DIMS];
    bool gred[ZCI_MAX_DIMS];
    int ng = 0;
    p->rcount = 1;
    for (int i = 0; i < x->ndim; i++) {
        bool red = (mask >> i) & 1u;
        if (red) p->rcount *= x->dims[i];
        if (x->dims[i] == 1) continue;
        int64_t st = dims_prod(x->dims, i + 1, x->ndim);
        if (ng > 0 && gred[ng - 1] == red) {
            gdim[ng - 1] *= x->dims[i];
            gst[ng - 1] = st;
        } else {
            gdim[ng] = x->dims[i];
            gst[ng] = st;
            gred[ng] = red;
            ng++;
        }
    }
    if (ng == 0) { /* a single element */
        gdim[0] = 1;
        gst[0] = 1;
        gred[0] = false;
        ng = 1;
    }
    p->nk = p->nr = 0;
    for (int i = 0; i < ng; i++) {
        if (gred[i]) {
            p->rdim[p->nr] = gdim[i];
            p->rst[p->nr++] = gst[i];
        } else {
            p->kdim[p->nk] = gdim[i];
            p->kst[p->nk++] = gst[i];
        }
    }
    p->last_reduced = gred[ng - 1];
    p->row = gdim[ng - 1];
}

typedef struct reduce_job {
    const reduce_plan *p;
    const float *x;
    float *y;
    int64_t row_tasks; /* chunks per output row (innermost group kept) */
} reduce_job;

/* Input offset of output index o over the kept groups [0, nk). */
static int64_t kept_offset(const reduce_plan *p, int nk, int64_t o)
{
    int64_t off = 0;
    for (int i = nk - 1; i >= 0; i--) {
        off += (o % p->kdim[i]) * p->kst[i];
        o /= p->kdim[i];
    }
    return off;
}

/* Innermost group reduced: each output element sums contiguous runs of p->row elements, one per
 * index of the other reduced groups. */
static void reduce_to_points(const void *ctx, int64_t lo, int64_t hi)
{
    const reduce_job *j = ctx;
    const reduce_plan *p = j->p;
    const int nr = p->nr - 1; /* outer reduced groups */
    int64_t outer_count = dims_prod(p->rdim, 0, nr);
    for (int64_t o = lo; o < hi; o++) {
        const float *base = j->x + kept_offset(p, p->nk, o);
        double sum = 0.0;
        int64_t idx[ZCI_MAX_DIMS] = {0}, off = 0;
        for (int64_t r = 0; r < outer_count; r++) {
            const float *run = base + off;
            for (int64_t i = 0; i < p->row; i++) sum += run[i];
            for (int d = nr - 1; d >= 0; d--) {
                off += p->rst[d];
                if (++idx[d] < p->rdim[d]) break;
                off -= p->rdim[d] * p->rst[d];
                idx[d] = 0;
            }
        }
        j->y[o] = (float)(sum / (double)p->rcount);
    }
}

/* Innermost group kept: each output row (p->row contiguous values) is the mean of input rows,
 * added as whole vectors. A task is one chunk of one output row. */
static void reduce_to_rows(const void *ctx, int64_t lo, int64_t hi)
{
    const reduce_job *j = ctx;
    const reduce_plan *p = j->p;
    const float scale = 1.0f / (float)p->rcount;
    int64_t rtotal = dims_prod(p->rdim, 0, p->nr);
    for (int64_t t = lo; t < hi; t++) {
        int64_t orow = t / j->row_tasks, c0 = (t % j->row_tasks) * ROW_CHUNK;
        int64_t w = p->row - c0 < ROW_CHUNK ? p->row - c0 : ROW_CHUNK;
        const float *base = j->x + kept_offset(p, p->nk - 1, orow) + c0;
        float *y = j->y + orow * p->row + c0;
        for (int64_t c = 0; c < w; c++) y[c] = 0.0f;
        int64_t idx[ZCI_MAX_DIMS] = {0}, off = 0;
        for (int64_t r = 0; r < rtotal; r++) {
            const float *src = base + off;
            for (int64_t c = 0; c < w; c++) y[c] += src[c];
            for (int d = p->nr - 1; d >= 0; d--) {
                off += p->rst[d];
                if (++idx[d] < p->rdim[d]) break;
                off -= p->rdim[d] * p->rst[d];
                idx[d] = 0;
            }
        }
        for (int64_t c = 0; c < w; c++) y[c] *= scale;
    }
}

static zci_status reduce_mean_cpu(const zci_kernel_ctx *k)
{
    const reduce_params *rp = k->n->params;
    const zci_tensor *xt = ZCI_KIN(k, 0), *yt = ZCI_KOUT(k, 0);
    const float *x = ZCI_KIN_DATA(k, 0);
    float *y = ZCI_KOUT_DATA(k, 0);
    int64_t total = zci_tensor_numel(xt), out = zci_tensor_numel(yt);
    if (out <= 0) return ZCI_OK;
    if (rp->noop) {
        if (x != y) memcpy(y, x, zci_tensor_bytes(yt));
        return ZCI_OK;
    }
    reduce_plan p;
    reduce_plan_make(&p, xt, rp->mask);
    if (p.rcount == 0) { /* the mean of nothing */
        for (int64_t i = 0; i < out; i++) y[i] = NAN;
        return ZCI_OK;
    }
    reduce_job j = {&p, x, y, (p.row + ROW_CHUNK - 1) / ROW_CHUNK};
    if (p.last_reduced)
        par_for(out, total, k->nthreads, reduce_to_points, &j);
    else
        par_for(out / p.row * j.row_tasks, total, k->nthreads, reduce_to_rows, &j);
    return ZCI_OK;
}

/* ================================================================ BatchNormalization */

typedef struct batchnorm_params {
    float epsilon;
} batchnorm_params;

/* Inference form only: y = (x - mean) / sqrt(var + epsilon) * scale + B per channel (axis 1).
 * Training mode (statistics of the batch, updated running statistics as extra outputs) is
 * refused. */
static zci_status batchnorm_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 5, 5, n->opset >= 14 ? 3 : 5));
    zci_status st = ZCI_OK;
    int64_t training = n->opset >= 14 ? zci_attr_int(n, "training_mode", 0, &st) : 0;
    int64_t spatial = n->opset < 9 ? zci_attr_int(n, "spatial", 1, &st) : 1;
    float eps = zci_attr_float(n, "epsilon", 1e-5f, &st);
    if (st != ZCI_OK) return st;
    if (training)
        return zci_error(ZCI_UNSUPPORTED,
                         "training_mode=1 is not supported (zcinfer runs inference only)");
    for (int i = 1; i < n->n_out; i++)
        if (n->out[i] >= 0)
            return zci_error(ZCI_UNSUPPORTED,
                             "output %d ('%s') holds training statistics; zcinfer runs "
                             "inference only and supports output 0 alone",
                             i, tname(ZCI_OUT(g, n, i)));
    if (!spatial)
        return zci_error(ZCI_UNSUPPORTED, "spatial=0 (per-element statistics) is not supported");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    for (int i = 0; i < 5; i++) ZCI_TRY(require_f32("BatchNormalization", ZCI_IN(g, n, i)));
    if (x->ndim < 2)
        return zci_error(ZCI_INVALID_MODEL, "input '%s' has rank %d; expected N x C x ...",
                         tname(x), x->ndim);
    for (int i = 1; i < 5; i++) {
        const zci_tensor *t = ZCI_IN(g, n, i);
        if (t->ndim != 1 || t->dims[0] != x->dims[1]) {
            char buf[64];
            return zci_error(ZCI_INVALID_MODEL, "input '%s' has shape %s; expected %lld (the "
                             "channels of '%s')", tname(t), zci_shape_str(t->dims, t->ndim, buf, sizeof buf),
                             (long long)x->dims[1], tname(x));
        }
    }
    batchnorm_params *p = zci_malloc(sizeof *p, "BatchNormalization params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->epsilon = eps;
    set_params(n, p);
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, x->dims, x->ndim);
    return ZCI_OK;
}

typedef struct batchnorm_job {
    const float *x, *scale, *bias, *mean, *var;
    float *y;
    float epsilon;
    int64_t channels, plane, plane_tasks;
} batchnorm_job;

/* A task is one chunk of one (n, c) plane. */
static void batchnorm_range(const void *ctx, int64_t lo, int64_t hi)
{
    const batchnorm_job *j = ctx;
    for (int64_t t = lo; t < hi; t++) {
        int64_t pl = t / j->plane_tasks, c0 = (t % j->plane_tasks) * ROW_CHUNK;
        int64_t w = j->plane - c0 < ROW_CHUNK ? j->plane - c0 : ROW_CHUNK;
        int64_t c = pl % j->channels;
        const float a = j->scale[c] / sqrtf(j->var[c] + j->epsilon);
        const float b = j->bias[c] - j->mean[c] * a;
        const float *x = j->x + pl * j->plane + c0;
        float *y = j->y + pl * j->plane + c0;
        for (int64_t i = 0; i < w; i++) y[i] = x[i] * a + b;
    }
}

static zci_status batchnorm_cpu(const zci_kernel_ctx *k)
{
    const batchnorm_params *p = k->n->params;
    const zci_tensor *xt = ZCI_KIN(k, 0);
    int64_t total = zci_tensor_numel(xt);
    if (total <= 0) return ZCI_OK;
    batchnorm_job j = {
        .x = ZCI_KIN_DATA(k, 0),
        .scale = ZCI_KIN_DATA(k, 1),
        .bias = ZCI_KIN_DATA(k, 2),
        .mean = ZCI_KIN_DATA(k, 3),
        .var = ZCI_KIN_DATA(k, 4),
        .y = ZCI_KOUT_DATA(k, 0),
        .epsilon = p->epsilon,
        .channels = xt->dims[1],
        .plane = dims_prod(xt->dims, 2, xt->ndim),
    };
    j.plane_tasks = (j.plane + ROW_CHUNK - 1) / ROW_CHUNK;
    par_for(total / j.plane * j.plane_tasks, total, k->nthreads, batchnorm_range, &j);
    return ZCI_OK;
}

/* ================================================================ the op table */

const zci_op zci_op_Softmax = {.type = "Softmax", .domain = "", .since = 1, .infer = softmax_infer, .cpu = softmax_cpu};
const zci_op zci_op_ReduceMean = {
    .type = "ReduceMean", .domain = "", .since = 1, .infer = reduce_mean_infer, .cpu = reduce_mean_cpu};
/* Opset 1 differs only by 'consumed_inputs', a hint for old runtimes; 6 adds is_test, which the
 * output rule above covers. */
const zci_op zci_op_BatchNormalization = {
    .type = "BatchNormalization", .domain = "", .since = 1, .infer = batchnorm_infer, .cpu = batchnorm_cpu};
