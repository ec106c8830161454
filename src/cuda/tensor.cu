/* tensor.cu: data movement on the GPU: Concat and Split (one launch for all parts), Slice,
 * Transpose and Expand (one strided-gather kernel over a simplified plan), Gather, and the views
 * (Reshape, Flatten, Squeeze, Unsqueeze, Identity) where they cannot alias (a model output). */
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

using namespace zci_cu;

/* ---------------------------------------------------------------- strided gather */

namespace {

struct gplan32 {
    int nd;
    uint32_t n;
    int32_t offset;
    uint32_t dims[ZCI_MAX_DIMS];
    int32_t stride[ZCI_MAX_DIMS];
    uint32_t mul[ZCI_MAX_DIMS], shr[ZCI_MAX_DIMS]; /* i / dims[d] = (umulhi(i, mul) + i) >> shr */
};

/* The divisors of a plan's dims as multiply-and-shift pairs (valid for i < 2^31): the gather
 * kernels decompose every element's index, and hardware-less integer division was most of their
 * time (the YOLO head's Transpose and Slices ran at ~170 GB/s at batch 1). */
void set_divisors(gplan32 &g)
{
    for (int d = 0; d < g.nd; d++) {
        const fastdiv f = make_fastdiv((uint32_t)g.dims[d]);
        g.shr[d] = f.shift;
        g.mul[d] = f.mul;
    }
}

__device__ __forceinline__ uint32_t div_d(uint32_t i, const gplan32 &p, int d)
{
    return (__umulhi(i, p.mul[d]) + i) >> p.shr[d];
}

template <typename E> __global__ void k_strided(const E *__restrict__ x, E *__restrict__ y, gplan32 p)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    uint32_t r = i;
    int32_t off = p.offset;
    for (int d = p.nd - 1; d >= 0; d--) {
        const uint32_t q = div_d(r, p, d);
        off += (int32_t)(r - q * p.dims[d]) * p.stride[d];
        r = q;
    }
    y[i] = x[off];
}

constexpr int kTile = 32;

/* y[o][l][j] = x[o*so + l*sl + j] for a plan whose last output dim L has input stride sl != 1
 * and whose dim J has input stride 1 (a transpose): tiles through shared memory so that both
 * the reads (along J) and the writes (along L) are coalesced. The plan is reduced to
 * (outer, J, ..., L) with J and L given; other dims form `outer` through the generic offset. */
struct tplan {
    uint32_t nj, nl;        /* sizes of J and L */
    int32_t sl;             /* input stride of L */
    uint32_t out_sj;        /* output stride of J (elements) */
    uint32_t outer;         /* rows of the remaining dims */
    int nd;                 /* remaining dims (excluding J and L), outermost first */
    uint32_t dims[ZCI_MAX_DIMS];
    int32_t in_st[ZCI_MAX_DIMS], out_st[ZCI_MAX_DIMS];
    int32_t offset;
};

template <typename E> __global__ void k_transpose_tiled(const E *__restrict__ x, E *__restrict__ y, tplan p)
{
    __shared__ E tile[kTile][kTile + 1];
    uint32_t o = blockIdx.z;
    int32_t in_off = p.offset, out_off = 0;
    for (int d = p.nd - 1; d >= 0; d--) {
        uint32_t c = o % p.dims[d];
        o /= p.dims[d];
        in_off += (int32_t)c * p.in_st[d];
        out_off += (int32_t)(c * p.out_st[d]);
    }
    uint32_t j0 = blockIdx.x * kTile, l0 = blockIdx.y * kTile;
    /* read: threads along J (stride 1 in the input) */
    for (uint32_t r = threadIdx.y; r < kTile; r += blockDim.y) {
        uint32_t l = l0 + r, j = j0 + threadIdx.x;
        if (l < p.nl && j < p.nj) tile[r][threadIdx.x] = x[in_off + (int32_t)l * p.sl + (int32_t)j];
    }
    __syncthreads();
    /* write: threads along L (stride 1 in the output) */
    for (uint32_t r = threadIdx.y; r < kTile; r += blockDim.y) {
        uint32_t j = j0 + r, l = l0 + threadIdx.x;
        if (l < p.nl && j < p.nj) y[out_off + j * p.out_sj + l] = tile[threadIdx.x][r];
    }
}

/* One warp per output row when the innermost dimension is contiguous in the input: the row's
 * offset is computed once instead of per element (YOLO heads slice rows of 85 into 2 + 2 + 81). */
template <typename E> __global__ void k_strided_rows(const E *__restrict__ x, E *__restrict__ y, gplan32 p, uint32_t rows)
{
    const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= rows) return;
    const uint32_t len = p.dims[p.nd - 1];
    uint32_t r = warp;
    int32_t off = p.offset;
    for (int d = p.nd - 2; d >= 0; d--) {
        const uint32_t q = div_d(r, p, d);
        off += (int32_t)(r - q * p.dims[d]) * p.stride[d];
        r = q;
    }
    const E *src = x + off;
    E *dst = y + (size_t)warp * len;
    for (uint32_t j = lane; j < len; j += 32) dst[j] = src[j];
}

/* The warp-per-row kernels pay off with many rows of moderate length; a few long rows (an NCHW
 * tensor is one row per image) would leave most of the GPU idle, and short rows (the YOLO head's
 * 85) leave lanes idle: the element-wise kernel, with its cheap divisions, does those. */
constexpr uint32_t kMinRows = 1024, kMinRowLen = 256, kMaxRowLen = 8192;

template <typename E> void launch_strided(const void *x, void *y, const gplan32 &p, cudaStream_t s)
{
    const uint32_t len = p.nd ? p.dims[p.nd - 1] : 1, rows = p.n / (len ? len : 1);
    if (p.nd >= 2 && p.stride[p.nd - 1] == 1 && len >= kMinRowLen && len <= kMaxRowLen && rows >= kMinRows) {
        k_strided_rows<E><<<blocks_for((int64_t)rows * 32), kThreads, 0, s>>>((const E *)x, (E *)y, p, rows);
        return;
    }
    k_strided<E><<<blocks_for(p.n), kThreads, 0, s>>>((const E *)x, (E *)y, p);
}

template <typename E> void launch_tiled(const void *x, void *y, const tplan &p, cudaStream_t s)
{
    dim3 grid((p.nj + kTile - 1) / kTile, (p.nl + kTile - 1) / kTile, p.outer);
    k_transpose_tiled<E><<<grid, dim3(kTile, 8), 0, s>>>((const E *)x, (E *)y, p);
}

/* A tiled plan for a simplified gather plan, when it is a transpose that benefits. */
bool plan_tiled(const cu_gather_plan *g, tplan *t)
{
    int L = g->nd - 1, J = -1;
    if (g->nd < 2 || g->stride[L] == 1 || g->stride[L] == 0) return false;
    for (int d = 0; d < L; d++)
        if (g->stride[d] == 1) J = d;
    if (J < 0 || g->dims[J] < 8 || g->dims[L] < 8) return false;
    memset(t, 0, sizeof *t);
    int64_t ost[ZCI_MAX_DIMS];
    cu_strides(g->dims, g->nd, ost);
    t->nj = (uint32_t)g->dims[J];
    t->nl = (uint32_t)g->dims[L];
    t->sl = (int32_t)g->stride[L];
    t->out_sj = (uint32_t)ost[J];
    t->offset = (int32_t)g->offset;
    t->outer = 1;
    for (int d = 0; d < L; d++) {
        if (d == J) continue;
        t->dims[t->nd] = (uint32_t)g->dims[d];
        t->in_st[t->nd] = (int32_t)g->stride[d];
        t->out_st[t->nd] = (int32_t)ost[d];
        t->nd++;
        t->outer *= (uint32_t)g->dims[d];
    }
    return t->outer <= 65535;
}

} // namespace

extern "C" void cu_gather_simplify(cu_gather_plan *p) { zci_copy_dims_simplify(&p->nd, p->dims, p->stride); }

extern "C" zci_status cu_strided_copy(const void *x, void *y, const cu_gather_plan *p, size_t es, cudaStream_t s)
{
    int64_t n = 1;
    for (int d = 0; d < p->nd; d++) n *= p->dims[d];
    if (n == 0) return ZCI_OK;
    if (p->nd == 0 || (p->nd == 1 && p->stride[0] == 1)) {
        CU_TRY(cudaMemcpyAsync(y, (const char *)x + p->offset * (int64_t)es, (size_t)n * es, cudaMemcpyDeviceToDevice, s));
        return ZCI_OK;
    }
    tplan t;
    if (plan_tiled(p, &t)) {
        switch (es) {
        case 1: launch_tiled<uint8_t>(x, y, t, s); break;
        case 2: launch_tiled<uint16_t>(x, y, t, s); break;
        case 4: launch_tiled<uint32_t>(x, y, t, s); break;
        default: launch_tiled<uint64_t>(x, y, t, s); break;
        }
        CU_LAUNCHED("transpose");
        return ZCI_OK;
    }
    gplan32 g;
    memset(&g, 0, sizeof g);
    g.nd = p->nd;
    g.n = (uint32_t)n;
    g.offset = (int32_t)p->offset;
    for (int d = 0; d < p->nd; d++) {
        g.dims[d] = (uint32_t)p->dims[d];
        g.stride[d] = (int32_t)p->stride[d];
    }
    set_divisors(g);
    switch (es) {
    case 1: launch_strided<uint8_t>(x, y, g, s); break;
    case 2: launch_strided<uint16_t>(x, y, g, s); break;
    case 4: launch_strided<uint32_t>(x, y, g, s); break;
    default: launch_strided<uint64_t>(x, y, g, s); break;
    }
    CU_LAUNCHED("strided copy");
    return ZCI_OK;
}

extern "C" void cu_broadcast_plan(const zci_tensor *in, const zci_tensor *out, cu_gather_plan *p)
{
    memset(p, 0, sizeof *p);
    p->nd = out->ndim;
    int64_t s = 1;
    for (int d = out->ndim - 1; d >= 0; d--) {
        int xd = d - (out->ndim - in->ndim);
        int64_t len = xd >= 0 ? in->dims[xd] : 1;
        p->dims[d] = out->dims[d];
        p->stride[d] = len == 1 ? 0 : s;
        s *= len;
    }
    cu_gather_simplify(p);
}

namespace {

/* A thread per pixel: its c channels from the planes (consecutive threads read consecutive
 * elements of each), its cp written 16 bytes at a time where rows allow (vec). The first version,
 * a thread per output element with two divisions each, took 0.42 ms on yolov5s's batch-32 input
 * (H100), a tenth of the model. */
template <typename S, typename D> __device__ __forceinline__ D as_elem(S v) { return (D)v; }
template <> __device__ __forceinline__ uint16_t as_elem<float, uint16_t>(float v) { return __half_as_ushort(__float2half_rn(v)); }

template <typename S, typename D>
__global__ void k_nchw_to_nhwc_pad(const S *__restrict__ x, D *__restrict__ y, uint32_t pixels, uint32_t c, fastdiv hw,
                                   uint32_t cp, int vec)
{
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= pixels) return;
    const uint32_t nb = fdiv(i, hw), pix = i - nb * hw.d;
    const S *xp = x + (size_t)nb * c * hw.d + pix;
    D *yp = y + (size_t)i * cp;
    constexpr uint32_t V = 16 / sizeof(D);
    if (vec) {
        for (uint32_t c0 = 0; c0 < cp; c0 += V) {
            D v[V];
#pragma unroll
            for (uint32_t u = 0; u < V; u++) v[u] = c0 + u < c ? as_elem<S, D>(xp[(size_t)(c0 + u) * hw.d]) : D(0);
            *(uint4 *)(yp + c0) = pack16(v);
        }
    } else {
        for (uint32_t ch = 0; ch < cp; ch++) yp[ch] = ch < c ? as_elem<S, D>(xp[(size_t)ch * hw.d]) : D(0);
    }
}

} // namespace

extern "C" zci_status cu_nchw_to_nhwc_pad_as(const void *x, zci_dtype xt, void *y, zci_dtype yt, int64_t n, int64_t c,
                                             int64_t hw, int64_t cp, cudaStream_t s)
{
    const int64_t pixels = n * hw;
    if (!pixels || !cp) return ZCI_OK;
    const unsigned nb = blocks_for(pixels);
    const fastdiv d = make_fastdiv((uint32_t)hw);
    const size_t es = zci_dtype_size(yt);
    const int vec = (cp * (int64_t)es) % 16 == 0 && ((uintptr_t)y & 15) == 0;
    const uint32_t P = (uint32_t)pixels, C = (uint32_t)c, CP = (uint32_t)cp;
    if (xt == ZCI_FLOAT32 && yt == ZCI_FLOAT16)
        k_nchw_to_nhwc_pad<float, uint16_t><<<nb, kThreads, 0, s>>>((const float *)x, (uint16_t *)y, P, C, d, CP, vec);
    else if (xt == yt && es == 2)
        k_nchw_to_nhwc_pad<uint16_t, uint16_t><<<nb, kThreads, 0, s>>>((const uint16_t *)x, (uint16_t *)y, P, C, d, CP, vec);
    else if (xt == yt && es == 4)
        k_nchw_to_nhwc_pad<uint32_t, uint32_t><<<nb, kThreads, 0, s>>>((const uint32_t *)x, (uint32_t *)y, P, C, d, CP, vec);
    else
        return zci_error(ZCI_INTERNAL, "channel padding from %s to %s", zci_dtype_name(xt), zci_dtype_name(yt));
    CU_LAUNCHED("channel padding");
    return ZCI_OK;
}

extern "C" zci_status cu_nchw_to_nhwc_pad(const void *x, void *y, int64_t n, int64_t c, int64_t hw, int64_t cp, size_t es,
                                          cudaStream_t s)
{
    const zci_dtype t = es == 2 ? ZCI_FLOAT16 : es == 4 ? ZCI_FLOAT32 : ZCI_UINT8;
    if (es != 2 && es != 4) return zci_error(ZCI_INTERNAL, "channel padding of %zu-byte elements", es);
    return cu_nchw_to_nhwc_pad_as(x, t, y, t, n, c, hw, cp, s);
}

/* ---------------------------------------------------------------- Slice, Transpose, Expand */

namespace {

int64_t slice_axis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *first)
{
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    if (dim == 0) {
        *first = 0;
        return 0;
    }
    if (step > 0) {
        start = start < 0 ? 0 : start > dim ? dim : start;
        end = end < 0 ? 0 : end > dim ? dim : end;
        *first = start;
        return end > start ? (end - start - 1) / step + 1 : 0;
    }
    start = start < 0 ? 0 : start > dim - 1 ? dim - 1 : start;
    end = end < -1 ? -1 : end > dim - 1 ? dim - 1 : end;
    *first = start;
    if (start <= end) return 0;
    uint64_t mag = (uint64_t)0 - (uint64_t)step;
    return (int64_t)((uint64_t)(start - end - 1) / mag) + 1;
}

/* Slice's starts/ends/axes/steps: attributes before opset 10, constant inputs from 10. */
zci_status slice_plan(const cu_ctx *c, const zci_node *n, cu_gather_plan *p)
{
    const zci_graph *g = c->g;
    static const char *const names[4] = {"starts", "ends", "axes", "steps"};
    int64_t *args[4] = {NULL, NULL, NULL, NULL}, count[4] = {-1, -1, -1, -1};
    zci_status st = ZCI_OK;
    for (int i = 0; st == ZCI_OK && i < (n->opset < 10 ? 3 : 4); i++) {
        if (n->opset < 10) {
            int cnt = 0;
            const int64_t *v = zci_attr_ints(n, names[i], &cnt, &st);
            if (st != ZCI_OK || !v) continue;
            args[i] = (int64_t *)zci_malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(int64_t), names[i]);
            if (!args[i]) st = ZCI_OUT_OF_MEMORY;
            else memcpy(args[i], v, (size_t)cnt * sizeof(int64_t));
            count[i] = cnt;
        } else if (ZCI_HAS_IN(n, i + 1)) {
            st = zci_const_ints(g, n, i + 1, &args[i], &count[i]);
        }
    }
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int64_t start[ZCI_MAX_DIMS] = {0}, step[ZCI_MAX_DIMS], strides[ZCI_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) step[d] = 1;
    if (st == ZCI_OK && (!args[0] || !args[1])) st = zci_error(ZCI_UNSUPPORTED, "Slice without starts and ends");
    for (int64_t i = 0; st == ZCI_OK && i < count[0]; i++) {
        int a = 0;
        st = zci_norm_axis(args[2] ? args[2][i] : i, x->ndim, &a);
        if (st != ZCI_OK) break;
        int64_t sp = args[3] ? args[3][i] : 1;
        if (sp == 0) {
            st = zci_error(ZCI_INVALID_MODEL, "Slice step 0");
            break;
        }
        slice_axis(x->dims[a], args[0][i], args[1][i], sp, &start[a]);
        step[a] = sp;
    }
    for (int i = 0; i < 4; i++) free(args[i]);
    if (st != ZCI_OK) return st;
    const zci_tensor *y = ZCI_OUT(g, n, 0);
    cu_strides(x->dims, x->ndim, strides);
    memset(p, 0, sizeof *p);
    p->nd = x->ndim;
    for (int d = 0; d < x->ndim; d++) {
        p->offset += start[d] * strides[d];
        p->dims[d] = y->dims[d];
        p->stride[d] = y->dims[d] > 1 ? strides[d] * step[d] : strides[d];
    }
    if (zci_tensor_numel(y) == 0) p->offset = 0;
    cu_gather_simplify(p);
    return ZCI_OK;
}

zci_status transpose_plan(const cu_ctx *c, const zci_node *n, cu_gather_plan *p)
{
    const zci_tensor *x = ZCI_IN(c->g, n, 0);
    zci_status st = ZCI_OK;
    int cnt = 0;
    const int64_t *perm = zci_attr_ints(n, "perm", &cnt, &st);
    if (st != ZCI_OK) return st;
    if (perm && cnt != x->ndim) return zci_error(ZCI_INVALID_MODEL, "perm has %d entries for rank %d", cnt, x->ndim);
    int64_t strides[ZCI_MAX_DIMS];
    /* a detection head's view of an NHWC convolution output (layout.c): its bytes through strides */
    if (!cu_view_nhwc_strides(c, n->in[0], strides)) cu_strides(x->dims, x->ndim, strides);
    memset(p, 0, sizeof *p);
    p->nd = x->ndim;
    for (int d = 0; d < x->ndim; d++) {
        int64_t src = perm ? perm[d] : x->ndim - 1 - d;
        if (src < 0 || src >= x->ndim) return zci_error(ZCI_INVALID_MODEL, "bad perm");
        p->dims[d] = x->dims[src];
        p->stride[d] = strides[src];
    }
    cu_gather_simplify(p);
    return ZCI_OK;
}

zci_status copy_plan(const cu_ctx *c, const zci_node *n, cu_gather_plan *p)
{
    if (!strcmp(n->op_type, "Slice")) return slice_plan(c, n, p);
    if (!strcmp(n->op_type, "Transpose")) return transpose_plan(c, n, p);
    cu_broadcast_plan(ZCI_IN(c->g, n, 0), ZCI_OUT(c->g, n, 0), p); /* Expand */
    return ZCI_OK;
}

bool movable(size_t es) { return es == 1 || es == 2 || es == 4 || es == 8; }

} // namespace

extern "C" zci_status cu_copy_supports(const cu_ctx *c, const zci_node *n)
{
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_UNSUPPORTED, "input 0 is omitted");
    if (!movable(cu_esize(c, n->in[0]))) return zci_error(ZCI_UNSUPPORTED, "elements of %zu bytes", cu_esize(c, n->in[0]));
    cu_gather_plan p;
    return copy_plan(c, n, &p);
}

extern "C" zci_status cu_copy_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    cu_gather_plan *p = (cu_gather_plan *)zci_malloc(sizeof *p, "copy plan");
    if (!p) return ZCI_OUT_OF_MEMORY;
    zci_status st = copy_plan(c, n, p);
    if (st != ZCI_OK) {
        free(p);
        return st;
    }
    *state = p;
    return ZCI_OK;
}

extern "C" zci_status cu_copy_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s)
{
    return cu_strided_copy(cu_in(c, n, 0), c->ptr[n->out[0]], (const cu_gather_plan *)state, cu_esize(c, n->out[0]), s);
}

/* A view that must copy (its output is a model output): the bytes, unchanged. */
extern "C" zci_status cu_view_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s)
{
    size_t bytes = (size_t)cu_numel(c, n->out[0]) * cu_esize(c, n->out[0]);
    if (bytes && c->ptr[n->out[0]] != cu_in(c, n, 0))
        CU_TRY(cudaMemcpyAsync(c->ptr[n->out[0]], cu_in(c, n, 0), bytes, cudaMemcpyDeviceToDevice, s));
    return ZCI_OK;
}

/* ---------------------------------------------------------------- Concat, Split */

namespace {

constexpr int kMaxParts = 8;

/* The big tensor is `outer` rows of `row` elements; part k covers elements [off[k], off[k] +
 * len[k]) of each row. Concat gathers the parts into the big tensor, Split scatters it. */
struct parts {
    int n;
    uint32_t outer, row;
    uint32_t off[kMaxParts], len[kMaxParts];
    void *ptr[kMaxParts];
};

template <typename E> __global__ void k_parts(E *big, parts p, int split)
{
    uint32_t total = p.outer * p.row;
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    uint32_t o = i / p.row, j = i - o * p.row;
    int k = 0;
    while (k + 1 < p.n && j >= p.off[k + 1]) k++;
    E *part = (E *)p.ptr[k];
    uint32_t idx = o * p.len[k] + (j - p.off[k]);
    if (split) part[idx] = big[i];
    else big[i] = part[idx];
}

/* One warp per row of the big tensor when rows are long: no division per element, and each lane
 * walks the parts in order. */
template <typename E> __global__ void k_parts_rows(E *big, parts p, int split)
{
    const uint32_t warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= p.outer) return;
    E *row = big + (size_t)warp * p.row;
    int k = 0;
    for (uint32_t j = lane; j < p.row; j += 32) {
        while (k + 1 < p.n && j >= p.off[k + 1]) k++;
        E *part = (E *)p.ptr[k];
        size_t idx = (size_t)warp * p.len[k] + (j - p.off[k]);
        if (split) part[idx] = row[j];
        else row[j] = part[idx];
    }
}

template <typename E> void launch_parts(void *big, const parts &p, int split, cudaStream_t s)
{
    if (p.row >= 32 && p.row <= kMaxRowLen && p.outer >= kMinRows)
        k_parts_rows<E><<<blocks_for((int64_t)p.outer * 32), kThreads, 0, s>>>((E *)big, p, split);
    else k_parts<E><<<blocks_for((int64_t)p.outer * p.row), kThreads, 0, s>>>((E *)big, p, split);
}

/* Widest element (up to 16 bytes) that divides every size, offset and pointer. */
size_t vector_width(const parts &p, size_t es, const void *big)
{
    uintptr_t acc = (uintptr_t)big | (uintptr_t)(p.row * es);
    for (int k = 0; k < p.n; k++) acc |= (uintptr_t)p.ptr[k] | (uintptr_t)(p.off[k] * es) | (uintptr_t)(p.len[k] * es);
    size_t w = 16;
    while (w > 1 && (acc & (w - 1))) w >>= 1;
    return w;
}

struct parts_state {
    int axis;  /* in memory order (NHWC: the channel axis is the last) */
    int nhwc;
    int split;
};

zci_status parts_axis(const cu_ctx *c, const zci_node *n, int *axis)
{
    zci_status st = ZCI_OK;
    int split = !strcmp(n->op_type, "Split");
    const zci_tensor *big = split ? ZCI_IN(c->g, n, 0) : ZCI_OUT(c->g, n, 0);
    int64_t a = zci_attr_int(n, "axis", split ? 0 : 1, &st);
    if (st != ZCI_OK) return st;
    return zci_norm_axis(a, big->ndim, axis);
}

zci_status launch_parts_group(const cu_ctx *c, void *big, int es, parts p, int split, cudaStream_t s)
{
    size_t w = vector_width(p, (size_t)es, big);
    uint32_t f = (uint32_t)(w / (size_t)es);
    if (f > 1) {
        p.row /= f;
        for (int k = 0; k < p.n; k++) {
            p.off[k] /= f;
            p.len[k] /= f;
        }
    }
    if (!p.outer || !p.row) return ZCI_OK;
    switch (w) {
    case 16: launch_parts<uint4>(big, p, split, s); break;
    case 8: launch_parts<uint2>(big, p, split, s); break;
    case 4: launch_parts<uint32_t>(big, p, split, s); break;
    case 2: launch_parts<uint16_t>(big, p, split, s); break;
    default: launch_parts<uint8_t>(big, p, split, s); break;
    }
    CU_LAUNCHED("concat/split");
    return ZCI_OK;
}

} // namespace

extern "C" zci_status cu_parts_supports(const cu_ctx *c, const zci_node *n)
{
    int axis;
    ZCI_TRY(parts_axis(c, n, &axis));
    int split = !strcmp(n->op_type, "Split");
    int big = split ? n->in[0] : n->out[0];
    if (big < 0) return zci_error(ZCI_UNSUPPORTED, "missing tensor");
    if (!movable(cu_esize(c, big))) return zci_error(ZCI_UNSUPPORTED, "elements of %zu bytes", cu_esize(c, big));
    for (int k = 0; k < (split ? n->n_out : n->n_in); k++)
        if ((split ? n->out[k] : n->in[k]) < 0 && !split) return zci_error(ZCI_UNSUPPORTED, "omitted input %d", k);
    return ZCI_OK;
}

extern "C" zci_status cu_parts_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    parts_state *p = (parts_state *)zci_malloc(sizeof *p, "concat state");
    if (!p) return ZCI_OUT_OF_MEMORY;
    zci_status st = parts_axis(c, n, &p->axis);
    if (st != ZCI_OK) {
        free(p);
        return st;
    }
    p->split = !strcmp(n->op_type, "Split");
    const zci_tensor *big = p->split ? ZCI_IN(c->g, n, 0) : ZCI_OUT(c->g, n, 0);
    p->nhwc = cu_nhwc(c, n) && big->ndim == 4;
    if (p->nhwc) {
        static const int physical[4] = {0, 3, 1, 2}; /* logical N, C, H, W -> position in N, H, W, C */
        p->axis = physical[p->axis];
    }
    *state = p;
    return ZCI_OK;
}

extern "C" zci_status cu_parts_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s)
{
    const parts_state *ps = (const parts_state *)state;
    const zci_graph *g = c->g;
    const int big_t = ps->split ? n->in[0] : n->out[0];
    const zci_tensor *big = &g->tensors[big_t];
    const int es = (int)cu_esize(c, big_t);
    int64_t bdims[ZCI_MAX_DIMS], pdims[ZCI_MAX_DIMS];
    cu_physical_dims(big, ps->nhwc, bdims);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ps->axis; d++) outer *= bdims[d];
    for (int d = ps->axis + 1; d < big->ndim; d++) inner *= bdims[d];
    if (outer == 0 || inner == 0) return ZCI_OK;
    const int nparts = ps->split ? n->n_out : n->n_in;
    parts p;
    memset(&p, 0, sizeof p);
    p.outer = (uint32_t)outer;
    p.row = (uint32_t)(bdims[ps->axis] * inner);
    uint32_t off = 0;
    for (int k = 0; k < nparts; k++) {
        int t = ps->split ? n->out[k] : n->in[k];
        if (t >= 0) cu_physical_dims(&g->tensors[t], ps->nhwc, pdims);
        uint32_t len = t >= 0 ? (uint32_t)(pdims[ps->axis] * inner) : 0;
        if (t >= 0 && len) {
            p.off[p.n] = off;
            p.len[p.n] = len;
            p.ptr[p.n] = ps->split ? c->ptr[t] : cu_in(c, n, k);
            p.n++;
        }
        off += len;
        if (p.n == kMaxParts || (k == nparts - 1 && p.n)) {
            /* a group of parts: the rest of the row is someone else's, so the group's kernel
             * covers only its own span of each row */
            parts q = p;
            uint32_t base = q.off[0], span = q.off[q.n - 1] + q.len[q.n - 1] - base;
            for (int j = 0; j < q.n; j++) q.off[j] -= base;
            q.row = span;
            /* a strided big tensor view: rows of span elements inside rows of p.row */
            if (span == p.row) {
                ZCI_TRY(launch_parts_group(c, (char *)c->ptr[big_t], es, q, ps->split, s));
            } else {
                /* rows of the big tensor are not contiguous for this group: one launch per row
                 * would be slow, so fall back to a 2-D copy per part */
                for (int j = 0; j < q.n; j++) {
                    char *bigp = (char *)c->ptr[big_t] + (size_t)(base + q.off[j]) * es;
                    size_t width = (size_t)q.len[j] * es, bpitch = (size_t)p.row * es;
                    if (ps->split)
                        CU_TRY(cudaMemcpy2DAsync(q.ptr[j], width, bigp, bpitch, width, outer, cudaMemcpyDeviceToDevice, s));
                    else
                        CU_TRY(cudaMemcpy2DAsync(bigp, bpitch, q.ptr[j], width, width, outer, cudaMemcpyDeviceToDevice, s));
                }
            }
            memset(&p, 0, sizeof p);
            p.outer = (uint32_t)outer;
            p.row = (uint32_t)(bdims[ps->axis] * inner);
        }
    }
    return ZCI_OK;
}

/* ---------------------------------------------------------------- Gather */

namespace {

struct gather_state {
    int axis;
};

template <typename E, typename I>
__global__ void k_gather(const E *__restrict__ x, const I *__restrict__ idx, E *__restrict__ y, uint32_t n,
                         uint32_t nidx, uint32_t inner, uint32_t axis_dim)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint32_t in_i = i % inner, r = i / inner, j = r % nidx, o = r / nidx;
    int64_t v = (int64_t)idx[j];
    if (v < 0) v += axis_dim;
    v = v < 0 ? 0 : v >= (int64_t)axis_dim ? (int64_t)axis_dim - 1 : v; /* never out of bounds */
    y[i] = x[((size_t)o * axis_dim + (uint32_t)v) * inner + in_i];
}

template <typename E>
void launch_gather_e(const void *x, const void *idx, zci_dtype it, void *y, uint32_t n, uint32_t nidx, uint32_t inner,
                     uint32_t axis_dim, cudaStream_t s)
{
    if (it == ZCI_INT32)
        k_gather<E, int32_t><<<blocks_for(n), kThreads, 0, s>>>((const E *)x, (const int32_t *)idx, (E *)y, n, nidx, inner, axis_dim);
    else
        k_gather<E, int64_t><<<blocks_for(n), kThreads, 0, s>>>((const E *)x, (const int64_t *)idx, (E *)y, n, nidx, inner, axis_dim);
}

} // namespace

extern "C" zci_status cu_gather_supports(const cu_ctx *c, const zci_node *n)
{
    if (n->n_in != 2 || !ZCI_HAS_IN(n, 0) || !ZCI_HAS_IN(n, 1)) return zci_error(ZCI_UNSUPPORTED, "Gather needs 2 inputs");
    zci_dtype it = c->dt[n->in[1]];
    if (it != ZCI_INT32 && it != ZCI_INT64) return zci_error(ZCI_UNSUPPORTED, "indices of type %s", zci_dtype_name(it));
    if (!movable(cu_esize(c, n->in[0]))) return zci_error(ZCI_UNSUPPORTED, "elements of %zu bytes", cu_esize(c, n->in[0]));
    return ZCI_OK;
}

extern "C" zci_status cu_gather_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    gather_state *p = (gather_state *)zci_malloc(sizeof *p, "Gather state");
    if (!p) return ZCI_OUT_OF_MEMORY;
    zci_status st = ZCI_OK;
    int64_t a = zci_attr_int(n, "axis", 0, &st);
    if (st == ZCI_OK) st = zci_norm_axis(a, ZCI_IN(c->g, n, 0)->ndim, &p->axis);
    if (st != ZCI_OK) {
        free(p);
        return st;
    }
    *state = p;
    return ZCI_OK;
}

extern "C" zci_status cu_gather_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s)
{
    const gather_state *p = (const gather_state *)state;
    const zci_tensor *x = ZCI_IN(c->g, n, 0);
    int64_t inner = 1;
    for (int d = p->axis + 1; d < x->ndim; d++) inner *= x->dims[d];
    uint32_t n_out = (uint32_t)cu_numel(c, n->out[0]), nidx = (uint32_t)cu_numel(c, n->in[1]);
    if (!n_out || !inner || !nidx) return ZCI_OK;
    const void *xp = cu_in(c, n, 0), *ip = cu_in(c, n, 1);
    void *yp = c->ptr[n->out[0]];
    zci_dtype it = c->dt[n->in[1]];
    uint32_t ad = (uint32_t)x->dims[p->axis];
    switch (cu_esize(c, n->in[0])) {
    case 1: launch_gather_e<uint8_t>(xp, ip, it, yp, n_out, nidx, (uint32_t)inner, ad, s); break;
    case 2: launch_gather_e<uint16_t>(xp, ip, it, yp, n_out, nidx, (uint32_t)inner, ad, s); break;
    case 4: launch_gather_e<uint32_t>(xp, ip, it, yp, n_out, nidx, (uint32_t)inner, ad, s); break;
    default: launch_gather_e<uint64_t>(xp, ip, it, yp, n_out, nidx, (uint32_t)inner, ad, s); break;
    }
    CU_LAUNCHED("gather");
    return ZCI_OK;
}
