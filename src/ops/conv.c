/* conv.c: Conv (1-D, 2-D and 3-D, any group, dilations, strides, explicit or automatic pads,
 * optional bias, fused epilogue: see conv.h) and the window geometry the pooling ops share.
 *
 * CPU paths, chosen once at planning (cpu_prepare):
 *  - oneDNN (when built with it, the weights are constant and the input is not): see
 *    cpu/dnnl_conv.c. Tensors flowing between such convolutions stay channel-blocked (see "CPU
 *    storage of activations" below);
 *  - built-in: each (image, group) is one GEMM, weights (M/G x C/G*kvol, packed once) times the
 *    image's patches. A pointwise conv (1x1, stride 1, no pads) multiplies the image itself;
 *    any other packs the patches straight from the image into the GEMM's B panels (implicit
 *    im2col: no patch matrix is ever stored). Bias, residual and activation run as the GEMM's
 *    epilogue while each block of the output is in cache;
 *  - depthwise (one input channel per group): a direct kernel, a GEMM with K = kernel size
 *    would be all overhead.
 * Without prepared state (constant folding) the kernel runs the built-in path unpacked.
 * Setting the environment variable ZCI_CPU_NO_DNNL=1 makes cpu_prepare skip oneDNN (to compare
 * the two paths; tests/ops_conv_kernels.c does). */
#include "ops/conv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/gemm.h"
#include "ops/op.h"
#ifdef ZCI_HAVE_DNNL
#include "cpu/dnnl_conv.h"
#endif

/* The epilogue's selects (ReLU, clamps, the exponential's range) vectorise only when the
 * compiler may evaluate both sides, which ISO C's default trapping-math forbids; nothing here
 * reads floating-point exception flags. Without jump threading: it copies the SiLU and sigmoid
 * loops' tails for each clamp of the exponential's argument, and the copies, computed in every
 * lane and blended, divide by 1 + e^88 into denormals that cost microcode assists (the built-in
 * path ran YOLOv5s 5-10% slower). Contraction gives the depthwise kernel its FMAs. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "no-thread-jumps", "fp-contract=fast")
#endif
/* after the pragma: an inline function compiled under other options would not inline */
#include "cpu/fast_exp.h"

/* ================================================================ window geometry */

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

static int64_t ceil_div64(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
static int64_t floor_div64(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Reads an INTS attribute of exactly `want` values, all >= min_value, into out; absent (or
 * empty, as some exporters write it) leaves out as it is. */
static zci_status read_ints(const zci_node *n, const char *name, int want, int64_t min_value, int64_t *out)
{
    zci_status st = ZCI_OK;
    int cnt = 0;
    const int64_t *v = zci_attr_ints(n, name, &cnt, &st);
    if (st != ZCI_OK) return zci_error(st, "attribute '%s' must be a list of ints", name);
    if (!v || cnt == 0) return ZCI_OK;
    if (cnt != want)
        return zci_error(ZCI_INVALID_MODEL, "attribute '%s' has %d values, expected %d", name, cnt, want);
    for (int i = 0; i < cnt; i++) {
        if (v[i] < min_value)
            return zci_error(ZCI_INVALID_MODEL, "attribute '%s'[%d] is %lld, must be at least %lld", name, i,
                             (long long)v[i], (long long)min_value);
        out[i] = v[i];
    }
    return ZCI_OK;
}

/* Declared in conv.h for pool.c: resolves strides, dilations, pads and auto_pad of node n for an
 * input of spatial size in[0..nsp) and the given kernel, and computes the output size
 * (ceil_mode: rounded up, dropping a last window that would start in the end padding). */
zci_status zci_window_init(const zci_node *n, int nsp, const int64_t *in, const int64_t *kernel, int ceil_mode,
                           zci_window *w)
{
    zci_status st = ZCI_OK;
    memset(w, 0, sizeof *w);
    if (nsp < 1 || nsp > 3)
        return zci_error(ZCI_UNSUPPORTED, "%d spatial dimensions; zcinfer supports 1 to 3", nsp);
    w->nsp = nsp;
    for (int i = 0; i < 3; i++) {
        w->in[i] = w->out[i] = w->kernel[i] = w->stride[i] = w->dilation[i] = 1;
        w->pad_begin[i] = w->pad_end[i] = 0;
    }
    for (int i = 0; i < nsp; i++) {
        w->in[i] = in[i];
        w->kernel[i] = kernel[i];
        if (kernel[i] < 1)
            return zci_error(ZCI_INVALID_MODEL, "kernel dimension %d is %lld, must be at least 1", i,
                             (long long)kernel[i]);
    }
    ZCI_TRY(read_ints(n, "strides", nsp, 1, w->stride));
    ZCI_TRY(read_ints(n, "dilations", nsp, 1, w->dilation));
    int64_t pads[6] = {0};
    ZCI_TRY(read_ints(n, "pads", 2 * nsp, 0, pads));
    const char *auto_pad = zci_attr_string(n, "auto_pad", "NOTSET", &st);
    if (st != ZCI_OK) return zci_error(st, "attribute 'auto_pad' must be a string");
    int same_upper = !strcmp(auto_pad, "SAME_UPPER"), same_lower = !strcmp(auto_pad, "SAME_LOWER");
    int valid = !strcmp(auto_pad, "VALID");
    if (!same_upper && !same_lower && !valid && strcmp(auto_pad, "NOTSET") && *auto_pad)
        return zci_error(ZCI_INVALID_MODEL, "attribute 'auto_pad' is '%s', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID",
                         auto_pad);
    for (int i = 0; i < nsp; i++) {
        int64_t extent = (w->kernel[i] - 1) * w->dilation[i] + 1;
        if (same_upper || same_lower) {
            /* output ceil(in / stride), the padding split evenly with the odd one at the end
             * (SAME_UPPER) or the beginning (SAME_LOWER) */
            w->out[i] = ceil_div64(in[i], w->stride[i]);
            int64_t total = (w->out[i] - 1) * w->stride[i] + extent - in[i];
            if (total < 0) total = 0;
            w->pad_begin[i] = same_upper ? total / 2 : total - total / 2;
            w->pad_end[i] = total - w->pad_begin[i];
            continue;
        }
        if (!valid) {
            w->pad_begin[i] = pads[i];
            w->pad_end[i] = pads[nsp + i];
        }
        int64_t span = in[i] + w->pad_begin[i] + w->pad_end[i] - extent;
        if (span < 0)
            return zci_error(ZCI_INVALID_MODEL,
                             "spatial dimension %d: the input (%lld, padded by %lld + %lld) is smaller than the "
                             "kernel's extent %lld",
                             i, (long long)in[i], (long long)w->pad_begin[i], (long long)w->pad_end[i],
                             (long long)extent);
        w->out[i] = (ceil_mode ? ceil_div64(span, w->stride[i]) : floor_div64(span, w->stride[i])) + 1;
        /* a window may not start in the end padding (PyTorch's and the ONNX reference's rule) */
        if (ceil_mode && (w->out[i] - 1) * w->stride[i] >= in[i] + w->pad_begin[i]) w->out[i]--;
    }
    return ZCI_OK;
}

/* ================================================================ infer */

static zci_status conv_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    int64_t sum_input64 = zci_attr_int(n, ZCI_CONV_ATTR_SUM_INPUT, -1, &st);
    int activation = (int)zci_attr_int(n, ZCI_CONV_ATTR_ACTIVATION, ZCI_ACT_NONE, &st);
    float act_alpha = zci_attr_float(n, ZCI_CONV_ATTR_ALPHA, 0.0f, &st);
    float act_beta = zci_attr_float(n, ZCI_CONV_ATTR_BETA, 0.0f, &st);
    int sum_first = (int)zci_attr_int(n, ZCI_CONV_ATTR_SUM_FIRST, 0, &st);
    if (st != ZCI_OK) return zci_error(st, "a zci_* fusion attribute has the wrong type");
    /* checked as int64 before any arithmetic: a damaged engine file may hold any value */
    if (sum_input64 != -1 && (sum_input64 < 3 || sum_input64 >= n->n_in))
        return zci_error(ZCI_INVALID_MODEL, "attribute '%s' is %lld: the residual must be an input after X, W and B",
                         ZCI_CONV_ATTR_SUM_INPUT, (long long)sum_input64);
    int sum_input = (int)sum_input64;
    if (activation < 0 || activation >= ZCI_ACT_COUNT_)
        return zci_error(ZCI_INVALID_MODEL, "attribute '%s' is %d, not a zci_activation", ZCI_CONV_ATTR_ACTIVATION,
                         activation);
    ZCI_TRY(zci_check_arity(n, 2, sum_input >= 0 ? sum_input + 1 : 3, 1));

    const zci_tensor *x = ZCI_IN(g, n, 0), *wt = ZCI_IN(g, n, 1);
    if (x->dtype != ZCI_FLOAT32 || wt->dtype != ZCI_FLOAT32)
        return zci_error(ZCI_UNSUPPORTED, "X ('%s') and W ('%s') must be float32, found %s and %s", tname(x),
                         tname(wt), zci_dtype_name(x->dtype), zci_dtype_name(wt->dtype));
    if (x->ndim < 3 || x->ndim > 5)
        return zci_error(ZCI_UNSUPPORTED, "X ('%s') has rank %d; zcinfer supports 1-D to 3-D convolutions (rank 3 to 5)",
                         tname(x), x->ndim);
    if (wt->ndim != x->ndim)
        return zci_error(ZCI_INVALID_MODEL, "W ('%s') has rank %d, X ('%s') rank %d: they must match", tname(wt),
                         wt->ndim, tname(x), x->ndim);
    int nsp = x->ndim - 2;
    int64_t group = zci_attr_int(n, "group", 1, &st);
    if (st != ZCI_OK) return zci_error(st, "attribute 'group' must be an int");
    int64_t cin = x->dims[1], m = wt->dims[0];
    if (group < 1 || cin % group || m % group || wt->dims[1] * group != cin)
        return zci_error(ZCI_INVALID_MODEL,
                         "X ('%s') has %lld channels, W ('%s') is %lld x %lld x ..., group %lld: expected W's second "
                         "dimension times group to equal the channels and group to divide W's first dimension",
                         tname(x), (long long)cin, tname(wt), (long long)m, (long long)wt->dims[1], (long long)group);
    int64_t kernel[3];
    for (int i = 0; i < nsp; i++) kernel[i] = wt->dims[2 + i];
    int64_t kattr[3] = {0};
    memcpy(kattr, kernel, sizeof kattr);
    ZCI_TRY(read_ints(n, "kernel_shape", nsp, 1, kattr));
    for (int i = 0; i < nsp; i++)
        if (kattr[i] != kernel[i])
            return zci_error(ZCI_INVALID_MODEL, "attribute 'kernel_shape'[%d] is %lld but W ('%s') has %lld there", i,
                             (long long)kattr[i], tname(wt), (long long)kernel[i]);
    int has_bias = ZCI_HAS_IN(n, 2);
    if (has_bias) {
        const zci_tensor *b = ZCI_IN(g, n, 2);
        if (b->dtype != ZCI_FLOAT32 || b->ndim != 1 || b->dims[0] != m)
            return zci_error(ZCI_INVALID_MODEL, "B ('%s') must be float32 of shape [%lld], found %s of rank %d",
                             tname(b), (long long)m, zci_dtype_name(b->dtype), b->ndim);
    }

    zci_conv_params *p = zci_calloc(1, sizeof *p, "Conv params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    st = zci_window_init(n, nsp, x->dims + 2, kernel, 0, &p->w);
    if (st != ZCI_OK) {
        free(p);
        return st;
    }
    p->batch = x->dims[0];
    p->in_ch = cin;
    p->out_ch = m;
    p->group = group;
    p->has_bias = has_bias;
    p->activation = activation;
    p->act_alpha = act_alpha;
    p->act_beta = act_beta;
    p->sum_input = sum_input;
    p->sum_first = sum_first != 0;

    int64_t ydims[5] = {p->batch, m};
    for (int i = 0; i < nsp; i++) ydims[2 + i] = p->w.out[i];
    if (sum_input >= 0) {
        if (!ZCI_HAS_IN(n, sum_input)) {
            free(p);
            return zci_error(ZCI_INVALID_MODEL, "the residual input %d is missing", sum_input);
        }
        const zci_tensor *s = ZCI_IN(g, n, sum_input);
        if (s->dtype != ZCI_FLOAT32 || s->ndim != x->ndim || memcmp(s->dims, ydims, sizeof(int64_t) * (size_t)x->ndim)) {
            char want[96], found[96];
            free(p);
            return zci_error(ZCI_INVALID_MODEL, "the residual '%s' must be float32 of the output's shape %s, found %s %s",
                             tname(s), zci_shape_str(ydims, x->ndim, want, sizeof want), zci_dtype_name(s->dtype),
                             zci_shape_str(s->dims, s->ndim, found, sizeof found));
        }
    }
    free(n->params);
    n->params = p;
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), ZCI_FLOAT32, ydims, x->ndim);
    return ZCI_OK;
}

zci_status zci_conv_set_fusion(zci_graph *g, zci_node *n, zci_activation activation, float alpha, float beta,
                               int sum_input, int sum_first)
{
    if (!n || strcmp(n->op_type, "Conv"))
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_conv_set_fusion: the node is not a Conv");
    ZCI_TRY(zci_node_set_int(n, ZCI_CONV_ATTR_ACTIVATION, activation));
    ZCI_TRY(zci_node_set_float(n, ZCI_CONV_ATTR_ALPHA, alpha));
    ZCI_TRY(zci_node_set_float(n, ZCI_CONV_ATTR_BETA, beta));
    ZCI_TRY(zci_node_set_int(n, ZCI_CONV_ATTR_SUM_INPUT, sum_input));
    ZCI_TRY(zci_node_set_int(n, ZCI_CONV_ATTR_SUM_FIRST, sum_first));
    return conv_infer(g, n);
}

/* ================================================================ epilogue */

float zci_activation_apply(zci_activation act, float x, float alpha, float beta)
{
    switch (act) {
    case ZCI_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case ZCI_ACT_SILU: return x / (1.0f + expf(-x));
    case ZCI_ACT_LEAKY_RELU: return x >= 0.0f ? x : alpha * x;
    case ZCI_ACT_CLIP: return x < alpha ? alpha : (x > beta ? beta : x);
    case ZCI_ACT_HARDSWISH: {
        float h = x / 6.0f + 0.5f;
        return x * (h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h));
    }
    case ZCI_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    default: return x;
    }
}

/* One output row: y += bias, then the residual and the activation in the params' order. Each
 * step is its own loop so that each vectorises. */
static void finish_row(float *y, int64_t n, float bias, const float *sum, const zci_conv_params *p)
{
    if (bias != 0.0f)
        for (int64_t i = 0; i < n; i++) y[i] += bias;
    if (sum && p->sum_first)
        for (int64_t i = 0; i < n; i++) y[i] += sum[i];
    const float a = p->act_alpha, b = p->act_beta;
    switch (p->activation) {
    case ZCI_ACT_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0.0f ? y[i] : 0.0f;
        break;
    case ZCI_ACT_SILU:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] / (1.0f + zci_exp_fast(-y[i]));
        break;
    case ZCI_ACT_LEAKY_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] >= 0.0f ? y[i] : a * y[i];
        break;
    case ZCI_ACT_CLIP:
        for (int64_t i = 0; i < n; i++) {
            float v = y[i] < a ? a : y[i];
            y[i] = v > b ? b : v;
        }
        break;
    case ZCI_ACT_HARDSWISH:
        for (int64_t i = 0; i < n; i++) {
            float h = y[i] * (1.0f / 6.0f) + 0.5f;
            h = h < 0.0f ? 0.0f : h;
            h = h > 1.0f ? 1.0f : h;
            y[i] *= h;
        }
        break;
    case ZCI_ACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + zci_exp_fast(-y[i]));
        break;
    default: break;
    }
    if (sum && !p->sum_first)
        for (int64_t i = 0; i < n; i++) y[i] += sum[i];
}

static int has_epilogue(const zci_conv_params *p, const float *bias, const float *sum)
{
    return bias || sum || p->activation != ZCI_ACT_NONE;
}

/* The GEMM's epilogue: rows are output channels of one (image, group), columns positions. */
typedef struct epilogue_ctx {
    const zci_conv_params *p;
    const float *bias; /* this group's, or NULL */
    const float *sum;  /* this (image, group)'s residual plane, or NULL */
    int64_t ld;        /* output plane size: the row stride of C and of the residual */
} epilogue_ctx;

static void conv_epilogue(const void *vctx, float *c, int64_t ldc, int64_t m0, int64_t mc, int64_t n0, int64_t nc)
{
    const epilogue_ctx *e = vctx;
    for (int64_t i = 0; i < mc; i++)
        finish_row(c + i * ldc, nc, e->bias ? e->bias[m0 + i] : 0.0f, e->sum ? e->sum + (m0 + i) * e->ld + n0 : NULL,
                   e->p);
}

/* ================================================================ built-in kernels */

/* Geometry as 3-D (conv.h), so one code path serves every rank. */
typedef zci_win3 geom3;

zci_win3 zci_window_3d(const zci_window *w)
{
    zci_win3 g;
    int shift = 3 - w->nsp;
    for (int i = 0; i < 3; i++) {
        int j = i - shift;
        g.in[i] = j >= 0 ? w->in[j] : 1;
        g.out[i] = j >= 0 ? w->out[j] : 1;
        g.k[i] = j >= 0 ? w->kernel[j] : 1;
        g.s[i] = j >= 0 ? w->stride[j] : 1;
        g.d[i] = j >= 0 ? w->dilation[j] : 1;
        g.pb[i] = j >= 0 ? w->pad_begin[j] : 0;
        g.pe[i] = j >= 0 ? w->pad_end[j] : 0;
    }
    g.in_plane = g.in[0] * g.in[1] * g.in[2];
    g.out_plane = g.out[0] * g.out[1] * g.out[2];
    g.kvol = g.k[0] * g.k[1] * g.k[2];
    return g;
}

static int is_pointwise(const geom3 *g)
{
    for (int i = 0; i < 3; i++)
        if (g->k[i] != 1 || g->s[i] != 1 || g->pb[i] != 0 || g->in[i] != g->out[i]) return 0;
    return 1;
}

/* Implicit im2col: B[k][n] is input channel ci at kernel offset (kz, ky, kx) (k = ((ci * kd +
 * kz) * kh + ky) * kw + kx, the weights' order) seen from output position n. Packed strip by
 * strip; inside a strip the columns fall in runs along one output row, each copied with its
 * in-bounds range computed once. */
typedef struct im2col_ctx {
    const float *x; /* first input channel of the group */
    const geom3 *g;
} im2col_ctx;

static void im2col_pack(const void *vctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float *dst)
{
    const im2col_ctx *c = vctx;
    const geom3 *g = c->g;
    const int64_t ow = g->out[2], oh = g->out[1];
    const int64_t iw = g->in[2], ih = g->in[1], id = g->in[0];
    for (int64_t s = 0; s < nc; s += nr, dst += (int64_t)nr * kc) {
        int64_t cols = nc - s < nr ? nc - s : nr;
        int64_t n = n0 + s;
        const int64_t ox0 = n % ow, oy0 = (n / ow) % oh, oz0 = n / (ow * oh);
        int64_t kx = k0 % g->k[2], ky = (k0 / g->k[2]) % g->k[1], kz = (k0 / (g->k[2] * g->k[1])) % g->k[0];
        int64_t ci = k0 / g->kvol;
        for (int64_t p = 0; p < kc; p++) {
            float *d = dst + p * nr;
            const float *xc = c->x + ci * g->in_plane;
            int64_t ox = ox0, oy = oy0, oz = oz0;
            for (int64_t j = 0; j < cols;) {
                int64_t len = ow - ox < cols - j ? ow - ox : cols - j;
                int64_t iz = oz * g->s[0] - g->pb[0] + kz * g->d[0];
                int64_t iy = oy * g->s[1] - g->pb[1] + ky * g->d[1];
                float *dj = d + j;
                if (iz < 0 || iz >= id || iy < 0 || iy >= ih) {
                    memset(dj, 0, sizeof(float) * (size_t)len);
                } else {
                    const float *row = xc + (iz * ih + iy) * iw;
                    const int64_t sx = g->s[2];
                    int64_t ix0 = ox * sx - g->pb[2] + kx * g->d[2]; /* column t reads ix0 + t * sx */
                    int64_t lo = ix0 >= 0 ? 0 : ceil_div64(-ix0, sx);
                    int64_t hi = ix0 > iw - 1 ? 0 : (iw - 1 - ix0) / sx + 1;
                    if (lo > len) lo = len;
                    if (hi > len) hi = len;
                    if (hi < lo) hi = lo;
                    for (int64_t t = 0; t < lo; t++) dj[t] = 0.0f;
                    if (sx == 1)
                        memcpy(dj + lo, row + ix0 + lo, sizeof(float) * (size_t)(hi - lo));
                    else
                        for (int64_t t = lo; t < hi; t++) dj[t] = row[ix0 + t * sx];
                    for (int64_t t = hi; t < len; t++) dj[t] = 0.0f;
                }
                j += len;
                ox = 0;
                if (++oy == oh) {
                    oy = 0;
                    oz++;
                }
            }
            for (int64_t j = cols; j < nr; j++) d[j] = 0.0f;
            if (++kx == g->k[2]) {
                kx = 0;
                if (++ky == g->k[1]) {
                    ky = 0;
                    if (++kz == g->k[0]) {
                        kz = 0;
                        ci++;
                    }
                }
            }
        }
    }
}

/* Depthwise (one input channel per group, any channel multiplier): each output row accumulates
 * kernel-offset by kernel-offset over its in-bounds span, contiguous when the stride is 1. */
static void depthwise(const zci_conv_params *p, const geom3 *g, const float *x, const float *w, const float *bias,
                      const float *sum, float *y, int nthreads)
{
    const int64_t mult = p->out_ch / p->group;
    const int64_t rows = p->batch * p->out_ch * g->out[0] * g->out[1];
    const int64_t ow = g->out[2];
    int nt = rows * ow * g->kvol < ((int64_t)1 << 15) ? 1 : nthreads;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oy = r % g->out[1], oz = (r / g->out[1]) % g->out[0], plane = r / (g->out[1] * g->out[0]);
        int64_t m = plane % p->out_ch, img = plane / p->out_ch;
        const float *xin = x + (img * p->in_ch + m / mult) * g->in_plane;
        const float *wk = w + m * g->kvol;
        float *row = y + plane * g->out_plane + (oz * g->out[1] + oy) * ow;
        for (int64_t ox = 0; ox < ow; ox++) row[ox] = 0.0f;
        for (int64_t kz = 0; kz < g->k[0]; kz++) {
            int64_t iz = oz * g->s[0] - g->pb[0] + kz * g->d[0];
            if (iz < 0 || iz >= g->in[0]) continue;
            for (int64_t ky = 0; ky < g->k[1]; ky++) {
                int64_t iy = oy * g->s[1] - g->pb[1] + ky * g->d[1];
                if (iy < 0 || iy >= g->in[1]) continue;
                const float *xr = xin + (iz * g->in[1] + iy) * g->in[2];
                for (int64_t kx = 0; kx < g->k[2]; kx++) {
                    const float wv = wk[(kz * g->k[1] + ky) * g->k[2] + kx];
                    const int64_t sx = g->s[2], off = kx * g->d[2] - g->pb[2]; /* ox reads ox * sx + off */
                    int64_t lo = off >= 0 ? 0 : ceil_div64(-off, sx);
                    int64_t hi = off > g->in[2] - 1 ? 0 : (g->in[2] - 1 - off) / sx + 1;
                    if (hi > ow) hi = ow;
                    if (sx == 1) {
                        const float *xs = xr + off;
                        for (int64_t ox = lo; ox < hi; ox++) row[ox] += wv * xs[ox];
                    } else {
                        for (int64_t ox = lo; ox < hi; ox++) row[ox] += wv * xr[ox * sx + off];
                    }
                }
            }
        }
        if (has_epilogue(p, bias, sum))
            finish_row(row, ow, bias ? bias[m] : 0.0f,
                       sum ? sum + plane * g->out_plane + (oz * g->out[1] + oy) * ow : NULL, p);
    }
}

/* ================================================================ CPU storage of activations
 * oneDNN's fast kernels work on channel-blocked tensors (N, C / B, H, W, B); reordering from and
 * to the graph's NCHW around every convolution costs about a fifth of YOLOv5s's convolution time.
 * So tensors that flow between oneDNN convolutions stay blocked: the producer writes them so and
 * the readers read them so. The blocked set is the largest one in which every tensor
 *  - is a float32 4-D activation, not a graph output, with channels a multiple of B (so its
 *    bytes are as many as planned);
 *  - is produced by a Conv run by oneDNN, or by a Concat of one image along the channels whose
 *    inputs are all in the set (for one image, concatenating blocked tensors along the channels
 *    is concatenating their bytes, which is what any Concat does for NCHW: it needs no change);
 *  - is read only by Convs run by oneDNN as their input X, or as their residual when their X is
 *    in the set too, and by such Concats whose output is in the set.
 * It is found as a greatest fixpoint: every candidate in, then whatever breaks a rule out, until
 * nothing changes. Producer and readers each compute it on the planned graph, and so agree. */

extern const zci_op zci_op_Conv;

#ifdef ZCI_HAVE_DNNL
static int dnnl_disabled(void)
{
    const char *e = getenv("ZCI_CPU_NO_DNNL");
    return e && *e && strcmp(e, "0");
}

/* Whether cpu_prepare gives node n (a Conv) to oneDNN: constant weights, an input computed at
 * run time (constant folding runs the built-in kernels), and nothing oneDNN is known to fail on. */
static int conv_on_dnnl(const zci_graph *g, const zci_node *n)
{
    const zci_conv_params *p = n->params;
    if (!p || dnnl_disabled() || !ZCI_HAS_IN(n, 1)) return 0;
    const zci_tensor *x = ZCI_IN(g, n, 0), *w = ZCI_IN(g, n, 1);
    return w->kind == ZCI_TENSOR_CONSTANT && w->data && x->kind != ZCI_TENSOR_CONSTANT && zci_dnnl_conv_supported(p);
}

/* A Conv whose blocked form oneDNN runs with its fast kernels: 2-D, plain or depthwise groups. */
static int blockable_conv(const zci_graph *g, const zci_node *n)
{
    if (n->op != &zci_op_Conv || !conv_on_dnnl(g, n)) return 0;
    const zci_conv_params *p = n->params;
    return p->w.nsp == 2 && (p->group == 1 || (p->in_ch == p->group && p->out_ch == p->group));
}

/* A Concat of one image along the channels of 4-D tensors. */
static int channel_concat(const zci_graph *g, const zci_node *n)
{
    if (strcmp(n->op_type, "Concat") || *n->domain || n->n_out != 1 || n->out[0] < 0) return 0;
    const zci_tensor *y = &g->tensors[n->out[0]];
    zci_status st = ZCI_OK;
    int64_t axis = zci_attr_int(n, "axis", 0, &st);
    if (st != ZCI_OK || y->ndim != 4 || y->dims[0] != 1 || (axis != 1 && axis != -3)) return 0;
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] < 0) return 0;
    return 1;
}

/* MaxPool and nearest Resize work on a blocked tensor lane block by lane block. */
static int passes_blocks(const zci_graph *g, const zci_node *n)
{
    return n->n_out == 1 && n->out[0] >= 0 && (zci_pool_blockable(g, n) || zci_resize_blockable(g, n));
}

/* Fills set[t] (1: blocked) for every tensor; see above. */
static void blocked_set(const zci_graph *g, int block, unsigned char *set)
{
    for (int t = 0; t < g->n_tensors; t++) {
        const zci_tensor *x = &g->tensors[t];
        set[t] = 0;
        if (x->is_output || x->kind != ZCI_TENSOR_ACTIVATION || x->dtype != ZCI_FLOAT32 || x->ndim != 4 ||
            x->producer < 0 || x->dims[1] % block)
            continue;
        const zci_node *pn = &g->nodes[x->producer];
        set[t] = !pn->dead && pn->out[0] == t &&
                 (blockable_conv(g, pn) || channel_concat(g, pn) || passes_blocks(g, pn));
    }
    for (int changed = 1; changed;) {
        changed = 0;
        for (int i = 0; i < g->n_order; i++) {
            const zci_node *n = &g->nodes[g->order[i]];
            if (n->dead) continue;
            int concat = channel_concat(g, n), conv = blockable_conv(g, n), pass = passes_blocks(g, n);
            if (pass && set[n->out[0]] && !set[n->in[0]]) {
                set[n->out[0]] = 0; /* a pass-through op's output is blocked only with its input */
                changed = 1;
            }
            if (concat && set[n->out[0]])
                for (int k = 0; k < n->n_in; k++)
                    if (!set[n->in[k]]) {
                        set[n->out[0]] = 0; /* a Concat's output is blocked only if all its inputs are */
                        changed = 1;
                        break;
                    }
            for (int k = 0; k < n->n_in; k++) {
                int t = n->in[k];
                if (t < 0 || !set[t]) continue;
                int ok;
                if (concat || (pass && k == 0))
                    ok = set[n->out[0]];
                else if (conv && k == 0)
                    ok = 1;
                else if (conv && k == ((const zci_conv_params *)n->params)->sum_input)
                    ok = n->in[0] >= 0 && set[n->in[0]];
                else
                    ok = 0;
                if (!ok) {
                    set[t] = 0;
                    changed = 1;
                }
            }
        }
    }
}

#endif /* ZCI_HAVE_DNNL */

/* The channel block of tensors a, b and c (-1 for none) into *ba, *bb, *bc. */
static zci_status tensor_blocks(const zci_graph *g, int a, int b, int c, int *ba, int *bb, int *bc)
{
    *ba = *bb = *bc = 0;
#ifdef ZCI_HAVE_DNNL
    int block = zci_dnnl_block_size();
    if (!block || dnnl_disabled()) return ZCI_OK;
    unsigned char *set = zci_malloc((size_t)g->n_tensors + 1, "blocked tensor set");
    if (!set) return ZCI_OUT_OF_MEMORY;
    blocked_set(g, block, set);
    *ba = a >= 0 && set[a] ? block : 0;
    *bb = b >= 0 && set[b] ? block : 0;
    *bc = c >= 0 && set[c] ? block : 0;
    free(set);
#else
    (void)g;
    (void)a;
    (void)b;
    (void)c;
#endif
    return ZCI_OK;
}

int zci_conv_tensor_block(const zci_graph *g, int t)
{
    int block, unused1, unused2;
    return tensor_blocks(g, t, -1, -1, &block, &unused1, &unused2) == ZCI_OK ? block : -1;
}

/* Per-node state from cpu_prepare. */
typedef struct conv_state {
#ifdef ZCI_HAVE_DNNL
    struct zci_dnnl_conv *dnnl;
#endif
    zci_packed_a *packed; /* per group, NULL when the weights are not constant or depthwise */
    int64_t n_packed;
    /* scratch memory of a run, in the session's shared workspace (zci_op.cpu_workspace):
     * oneDNN's (blocked copies, scratchpad) or the GEMM's for ws_threads threads */
    size_t ws_bytes;
    int ws_threads;
} conv_state;

static int is_depthwise(const zci_conv_params *p) { return p->group > 1 && p->in_ch == p->group; }

/* The built-in path; st may be NULL (nothing prepared). */
static zci_status conv_builtin(const zci_conv_params *p, const float *x, const float *w, const float *bias,
                               const float *sum, float *y, const conv_state *st, void *workspace, int nthreads)
{
    geom3 g = zci_window_3d(&p->w);
    if (is_depthwise(p)) {
        depthwise(p, &g, x, w, bias, sum, y, nthreads);
        return ZCI_OK;
    }
    const int64_t cg = p->in_ch / p->group, mg = p->out_ch / p->group, kg = cg * g.kvol;
    const int pointwise = is_pointwise(&g);
    zci_gemm_args a = {0};
    a.m = mg;
    a.n = g.out_plane;
    a.k = kg;
    a.alpha = 1.0f;
    a.beta = 0.0f;
    a.ldc = g.out_plane;
    a.nthreads = nthreads;
    if (st && workspace && st->ws_bytes && nthreads <= st->ws_threads) a.workspace = workspace;
    for (int64_t img = 0; img < p->batch; img++) {
        for (int64_t gi = 0; gi < p->group; gi++) {
            const float *xg = x + (img * p->in_ch + gi * cg) * g.in_plane;
            int64_t yoff = (img * p->out_ch + gi * mg) * g.out_plane;
            im2col_ctx ic = {xg, &g};
            epilogue_ctx ec = {p, bias ? bias + gi * mg : NULL, sum ? sum + yoff : NULL, g.out_plane};
            if (st && st->packed) {
                a.packed_a = &st->packed[gi];
            } else {
                a.a = w + gi * mg * kg;
                a.lda = kg;
            }
            if (pointwise) {
                a.b = xg;
                a.ldb = g.in_plane;
                a.pack_b = NULL;
            } else {
                a.pack_b = im2col_pack;
                a.pack_b_ctx = &ic;
            }
            a.c = y + yoff;
            a.epilogue = has_epilogue(p, bias, sum) ? conv_epilogue : NULL;
            a.epilogue_ctx = &ec;
            ZCI_TRY(zci_sgemm_run(&a));
        }
    }
    return ZCI_OK;
}

static zci_status conv_cpu(const zci_kernel_ctx *k)
{
    const zci_conv_params *p = k->n->params;
    const float *x = ZCI_KIN_DATA(k, 0), *w = ZCI_KIN_DATA(k, 1);
    const float *bias = p->has_bias ? ZCI_KIN_DATA(k, 2) : NULL;
    const float *sum = p->sum_input >= 0 ? k->data[k->n->in[p->sum_input]] : NULL;
    float *y = ZCI_KOUT_DATA(k, 0);
    const conv_state *st = k->state;
#ifdef ZCI_HAVE_DNNL
    if (st && st->dnnl) return zci_dnnl_conv_run(st->dnnl, x, bias, sum, y, k->workspace);
#endif
    if (sum && sum == y) {
        /* the built-in epilogue reads the residual after the GEMM wrote the output: an in-place
         * residual needs a copy first */
        size_t bytes = zci_tensor_bytes(ZCI_KOUT(k, 0));
        float *copy = zci_malloc(bytes ? bytes : 1, "Conv residual copy");
        if (!copy) return ZCI_OUT_OF_MEMORY;
        memcpy(copy, sum, bytes);
        zci_status s = conv_builtin(p, x, w, bias, copy, y, st, k->workspace, k->nthreads);
        free(copy);
        return s;
    }
    return conv_builtin(p, x, w, bias, sum, y, st, k->workspace, k->nthreads);
}

/* ================================================================ prepare */

static void conv_release(void *state)
{
    conv_state *s = state;
    if (!s) return;
#ifdef ZCI_HAVE_DNNL
    zci_dnnl_conv_free(s->dnnl);
#endif
    for (int64_t i = 0; i < s->n_packed; i++) zci_packed_a_free(&s->packed[i]);
    free(s->packed);
    free(s);
}

static zci_status conv_prepare(const zci_graph *g, const zci_node *n, int nthreads, void **state)
{
    *state = NULL;
    const zci_conv_params *p = n->params;
    const zci_tensor *wt = ZCI_IN(g, n, 1);
    const float *w = wt->kind == ZCI_TENSOR_CONSTANT ? wt->data : NULL;
    if (!w) return ZCI_OK; /* weights computed at run time: the unpacked built-in path */
    conv_state *s = zci_calloc(1, sizeof *s, "Conv state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    zci_status st = ZCI_OK;
#ifdef ZCI_HAVE_DNNL
    if (conv_on_dnnl(g, n)) {
        int src_block, dst_block, res_block;
        st = tensor_blocks(g, n->in[0], n->out[0], p->sum_input >= 0 ? n->in[p->sum_input] : -1, &src_block,
                           &dst_block, &res_block);
        if (st == ZCI_OK) st = zci_dnnl_conv_create(p, w, src_block, dst_block, res_block, nthreads, &s->dnnl);
        if (st == ZCI_OK) {
            size_t bytes = s->ws_bytes = zci_dnnl_conv_workspace_size(s->dnnl);
            zci_log(g->verbose, "%s: oneDNN %s, input %s, output %s%s, %.2f MB workspace", zci_node_desc(g, n),
                    zci_dnnl_conv_impl(s->dnnl), src_block ? "blocked" : "plain", dst_block ? "blocked" : "plain",
                    p->sum_input < 0 ? "" : res_block ? ", residual blocked" : ", residual plain", bytes / 1048576.0);
            *state = s;
            return ZCI_OK;
        }
        if (st == ZCI_OUT_OF_MEMORY || src_block || dst_block || res_block) {
            /* the neighbours keep their side of a blocked tensor blocked: no falling back */
            conv_release(s);
            return st;
        }
        zci_log(g->verbose, "%s: oneDNN declined (%s); using the built-in kernels", zci_node_desc(g, n),
                zci_last_error());
        st = ZCI_OK;
    }
#endif
    if (!is_depthwise(p)) {
        geom3 g3 = zci_window_3d(&p->w);
        int64_t cg = p->in_ch / p->group, mg = p->out_ch / p->group, kg = cg * g3.kvol;
        s->packed = zci_calloc((size_t)p->group, sizeof *s->packed, "Conv packed weights");
        if (!s->packed) st = ZCI_OUT_OF_MEMORY;
        for (int64_t gi = 0; st == ZCI_OK && gi < p->group; gi++) {
            st = zci_sgemm_pack_a(0, mg, kg, w + gi * mg * kg, kg, &s->packed[gi]);
            if (st == ZCI_OK) s->n_packed++;
        }
        if (st == ZCI_OK) {
            s->ws_bytes = zci_sgemm_workspace_size(mg, g3.out_plane, kg, nthreads);
            s->ws_threads = nthreads;
        }
    }
    if (st != ZCI_OK) {
        conv_release(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

/* clang-format off */
static size_t conv_workspace(const void *state)
{
    const conv_state *s = state;
    return s ? s->ws_bytes : 0;
}

const zci_op zci_op_Conv = {
    .type = "Conv", .domain = "", .since = 1,
    .infer = conv_infer, .cpu = conv_cpu,
    .cpu_prepare = conv_prepare, .cpu_release = conv_release,
    .cpu_workspace = conv_workspace,
};
/* clang-format on */
