/* rowmap.cu: RowMap (ops/rowmap.h) on the GPU: a detection head's tail in one pass over the
 * data, instead of the dozen passes of the Transpose, Slices, Mul/Add/Pow and Concats it
 * replaces. Offsets are 32-bit: the backend refuses tensors of 2^31 elements or more. Two kernels:
 *
 * k_rowmap_tiles, wherever the source allows it (plan_tiles: columns contiguous, pixels 16-byte
 * aligned; a YOLO head's NHWC view with padded rows): a block takes up to 64 "pixels" of one part
 * (a pixel: the source position of all mid dims but the group dim, T's dim 1 when its stride is
 * the row length, i.e. a YOLO head's anchors), reads each pixel's group x C elements with 16-byte
 * loads into shared memory, applies the columns' operations there once, then writes each
 * group's rows (contiguous in the output) 16 bytes at a time, in the output's type or the
 * caller's (the output tail, run.c). yolov5s at batch 32 on the H100: 0.161 ms.
 *
 * k_rowmap otherwise (ZCI_CUDA_NO_ROWMAP_TILES=1 forces it): each block takes 64 output rows;
 * one thread per row finds where the row reads (its part, the source offset of its column 0,
 * each operand's offset), then a warp per row walks its columns with a per-column branch table
 * in shared memory. 0.445 ms for the same model, bound by issuing loads and stores of 2 bytes
 * each (Nsight Compute); the version before it, a division per element, 0.52 ms. */
#include "cuda/kernels.cuh"
#include "ops/rowmap.h"

using namespace zci_cu;

namespace {

constexpr int kRows = 64; /* output rows per block */
constexpr int kCols = 4;  /* columns per lane whose loads are in flight together */
constexpr int kMaxCols = 256; /* rows up to this long look their columns' branches up in a table */
constexpr int kCopy = 255;    /* the table's mark of a column without operations */
constexpr int kOps = ZCI_RM_MAX_BRANCHES * ZCI_RM_MAX_OPS;
constexpr int kMaxPix = 64;                    /* k_rowmap_tiles: pixels per block, at most */
constexpr int kPixLoads = kMaxPix / (kThreads / 32); /* pixels per warp */

struct dev_part {
    const void *x;
    const void *k[kOps]; /* operand tensors, NULL for a scalar */
    int row0, rows, rank, n_branches;
    int dims[ZCI_RM_MAX_RANK]; /* T's */
    int sstr[ZCI_RM_MAX_RANK]; /* T's dims' element strides in the source buffer */
    int lo[ZCI_RM_MAX_BRANCHES], hi[ZCI_RM_MAX_BRANCHES], n_ops[ZCI_RM_MAX_BRANCHES];
    int code[kOps];
    float scalar[kOps];
    int kstr[kOps][ZCI_RM_MAX_RANK];
    /* k_rowmap_tiles (dev_plan.tiles): pixels start at T's dim pdim0 (2: dim 1 is a group of A
     * row sets side by side in the source, 1: no group, A = 1), npix per image, ld elements apart
     * in the source; seg: A * C rounded up to 16 bytes, the shared-memory stride of a pixel;
     * columns [op_lo, op_hi) hold every branch with operations; the part's tiles are blocks
     * [tile0, tile0 + tiles) of an image's (set per launch) */
    int pdim0, A, npix, ld, seg, op_lo, op_hi, tiles, tile0;
    fastdiv div_aw, div_w;              /* by A x (op_hi - op_lo) and by op_hi - op_lo */
    fastdiv div_dim[ZCI_RM_MAX_RANK];   /* by dims[d], for the pixel dims */
};

/* The kernel's parameters (about 3 KB, under the 4 KB every CUDA version takes). A launch
 * writes rows [row_lo, row_hi) of every image, in blocks_per_image blocks each. */
struct dev_plan {
    int n_parts, rows, cols, total_rows;
    int row_lo, row_hi, blocks_per_image;
    int tiles;       /* 1: every part qualifies for k_rowmap_tiles */
    int pix;         /* its pixels per block (a multiple of 8) */
    int seg_max;     /* the parts' largest seg: shared memory is pix x seg_max elements */
    int sms;         /* the device's multiprocessors */
    int q_lo;        /* the first part of a launch of it */
    fastdiv div_cols;
    dev_part part[ZCI_RM_MAX_PARTS];
};
static_assert(sizeof(dev_plan) <= 4096, "RowMap's plan is passed as a kernel parameter");

template <typename E, typename O> __global__ void __launch_bounds__(kThreads) k_rowmap(const dev_plan p, O *__restrict__ y)
{
    __shared__ int s_part[kRows], s_src[kRows], s_k[kRows][kOps];
    __shared__ unsigned char s_col[ZCI_RM_MAX_PARTS][kMaxCols]; /* per part and column: its branch, or kCopy */
    const bool table = p.cols <= kMaxCols;
    if (table)
        for (int e = threadIdx.x; e < p.n_parts * p.cols; e += blockDim.x) {
            const int q = e / p.cols, c = e - q * p.cols;
            const dev_part &pt = p.part[q];
            int b = 0;
            while (b + 1 < pt.n_branches && c >= pt.hi[b]) b++;
            s_col[q][c] = (unsigned char)(pt.n_ops[b] ? b : kCopy);
        }
    const int n = blockIdx.x / p.blocks_per_image, lr0 = p.row_lo + (blockIdx.x - n * p.blocks_per_image) * kRows;
    const int nrows = min(kRows, p.row_hi - lr0), r0 = n * p.rows + lr0;
    if ((int)threadIdx.x < nrows) {
        const int i = threadIdx.x, rr = lr0 + i;
        int q = 0;
        while (q + 1 < p.n_parts && rr >= p.part[q + 1].row0) q++;
        const dev_part &pt = p.part[q];
        int coord[ZCI_RM_MAX_RANK];
        coord[0] = n;
        int lr = rr - pt.row0;
        for (int d = pt.rank - 2; d >= 1; d--) {
            coord[d] = lr % pt.dims[d];
            lr /= pt.dims[d];
        }
        int src = 0;
        for (int d = 0; d < pt.rank - 1; d++) src += coord[d] * pt.sstr[d];
        s_part[i] = q;
        s_src[i] = src;
        for (int b = 0; b < pt.n_branches; b++)
            for (int o = 0; o < pt.n_ops[b]; o++) {
                const int *ks = pt.kstr[b * ZCI_RM_MAX_OPS + o];
                int kb = 0;
                for (int d = 0; d < pt.rank - 1; d++) kb += coord[d] * ks[d];
                s_k[i][b * ZCI_RM_MAX_OPS + o] = kb;
            }
    }
    __syncthreads();
    /* a warp per row, its lanes along the columns, kCols of them per lane at a time with their
     * loads issued before any is used: no division per element, the part and the operands' row
     * offsets the same for the whole warp, and each column's branch from the block's table in
     * shared memory (columns with no operations are copied). Nsight Compute on this loop before
     * the table: bound by issuing instructions (the plan's per-column lookups, constant loads at
     * divergent offsets; half the lanes idle), at 8% of the memory bandwidth. */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    /* two rows per warp at a time (i and i + n_warps): their loads are in flight together too */
    for (int i0 = warp; i0 < nrows; i0 += 2 * n_warps) {
        for (int c0 = lane; c0 < p.cols; c0 += 32 * kCols) {
            float v[2][kCols];
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int i = i0 + h * n_warps;
                if (i >= nrows) break;
                const dev_part &pt = p.part[s_part[i]];
                const E *__restrict__ xr = (const E *)pt.x + s_src[i];
                const int xs = pt.sstr[pt.rank - 1];
#pragma unroll
                for (int u = 0; u < kCols; u++) {
                    const int c = c0 + 32 * u;
                    v[h][u] = c < p.cols ? to_f(__ldg(xr + c * xs)) : 0.f;
                }
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int i = i0 + h * n_warps, q = i < nrows ? s_part[i] : 0;
                if (i >= nrows) break;
                const dev_part &pt = p.part[q];
                const int last = pt.rank - 1;
                O *yr = y + (size_t)(r0 + i) * p.cols;
#pragma unroll
                for (int u = 0; u < kCols; u++) {
                    const int c = c0 + 32 * u;
                    if (c >= p.cols) break;
                    int b = 0;
                    if (table) {
                        b = s_col[q][c];
                        if (b == kCopy) { /* most columns: a copy (the head's sigmoid is in its conv) */
                            yr[c] = from_f<O>(v[h][u]);
                            continue;
                        }
                    } else {
                        while (c >= pt.hi[b]) b++;
                    }
                    for (int o = 0; o < pt.n_ops[b]; o++) {
                        const int j = b * ZCI_RM_MAX_OPS + o;
                        const float kv = pt.k[j] ? to_f(((const E *)pt.k[j])[s_k[i][j] + (c - pt.lo[b]) * pt.kstr[j][last]])
                                                 : pt.scalar[j];
                        v[h][u] = zci_rm_apply(pt.code[j], v[h][u], kv);
                    }
                    yr[c] = from_f<O>(v[h][u]);
                }
            }
        }
    }
}

/* Element (n, a, pixel, c) of part pt through the operations of column c's branch (c in
 * [op_lo, op_hi)); the operands' offsets from the element's coordinates. */
template <typename E>
__device__ __forceinline__ float tile_ops(const dev_part &pt, float v, int n, int a, int pix, int c)
{
    int b = 0;
    while (b + 1 < pt.n_branches && c >= pt.hi[b]) b++;
    const int last = pt.rank - 1;
    /* the pixel's coordinates, once for all operands */
    int coord[ZCI_RM_MAX_RANK] = {0};
    for (int d = last - 1, r = pix; d >= pt.pdim0; d--) {
        const int q = (int)fdiv((uint32_t)r, pt.div_dim[d]);
        coord[d] = r - q * pt.dims[d];
        r = q;
    }
    for (int o = 0; o < pt.n_ops[b]; o++) {
        const int j = b * ZCI_RM_MAX_OPS + o;
        float kv = pt.scalar[j];
        if (pt.k[j]) {
            const int *ks = pt.kstr[j];
            int off = n * ks[0] + (c - pt.lo[b]) * ks[last] + (pt.pdim0 == 2 ? a * ks[1] : 0);
#pragma unroll
            for (int d = 1; d < ZCI_RM_MAX_RANK - 1; d++)
                if (d >= pt.pdim0 && d < last) off += coord[d] * ks[d];
            kv = to_f(((const E *)pt.k[j])[off]);
        }
        /* v^2 as a product: exact, where powf is within a few ulp (YOLOv5's box sizes) */
        v = pt.code[j] == ZCI_RM_POW && kv == 2.f ? v * v : zci_rm_apply(pt.code[j], v, kv);
    }
    return v;
}

/* Element v as O's bits */
template <typename E, typename O> __device__ __forceinline__ typename raw_of<O>::type raw_as(E v);
template <> __device__ __forceinline__ uint16_t raw_as<__half, __half>(__half v) { return __half_as_ushort(v); }
template <> __device__ __forceinline__ uint32_t raw_as<float, float>(float v) { return __float_as_uint(v); }
template <> __device__ __forceinline__ uint32_t raw_as<__half, float>(__half v) { return __float_as_uint(__half2float(v)); }
template <> __device__ __forceinline__ uint16_t raw_as<float, __half>(float v) { return __half_as_ushort(__float2half_rn(v)); }

/* A block: p.pix pixels of one part of one image, every group (see the top of the file). */
template <typename E, typename O>
__global__ void __launch_bounds__(kThreads) k_rowmap_tiles(const dev_plan p, O *__restrict__ y)
{
    constexpr int VI = 16 / sizeof(E), V = 16 / sizeof(O); /* elements per 16 bytes in and out */
    extern __shared__ uint4 s_tile[];
    E *s = (E *)s_tile;
    const int n = blockIdx.x / p.blocks_per_image, t = blockIdx.x - n * p.blocks_per_image;
    int q = p.q_lo;
    while (q + 1 < p.n_parts && t >= p.part[q + 1].tile0 && p.part[q + 1].tiles) q++;
    const dev_part &pt = p.part[q];
    const int p0 = (t - pt.tile0) * p.pix, np = min(p.pix, pt.npix - p0);
    const int C = p.cols, A = pt.A, seg = pt.seg, vpp = seg / VI;
    /* every pixel's A x C elements (and the padding up to seg, inside the source's ld) */
    const E *x = (const E *)pt.x + (size_t)n * pt.sstr[0] + (size_t)p0 * pt.ld;
    /* a warp per pixel, kPixLoads pixels per warp with their loads in flight together (read
     * once: streamed past the caches). Against one load at a time per thread this measured
     * 185 instead of 190 us at batch 32: the loads in flight were not what held the kernel. */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int v = lane; v < vpp; v += 32) {
        uint4 r[kPixLoads];
#pragma unroll
        for (int k = 0; k < kPixLoads; k++) {
            const int pl = warp + k * (kThreads / 32);
            if (pl < np) r[k] = __ldcs((const uint4 *)(x + (size_t)pl * pt.ld) + v);
        }
#pragma unroll
        for (int k = 0; k < kPixLoads; k++) {
            const int pl = warp + k * (kThreads / 32);
            if (pl < np) s_tile[pl * vpp + v] = r[k];
        }
    }
    __syncthreads();
    /* the columns with operations, in place (a few per row: apart from the copies below, where
     * they diverged a warp once per 16 bytes) */
    const int W = pt.op_hi - pt.op_lo;
    if (W > 0) {
        for (int e = threadIdx.x; e < np * A * W; e += blockDim.x) {
            const int pl = (int)fdiv((uint32_t)e, pt.div_aw), r = e - pl * (A * W), a = (int)fdiv((uint32_t)r, pt.div_w);
            const int c = pt.op_lo + (r - a * W);
            E &v = s[pl * seg + a * C + c];
            v = from_f<E>(tile_ops<E>(pt, to_f(v), n, a, p0 + pl, c));
        }
        __syncthreads();
    }
    /* then element copies (the bits as they are, or converted to O) */
    using R = typename raw_of<O>::type;
    const int chunk = np * C;
    for (int a = 0; a < A; a++) {
        /* the group's rows are chunk contiguous output elements from ob; 16-byte groups of the
         * output in absolute terms, so that the blocks either side write the partial ones' rest */
        const int ob = (n * p.rows + pt.row0 + a * pt.npix + p0) * C;
        const int g0 = ob / V, g1 = (ob + chunk + V - 1) / V;
        for (int g = g0 + (int)threadIdx.x; g < g1; g += blockDim.x) {
            const int j0 = g * V - ob;
            const int jj = max(j0, 0);
            int pl = (int)fdiv((uint32_t)jj, p.div_cols), c = jj - pl * C;
            R out[V];
#pragma unroll
            for (int u = 0; u < V; u++) {
                const int j = j0 + u;
                out[u] = 0;
                if (j < 0 || j >= chunk) continue;
                out[u] = raw_as<E, O>(s[pl * seg + a * C + c]);
                if (++c == C) {
                    c = 0;
                    pl++;
                }
            }
            R *yg = (R *)y + (size_t)g * V;
            if (j0 >= 0 && j0 + V <= chunk) {
                *(uint4 *)yg = pack16(out);
            } else {
#pragma unroll
                for (int u = 0; u < V; u++)
                    if (j0 + u >= 0 && j0 + u < chunk) yg[u] = out[u];
            }
        }
    }
}

/* Logical element strides of source tensor t as node n reads it: through a head's NHWC view,
 * as NHWC bytes of a 4-D tensor, or packed. */
void source_strides(const cu_ctx *c, const zci_node *n, int q, int64_t *xs)
{
    const zci_tensor *x = &c->g->tensors[n->in[q]];
    if (cu_view_nhwc_strides(c, n->in[q], xs)) return;
    if (x->ndim == 4 && cu_in_nhwc(c, n, q)) {
        const int64_t C = x->dims[1], H = x->dims[2], W = x->dims[3];
        xs[0] = H * W * C;
        xs[1] = 1;
        xs[2] = W * C;
        xs[3] = C;
        return;
    }
    cu_strides(x->dims, x->ndim, xs);
}

/* What the kernel needs of the node, before layouts are decided. */
zci_status check(const cu_ctx *c, const zci_node *n)
{
    if (!n->params) return zci_error(ZCI_INTERNAL, "RowMap without params");
    ZCI_TRY(cu_check_index_range(c, n));
    const zci_dtype et = c->dt[n->out[0]];
    if (et != ZCI_FLOAT32 && et != ZCI_FLOAT16)
        return zci_error(ZCI_UNSUPPORTED, "RowMap on %s tensors", zci_dtype_name(et));
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && c->dt[n->in[k]] != et)
            return zci_error(ZCI_UNSUPPORTED, "RowMap with inputs of different types on the device");
    return ZCI_OK;
}

/* Whether every part suits k_rowmap_tiles, and its geometry (see dev_part). It needs columns
 * contiguous in the source, pixel dims that flatten to one stride, and 16-byte aligned pixels
 * whose A x C elements rounded up to 16 bytes stay inside that stride (a padded head's 256
 * channels for 3 x 85). ZCI_CUDA_NO_ROWMAP_TILES=1 keeps the row kernel (for A/B tests). */
void plan_tiles(const cu_ctx *c, const zci_node *n, dev_plan *d)
{
    const char *env = getenv("ZCI_CUDA_NO_ROWMAP_TILES");
    d->tiles = 0;
    if (env && *env == '1') return;
    const int es = (int)cu_esize(c, n->out[0]), V = 16 / es, C = d->cols;
    if (C <= 0 || d->rows <= 0) return;
    int seg_max = 0;
    for (int q = 0; q < d->n_parts; q++) {
        dev_part *pt = &d->part[q];
        const int last = pt->rank - 1;
        if (pt->rank < 3 || pt->sstr[last] != 1 || pt->dims[last] != C) return;
        /* a group dim: T's dim 1 side by side with the columns in the source */
        pt->pdim0 = pt->rank >= 4 && pt->sstr[1] == C ? 2 : 1;
        pt->A = pt->pdim0 == 2 ? pt->dims[1] : 1;
        int npix = 1;
        for (int dd = pt->pdim0; dd < last; dd++) {
            if (dd + 1 < last && pt->sstr[dd] != pt->sstr[dd + 1] * pt->dims[dd + 1]) return;
            npix *= pt->dims[dd];
        }
        pt->npix = npix;
        pt->ld = pt->sstr[last - 1];
        pt->seg = (pt->A * C + V - 1) / V * V;
        if (npix <= 0 || (int64_t)pt->A * npix != pt->rows || pt->seg > pt->ld || (pt->ld * es) % 16 || (pt->sstr[0] * es) % 16)
            return;
        pt->op_lo = C;
        pt->op_hi = 0;
        for (int b = 0; b < pt->n_branches; b++)
            if (pt->n_ops[b]) {
                pt->op_lo = pt->lo[b] < pt->op_lo ? pt->lo[b] : pt->op_lo;
                pt->op_hi = pt->hi[b] > pt->op_hi ? pt->hi[b] : pt->op_hi;
            }
        const int W = pt->op_hi > pt->op_lo ? pt->op_hi - pt->op_lo : 1;
        pt->div_aw = make_fastdiv((uint32_t)(pt->A * W));
        pt->div_w = make_fastdiv((uint32_t)W);
        for (int dd = pt->pdim0; dd < last; dd++) pt->div_dim[dd] = make_fastdiv((uint32_t)pt->dims[dd]);
        seg_max = pt->seg > seg_max ? pt->seg : seg_max;
    }
    /* pixels per block: as many as 32 KB of shared memory holds, a multiple of 8, at most kMaxPix */
    int pix = 32768 / (seg_max * es) / 8 * 8;
    if (pix < 8) return;
    d->pix = pix > kMaxPix ? kMaxPix : pix;
    d->seg_max = seg_max;
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c->device) != cudaSuccess || sms <= 0) {
        (void)cudaGetLastError();
        sms = 132;
    }
    d->sms = sms;
    d->div_cols = make_fastdiv((uint32_t)C);
    d->tiles = 1;
}

/* The plan without the buffers (filled per launch), once layouts are known. */
zci_status make_plan(const cu_ctx *c, const zci_node *n, dev_plan *d)
{
    ZCI_TRY(check(c, n));
    const zci_rowmap_params *p = (const zci_rowmap_params *)n->params;
    memset(d, 0, sizeof *d);
    d->n_parts = p->n_parts;
    d->rows = (int)p->rows;
    d->cols = (int)p->cols;
    d->total_rows = (int)(p->batch * p->rows);
    for (int q = 0; q < p->n_parts; q++) {
        const zci_rm_part *pt = &p->part[q];
        dev_part *dp = &d->part[q];
        int64_t xs[ZCI_MAX_DIMS];
        source_strides(c, n, q, xs);
        dp->row0 = (int)pt->row0;
        dp->rows = (int)pt->rows;
        dp->rank = pt->rank;
        dp->n_branches = pt->n_branches;
        for (int dd = 0; dd < pt->rank; dd++) {
            dp->dims[dd] = (int)pt->dims[dd];
            dp->sstr[dd] = (int)xs[pt->perm[dd]];
        }
        for (int b = 0; b < pt->n_branches; b++) {
            const zci_rm_branch *br = &pt->br[b];
            dp->lo[b] = br->lo;
            dp->hi[b] = br->hi;
            dp->n_ops[b] = br->n_ops;
            for (int o = 0; o < br->n_ops; o++) {
                const int j = b * ZCI_RM_MAX_OPS + o;
                dp->code[j] = br->ops[o].code;
                dp->scalar[j] = br->ops[o].scalar;
                for (int dd = 0; dd < pt->rank; dd++) dp->kstr[j][dd] = (int)br->ops[o].kstride[dd];
            }
        }
    }
    plan_tiles(c, n, d);
    return ZCI_OK;
}

} // namespace

extern "C" zci_status cu_rowmap_supports(const cu_ctx *c, const zci_node *n) { return check(c, n); }

extern "C" zci_status cu_rowmap_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    dev_plan *d = (dev_plan *)zci_malloc(sizeof *d, "RowMap plan");
    if (!d) return ZCI_OUT_OF_MEMORY;
    zci_status st = make_plan(c, n, d);
    if (st != ZCI_OK) {
        free(d);
        return st;
    }
    zci_log(c->verbose, "CUDA RowMap %s: %s", zci_node_desc(c->g, n),
            d->tiles ? "tiles through shared memory (16-byte loads and stores)" : "a warp per row");
    *state = d;
    return ZCI_OK;
}

namespace {

template <typename E, typename O>
void launch_tiles(const dev_plan &d, unsigned blocks, size_t smem, void *y, cudaStream_t s)
{
    k_rowmap_tiles<E, O><<<blocks, kThreads, smem, s>>>(d, (O *)y);
}

template <typename E, typename O> void launch_rows(const dev_plan &d, unsigned blocks, void *y, cudaStream_t s)
{
    k_rowmap<E, O><<<blocks, kThreads, 0, s>>>(d, (O *)y);
}

} // namespace

/* Rows [lo, hi) of every image into y, of type yt (the output's own type, or FP32 / FP16 for
 * the other where the session's output edge lets RowMap write the caller's buffer). */
extern "C" zci_status cu_rowmap_launch_to(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s, int64_t lo,
                                          int64_t hi, void *y, zci_dtype yt)
{
    dev_plan d = *(const dev_plan *)state;
    const zci_dtype et = c->dt[n->out[0]];
    if (yt != ZCI_FLOAT16 && yt != ZCI_FLOAT32)
        return zci_error(ZCI_UNSUPPORTED, "RowMap writing %s", zci_dtype_name(yt));
    d.row_lo = (int)lo;
    d.row_hi = (int)hi;
    d.blocks_per_image = (int)((hi - lo + kRows - 1) / kRows);
    const zci_rowmap_params *p = (const zci_rowmap_params *)n->params;
    for (int q = 0; q < d.n_parts; q++) {
        d.part[q].x = cu_in(c, n, q);
        for (int b = 0; b < p->part[q].n_branches; b++)
            for (int o = 0; o < p->part[q].br[b].n_ops; o++) {
                const int k = p->part[q].br[b].ops[o].input;
                d.part[q].k[b * ZCI_RM_MAX_OPS + o] = k >= 0 ? cu_in(c, n, k) : NULL;
            }
    }
    if (!d.total_rows || !d.cols || hi <= lo) return ZCI_OK;
    const int images = d.total_rows / d.rows;
    const int h_in = et == ZCI_FLOAT16, h_out = yt == ZCI_FLOAT16;
    if (d.tiles) { /* the parts whose rows [lo, hi) are, when it starts and ends at part boundaries */
        int q_lo = -1, q_hi = -1, tiles = 0;
        /* pixels per block: fewer where the launch is small (batch 1), so that every
         * multiprocessor gets about four blocks; the block's load-operate-store is serial */
        int64_t pixels = 0;
        for (int q = 0; q < d.n_parts; q++)
            if (d.part[q].row0 >= lo && d.part[q].row0 + d.part[q].rows <= hi) pixels += d.part[q].npix;
        const int64_t want = (pixels * images + 4 * d.sms - 1) / (4 * d.sms);
        if (want < d.pix) d.pix = want <= 8 ? 8 : (int)((want + 7) / 8 * 8);
        for (int q = 0; q < d.n_parts; q++) {
            if (d.part[q].row0 == lo) q_lo = q;
            if (q_lo >= 0 && q_hi < 0) {
                d.part[q].tile0 = tiles;
                tiles += d.part[q].tiles = (d.part[q].npix + d.pix - 1) / d.pix;
                if (d.part[q].row0 + d.part[q].rows == hi) q_hi = q + 1;
            } else {
                d.part[q].tiles = 0;
            }
        }
        int aligned = ((uintptr_t)y & 15) == 0;
        for (int q = q_lo; q >= 0 && q < q_hi; q++) aligned &= ((uintptr_t)d.part[q].x & 15) == 0;
        if (q_lo >= 0 && q_hi > q_lo && aligned) {
            d.q_lo = q_lo;
            d.blocks_per_image = tiles;
            const unsigned blocks = (unsigned)tiles * (unsigned)images;
            const size_t smem = (size_t)d.pix * d.seg_max * cu_esize(c, n->out[0]);
            if (h_in) (h_out ? launch_tiles<__half, __half> : launch_tiles<__half, float>)(d, blocks, smem, y, s);
            else (h_out ? launch_tiles<float, __half> : launch_tiles<float, float>)(d, blocks, smem, y, s);
            CU_LAUNCHED("RowMap");
            return ZCI_OK;
        }
    }
    const unsigned blocks = (unsigned)(d.blocks_per_image * images);
    if (h_in) (h_out ? launch_rows<__half, __half> : launch_rows<__half, float>)(d, blocks, y, s);
    else (h_out ? launch_rows<float, __half> : launch_rows<float, float>)(d, blocks, y, s);
    CU_LAUNCHED("RowMap");
    return ZCI_OK;
}

/* Rows [lo, hi) of every image. */
extern "C" zci_status cu_rowmap_launch_rows(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s, int64_t lo,
                                            int64_t hi)
{
    return cu_rowmap_launch_to(c, n, state, s, lo, hi, c->ptr[n->out[0]], c->dt[n->out[0]]);
}

/* The whole node, less the rows an early launch wrote (cu_plan_early_output). */
extern "C" zci_status cu_rowmap_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s)
{
    const dev_plan *d = (const dev_plan *)state;
    const int64_t lo = c->early_rm >= 0 && n == &c->g->nodes[c->early_rm] ? c->early_rows : 0;
    return cu_rowmap_launch_rows(c, n, state, s, lo, d->rows);
}
