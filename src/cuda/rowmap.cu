/* rowmap.cu: RowMap (ops/rowmap.h) on the GPU: a detection head's tail in one kernel.
 *
 * Each block takes 64 output rows. First one thread per row finds where the row reads (its
 * part, the source offset of its column 0, and each operand's offset), into shared memory; then
 * a warp per row walks its columns, so the writes are contiguous and the reads are too where a
 * row's columns are (the NHWC view of a YOLO head's convolution: a row is 85 channels of one
 * pixel). (The first version walked the block's elements in output order with a division per
 * element: 0.52 ms for yolov5s at batch 32, an eighth of the model.) One pass over the data instead of the dozen passes of the
 * Transpose, Slices, Mul/Add/Pow and Concats it replaces. Offsets are 32-bit: the backend
 * refuses tensors of 2^31 elements or more. */
#include "cuda/kernels.cuh"
#include "ops/rowmap.h"

using namespace zci_cu;

namespace {

constexpr int kRows = 64; /* output rows per block */
constexpr int kCols = 4;  /* columns per lane whose loads are in flight together */
constexpr int kMaxCols = 256; /* rows up to this long look their columns' branches up in a table */
constexpr int kCopy = 255;    /* the table's mark of a column without operations */
constexpr int kOps = ZCI_RM_MAX_BRANCHES * ZCI_RM_MAX_OPS;

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
};

/* The kernel's parameters (about 3 KB, under the 4 KB every CUDA version takes). A launch
 * writes rows [row_lo, row_hi) of every image, in blocks_per_image blocks each. */
struct dev_plan {
    int n_parts, rows, cols, total_rows;
    int row_lo, row_hi, blocks_per_image;
    dev_part part[ZCI_RM_MAX_PARTS];
};

template <typename E> __global__ void __launch_bounds__(kThreads) k_rowmap(const dev_plan p, E *__restrict__ y)
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
                E *yr = y + (size_t)(r0 + i) * p.cols;
#pragma unroll
                for (int u = 0; u < kCols; u++) {
                    const int c = c0 + 32 * u;
                    if (c >= p.cols) break;
                    int b = 0;
                    if (table) {
                        b = s_col[q][c];
                        if (b == kCopy) { /* most columns: a copy (the head's sigmoid is in its conv) */
                            yr[c] = from_f<E>(v[h][u]);
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
                    yr[c] = from_f<E>(v[h][u]);
                }
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
    *state = d;
    return ZCI_OK;
}

/* Rows [lo, hi) of every image. */
extern "C" zci_status cu_rowmap_launch_rows(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s, int64_t lo,
                                            int64_t hi)
{
    dev_plan d = *(const dev_plan *)state;
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
    const unsigned blocks = (unsigned)(d.blocks_per_image * (d.total_rows / d.rows));
    if (c->dt[n->out[0]] == ZCI_FLOAT16) k_rowmap<__half><<<blocks, kThreads, 0, s>>>(d, (__half *)c->ptr[n->out[0]]);
    else k_rowmap<float><<<blocks, kThreads, 0, s>>>(d, (float *)c->ptr[n->out[0]]);
    CU_LAUNCHED("RowMap");
    return ZCI_OK;
}

/* The whole node, less the rows an early launch wrote (cu_plan_early_output). */
extern "C" zci_status cu_rowmap_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s)
{
    const dev_plan *d = (const dev_plan *)state;
    const int64_t lo = c->early_rm >= 0 && n == &c->g->nodes[c->early_rm] ? c->early_rows : 0;
    return cu_rowmap_launch_rows(c, n, state, s, lo, d->rows);
}
