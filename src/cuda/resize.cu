/* resize.cu: Resize (opsets 10+) and Upsample on the GPU, nearest and linear modes.
 *
 * As on the CPU, planning turns the coordinate transformation into per-axis tables (source
 * indices, and for linear mode the weight of the upper neighbour), following the ONNX reference
 * formulas; a run only gathers and blends. An axis that is unchanged, or a nearest axis that
 * repeats each source element k times (YOLO's 2x upsample), needs no table. Cubic mode,
 * antialiasing, tf_crop_and_resize and keep_aspect_ratio_policy other than stretch are refused at
 * load. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

enum { MODE_NEAREST, MODE_LINEAR };
enum { C_HALF_PIXEL, C_HALF_PIXEL_SYMMETRIC, C_PYTORCH_HALF_PIXEL, C_ALIGN_CORNERS, C_ASYMMETRIC, C_TF_CROP };
enum { N_ROUND_PREFER_FLOOR, N_ROUND_PREFER_CEIL, N_FLOOR, N_CEIL, N_LEGACY };
enum { AX_IDENTITY, AX_FACTOR, AX_TABLE };

constexpr int kMaxBlend = 3;

struct rz_params {
    int mode, coord, nearest;
    double scale[ZCI_MAX_DIMS];
};

struct rz_plan {
    int rank, nblend;
    uint32_t n;
    uint32_t out[ZCI_MAX_DIMS], in_stride[ZCI_MAX_DIMS];
    int kind[ZCI_MAX_DIMS];
    uint32_t factor[ZCI_MAX_DIMS], toff[ZCI_MAX_DIMS];
    int blend[kMaxBlend];
    const int32_t *lo, *hi;
    const float *w;
};

int lookup(const char *s, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* Reads the modes and the per-axis scales. */
zci_status parse(const cu_ctx *c, const zci_node *n, rz_params *p)
{
    const zci_graph *g = c->g;
    zci_status st = ZCI_OK;
    const int upsample = !strcmp(n->op_type, "Upsample"), legacy = upsample || n->opset < 11;
    const zci_tensor *x = ZCI_IN(g, n, 0), *y = ZCI_OUT(g, n, 0);
    const char *mode = zci_attr_string(n, "mode", "nearest", &st);
    if (st != ZCI_OK) return st;
    if (!strcmp(mode, "nearest")) p->mode = MODE_NEAREST;
    else if (!strcmp(mode, "linear") || !strcmp(mode, "bilinear")) p->mode = MODE_LINEAR;
    else return zci_error(ZCI_UNSUPPORTED, "mode '%s'", mode);
    p->coord = C_ASYMMETRIC;
    p->nearest = N_LEGACY;
    if (!legacy) {
        static const char *const coords[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                             "align_corners", "asymmetric", "tf_crop_and_resize"};
        static const char *const nearests[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
        const char *s = zci_attr_string(n, "coordinate_transformation_mode", "half_pixel", &st);
        if (st != ZCI_OK) return st;
        p->coord = lookup(s, coords, 6);
        if (p->coord < 0 || p->coord == C_TF_CROP) return zci_error(ZCI_UNSUPPORTED, "coordinate_transformation_mode '%s'", s);
        s = zci_attr_string(n, "nearest_mode", "round_prefer_floor", &st);
        if (st != ZCI_OK) return st;
        p->nearest = lookup(s, nearests, 4);
        if (p->nearest < 0) return zci_error(ZCI_UNSUPPORTED, "nearest_mode '%s'", s);
        if (zci_attr_int(n, "antialias", 0, &st) && p->mode != MODE_NEAREST)
            return zci_error(ZCI_UNSUPPORTED, "antialias");
        if (strcmp(zci_attr_string(n, "keep_aspect_ratio_policy", "stretch", &st), "stretch"))
            return zci_error(ZCI_UNSUPPORTED, "keep_aspect_ratio_policy other than stretch");
        if (st != ZCI_OK) return st;
    }
    if (p->mode == MODE_LINEAR && c->dt[n->in[0]] != ZCI_FLOAT32 && c->dt[n->in[0]] != ZCI_FLOAT16)
        return zci_error(ZCI_UNSUPPORTED, "linear mode on %s tensors", zci_dtype_name(c->dt[n->in[0]]));
    /* per-axis scales: the given scales, or out / in when sizes were given */
    for (int d = 0; d < x->ndim; d++) p->scale[d] = x->dims[d] ? (double)y->dims[d] / (double)x->dims[d] : 1.0;
    int axes[ZCI_MAX_DIMS], naxes = x->ndim;
    for (int d = 0; d < x->ndim; d++) axes[d] = d;
    int cnt = 0;
    const int64_t *ax = legacy ? NULL : zci_attr_ints(n, "axes", &cnt, &st);
    if (st != ZCI_OK) return st;
    if (ax) {
        naxes = cnt;
        for (int i = 0; i < cnt; i++) ZCI_TRY(zci_norm_axis(ax[i], x->ndim, &axes[i]));
    }
    const zci_tensor *sc = NULL;
    if (upsample && n->opset < 9) {
        const float *f = zci_attr_floats(n, "scales", &cnt, &st);
        if (st != ZCI_OK) return st;
        if (!f || cnt != x->ndim) return zci_error(ZCI_UNSUPPORTED, "Upsample scales");
        for (int d = 0; d < cnt; d++) p->scale[d] = f[d];
        return ZCI_OK;
    }
    int si = legacy ? 1 : 2;
    if (ZCI_HAS_IN(n, si) && zci_tensor_numel(ZCI_IN(g, n, si)) > 0) sc = ZCI_IN(g, n, si);
    if (!sc) return ZCI_OK; /* sizes: out / in */
    if (sc->kind != ZCI_TENSOR_CONSTANT || !sc->data) return zci_error(ZCI_UNSUPPORTED, "scales computed at run time");
    if (zci_tensor_numel(sc) != naxes) return zci_error(ZCI_UNSUPPORTED, "scales of the wrong length");
    for (int i = 0; i < naxes; i++) {
        double v = sc->dtype == ZCI_FLOAT32   ? ((const float *)sc->data)[i]
                   : sc->dtype == ZCI_FLOAT64 ? ((const double *)sc->data)[i]
                   : sc->dtype == ZCI_FLOAT16 ? zci_f16_to_f32(((const uint16_t *)sc->data)[i])
                                              : -1;
        if (!(v > 0)) return zci_error(ZCI_UNSUPPORTED, "scale %g", v);
        p->scale[axes[i]] = v;
    }
    return ZCI_OK;
}

double source_coord(const rz_params *p, int d, double x, int64_t in, int64_t out)
{
    const double s = p->scale[d], out_w = s * (double)in;
    switch (p->coord) {
    case C_HALF_PIXEL: return (x + 0.5) / s - 0.5;
    case C_HALF_PIXEL_SYMMETRIC: {
        double adjustment = (double)out / out_w, center = (double)in / 2;
        return center * (1 - adjustment) + (x + 0.5) / s - 0.5;
    }
    case C_PYTORCH_HALF_PIXEL: return out > 1 ? (x + 0.5) / s - 0.5 : 0.0;
    case C_ALIGN_CORNERS: return out_w == 1 ? 0.0 : x * (double)(in - 1) / (out_w - 1);
    default: return x / s;
    }
}

int64_t nearest_index(const rz_params *p, int d, double x)
{
    double f = floor(x), frac = x - f;
    switch (p->nearest) {
    case N_ROUND_PREFER_FLOOR: return (int64_t)(frac <= 0.5 ? f : f + 1);
    case N_ROUND_PREFER_CEIL: return (int64_t)(frac < 0.5 ? f : f + 1);
    case N_FLOOR: return (int64_t)f;
    case N_CEIL: return (int64_t)ceil(x);
    default: return (int64_t)(p->scale[d] < 1 ? ceil(x) : f);
    }
}

int64_t clampi(int64_t i, int64_t n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

struct rz_state {
    rz_plan plan;
};

/* Builds the plan and its tables (uploaded with cu_upload when c is not NULL). */
zci_status build(cu_ctx *c, const cu_ctx *cc, const zci_node *n, rz_plan *plan)
{
    const zci_graph *g = cc->g;
    rz_params p;
    memset(&p, 0, sizeof p);
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_UNSUPPORTED, "input 0 is omitted");
    ZCI_TRY(parse(cc, n, &p));
    const zci_tensor *x = ZCI_IN(g, n, 0), *y = ZCI_OUT(g, n, 0);
    memset(plan, 0, sizeof *plan);
    plan->rank = x->ndim;
    plan->n = (uint32_t)zci_tensor_numel(y);
    int64_t st[ZCI_MAX_DIMS], total = 0;
    cu_strides(x->dims, x->ndim, st);
    for (int d = 0; d < x->ndim; d++) total += y->dims[d];
    int32_t *lo = (int32_t *)zci_malloc((size_t)(2 * total + 1) * sizeof(int32_t), "Resize tables");
    float *w = (float *)zci_malloc((size_t)(total + 1) * sizeof(float), "Resize tables");
    if (!lo || !w) {
        free(lo);
        free(w);
        return ZCI_OUT_OF_MEMORY;
    }
    int32_t *hi = lo + total;
    zci_status status = ZCI_OK;
    uint32_t off = 0;
    for (int d = 0; d < x->ndim; d++) {
        const int64_t in = x->dims[d], out = y->dims[d];
        plan->out[d] = (uint32_t)out;
        plan->in_stride[d] = (uint32_t)st[d];
        plan->toff[d] = off;
        int unit = fabs(p.scale[d] - 1.0) <= 1e-9 * fmax(fabs(p.scale[d]), 1.0);
        int blend = 0, factor_ok = p.mode == MODE_NEAREST && in > 0 && out % in == 0;
        for (int64_t o = 0; o < out; o++) {
            int64_t a = o, b = o;
            float wt = 0.f;
            if (!(unit && out == in)) {
                double xs = source_coord(&p, d, (double)o, in, out);
                if (p.mode == MODE_NEAREST) {
                    a = b = clampi(nearest_index(&p, d, xs), in);
                } else {
                    double f = floor(xs);
                    a = clampi((int64_t)f, in);
                    b = clampi((int64_t)f + 1, in);
                    wt = (float)(xs - f);
                    if (wt != 0.f && a != b) blend = 1;
                }
            }
            lo[off + o] = (int32_t)a;
            hi[off + o] = (int32_t)b;
            w[off + o] = wt;
            if (factor_ok && a != o / (out / in)) factor_ok = 0;
        }
        if (unit && out == in) plan->kind[d] = AX_IDENTITY;
        else if (factor_ok) {
            plan->kind[d] = AX_FACTOR;
            plan->factor[d] = (uint32_t)(out / in);
        } else plan->kind[d] = AX_TABLE;
        if (blend) {
            if (plan->nblend == kMaxBlend) {
                status = zci_error(ZCI_UNSUPPORTED, "linear interpolation along more than %d axes", kMaxBlend);
                break;
            }
            plan->blend[plan->nblend++] = d;
        }
        off += (uint32_t)out;
    }
    /* an NHWC node walks its output in memory order (N, H, W, C): permute the per-axis plan, with
     * the input's strides in its own layout */
    const int out_nhwc = c && x->ndim == 4 && c->lay && c->lay[n->out[0]] == CU_NHWC;
    const int in_nhwc = c && x->ndim == 4 && c->lay && cu_in_nhwc(c, n, 0);
    if (status == ZCI_OK && (out_nhwc || in_nhwc)) {
        static const int order[4] = {0, 2, 3, 1};
        const int64_t C = x->dims[1], H = x->dims[2], W = x->dims[3];
        const int64_t nhwc_st[4] = {H * W * C, 1, W * C, C};
        rz_plan q = *plan;
        for (int d = 0; d < 4; d++) {
            int src = out_nhwc ? order[d] : d;
            q.out[d] = plan->out[src];
            q.kind[d] = plan->kind[src];
            q.factor[d] = plan->factor[src];
            q.toff[d] = plan->toff[src];
            q.in_stride[d] = (uint32_t)(in_nhwc ? nhwc_st[src] : plan->in_stride[src]);
        }
        for (int j = 0; j < plan->nblend; j++)
            for (int d = 0; d < 4; d++)
                if ((out_nhwc ? order[d] : d) == plan->blend[j]) q.blend[j] = d;
        *plan = q;
    }
    if (status == ZCI_OK && c) {
        void *dev_idx = NULL, *dev_w = NULL;
        status = cu_upload(c, lo, (size_t)(2 * total) * sizeof(int32_t), "Resize tables", &dev_idx);
        if (status == ZCI_OK) status = cu_upload(c, w, (size_t)total * sizeof(float), "Resize tables", &dev_w);
        if (status == ZCI_OK) {
            plan->lo = (const int32_t *)dev_idx;
            plan->hi = (const int32_t *)dev_idx + total;
            plan->w = (const float *)dev_w;
        }
    }
    free(lo);
    free(w);
    return status;
}

__device__ __forceinline__ uint32_t source_base(const rz_plan &p, uint32_t i, uint32_t *coord)
{
    uint32_t base = 0;
    for (int d = p.rank - 1; d >= 0; d--) {
        uint32_t cc = i % p.out[d];
        i /= p.out[d];
        coord[d] = cc;
        uint32_t src = p.kind[d] == AX_IDENTITY ? cc : p.kind[d] == AX_FACTOR ? cc / p.factor[d] : (uint32_t)p.lo[p.toff[d] + cc];
        base += src * p.in_stride[d];
    }
    return base;
}

template <typename E> __global__ void k_resize_nearest(const E *__restrict__ x, E *__restrict__ y, rz_plan p)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    uint32_t coord[ZCI_MAX_DIMS];
    y[i] = x[source_base(p, i, coord)];
}

template <typename T> __global__ void k_resize_linear(const T *__restrict__ x, T *__restrict__ y, rz_plan p)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    uint32_t coord[ZCI_MAX_DIMS];
    const uint32_t base = source_base(p, i, coord);
    float acc = 0.f;
    for (int corner = 0; corner < (1 << p.nblend); corner++) {
        uint32_t off = base;
        float wt = 1.f;
        for (int j = 0; j < p.nblend; j++) {
            const int d = p.blend[j];
            const uint32_t t = p.toff[d] + coord[d];
            if (corner >> j & 1) {
                off += (uint32_t)(p.hi[t] - p.lo[t]) * p.in_stride[d];
                wt *= p.w[t];
            } else {
                wt *= 1.f - p.w[t];
            }
        }
        acc += wt * to_f<T>(x[off]);
    }
    y[i] = from_f<T>(acc);
}

/* Blocks for a nearest launch over 16-byte vectors, or 0 where it cannot: the innermost axis
 * copied as is (identity, unit stride) in whole vectors, every other stride a whole number of
 * them, both buffers aligned. */
unsigned vector_blocks(const rz_plan &p, const void *x, const void *y, size_t esize)
{
    if (esize == 0 || esize > 16 || 16 % esize || p.rank < 1) return 0;
    const uint32_t v = (uint32_t)(16 / esize), last = (uint32_t)p.rank - 1;
    if (v < 2 || p.kind[last] != AX_IDENTITY || p.in_stride[last] != 1 || p.out[last] % v) return 0;
    for (uint32_t d = 0; d < last; d++)
        if (p.in_stride[d] % v) return 0;
    if (((uintptr_t)x & 15) || ((uintptr_t)y & 15)) return 0;
    return blocks_for(p.n / v);
}

} // namespace

extern "C" zci_status cu_resize_supports(const cu_ctx *c, const zci_node *n)
{
    rz_plan p;
    return build(NULL, c, n, &p);
}

extern "C" zci_status cu_resize_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    rz_state *s = (rz_state *)zci_calloc(1, sizeof *s, "Resize state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    zci_status st = build(c, c, n, &s->plan);
    if (st != ZCI_OK) {
        free(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

extern "C" zci_status cu_resize_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t st)
{
    const rz_plan &p = ((const rz_state *)state)->plan;
    if (!p.n) return ZCI_OK;
    const void *x = cu_in(c, n, 0);
    void *y = c->ptr[n->out[0]];
    const unsigned nb = blocks_for(p.n);
    if (p.nblend) {
        if (c->dt[n->in[0]] == ZCI_FLOAT16) k_resize_linear<__half><<<nb, kThreads, 0, st>>>((const __half *)x, (__half *)y, p);
        else k_resize_linear<float><<<nb, kThreads, 0, st>>>((const float *)x, (float *)y, p);
    } else if (const unsigned vb = vector_blocks(p, x, y, cu_esize(c, n->in[0]))) {
        /* rows of whole 16-byte vectors: the same walk with 16-byte elements */
        rz_plan q = p;
        const uint32_t v = 16 / (uint32_t)cu_esize(c, n->in[0]);
        q.n /= v;
        q.out[p.rank - 1] /= v;
        for (int d = 0; d < p.rank - 1; d++) q.in_stride[d] /= v;
        k_resize_nearest<uint4><<<vb, kThreads, 0, st>>>((const uint4 *)x, (uint4 *)y, q);
    } else {
        switch (cu_esize(c, n->in[0])) {
        case 1: k_resize_nearest<uint8_t><<<nb, kThreads, 0, st>>>((const uint8_t *)x, (uint8_t *)y, p); break;
        case 2: k_resize_nearest<uint16_t><<<nb, kThreads, 0, st>>>((const uint16_t *)x, (uint16_t *)y, p); break;
        case 4: k_resize_nearest<uint32_t><<<nb, kThreads, 0, st>>>((const uint32_t *)x, (uint32_t *)y, p); break;
        default: k_resize_nearest<uint64_t><<<nb, kThreads, 0, st>>>((const uint64_t *)x, (uint64_t *)y, p); break;
        }
    }
    CU_LAUNCHED("resize");
    return ZCI_OK;
}
