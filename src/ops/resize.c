/* resize.c: Resize (opsets 10-19+) and its predecessor Upsample (7-9).
 *
 * Planning fixes everything that depends on shapes and attributes: the output size and, per
 * axis, the scale and whether the axis is left as is. The CPU kernel works from per-axis
 * tables (source index pairs, weights, extrapolation flags) that cpu_prepare builds once, so a
 * run only gathers and blends. Nearest mode moves bytes and serves every element type; linear
 * mode is float32. Cubic mode and antialiasing are not supported (ZCI_UNSUPPORTED at load).
 *
 * The coordinate formulas follow the ONNX reference implementation, which generates the
 * conformance data: align_corners and tf_crop_and_resize divide by the fractional output
 * length (scale * input length), and half_pixel_symmetric uses the integer/fractional length
 * ratio. An axis whose scale is 1, size unchanged and roi the full range is copied as is, as the
 * reference does. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/conv.h"
#include "ops/op.h"

#define PAR_MIN_BYTES ((int64_t)1 << 16)

typedef enum resize_mode { MODE_NEAREST, MODE_LINEAR } resize_mode;

typedef enum coord_mode {
    COORD_HALF_PIXEL,
    COORD_HALF_PIXEL_SYMMETRIC,
    COORD_PYTORCH_HALF_PIXEL,
    COORD_ALIGN_CORNERS,
    COORD_ASYMMETRIC,
    COORD_TF_CROP_AND_RESIZE,
} coord_mode;

typedef enum nearest_mode {
    NEAREST_ROUND_PREFER_FLOOR,
    NEAREST_ROUND_PREFER_CEIL,
    NEAREST_FLOOR,
    NEAREST_CEIL,
    /* Resize-10 and Upsample had no nearest_mode: onnxruntime (what models of that era were
     * checked against) truncates when upsampling and rounds up when downsampling. */
    NEAREST_LEGACY,
} nearest_mode;

/* What infer decides; flat, so free() releases it. Also what a GPU backend needs. */
typedef struct resize_params {
    resize_mode mode;
    coord_mode coord;
    nearest_mode nearest;
    float extrapolation; /* tf_crop_and_resize: value outside the input */
    int rank;
    double scale[ZCI_MAX_DIMS];
    double roi_start[ZCI_MAX_DIMS], roi_end[ZCI_MAX_DIMS]; /* tf_crop_and_resize only */
    unsigned char identity[ZCI_MAX_DIMS];                  /* axis copied as is */
} resize_params;

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

/* ================================================================ planning */

/* Reads a constant float32/float16/float64 input into a malloc'd array of doubles. */
static zci_status const_floats(const zci_graph *g, const zci_node *n, int input, double **values,
                               int64_t *count)
{
    const zci_tensor *t = ZCI_IN(g, n, input);
    *values = NULL;
    *count = 0;
    if (t->kind != ZCI_TENSOR_CONSTANT || !t->data)
        return zci_error(ZCI_UNSUPPORTED,
                         "input %d ('%s') must be known when the model is planned (a constant or "
                         "computable from shapes), but it is computed at run time",
                         input, tname(t));
    if (t->dtype != ZCI_FLOAT32 && t->dtype != ZCI_FLOAT16 && t->dtype != ZCI_FLOAT64)
        return zci_error(ZCI_INVALID_MODEL, "input %d ('%s') must be float, found %s", input,
                         tname(t), zci_dtype_name(t->dtype));
    int64_t cnt = zci_tensor_numel(t);
    double *v = zci_malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof *v, "constant floats");
    if (!v) return ZCI_OUT_OF_MEMORY;
    for (int64_t i = 0; i < cnt; i++) {
        switch (t->dtype) {
        case ZCI_FLOAT16: v[i] = zci_f16_to_f32(((const uint16_t *)t->data)[i]); break;
        case ZCI_FLOAT64: v[i] = ((const double *)t->data)[i]; break;
        default: v[i] = ((const float *)t->data)[i]; break;
        }
    }
    *values = v;
    *count = cnt;
    return ZCI_OK;
}

/* An optional input given as "" or as an empty tensor counts as absent (opsets 11-12 had no
 * way to omit roi and scales). */
static int input_present(const zci_graph *g, const zci_node *n, int i)
{
    return ZCI_HAS_IN(n, i) && zci_tensor_numel(ZCI_IN(g, n, i)) > 0;
}

static zci_status parse_string(const char *s, const char *const *names, int count, const char *attr,
                               int *out)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(s, names[i])) {
            *out = i;
            return ZCI_OK;
        }
    return zci_error(ZCI_INVALID_MODEL, "attribute '%s' has the unknown value '%s'", attr, s);
}

/* Reads mode, coordinate_transformation_mode, nearest_mode, antialias, extrapolation_value. */
static zci_status parse_modes(const zci_node *n, int legacy, resize_params *p)
{
    zci_status st = ZCI_OK;
    const char *mode = zci_attr_string(n, "mode", "nearest", &st);
    if (st) return st;
    if (!strcmp(mode, "nearest"))
        p->mode = MODE_NEAREST;
    else if (!strcmp(mode, "linear") || !strcmp(mode, "bilinear"))
        p->mode = MODE_LINEAR;
    else if (!strcmp(mode, "cubic"))
        return zci_error(ZCI_UNSUPPORTED,
                         "mode 'cubic' is not supported; zcinfer supports 'nearest' and 'linear'");
    else
        return zci_error(ZCI_INVALID_MODEL, "attribute 'mode' has the unknown value '%s'", mode);
    if (legacy) {
        p->coord = COORD_ASYMMETRIC;
        p->nearest = NEAREST_LEGACY;
        return ZCI_OK;
    }
    static const char *const coords[] = {"half_pixel",         "half_pixel_symmetric",
                                         "pytorch_half_pixel", "align_corners",
                                         "asymmetric",         "tf_crop_and_resize"};
    static const char *const nearests[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                           "ceil"};
    int v = 0;
    const char *s = zci_attr_string(n, "coordinate_transformation_mode", "half_pixel", &st);
    if (st) return st;
    ZCI_TRY(parse_string(s, coords, 6, "coordinate_transformation_mode", &v));
    p->coord = (coord_mode)v;
    s = zci_attr_string(n, "nearest_mode", "round_prefer_floor", &st);
    if (st) return st;
    ZCI_TRY(parse_string(s, nearests, 4, "nearest_mode", &v));
    p->nearest = (nearest_mode)v;
    /* Antialiasing only changes linear and cubic filters. */
    int64_t antialias = zci_attr_int(n, "antialias", 0, &st);
    if (st) return st;
    if (antialias && p->mode != MODE_NEAREST)
        return zci_error(ZCI_UNSUPPORTED, "antialias=1 is not supported");
    p->extrapolation = zci_attr_float(n, "extrapolation_value", 0.0f, &st);
    /* exclude_outside only reweights taps that fall outside the input: cubic and antialiased
     * filters have them; nearest and plain linear clamp to the edge, which is the same. */
    return st;
}

/* The axes that roi/scales/sizes refer to (opset 18's `axes`, else all), as a list of
 * distinct non-negative axes. */
static zci_status parse_axes(const zci_node *n, int rank, int *axes, int *naxes)
{
    zci_status st = ZCI_OK;
    int c = 0;
    const int64_t *a = zci_attr_ints(n, "axes", &c, &st);
    if (st) return st;
    if (!a) {
        for (int i = 0; i < rank; i++) axes[i] = i;
        *naxes = rank;
        return ZCI_OK;
    }
    if (c > rank) return zci_error(ZCI_INVALID_MODEL, "'axes' has %d entries for rank %d", c, rank);
    int seen[ZCI_MAX_DIMS] = {0};
    for (int i = 0; i < c; i++) {
        ZCI_TRY(zci_norm_axis(a[i], rank, &axes[i]));
        if (seen[axes[i]])
            return zci_error(ZCI_INVALID_MODEL, "axis %lld is repeated", (long long)a[i]);
        seen[axes[i]] = 1;
    }
    *naxes = c;
    return ZCI_OK;
}

/* Output sizes and per-axis scales from `scales` (or `sizes`), listed per entry of axes[]. */
static zci_status plan_sizes(const zci_node *n, const zci_tensor *x, const int *axes, int naxes,
                             const double *scales, const int64_t *sizes, int64_t *out,
                             resize_params *p)
{
    zci_status st = ZCI_OK;
    for (int d = 0; d < x->ndim; d++) {
        out[d] = x->dims[d];
        p->scale[d] = 1.0;
    }
    if (scales) {
        for (int i = 0; i < naxes; i++) {
            int d = axes[i];
            double s = scales[i];
            if (!(s > 0) || !isfinite(s))
                return zci_error(ZCI_INVALID_MODEL, "scale %g for axis %d must be positive", s, d);
            double crop =
                p->coord == COORD_TF_CROP_AND_RESIZE ? p->roi_end[d] - p->roi_start[d] : 1;
            double o = floor((double)x->dims[d] * crop * s);
            if (!(o >= 0) || o > 1e15)
                return zci_error(ZCI_INVALID_MODEL, "axis %d would have %g elements", d, o);
            out[d] = (int64_t)o;
            p->scale[d] = s;
        }
        return ZCI_OK;
    }
    const char *policy = zci_attr_string(n, "keep_aspect_ratio_policy", "stretch", &st);
    if (st) return st;
    for (int i = 0; i < naxes; i++) {
        int d = axes[i];
        if (sizes[i] < 0)
            return zci_error(ZCI_INVALID_MODEL, "size %lld for axis %d is negative",
                             (long long)sizes[i], d);
        if (x->dims[d] == 0 && sizes[i] > 0)
            return zci_error(ZCI_INVALID_MODEL,
                             "axis %d of input '%s' is empty and cannot grow to %lld", d, tname(x),
                             (long long)sizes[i]);
        out[d] = sizes[i];
        p->scale[d] = x->dims[d] ? (double)sizes[i] / (double)x->dims[d] : 1.0;
    }
    if (!strcmp(policy, "stretch")) return ZCI_OK;
    int larger = !strcmp(policy, "not_smaller");
    if (!larger && strcmp(policy, "not_larger"))
        return zci_error(ZCI_INVALID_MODEL,
                         "attribute 'keep_aspect_ratio_policy' has the unknown value '%s'", policy);
    double s = p->scale[axes[0]];
    for (int i = 1; i < naxes; i++) {
        double si = p->scale[axes[i]];
        s = larger ? (si > s ? si : s) : (si < s ? si : s);
    }
    for (int i = 0; i < naxes; i++) {
        int d = axes[i];
        p->scale[d] = s;
        out[d] = (int64_t)(s * (double)x->dims[d] + 0.5); /* round half up, as specified */
    }
    return ZCI_OK;
}

/* Shared by Resize and Upsample: X, then scales (attribute or input) or sizes. */
static zci_status resize_plan(zci_graph *g, zci_node *n, int is_upsample)
{
    zci_status st = ZCI_OK;
    const int legacy = is_upsample || n->opset < 11;
    if (is_upsample)
        ZCI_TRY(zci_check_arity(n, n->opset < 9 ? 1 : 2, n->opset < 9 ? 1 : 2, 1));
    else if (n->opset < 11)
        ZCI_TRY(zci_check_arity(n, 2, 2, 1));
    else
        ZCI_TRY(zci_check_arity(n, 1, 4, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    if (x->ndim < 1)
        return zci_error(ZCI_INVALID_MODEL, "input '%s' is a scalar; nothing to resize", tname(x));
    resize_params *p = zci_calloc(1, sizeof *p, "Resize params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->rank = x->ndim;
    for (int d = 0; d < ZCI_MAX_DIMS; d++) p->roi_end[d] = 1.0;

    double *scales = NULL, *roi = NULL;
    int64_t *sizes = NULL, count = 0, roi_count = 0, dims[ZCI_MAX_DIMS];
    int axes[ZCI_MAX_DIMS], naxes = x->ndim;
    for (int d = 0; d < x->ndim; d++) axes[d] = d;
    st = parse_modes(n, legacy, p);
    size_t esz = zci_dtype_size(x->dtype);
    if (st == ZCI_OK && p->mode == MODE_LINEAR && x->dtype != ZCI_FLOAT32)
        st = zci_error(ZCI_UNSUPPORTED, "linear mode supports float input; '%s' is %s", tname(x),
                       zci_dtype_name(x->dtype));
    if (st == ZCI_OK &&
        (esz == 0 || (p->coord == COORD_TF_CROP_AND_RESIZE && x->dtype != ZCI_FLOAT32)))
        st = zci_error(ZCI_UNSUPPORTED, "input '%s' of type %s is not supported here", tname(x),
                       zci_dtype_name(x->dtype));
    if (st == ZCI_OK && !legacy) st = parse_axes(n, x->ndim, axes, &naxes);
    if (st == ZCI_OK && !legacy) {
        int has_scales = input_present(g, n, 2), has_sizes = input_present(g, n, 3);
        if (has_scales == has_sizes)
            st = zci_error(ZCI_INVALID_MODEL, "exactly one of 'scales' and 'sizes' must be given");
        else if (has_scales)
            st = const_floats(g, n, 2, &scales, &count);
        else
            st = zci_const_ints(g, n, 3, &sizes, &count);
        if (st == ZCI_OK && p->coord == COORD_TF_CROP_AND_RESIZE) {
            if (!input_present(g, n, 1))
                st = zci_error(ZCI_INVALID_MODEL, "tf_crop_and_resize needs input 'roi'");
            else
                st = const_floats(g, n, 1, &roi, &roi_count);
            if (st == ZCI_OK && roi_count != 2 * naxes)
                st = zci_error(ZCI_INVALID_MODEL, "'roi' has %lld values; expected %d",
                               (long long)roi_count, 2 * naxes);
            for (int i = 0; st == ZCI_OK && i < naxes; i++) {
                p->roi_start[axes[i]] = roi[i];
                p->roi_end[axes[i]] = roi[naxes + i];
            }
        }
    } else if (st == ZCI_OK && is_upsample && n->opset < 9) {
        int c = 0;
        const float *f = zci_attr_floats(n, "scales", &c, &st);
        if (st == ZCI_OK && !f) st = zci_error(ZCI_INVALID_MODEL, "attribute 'scales' is missing");
        if (st == ZCI_OK) {
            scales = zci_malloc((size_t)(c > 0 ? c : 1) * sizeof *scales, "scales");
            if (!scales) st = ZCI_OUT_OF_MEMORY;
            for (int i = 0; st == ZCI_OK && i < c; i++) scales[i] = f[i];
            count = c;
        }
    } else if (st == ZCI_OK) {
        st = const_floats(g, n, 1, &scales, &count);
    }
    if (st == ZCI_OK && count != naxes)
        st = zci_error(ZCI_INVALID_MODEL, "'%s' has %lld values; expected %d (%s)",
                       scales ? "scales" : "sizes", (long long)count, naxes,
                       naxes == x->ndim ? "the input's rank" : "the length of 'axes'");
    if (st == ZCI_OK) st = plan_sizes(n, x, axes, naxes, scales, sizes, dims, p);
    free(scales);
    free(sizes);
    free(roi);
    if (st == ZCI_OK && zci_shape_numel(dims, x->ndim) < 0)
        st = zci_error(ZCI_INVALID_MODEL, "the output would be too large");
    if (st) {
        free(p);
        return st;
    }
    for (int d = 0; d < x->ndim; d++) {
        /* |s - 1| <= 1e-9 * max(|s|, 1): Python's math.isclose, which the reference uses. */
        int unit = fabs(p->scale[d] - 1.0) <= 1e-9 * fmax(fabs(p->scale[d]), 1.0);
        int full = p->coord != COORD_TF_CROP_AND_RESIZE ||
                   (fabs(p->roi_start[d]) <= 1e-9 && fabs(p->roi_end[d] - 1.0) <= 1e-9);
        p->identity[d] = unit && dims[d] == x->dims[d] && full;
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, x->ndim);
    free(n->params);
    n->params = p;
    return ZCI_OK;
}

static zci_status resize_infer(zci_graph *g, zci_node *n) { return resize_plan(g, n, 0); }
static zci_status upsample_infer(zci_graph *g, zci_node *n) { return resize_plan(g, n, 1); }

/* ================================================================ per-axis tables */

typedef struct axis_table {
    int64_t *lo, *hi;   /* source indices (equal in nearest mode) */
    float *w;           /* linear: weight of hi; lo gets 1 - w */
    unsigned char *ext; /* tf_crop_and_resize: the output takes the extrapolation value */
    int64_t factor;     /* nearest: k when lo[o] == o / k and out == k * in, else 0 */
    int blend;          /* some w is not 0 */
    int any_ext;
} axis_table;

/* Kernel view of the shapes: rank at least 2 (a 1-D input gets a leading axis of 1), so the
 * last two axes are always a plane of rows. */
typedef struct resize_state {
    int rank;
    int block; /* > 0: the tensors are channel-blocked (ops/conv.h): in[1], out[1] count blocks and
                  an element is `block` values */
    int64_t in[ZCI_MAX_DIMS], out[ZCI_MAX_DIMS], in_stride[ZCI_MAX_DIMS];
    axis_table ax[ZCI_MAX_DIMS];
} resize_state;

/* Source coordinate of output index x along one axis (ONNX reference formulas). */
static double source_coord(const resize_params *p, int d, double x, int64_t in, int64_t out)
{
    const double s = p->scale[d], out_w = s * (double)in;
    switch (p->coord) {
    case COORD_HALF_PIXEL: return (x + 0.5) / s - 0.5;
    case COORD_HALF_PIXEL_SYMMETRIC: {
        double adjustment = (double)out / out_w, center = (double)in / 2;
        return center * (1 - adjustment) + (x + 0.5) / s - 0.5;
    }
    case COORD_PYTORCH_HALF_PIXEL: return out > 1 ? (x + 0.5) / s - 0.5 : 0.0;
    case COORD_ALIGN_CORNERS: return out_w == 1 ? 0.0 : x * (double)(in - 1) / (out_w - 1);
    case COORD_TF_CROP_AND_RESIZE: {
        double r0 = p->roi_start[d], r1 = p->roi_end[d];
        if (out_w == 1) return 0.5 * (r0 + r1) * (double)(in - 1);
        return r0 * (double)(in - 1) + x * (r1 - r0) * (double)(in - 1) / (out_w - 1);
    }
    case COORD_ASYMMETRIC:
    default: return x / s;
    }
}

static int64_t nearest_index(const resize_params *p, int d, double x)
{
    double f = floor(x), frac = x - f;
    switch (p->nearest) {
    case NEAREST_ROUND_PREFER_FLOOR: return (int64_t)(frac <= 0.5 ? f : f + 1);
    case NEAREST_ROUND_PREFER_CEIL: return (int64_t)(frac < 0.5 ? f : f + 1);
    case NEAREST_FLOOR: return (int64_t)f;
    case NEAREST_CEIL: return (int64_t)ceil(x);
    case NEAREST_LEGACY:
    default: return (int64_t)(p->scale[d] < 1 ? ceil(x) : f);
    }
}

static int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

static zci_status build_axis(const resize_params *p, int d, int64_t in, int64_t out, axis_table *t)
{
    size_t m = (size_t)(out > 0 ? out : 1);
    t->lo = zci_malloc(m * sizeof *t->lo, "Resize table");
    t->hi = zci_malloc(m * sizeof *t->hi, "Resize table");
    t->w = zci_malloc(m * sizeof *t->w, "Resize table");
    t->ext = zci_malloc(m, "Resize table");
    if (!t->lo || !t->hi || !t->w || !t->ext) return ZCI_OUT_OF_MEMORY;
    for (int64_t o = 0; o < out; o++) {
        t->lo[o] = t->hi[o] = o;
        t->w[o] = 0;
        t->ext[o] = 0;
        if (d < 0 || p->identity[d]) continue;
        double x = source_coord(p, d, (double)o, in, out);
        if (p->coord == COORD_TF_CROP_AND_RESIZE && (x < 0 || x > (double)(in - 1))) {
            t->lo[o] = t->hi[o] = 0;
            t->ext[o] = 1;
            t->any_ext = 1;
            continue;
        }
        if (p->mode == MODE_NEAREST) {
            t->lo[o] = t->hi[o] = clamp_index(nearest_index(p, d, x), in);
            continue;
        }
        double f = floor(x);
        t->lo[o] = clamp_index((int64_t)f, in);
        t->hi[o] = clamp_index((int64_t)f + 1, in);
        t->w[o] = (float)(x - f);
        if (t->w[o] != 0 && t->lo[o] != t->hi[o]) t->blend = 1;
    }
    t->factor = 0;
    if (p->mode == MODE_NEAREST && !t->any_ext && in > 0 && out % in == 0) {
        int64_t k = out / in;
        int ok = 1;
        for (int64_t o = 0; ok && o < out; o++) ok = t->lo[o] == o / k;
        if (ok) t->factor = k;
    }
    return ZCI_OK;
}

static void release_state(void *state)
{
    resize_state *s = state;
    if (!s) return;
    for (int d = 0; d < ZCI_MAX_DIMS; d++) {
        free(s->ax[d].lo);
        free(s->ax[d].hi);
        free(s->ax[d].w);
        free(s->ax[d].ext);
    }
    free(s);
}

static zci_status build_state(const zci_graph *g, const zci_node *n, resize_state **out)
{
    const resize_params *p = n->params;
    const zci_tensor *x = ZCI_IN(g, n, 0), *y = ZCI_OUT(g, n, 0);
    resize_state *s = zci_calloc(1, sizeof *s, "Resize state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    const int lead = x->ndim < 2 ? 2 - x->ndim : 0;
    s->rank = x->ndim + lead;
    for (int d = 0; d < s->rank; d++) {
        int src = d - lead; /* -1: the added leading axis */
        s->in[d] = src < 0 ? 1 : x->dims[src];
        s->out[d] = src < 0 ? 1 : y->dims[src];
        zci_status st = build_axis(p, src, s->in[d], s->out[d], &s->ax[d]);
        if (st) {
            release_state(s);
            return st;
        }
    }
    int64_t stride = 1;
    for (int d = s->rank - 1; d >= 0; d--) {
        s->in_stride[d] = stride;
        stride *= s->in[d];
    }
    *out = s;
    return ZCI_OK;
}

int zci_resize_blockable(const zci_graph *g, const zci_node *n)
{
    const resize_params *p = n->params;
    if ((strcmp(n->op_type, "Resize") && strcmp(n->op_type, "Upsample")) || *n->domain || !p) return 0;
    const zci_tensor *x = ZCI_IN(g, n, 0);
    return p->mode == MODE_NEAREST && p->coord != COORD_TF_CROP_AND_RESIZE && p->rank == 4 && p->identity[0] &&
           p->identity[1] && x->dims[0] == 1 && x->dtype == ZCI_FLOAT32;
}

static zci_status resize_prepare(const zci_graph *g, const zci_node *n, int nthreads, void **state)
{
    (void)nthreads;
    resize_state *s = NULL;
    ZCI_TRY(build_state(g, n, &s));
    int block = zci_conv_tensor_block(g, n->in[0]);
    if (block < 0) {
        release_state(s);
        return zci_error(ZCI_OUT_OF_MEMORY, "cannot plan the tensor layout");
    }
    if (block > 0) {
        /* (1, C / B, H, W, B): the same nearest kernel over elements of B values; the channel
         * axis copies as is, so its table's first C / B entries still map i to i */
        s->block = block;
        s->in[1] /= block;
        s->out[1] /= block;
        s->in_stride[0] = s->in[1] * s->in_stride[1];
    }
    *state = s;
    return ZCI_OK;
}

/* ================================================================ kernels */

static int pick_threads(int64_t bytes, int64_t tasks, int nthreads)
{
    int64_t nt = bytes / PAR_MIN_BYTES;
    if (nt > nthreads) nt = nthreads;
    if (nt > tasks) nt = tasks;
    return nt < 1 ? 1 : (int)nt;
}

/* Index of outer row `r` (over axes [0, rank-2)) into per-axis output coordinates. */
static void outer_coords(const resize_state *s, int64_t r, int64_t *c)
{
    for (int d = s->rank - 3; d >= 0; d--) {
        c[d] = r % s->out[d];
        r /= s->out[d];
    }
}

static void fill_float(float *dst, int64_t n, float v)
{
    for (int64_t i = 0; i < n; i++) dst[i] = v;
}

/* dst[x] = src[idx[x]] for elements of esz bytes. */
static void gather_row(char *dst, const char *src, const int64_t *idx, int64_t n, size_t esz)
{
    switch (esz) {
    case 1:
        for (int64_t i = 0; i < n; i++) dst[i] = src[idx[i]];
        break;
    case 2:
        for (int64_t i = 0; i < n; i++) memcpy(dst + 2 * i, src + 2 * idx[i], 2);
        break;
    case 4:
        for (int64_t i = 0; i < n; i++) memcpy(dst + 4 * i, src + 4 * idx[i], 4);
        break;
    case 8:
        for (int64_t i = 0; i < n; i++) memcpy(dst + 8 * i, src + 8 * idx[i], 8);
        break;
    default:
        for (int64_t i = 0; i < n; i++)
            memcpy(dst + (size_t)i * esz, src + (size_t)idx[i] * esz, esz);
        break;
    }
}

/* Integer-factor nearest upsampling of a row: each of n source elements written k times (the
 * YOLO 2x upsample spends its time here). */
static void repeat_row(char *dst, const char *src, int64_t n, int64_t k, size_t esz)
{
    if (k == 1) {
        memcpy(dst, src, (size_t)n * esz);
        return;
    }
    if (esz == 4 && k == 2) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, src + 4 * i, 4);
            memcpy(dst + 8 * i, &v, 4);
            memcpy(dst + 8 * i + 4, &v, 4);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++)
            memcpy(dst + (size_t)(i * k + j) * esz, src + (size_t)i * esz, esz);
}

static void nearest_run(const resize_state *s, const resize_params *p, const char *x, char *y,
                        size_t esz, int nthreads)
{
    const int R = s->rank, H = R - 2, W = R - 1;
    const axis_table *th = &s->ax[H], *tw = &s->ax[W];
    const int64_t Hout = s->out[H], Wout = s->out[W];
    const int64_t row_bytes = Wout * (int64_t)esz;
    int64_t outer = 1;
    for (int d = 0; d < H; d++) outer *= s->out[d];
    const int64_t tasks = outer * Hout;
    int nt = pick_threads(tasks * row_bytes, tasks, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t y0 = t % Hout, ob = t / Hout;
        /* Output rows reading the same source row are copied from the first of their run. */
        if (y0 > 0 && th->lo[y0] == th->lo[y0 - 1] && th->ext[y0] == th->ext[y0 - 1]) continue;
        int64_t c[ZCI_MAX_DIMS], off = 0;
        int ext = th->ext[y0];
        outer_coords(s, ob, c);
        for (int d = 0; d < H; d++) {
            off += s->ax[d].lo[c[d]] * s->in_stride[d];
            ext |= s->ax[d].ext[c[d]];
        }
        char *dst = y + (size_t)(ob * Hout + y0) * (size_t)row_bytes;
        const char *src = x + (size_t)(off + th->lo[y0] * s->in[W]) * esz;
        if (ext) {
            fill_float((float *)dst, Wout, p->extrapolation);
        } else if (tw->factor) {
            repeat_row(dst, src, s->in[W], tw->factor, esz);
        } else {
            gather_row(dst, src, tw->lo, Wout, esz);
            if (tw->any_ext)
                for (int64_t i = 0; i < Wout; i++)
                    if (tw->ext[i]) ((float *)dst)[i] = p->extrapolation;
        }
        for (int64_t y1 = y0 + 1;
             y1 < Hout && th->lo[y1] == th->lo[y0] && th->ext[y1] == th->ext[y0]; y1++)
            memcpy(dst + (size_t)(y1 - y0) * (size_t)row_bytes, dst, (size_t)row_bytes);
    }
}

/* One output row of bilinear interpolation of the plane at `plane`, scaled by `weight`, written
 * (first) or added. */
static void linear_row(float *dst, const float *plane, const resize_state *s, int64_t yo,
                       float weight, int first)
{
    const int H = s->rank - 2, W = s->rank - 1;
    const axis_table *th = &s->ax[H], *tw = &s->ax[W];
    const int64_t Win = s->in[W], Wout = s->out[W];
    const float *r0 = plane + th->lo[yo] * Win, *r1 = plane + th->hi[yo] * Win;
    const float wy = th->w[yo] * weight, wy0 = weight - wy;
    for (int64_t i = 0; i < Wout; i++) {
        const float wx = tw->w[i], wx0 = 1.0f - wx;
        const int64_t a = tw->lo[i], b = tw->hi[i];
        float v = wy0 * (r0[a] * wx0 + r0[b] * wx) + wy * (r1[a] * wx0 + r1[b] * wx);
        dst[i] = first ? v : dst[i] + v;
    }
}

static void linear_run(const resize_state *s, const resize_params *p, const float *x, float *y,
                       int nthreads)
{
    const int R = s->rank, H = R - 2, W = R - 1;
    const axis_table *th = &s->ax[H], *tw = &s->ax[W];
    const int64_t Hout = s->out[H], Wout = s->out[W];
    /* Outer axes that blend two source slices; each adds a factor 2 of corner planes. */
    int blend_axes[ZCI_MAX_DIMS], nblend = 0;
    for (int d = 0; d < H; d++)
        if (s->ax[d].blend) blend_axes[nblend++] = d;
    int64_t outer = 1;
    for (int d = 0; d < H; d++) outer *= s->out[d];
    const int64_t tasks = outer * Hout;
    int nt = pick_threads(tasks * Wout * (int64_t)sizeof(float) * (1 << nblend), tasks, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t yo = t % Hout, ob = t / Hout;
        float *dst = y + (ob * Hout + yo) * Wout;
        int64_t c[ZCI_MAX_DIMS], base = 0;
        int ext = th->ext[yo];
        outer_coords(s, ob, c);
        for (int d = 0; d < H; d++) {
            base += s->ax[d].lo[c[d]] * s->in_stride[d];
            ext |= s->ax[d].ext[c[d]];
        }
        if (ext) {
            fill_float(dst, Wout, p->extrapolation);
            continue;
        }
        for (int corner = 0; corner < (1 << nblend); corner++) {
            int64_t off = base;
            float weight = 1.0f;
            for (int j = 0; j < nblend; j++) {
                const axis_table *ta = &s->ax[blend_axes[j]];
                const int64_t cj = c[blend_axes[j]];
                if (corner >> j & 1) {
                    off += (ta->hi[cj] - ta->lo[cj]) * s->in_stride[blend_axes[j]];
                    weight *= ta->w[cj];
                } else {
                    weight *= 1.0f - ta->w[cj];
                }
            }
            linear_row(dst, x + off, s, yo, weight, corner == 0);
        }
        if (tw->any_ext)
            for (int64_t i = 0; i < Wout; i++)
                if (tw->ext[i]) dst[i] = p->extrapolation;
    }
}

static zci_status resize_cpu(const zci_kernel_ctx *k)
{
    const resize_params *p = k->n->params;
    const resize_state *s = k->state;
    resize_state *own = NULL;
    if (!s) {
        ZCI_TRY(build_state(k->g, k->n, &own));
        s = own;
    }
    const zci_tensor *x = ZCI_KIN(k, 0), *yt = ZCI_KOUT(k, 0);
    if (zci_tensor_numel(yt) > 0) {
        if (p->mode == MODE_LINEAR)
            linear_run(s, p, ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0), k->nthreads);
        else
            nearest_run(s, p, ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0),
                        zci_dtype_size(x->dtype) * (size_t)(s->block ? s->block : 1), k->nthreads);
    }
    release_state(own);
    return ZCI_OK;
}

const zci_op zci_op_Resize = {.type = "Resize",
                              .domain = "",
                              .since = 10,
                              .infer = resize_infer,
                              .cpu = resize_cpu,
                              .cpu_prepare = resize_prepare,
                              .cpu_release = release_state};
const zci_op zci_op_Upsample = {.type = "Upsample",
                                .domain = "",
                                .since = 7,
                                .infer = upsample_infer,
                                .cpu = resize_cpu,
                                .cpu_prepare = resize_prepare,
                                .cpu_release = release_state};
