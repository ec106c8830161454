/* tensor.c: ops that move, view or create data without arithmetic on it: Concat, Split, Slice,
 * Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Expand, Shape, Gather, ConstantOfShape,
 * Constant, Range, Identity.
 *
 * Every data-moving kernel copies bytes, so one kernel serves every element type. The ops that
 * only reinterpret their input (Reshape, Flatten, Squeeze, Unsqueeze, Identity) are views: the
 * executor aliases output to input and their kernel copies only when it gets two buffers (a
 * graph input or a constant feeding a graph output, or constant folding). Slice, Transpose and
 * Expand share one strided-copy engine whose plan is built at planning time. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/op.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

/* Below this many bytes a copy runs on one thread: waking a team costs more than it saves. */
#define PAR_MIN_BYTES ((int64_t)1 << 16)
/* Side of the square tiles of the blocked 2-D transpose (elements). */
#define TILE 32

/* ================================================================ small helpers */

static int64_t dims_prod(const int64_t *dims, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= dims[i];
    return p;
}

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

/* Bytes per element of a tensor that a copy kernel can move; 0 (with an error) otherwise. */
static zci_status movable_size(const zci_tensor *t, size_t *esz)
{
    *esz = zci_dtype_size(t->dtype);
    if (*esz == 0)
        return zci_error(ZCI_UNSUPPORTED, "tensor '%s': element type %s is not supported", tname(t),
                         zci_dtype_name(t->dtype));
    return ZCI_OK;
}

/* Replaces n->params (a flat struct: free() releases it). */
static void set_params(zci_node *n, void *p)
{
    free(n->params);
    n->params = p;
}

/* Threads worth using for `bytes` of copying. */
static int copy_threads(int64_t bytes, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    if (bytes < PAR_MIN_BYTES) return 1;
    int64_t by_size = bytes / PAR_MIN_BYTES;
    return by_size < nthreads ? (int)by_size : nthreads;
}

/* memcpy split over threads: a single large block (a Concat input, a Split output) is
 * otherwise bound by one core's bandwidth. */
static void par_memcpy(void *dst, const void *src, int64_t bytes, int nthreads)
{
    int nt = copy_threads(bytes, nthreads);
    if (nt <= 1) {
        if (bytes > 0) memcpy(dst, src, (size_t)bytes);
        return;
    }
    int64_t piece = (bytes + nt - 1) / nt;
    piece = (piece + 63) & ~(int64_t)63;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int i = 0; i < nt; i++) {
        int64_t lo = (int64_t)i * piece;
        int64_t hi = lo + piece < bytes ? lo + piece : bytes;
        if (lo < hi) memcpy((char *)dst + lo, (const char *)src + lo, (size_t)(hi - lo));
    }
}

/* Copies n elements of esz bytes; source elements are `ss` bytes apart (0 repeats one element,
 * negative walks backwards), destination elements are packed. Fixed-size memcpy compiles to
 * plain loads and stores and is safe for any alignment. */
static void copy_row(char *dst, const char *src, int64_t n, int64_t ss, size_t esz)
{
    if (ss == (int64_t)esz) {
        memcpy(dst, src, (size_t)n * esz);
        return;
    }
    switch (esz) {
    case 1:
        for (int64_t i = 0; i < n; i++) dst[i] = src[i * ss];
        break;
    case 2:
        for (int64_t i = 0; i < n; i++) memcpy(dst + 2 * i, src + i * ss, 2);
        break;
    case 4:
        for (int64_t i = 0; i < n; i++) memcpy(dst + 4 * i, src + i * ss, 4);
        break;
    case 8:
        for (int64_t i = 0; i < n; i++) memcpy(dst + 8 * i, src + i * ss, 8);
        break;
    default:
        for (int64_t i = 0; i < n; i++) memcpy(dst + (size_t)i * esz, src + i * ss, esz);
        break;
    }
}

/* Reads element i of an int32 or int64 tensor. */
static int64_t read_index(const void *p, zci_dtype dt, int64_t i)
{
    return dt == ZCI_INT32 ? (int64_t)((const int32_t *)p)[i] : ((const int64_t *)p)[i];
}

/* ================================================================ strided copy engine */

/* out[i0..i{nd-1}] = in[sum i_k * stride[k]]: output packed in `dims` order, strides in
 * elements of the input (negative for reversed slices, 0 for broadcast dims). */
typedef struct copy_plan {
    int nd;
    int64_t dims[ZCI_MAX_DIMS];
    int64_t stride[ZCI_MAX_DIMS];
    int tile_dim; /* >= 0: dim whose input stride is 1 while the last dim's is not (transpose) */
} copy_plan;

/* The plan made minimal (zci_copy_dims_simplify: an inner contiguous run becomes one long row),
 * then the choice between row copies and tiled transposition. */
static void plan_simplify(copy_plan *p)
{
    zci_copy_dims_simplify(&p->nd, p->dims, p->stride);
    const int m = p->nd;
    p->tile_dim = -1;
    if (m >= 2 && p->stride[m - 1] != 1 && p->stride[m - 1] != 0) {
        for (int i = 0; i < m - 1; i++)
            if (p->stride[i] == 1) p->tile_dim = i;
    }
}

/* Input element offset of row `r`: row-major over dims [0, last) except `skip`. */
static int64_t row_offset(const copy_plan *p, int64_t r, int last, int skip)
{
    int64_t off = 0;
    for (int d = last - 1; d >= 0; d--) {
        if (d == skip) continue;
        off += (r % p->dims[d]) * p->stride[d];
        r /= p->dims[d];
    }
    return off;
}

/* Output element offset of the same row in the packed output. */
static int64_t row_out_offset(const copy_plan *p, int64_t r, int last, int skip)
{
    int64_t off = 0, mul = 1;
    for (int d = p->nd - 1; d >= 0; d--) {
        if (d < last && d != skip) {
            off += (r % p->dims[d]) * mul;
            r /= p->dims[d];
        }
        mul *= p->dims[d];
    }
    return off;
}

#if defined(__AVX__)
/* Transposes one 8x8 block of 4-byte elements in registers: row r of S (8 contiguous elements,
 * rows ss elements apart) becomes column r of D (rows ds elements apart). Both sides are
 * contiguous vector accesses, which is what makes the tiled transpose memory-bound rather than
 * load-bound. */
static inline void transpose8x8_32(float *D, int64_t ds, const float *S, int64_t ss)
{
    __m256 r0 = _mm256_loadu_ps(S), r1 = _mm256_loadu_ps(S + ss);
    __m256 r2 = _mm256_loadu_ps(S + 2 * ss), r3 = _mm256_loadu_ps(S + 3 * ss);
    __m256 r4 = _mm256_loadu_ps(S + 4 * ss), r5 = _mm256_loadu_ps(S + 5 * ss);
    __m256 r6 = _mm256_loadu_ps(S + 6 * ss), r7 = _mm256_loadu_ps(S + 7 * ss);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(D, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(D + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(D + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(D + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(D + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(D + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(D + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(D + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* One tile of a transpose: output rows j0..j1 (osJ elements apart, contiguous along L), input
 * contiguous along J with L's elements sL apart (both in elements). */
static void copy_tile(char *dst, const char *src, int64_t j0, int64_t j1, int64_t l0, int64_t l1,
                      int64_t osJ, int64_t sL, size_t esz)
{
    int64_t j = j0;
#if defined(__AVX__)
    if (esz == 4) {
        for (; j + 8 <= j1; j += 8) {
            int64_t l = l0;
            for (; l + 8 <= l1; l += 8)
                transpose8x8_32((float *)dst + j * osJ + l, osJ, (const float *)src + j + l * sL,
                                sL);
            for (int64_t jj = j; jj < j + 8 && l < l1; jj++)
                copy_row(dst + (size_t)(jj * osJ + l) * 4, src + (jj + l * sL) * 4, l1 - l, sL * 4,
                         4);
        }
    }
#endif
    for (; j < j1; j++)
        copy_row(dst + (size_t)(j * osJ + l0) * esz, src + (j + l0 * sL) * (int64_t)esz, l1 - l0,
                 sL * (int64_t)esz, esz);
}

static void copy_tiled(char *dst, const char *src, const copy_plan *p, size_t esz, int nthreads)
{
    const int L = p->nd - 1, J = p->tile_dim;
    const int64_t nJ = p->dims[J], nL = p->dims[L], sL = p->stride[L];
    int64_t osJ = 1;
    for (int d = J + 1; d < p->nd; d++) osJ *= p->dims[d];
    int64_t outer = 1;
    for (int d = 0; d < L; d++)
        if (d != J) outer *= p->dims[d];
    const int64_t ntJ = (nJ + TILE - 1) / TILE, ntL = (nL + TILE - 1) / TILE;
    const int64_t tasks = outer * ntJ * ntL;
    int nt = copy_threads(outer * nJ * nL * (int64_t)esz, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t tl = t % ntL, tj = (t / ntL) % ntJ, o = t / (ntL * ntJ);
        int64_t in_off = row_offset(p, o, L, J), out_off = row_out_offset(p, o, L, J);
        int64_t j0 = tj * TILE, j1 = j0 + TILE < nJ ? j0 + TILE : nJ;
        int64_t l0 = tl * TILE, l1 = l0 + TILE < nL ? l0 + TILE : nL;
        copy_tile(dst + (size_t)out_off * esz, src + in_off * (int64_t)esz, j0, j1, l0, l1, osJ, sL,
                  esz);
    }
}

/* Runs a simplified plan from src into the packed dst. */
static void copy_run(void *dst, const void *src, const copy_plan *p, size_t esz, int nthreads)
{
    int64_t total = dims_prod(p->dims, 0, p->nd);
    if (total == 0) return;
    if (p->nd == 0) {
        memcpy(dst, src, esz);
        return;
    }
    if (p->nd == 1 && p->stride[0] == 1) {
        par_memcpy(dst, src, total * (int64_t)esz, nthreads);
        return;
    }
    if (p->tile_dim >= 0) {
        copy_tiled(dst, src, p, esz, nthreads);
        return;
    }
    const int L = p->nd - 1;
    const int64_t len = p->dims[L], ss = p->stride[L] * (int64_t)esz;
    const int64_t rows = total / len;
    int nt = copy_threads(total * (int64_t)esz, nthreads);
    if (rows < nt) nt = (int)rows;
    if (nt < 1) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        copy_row((char *)dst + (size_t)(r * len) * esz,
                 (const char *)src + row_offset(p, r, L, -1) * (int64_t)esz, len, ss, esz);
}

/* Plan-based ops keep the source's byte offset (Slice's start) and the plan. */
typedef struct copy_params {
    int64_t src_offset; /* elements */
    copy_plan plan;
} copy_params;

static zci_status copy_cpu(const zci_kernel_ctx *k)
{
    const copy_params *p = k->n->params;
    size_t esz = zci_dtype_size(ZCI_KIN(k, 0)->dtype);
    const char *src = (const char *)ZCI_KIN_DATA(k, 0) + p->src_offset * (int64_t)esz;
    copy_run(ZCI_KOUT_DATA(k, 0), src, &p->plan, esz, k->nthreads);
    return ZCI_OK;
}

/* Row-major element strides of a shape. */
static void shape_strides(const int64_t *dims, int nd, int64_t *strides)
{
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        strides[i] = s;
        s *= dims[i];
    }
}

/* ================================================================ views */

/* Kernel of every view op: the executor normally hands it the same buffer twice. */
static zci_status view_cpu(const zci_kernel_ctx *k)
{
    void *dst = ZCI_KOUT_DATA(k, 0);
    const void *src = ZCI_KIN_DATA(k, 0);
    if (dst != src) memmove(dst, src, zci_tensor_bytes(ZCI_KIN(k, 0)));
    return ZCI_OK;
}

/* Sets output 0 to input 0's type with new dims, checking the element count is kept. */
static zci_status view_output(zci_graph *g, zci_node *n, const int64_t *dims, int nd)
{
    const zci_tensor *x = ZCI_IN(g, n, 0);
    if (nd > ZCI_MAX_DIMS)
        return zci_error(ZCI_UNSUPPORTED, "output rank %d exceeds the supported %d", nd,
                         ZCI_MAX_DIMS);
    int64_t want = zci_shape_numel(dims, nd), have = zci_tensor_numel(x);
    if (want != have) {
        char a[128], b[128];
        return zci_error(ZCI_INVALID_MODEL,
                         "input '%s' of shape %s (%lld elements) cannot become shape %s", tname(x),
                         zci_shape_str(x->dims, x->ndim, a, sizeof a), (long long)have,
                         zci_shape_str(dims, nd, b, sizeof b));
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, nd);
    return ZCI_OK;
}

static zci_status view_prologue(zci_node *n, int min_in, int max_in)
{
    ZCI_TRY(zci_check_arity(n, min_in, max_in, 1));
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_INVALID_MODEL, "input 0 is missing");
    if (n->out[0] < 0) return zci_error(ZCI_INVALID_MODEL, "output 0 is missing");
    return ZCI_OK;
}

/* ---------------------------------------------------------------- Reshape */

static zci_status reshape_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(view_prologue(n, n->opset < 5 ? 1 : 2, 2));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int64_t allowzero = zci_attr_int(n, "allowzero", 0, &st);
    if (st) return st;
    int64_t *shape = NULL, count = 0;
    if (n->opset < 5) {
        int c = 0;
        const int64_t *a = zci_attr_ints(n, "shape", &c, &st);
        if (st) return st;
        if (!a) return zci_error(ZCI_INVALID_MODEL, "attribute 'shape' is missing");
        shape = zci_malloc((size_t)(c > 0 ? c : 1) * sizeof *shape, "Reshape shape");
        if (!shape) return ZCI_OUT_OF_MEMORY;
        memcpy(shape, a, (size_t)c * sizeof *shape);
        count = c;
    } else {
        if (!ZCI_HAS_IN(n, 1)) return zci_error(ZCI_INVALID_MODEL, "input 1 (shape) is missing");
        ZCI_TRY(zci_const_ints(g, n, 1, &shape, &count));
    }
    if (count > ZCI_MAX_DIMS) {
        free(shape);
        return zci_error(ZCI_UNSUPPORTED, "target shape has %lld dims; at most %d are supported",
                         (long long)count, ZCI_MAX_DIMS);
    }
    int64_t dims[ZCI_MAX_DIMS];
    int infer_at = -1;
    int64_t known = 1;
    for (int i = 0; i < (int)count; i++) {
        int64_t d = shape[i];
        if (d == 0 && !allowzero) {
            if (i >= x->ndim) {
                free(shape);
                return zci_error(ZCI_INVALID_MODEL,
                                 "shape[%d] = 0 copies input dim %d, but input '%s' has rank %d", i,
                                 i, tname(x), x->ndim);
            }
            d = x->dims[i];
        } else if (d == -1) {
            if (infer_at >= 0) {
                free(shape);
                return zci_error(ZCI_INVALID_MODEL, "shape has more than one -1");
            }
            infer_at = i;
            dims[i] = 1;
            continue;
        } else if (d < 0) {
            free(shape);
            return zci_error(ZCI_INVALID_MODEL, "shape[%d] = %lld is invalid", i, (long long)d);
        }
        dims[i] = d;
        known *= d;
    }
    free(shape);
    if (infer_at >= 0) {
        int64_t total = zci_tensor_numel(x);
        if (known == 0) {
            if (total != 0 || allowzero)
                return zci_error(ZCI_INVALID_MODEL,
                                 "cannot infer the -1 dim: the other dims multiply to 0");
            dims[infer_at] = 0;
        } else {
            if (total % known)
                return zci_error(
                    ZCI_INVALID_MODEL,
                    "cannot infer the -1 dim: %lld elements are not a multiple of %lld",
                    (long long)total, (long long)known);
            dims[infer_at] = total / known;
        }
    }
    return view_output(g, n, dims, (int)count);
}

/* ---------------------------------------------------------------- Flatten */

static zci_status flatten_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(view_prologue(n, 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int64_t axis = zci_attr_int(n, "axis", 1, &st);
    if (st) return st;
    if (axis < -x->ndim || axis > x->ndim || (axis < 0 && n->opset < 11))
        return zci_error(ZCI_INVALID_MODEL, "axis %lld is out of range for input '%s' of rank %d",
                         (long long)axis, tname(x), x->ndim);
    if (axis < 0) axis += x->ndim;
    int64_t dims[2] = {dims_prod(x->dims, 0, (int)axis), dims_prod(x->dims, (int)axis, x->ndim)};
    return view_output(g, n, dims, 2);
}

/* ---------------------------------------------------------------- Squeeze / Unsqueeze */

/* The axes of Squeeze/Unsqueeze: an attribute before opset 13, an input from 13. *present
 * is 0 when neither is given. */
static zci_status read_axes(const zci_graph *g, const zci_node *n, int64_t **axes, int64_t *count,
                            int *present)
{
    zci_status st = ZCI_OK;
    *axes = NULL;
    *count = 0;
    *present = 0;
    if (n->opset < 13) {
        int c = 0;
        const int64_t *a = zci_attr_ints(n, "axes", &c, &st);
        if (st) return st;
        if (!a) return ZCI_OK;
        *axes = zci_malloc((size_t)(c > 0 ? c : 1) * sizeof **axes, "axes");
        if (!*axes) return ZCI_OUT_OF_MEMORY;
        memcpy(*axes, a, (size_t)c * sizeof **axes);
        *count = c;
        *present = 1;
        return ZCI_OK;
    }
    if (!ZCI_HAS_IN(n, 1)) return ZCI_OK;
    ZCI_TRY(zci_const_ints(g, n, 1, axes, count));
    *present = 1;
    return ZCI_OK;
}

static zci_status squeeze_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(view_prologue(n, 1, 2));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int64_t *axes, count;
    int present;
    ZCI_TRY(read_axes(g, n, &axes, &count, &present));
    int drop[ZCI_MAX_DIMS] = {0};
    /* An empty axes tensor means "not given", as in onnxruntime: every size-1 axis goes. */
    if (present && count > 0) {
        for (int64_t i = 0; i < count; i++) {
            int a;
            zci_status st = zci_norm_axis(axes[i], x->ndim, &a);
            if (st) {
                free(axes);
                return st;
            }
            if (x->dims[a] != 1) {
                free(axes);
                return zci_error(ZCI_INVALID_MODEL,
                                 "cannot squeeze axis %d of input '%s': its size is %lld, not 1", a,
                                 tname(x), (long long)x->dims[a]);
            }
            drop[a] = 1;
        }
    } else {
        for (int a = 0; a < x->ndim; a++) drop[a] = x->dims[a] == 1;
    }
    free(axes);
    int64_t dims[ZCI_MAX_DIMS];
    int nd = 0;
    for (int a = 0; a < x->ndim; a++)
        if (!drop[a]) dims[nd++] = x->dims[a];
    return view_output(g, n, dims, nd);
}

static zci_status unsqueeze_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(view_prologue(n, 1, 2));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int64_t *axes, count;
    int present;
    ZCI_TRY(read_axes(g, n, &axes, &count, &present));
    if (!present) return zci_error(ZCI_INVALID_MODEL, "axes are missing");
    int64_t rank = x->ndim + count;
    if (rank > ZCI_MAX_DIMS) {
        free(axes);
        return zci_error(ZCI_UNSUPPORTED, "output rank %lld exceeds the supported %d",
                         (long long)rank, ZCI_MAX_DIMS);
    }
    int add[ZCI_MAX_DIMS] = {0};
    for (int64_t i = 0; i < count; i++) {
        int a;
        zci_status st = zci_norm_axis(axes[i], (int)rank, &a);
        if (st == ZCI_OK && add[a])
            st = zci_error(ZCI_INVALID_MODEL, "axis %lld is repeated", (long long)axes[i]);
        if (st) {
            free(axes);
            return st;
        }
        add[a] = 1;
    }
    free(axes);
    int64_t dims[ZCI_MAX_DIMS];
    for (int a = 0, j = 0; a < rank; a++) dims[a] = add[a] ? 1 : x->dims[j++];
    return view_output(g, n, dims, (int)rank);
}

/* ---------------------------------------------------------------- Identity */

static zci_status identity_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(view_prologue(n, 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    size_t esz;
    ZCI_TRY(movable_size(x, &esz));
    return view_output(g, n, x->dims, x->ndim);
}

/* ================================================================ Concat */

typedef struct axis_params {
    int axis;
} axis_params;

static zci_status set_axis_params(zci_node *n, int axis)
{
    axis_params *p = zci_malloc(sizeof *p, "axis params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->axis = axis;
    set_params(n, p);
    return ZCI_OK;
}

static zci_status concat_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(zci_check_arity(n, 1, INT_MAX, 1));
    for (int i = 0; i < n->n_in; i++)
        if (!ZCI_HAS_IN(n, i)) return zci_error(ZCI_INVALID_MODEL, "input %d is missing", i);
    const zci_tensor *x0 = ZCI_IN(g, n, 0);
    size_t esz;
    ZCI_TRY(movable_size(x0, &esz));
    int64_t axis =
        n->opset < 4 ? zci_attr_int(n, "axis", 1, &st) : zci_attr_int(n, "axis", INT64_MIN, &st);
    if (st) return st;
    if (axis == INT64_MIN) return zci_error(ZCI_INVALID_MODEL, "attribute 'axis' is missing");
    if (x0->ndim == 0)
        return zci_error(ZCI_INVALID_MODEL, "input '%s' is a scalar; Concat needs rank >= 1",
                         tname(x0));
    int a;
    ZCI_TRY(zci_norm_axis(axis, x0->ndim, &a));
    int64_t dims[ZCI_MAX_DIMS];
    memcpy(dims, x0->dims, sizeof dims);
    dims[a] = 0;
    for (int i = 0; i < n->n_in; i++) {
        const zci_tensor *x = ZCI_IN(g, n, i);
        if (x->dtype != x0->dtype)
            return zci_error(ZCI_INVALID_MODEL, "input '%s' is %s; input '%s' is %s", tname(x),
                             zci_dtype_name(x->dtype), tname(x0), zci_dtype_name(x0->dtype));
        int same = x->ndim == x0->ndim;
        for (int d = 0; same && d < x->ndim; d++)
            if (d != a && x->dims[d] != x0->dims[d]) same = 0;
        if (!same) {
            char s0[128], s1[128];
            return zci_error(ZCI_INVALID_MODEL,
                             "input '%s' has shape %s, which does not match input '%s' of shape "
                             "%s outside axis %d",
                             tname(x), zci_shape_str(x->dims, x->ndim, s1, sizeof s1), tname(x0),
                             zci_shape_str(x0->dims, x0->ndim, s0, sizeof s0), a);
        }
        dims[a] += x->dims[a];
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x0->dtype, dims, x0->ndim);
    return set_axis_params(n, a);
}

static zci_status concat_cpu(const zci_kernel_ctx *k)
{
    const zci_node *n = k->n;
    const int axis = ((const axis_params *)n->params)->axis;
    const zci_tensor *y = ZCI_KOUT(k, 0);
    const size_t esz = zci_dtype_size(y->dtype);
    const int64_t outer = dims_prod(y->dims, 0, axis);
    const int64_t inner = dims_prod(y->dims, axis + 1, y->ndim) * (int64_t)esz;
    const int64_t out_row = y->dims[axis] * inner;
    char *dst = ZCI_KOUT_DATA(k, 0);
    if (outer == 1) {
        /* The YOLO case (batch 1, channel concat): each input is one block. */
        int64_t off = 0;
        for (int i = 0; i < n->n_in; i++) {
            int64_t bytes = ZCI_KIN(k, i)->dims[axis] * inner;
            par_memcpy(dst + off, ZCI_KIN_DATA(k, i), bytes, k->nthreads);
            off += bytes;
        }
        return ZCI_OK;
    }
    int nt = copy_threads(outer * out_row, k->nthreads);
    if (outer < nt) nt = (int)outer;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = o * out_row;
        for (int i = 0; i < n->n_in; i++) {
            int64_t bytes = ZCI_KIN(k, i)->dims[axis] * inner;
            if (bytes)
                memcpy(dst + off, (const char *)ZCI_KIN_DATA(k, i) + o * bytes, (size_t)bytes);
            off += bytes;
        }
    }
    return ZCI_OK;
}

/* ================================================================ Split */

typedef struct split_params {
    int axis;
    int n;
    int64_t sizes[]; /* per output, along axis (omitted outputs too) */
} split_params;

/* The sizes along the axis: input 'split' (opset 1 and 13+) or attribute 'split' (2-12), else
 * num_outputs (18+) or the output count in equal parts. Uneven equal parts take
 * ceil(dim / n) each and the last one the rest, as ONNX's reference does. */
static zci_status split_sizes(const zci_graph *g, const zci_node *n, int64_t dim, int64_t *sizes)
{
    zci_status st = ZCI_OK;
    const int nout = n->n_out;
    int64_t *split = NULL, count = 0;
    if (n->opset >= 13 || (n->opset == 1 && ZCI_HAS_IN(n, 1))) {
        if (ZCI_HAS_IN(n, 1)) ZCI_TRY(zci_const_ints(g, n, 1, &split, &count));
    } else {
        int c = 0;
        const int64_t *s = zci_attr_ints(n, "split", &c, &st);
        if (st) return st;
        if (s && c > 0) {
            split = zci_malloc((size_t)c * sizeof *split, "split sizes");
            if (!split) return ZCI_OUT_OF_MEMORY;
            memcpy(split, s, (size_t)c * sizeof *split);
            count = c;
        }
    }
    int64_t num_outputs = n->opset >= 18 ? zci_attr_int(n, "num_outputs", 0, &st) : 0;
    if (st) {
        free(split);
        return st;
    }
    if (split && num_outputs) {
        st = zci_error(ZCI_INVALID_MODEL, "both input 'split' and attribute 'num_outputs' given");
    } else if (num_outputs && num_outputs != nout) {
        st = zci_error(ZCI_INVALID_MODEL, "num_outputs is %lld but the node has %d outputs",
                       (long long)num_outputs, nout);
    } else if (split) {
        int64_t sum = 0;
        if (count != nout)
            st = zci_error(ZCI_INVALID_MODEL, "'split' has %lld sizes for %d outputs",
                           (long long)count, nout);
        for (int i = 0; st == ZCI_OK && i < nout; i++) {
            if (split[i] < 0)
                st = zci_error(ZCI_INVALID_MODEL, "split size %lld is negative",
                               (long long)split[i]);
            sizes[i] = split[i];
            sum += split[i];
        }
        if (st == ZCI_OK && sum != dim)
            st = zci_error(ZCI_INVALID_MODEL, "split sizes add up to %lld, the axis has %lld",
                           (long long)sum, (long long)dim);
    } else {
        int64_t part = (dim + nout - 1) / nout;
        if (part * (nout - 1) > dim)
            st = zci_error(ZCI_INVALID_MODEL, "an axis of size %lld cannot be split into %d parts",
                           (long long)dim, nout);
        for (int i = 0; st == ZCI_OK && i < nout; i++)
            sizes[i] = i < nout - 1 ? part : dim - part * (nout - 1);
    }
    free(split);
    return st;
}

static zci_status split_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(zci_check_arity(n, 1, 2, INT_MAX));
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_INVALID_MODEL, "input 0 is missing");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    size_t esz;
    ZCI_TRY(movable_size(x, &esz));
    int a;
    int64_t axis = zci_attr_int(n, "axis", 0, &st);
    if (st) return st;
    ZCI_TRY(zci_norm_axis(axis, x->ndim, &a));
    split_params *p = zci_malloc(sizeof *p + (size_t)n->n_out * sizeof p->sizes[0], "Split params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->axis = a;
    p->n = n->n_out;
    st = split_sizes(g, n, x->dims[a], p->sizes);
    if (st) {
        free(p);
        return zci_error_prefix(st, "input '%s', axis %d", tname(x), a);
    }
    for (int i = 0; i < n->n_out; i++) {
        if (n->out[i] < 0) continue;
        int64_t dims[ZCI_MAX_DIMS];
        memcpy(dims, x->dims, sizeof dims);
        dims[a] = p->sizes[i];
        zci_tensor_set_shape(ZCI_OUT(g, n, i), x->dtype, dims, x->ndim);
    }
    set_params(n, p);
    return ZCI_OK;
}

static zci_status split_cpu(const zci_kernel_ctx *k)
{
    const zci_node *n = k->n;
    const split_params *p = n->params;
    const zci_tensor *x = ZCI_KIN(k, 0);
    const size_t esz = zci_dtype_size(x->dtype);
    const int64_t outer = dims_prod(x->dims, 0, p->axis);
    const int64_t inner = dims_prod(x->dims, p->axis + 1, x->ndim) * (int64_t)esz;
    const int64_t in_row = x->dims[p->axis] * inner;
    const char *src = ZCI_KIN_DATA(k, 0);
    int64_t off = 0;
    for (int i = 0; i < p->n; i++) {
        const int64_t bytes = p->sizes[i] * inner;
        if (n->out[i] >= 0 && bytes > 0) {
            char *dst = ZCI_KOUT_DATA(k, i);
            if (outer == 1) {
                par_memcpy(dst, src + off, bytes, k->nthreads);
            } else {
                int nt = copy_threads(outer * bytes, k->nthreads);
                if (outer < nt) nt = (int)outer;
#pragma omp parallel for num_threads(nt) schedule(static)
                for (int64_t o = 0; o < outer; o++)
                    memcpy(dst + o * bytes, src + o * in_row + off, (size_t)bytes);
            }
        }
        off += bytes;
    }
    return ZCI_OK;
}

/* ================================================================ Slice */

/* Resolves one axis' start and step into the output length and first index (spec of Slice-13:
 * negative values count from the end, then clamp; INT64_MAX/MIN mean "to the end"). */
static int64_t slice_axis(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *first)
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
    uint64_t mag = (uint64_t)0 - (uint64_t)step; /* |step| without overflow at INT64_MIN */
    return (int64_t)((uint64_t)(start - end - 1) / mag) + 1;
}

/* Reads Slice's starts/ends/axes/steps (attributes before opset 10, inputs from 10). */
static zci_status slice_args(const zci_graph *g, const zci_node *n, int64_t *args[4],
                             int64_t count[4])
{
    static const char *const names[4] = {"starts", "ends", "axes", "steps"};
    zci_status st = ZCI_OK;
    for (int i = 0; i < 4; i++) {
        args[i] = NULL;
        count[i] = -1;
    }
    for (int i = 0; i < (n->opset < 10 ? 3 : 4); i++) {
        if (n->opset < 10) {
            int c = 0;
            const int64_t *v = zci_attr_ints(n, names[i], &c, &st);
            if (st) return st;
            if (!v) continue;
            args[i] = zci_malloc((size_t)(c > 0 ? c : 1) * sizeof(int64_t), names[i]);
            if (!args[i]) return ZCI_OUT_OF_MEMORY;
            memcpy(args[i], v, (size_t)c * sizeof(int64_t));
            count[i] = c;
        } else if (ZCI_HAS_IN(n, i + 1)) {
            ZCI_TRY(zci_const_ints(g, n, i + 1, &args[i], &count[i]));
        }
    }
    if (!args[0] || !args[1]) return zci_error(ZCI_INVALID_MODEL, "starts and ends are required");
    return ZCI_OK;
}

static zci_status slice_plan(const zci_tensor *x, int64_t *args[4], const int64_t count[4],
                             int64_t *out_dims, copy_params *p)
{
    const int64_t m = count[0];
    if (count[1] != m || (args[2] && count[2] != m) || (args[3] && count[3] != m))
        return zci_error(ZCI_INVALID_MODEL,
                         "starts has %lld values, ends %lld, axes %lld, steps %lld; they must "
                         "match (absent axes and steps count as matching)",
                         (long long)m, (long long)count[1], (long long)(args[2] ? count[2] : m),
                         (long long)(args[3] ? count[3] : m));
    int64_t start[ZCI_MAX_DIMS] = {0}, step[ZCI_MAX_DIMS], strides[ZCI_MAX_DIMS];
    int seen[ZCI_MAX_DIMS] = {0};
    for (int d = 0; d < x->ndim; d++) {
        step[d] = 1;
        out_dims[d] = x->dims[d];
    }
    for (int64_t i = 0; i < m; i++) {
        int a;
        if (!args[2] && i >= x->ndim)
            return zci_error(ZCI_INVALID_MODEL, "%lld starts for input '%s' of rank %d",
                             (long long)m, tname(x), x->ndim);
        ZCI_TRY(zci_norm_axis(args[2] ? args[2][i] : i, x->ndim, &a));
        if (seen[a]) return zci_error(ZCI_INVALID_MODEL, "axis %d is repeated", a);
        seen[a] = 1;
        int64_t s = args[3] ? args[3][i] : 1;
        if (s == 0) return zci_error(ZCI_INVALID_MODEL, "step for axis %d is 0", a);
        out_dims[a] = slice_axis(x->dims[a], args[0][i], args[1][i], s, &start[a]);
        step[a] = s;
    }
    shape_strides(x->dims, x->ndim, strides);
    p->src_offset = 0;
    p->plan.nd = x->ndim;
    int empty = zci_shape_numel(out_dims, x->ndim) == 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!empty) p->src_offset += start[d] * strides[d];
        p->plan.dims[d] = out_dims[d];
        /* A length-1 axis never steps, and a huge step times the stride could overflow. */
        p->plan.stride[d] = out_dims[d] > 1 ? strides[d] * step[d] : strides[d];
    }
    plan_simplify(&p->plan);
    return ZCI_OK;
}

static zci_status slice_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, n->opset < 10 ? 1 : 3, n->opset < 10 ? 1 : 5, 1));
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_INVALID_MODEL, "input 0 is missing");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    size_t esz;
    ZCI_TRY(movable_size(x, &esz));
    int64_t *args[4], count[4], out_dims[ZCI_MAX_DIMS];
    copy_params *p = NULL;
    zci_status st = slice_args(g, n, args, count);
    if (st == ZCI_OK) {
        p = zci_calloc(1, sizeof *p, "Slice params");
        st = p ? slice_plan(x, args, count, out_dims, p) : ZCI_OUT_OF_MEMORY;
    }
    for (int i = 0; i < 4; i++) free(args[i]);
    if (st) {
        free(p);
        return st;
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, out_dims, x->ndim);
    set_params(n, p);
    return ZCI_OK;
}

int zci_slice_last_axis(const zci_graph *g, const zci_node *n, int64_t *lo)
{
    if (strcmp(n->op_type, "Slice") || !ZCI_HAS_IN(n, 0)) return 0;
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int64_t *args[4], count[4];
    int ok = slice_args(g, n, args, count) == ZCI_OK && x->ndim > 0;
    *lo = 0;
    for (int64_t i = 0; ok && i < count[0]; i++) {
        int a;
        int64_t first, step = args[3] ? args[3][i] : 1;
        ok = zci_norm_axis(args[2] ? args[2][i] : i, x->ndim, &a) == ZCI_OK && step == 1;
        if (!ok) break;
        int64_t len = slice_axis(x->dims[a], args[0][i], args[1][i], step, &first);
        if (a == x->ndim - 1) *lo = first;
        else ok = first == 0 && len == x->dims[a];
    }
    for (int i = 0; i < 4; i++) free(args[i]);
    return ok;
}

/* ================================================================ Transpose */

static zci_status transpose_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_INVALID_MODEL, "input 0 is missing");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    size_t esz;
    ZCI_TRY(movable_size(x, &esz));
    int c = 0;
    const int64_t *perm_attr = zci_attr_ints(n, "perm", &c, &st);
    if (st) return st;
    int perm[ZCI_MAX_DIMS], used[ZCI_MAX_DIMS] = {0};
    if (perm_attr && c != x->ndim)
        return zci_error(ZCI_INVALID_MODEL, "perm has %d entries for input '%s' of rank %d", c,
                         tname(x), x->ndim);
    for (int i = 0; i < x->ndim; i++) {
        int64_t v = perm_attr ? perm_attr[i] : x->ndim - 1 - i;
        if (v < 0 || v >= x->ndim || used[v])
            return zci_error(ZCI_INVALID_MODEL, "perm is not a permutation of 0..%d", x->ndim - 1);
        used[v] = 1;
        perm[i] = (int)v;
    }
    copy_params *p = zci_calloc(1, sizeof *p, "Transpose params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    int64_t strides[ZCI_MAX_DIMS], dims[ZCI_MAX_DIMS];
    shape_strides(x->dims, x->ndim, strides);
    p->plan.nd = x->ndim;
    for (int i = 0; i < x->ndim; i++) {
        dims[i] = x->dims[perm[i]];
        p->plan.dims[i] = dims[i];
        p->plan.stride[i] = strides[perm[i]];
    }
    plan_simplify(&p->plan);
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, x->ndim);
    set_params(n, p);
    return ZCI_OK;
}

/* ================================================================ Expand */

static zci_status expand_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 2, 2, 1));
    if (!ZCI_HAS_IN(n, 0) || !ZCI_HAS_IN(n, 1))
        return zci_error(ZCI_INVALID_MODEL, "inputs 0 and 1 are required");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    size_t esz;
    ZCI_TRY(movable_size(x, &esz));
    int64_t *shape, count;
    ZCI_TRY(zci_const_ints(g, n, 1, &shape, &count));
    if (count > ZCI_MAX_DIMS) {
        free(shape);
        return zci_error(ZCI_UNSUPPORTED, "shape has %lld dims; at most %d are supported",
                         (long long)count, ZCI_MAX_DIMS);
    }
    int64_t dims[ZCI_MAX_DIMS];
    int nd;
    zci_status st = zci_broadcast_shape(x->dims, x->ndim, shape, (int)count, dims, &nd);
    free(shape);
    if (st) return st;
    copy_params *p = zci_calloc(1, sizeof *p, "Expand params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    int64_t strides[ZCI_MAX_DIMS];
    shape_strides(x->dims, x->ndim, strides);
    p->plan.nd = nd;
    for (int d = 0; d < nd; d++) {
        int xd = d - (nd - x->ndim); /* input dims align to the right */
        p->plan.dims[d] = dims[d];
        p->plan.stride[d] = (xd < 0 || x->dims[xd] == 1) ? 0 : strides[xd];
    }
    plan_simplify(&p->plan);
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, nd);
    set_params(n, p);
    return ZCI_OK;
}

/* ================================================================ Shape */

typedef struct shape_params {
    int start, end;
} shape_params;

static zci_status shape_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_INVALID_MODEL, "input 0 is missing");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    const int64_t r = x->ndim;
    int64_t start = 0, end = r;
    if (n->opset >= 15) {
        start = zci_attr_int(n, "start", 0, &st);
        end = zci_attr_int(n, "end", r, &st);
        if (st) return st;
    }
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    if (end < start) end = start;
    int64_t len = end - start;
    int64_t *data = zci_malloc((size_t)(len > 0 ? len : 1) * sizeof *data, "Shape output");
    if (!data) return ZCI_OUT_OF_MEMORY;
    memcpy(data, x->dims + start, (size_t)len * sizeof *data);
    shape_params *p = zci_malloc(sizeof *p, "Shape params");
    if (!p) {
        free(data);
        return ZCI_OUT_OF_MEMORY;
    }
    p->start = (int)start;
    p->end = (int)end;
    set_params(n, p);
    zci_tensor *y = ZCI_OUT(g, n, 0);
    zci_tensor_set_shape(y, ZCI_INT64, &len, 1);
    /* Input shapes are static after planning, so the result is known now: making it constant
     * lets the shape arithmetic that follows fold away. */
    zci_tensor_make_const(y, data);
    return ZCI_OK;
}

static zci_status shape_cpu(const zci_kernel_ctx *k)
{
    const shape_params *p = k->n->params;
    const zci_tensor *x = ZCI_KIN(k, 0);
    int64_t *y = ZCI_KOUT_DATA(k, 0);
    for (int i = p->start; i < p->end; i++) y[i - p->start] = x->dims[i];
    return ZCI_OK;
}

/* ================================================================ Gather */

/* Checks every index against the axis size; the message names the first bad one. */
static zci_status gather_check(const zci_tensor *ind, const void *data, int64_t limit, int axis)
{
    int64_t count = zci_tensor_numel(ind);
    for (int64_t i = 0; i < count; i++) {
        int64_t v = read_index(data, ind->dtype, i);
        if (v < -limit || v >= limit)
            return zci_error(ZCI_INVALID_ARGUMENT,
                             "indices '%s'[%lld] = %lld is out of range [%lld, %lld) for axis %d",
                             tname(ind), (long long)i, (long long)v, (long long)-limit,
                             (long long)limit, axis);
    }
    return ZCI_OK;
}

static zci_status gather_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(zci_check_arity(n, 2, 2, 1));
    if (!ZCI_HAS_IN(n, 0) || !ZCI_HAS_IN(n, 1))
        return zci_error(ZCI_INVALID_MODEL, "inputs 0 and 1 are required");
    const zci_tensor *x = ZCI_IN(g, n, 0), *ind = ZCI_IN(g, n, 1);
    size_t esz;
    ZCI_TRY(movable_size(x, &esz));
    if (ind->dtype != ZCI_INT32 && ind->dtype != ZCI_INT64)
        return zci_error(ZCI_INVALID_MODEL, "indices '%s' are %s; expected int32 or int64",
                         tname(ind), zci_dtype_name(ind->dtype));
    int64_t axis = zci_attr_int(n, "axis", 0, &st);
    if (st) return st;
    int a;
    ZCI_TRY(zci_norm_axis(axis, x->ndim, &a));
    int nd = x->ndim - 1 + ind->ndim;
    if (nd > ZCI_MAX_DIMS)
        return zci_error(ZCI_UNSUPPORTED, "output rank %d exceeds the supported %d", nd,
                         ZCI_MAX_DIMS);
    if (ind->kind == ZCI_TENSOR_CONSTANT && ind->data)
        ZCI_TRY(gather_check(ind, ind->data, x->dims[a], a));
    int64_t dims[ZCI_MAX_DIMS];
    int j = 0;
    for (int d = 0; d < a; d++) dims[j++] = x->dims[d];
    for (int d = 0; d < ind->ndim; d++) dims[j++] = ind->dims[d];
    for (int d = a + 1; d < x->ndim; d++) dims[j++] = x->dims[d];
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, nd);
    return set_axis_params(n, a);
}

static zci_status gather_cpu(const zci_kernel_ctx *k)
{
    const int axis = ((const axis_params *)k->n->params)->axis;
    const zci_tensor *x = ZCI_KIN(k, 0), *ind = ZCI_KIN(k, 1);
    const size_t esz = zci_dtype_size(x->dtype);
    const int64_t limit = x->dims[axis];
    const void *idx = ZCI_KIN_DATA(k, 1);
    ZCI_TRY(gather_check(ind, idx, limit, axis));
    const int64_t outer = dims_prod(x->dims, 0, axis);
    const int64_t inner = dims_prod(x->dims, axis + 1, x->ndim) * (int64_t)esz;
    const int64_t nidx = zci_tensor_numel(ind);
    const char *src = ZCI_KIN_DATA(k, 0);
    char *dst = ZCI_KOUT_DATA(k, 0);
    const int64_t rows = outer * nidx;
    int nt = copy_threads(rows * inner, k->nthreads);
    if (rows < nt) nt = (int)rows;
    if (nt < 1) nt = 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / nidx, v = read_index(idx, ind->dtype, r % nidx);
        if (v < 0) v += limit;
        memcpy(dst + r * inner, src + (o * limit + v) * inner, (size_t)inner);
    }
    return ZCI_OK;
}

/* ================================================================ ConstantOfShape */

typedef struct fill_params {
    size_t esz;
    unsigned char value[16];
} fill_params;

static zci_status constantofshape_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_INVALID_MODEL, "input 0 is missing");
    fill_params *p = zci_calloc(1, sizeof *p, "ConstantOfShape params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    zci_dtype dt = ZCI_FLOAT32;
    p->esz = sizeof(float);
    const zci_attr *v = zci_attr_find(n, "value");
    if (v) {
        size_t esz = v->t ? zci_dtype_size(v->t->dtype) : 0;
        if (v->type != ZCI_ATTR_TENSOR || !v->t)
            st = zci_error(ZCI_INVALID_MODEL, "attribute 'value' is not a tensor");
        else if (zci_shape_numel(v->t->dims, v->t->ndim) != 1)
            st = zci_error(ZCI_INVALID_MODEL, "attribute 'value' must hold one element");
        else if (esz == 0 || esz > sizeof p->value)
            st = zci_error(ZCI_UNSUPPORTED, "attribute 'value' has unsupported type %s",
                           zci_dtype_name(v->t->dtype));
        if (st) {
            free(p);
            return st;
        }
        dt = v->t->dtype;
        p->esz = esz;
        memcpy(p->value, v->t->data, esz);
    }
    int64_t *shape = NULL, count = 0;
    st = zci_const_ints(g, n, 0, &shape, &count);
    if (st == ZCI_OK && count > ZCI_MAX_DIMS)
        st = zci_error(ZCI_UNSUPPORTED, "shape has %lld dims; at most %d are supported",
                       (long long)count, ZCI_MAX_DIMS);
    for (int64_t i = 0; st == ZCI_OK && i < count; i++)
        if (shape[i] < 0)
            st = zci_error(ZCI_INVALID_MODEL, "shape[%lld] = %lld is negative", (long long)i,
                           (long long)shape[i]);
    if (st == ZCI_OK && zci_shape_numel(shape, (int)count) < 0)
        st = zci_error(ZCI_INVALID_MODEL, "shape has too many elements");
    if (st) {
        free(shape);
        free(p);
        return st;
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), dt, shape, (int)count);
    free(shape);
    set_params(n, p);
    return ZCI_OK;
}

static zci_status constantofshape_cpu(const zci_kernel_ctx *k)
{
    const fill_params *p = k->n->params;
    int64_t count = zci_tensor_numel(ZCI_KOUT(k, 0));
    char *dst = ZCI_KOUT_DATA(k, 0);
    int zero = 1;
    for (size_t i = 0; i < p->esz; i++) zero &= p->value[i] == 0;
    if (zero) {
        memset(dst, 0, (size_t)count * p->esz);
        return ZCI_OK;
    }
    copy_row(dst, (const char *)p->value, count, 0, p->esz);
    return ZCI_OK;
}

/* ================================================================ Constant */

/* The value of a Constant node as (dtype, dims, bytes) pointing into its attributes. */
static zci_status constant_value(const zci_node *n, zci_dtype *dt, int64_t *dims, int *nd,
                                 const void **data)
{
    const zci_attr *a = NULL;
    for (int i = 0; i < n->n_attrs; i++) {
        const zci_attr *c = &n->attrs[i];
        if (!strcmp(c->name, "value") || !strcmp(c->name, "value_float") ||
            !strcmp(c->name, "value_floats") || !strcmp(c->name, "value_int") ||
            !strcmp(c->name, "value_ints")) {
            if (a) return zci_error(ZCI_INVALID_MODEL, "more than one value attribute");
            a = c;
        } else if (!strcmp(c->name, "sparse_value") || !strcmp(c->name, "value_string") ||
                   !strcmp(c->name, "value_strings")) {
            return zci_error(ZCI_UNSUPPORTED, "attribute '%s' is not supported", c->name);
        }
    }
    if (!a) return zci_error(ZCI_INVALID_MODEL, "no value attribute");
    *nd = 0;
    switch (a->type) {
    case ZCI_ATTR_TENSOR:
        if (!a->t) break;
        if (zci_dtype_size(a->t->dtype) == 0)
            return zci_error(ZCI_UNSUPPORTED, "value of type %s is not supported",
                             zci_dtype_name(a->t->dtype));
        *dt = a->t->dtype;
        *nd = a->t->ndim;
        memcpy(dims, a->t->dims, (size_t)a->t->ndim * sizeof *dims);
        *data = a->t->data;
        return ZCI_OK;
    case ZCI_ATTR_FLOAT:
        *dt = ZCI_FLOAT32;
        *data = &a->f;
        return ZCI_OK;
    case ZCI_ATTR_INT:
        *dt = ZCI_INT64;
        *data = &a->i;
        return ZCI_OK;
    case ZCI_ATTR_FLOATS:
        *dt = ZCI_FLOAT32;
        *nd = 1;
        dims[0] = a->n;
        *data = a->floats;
        return ZCI_OK;
    case ZCI_ATTR_INTS:
        *dt = ZCI_INT64;
        *nd = 1;
        dims[0] = a->n;
        *data = a->ints;
        return ZCI_OK;
    default: break;
    }
    return zci_error(ZCI_INVALID_MODEL, "attribute '%s' has the wrong type", a->name);
}

static zci_status constant_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 0, 0, 1));
    zci_dtype dt;
    int64_t dims[ZCI_MAX_DIMS];
    int nd;
    const void *src;
    ZCI_TRY(constant_value(n, &dt, dims, &nd, &src));
    zci_tensor *y = ZCI_OUT(g, n, 0);
    zci_tensor_set_shape(y, dt, dims, nd);
    size_t bytes = zci_tensor_bytes(y);
    void *data = zci_malloc(bytes ? bytes : 1, "Constant value");
    if (!data) return ZCI_OUT_OF_MEMORY;
    if (bytes) memcpy(data, src, bytes);
    zci_tensor_make_const(y, data);
    return ZCI_OK;
}

static zci_status constant_cpu(const zci_kernel_ctx *k)
{
    zci_dtype dt;
    int64_t dims[ZCI_MAX_DIMS];
    int nd;
    const void *src;
    ZCI_TRY(constant_value(k->n, &dt, dims, &nd, &src));
    size_t bytes = zci_tensor_bytes(ZCI_KOUT(k, 0));
    if (bytes && ZCI_KOUT_DATA(k, 0) != src) memcpy(ZCI_KOUT_DATA(k, 0), src, bytes);
    return ZCI_OK;
}

/* ================================================================ Range */

/* Reads one element of a scalar Range input as double (floats) or int64 (integers). */
static double range_scalar_f(const zci_tensor *t, const void *p)
{
    return t->dtype == ZCI_FLOAT64 ? *(const double *)p : (double)*(const float *)p;
}

static int64_t range_scalar_i(const zci_tensor *t, const void *p)
{
    switch (t->dtype) {
    case ZCI_INT16: return *(const int16_t *)p;
    case ZCI_INT32: return *(const int32_t *)p;
    default: return *(const int64_t *)p;
    }
}

static int range_is_float(zci_dtype dt) { return dt == ZCI_FLOAT32 || dt == ZCI_FLOAT64; }

/* Element count of Range(start, limit, delta): max(ceil((limit - start) / delta), 0). */
static zci_status range_count(const zci_tensor *t, const void *const v[3], int64_t *count)
{
    if (range_is_float(t->dtype)) {
        double s = range_scalar_f(t, v[0]), l = range_scalar_f(t, v[1]),
               d = range_scalar_f(t, v[2]);
        if (d == 0 || !isfinite(s) || !isfinite(l) || !isfinite(d))
            return zci_error(ZCI_INVALID_MODEL, "Range needs finite values and a non-zero delta");
        double c = ceil((l - s) / d);
        if (c > (double)INT32_MAX * 64)
            return zci_error(ZCI_INVALID_MODEL, "Range would have %.0f elements", c);
        *count = c > 0 ? (int64_t)c : 0;
        return ZCI_OK;
    }
    int64_t s = range_scalar_i(t, v[0]), l = range_scalar_i(t, v[1]), d = range_scalar_i(t, v[2]);
    if (d == 0) return zci_error(ZCI_INVALID_MODEL, "Range delta is 0");
    /* Differences in double avoid int64 overflow; exact for the sizes a tensor can have. */
    double span = (double)l - (double)s;
    if ((span > 0) != (d > 0) || span == 0) {
        *count = 0;
        return ZCI_OK;
    }
    double c = ceil(span / (double)d);
    if (c > (double)INT32_MAX * 64)
        return zci_error(ZCI_INVALID_MODEL, "Range would have %.0f elements", c);
    *count = (int64_t)c;
    return ZCI_OK;
}

static zci_status range_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 3, 3, 1));
    const void *v[3];
    const zci_tensor *t0 = NULL;
    for (int i = 0; i < 3; i++) {
        if (!ZCI_HAS_IN(n, i)) return zci_error(ZCI_INVALID_MODEL, "input %d is missing", i);
        const zci_tensor *t = ZCI_IN(g, n, i);
        if (!t0) t0 = t;
        if (t->dtype != ZCI_FLOAT32 && t->dtype != ZCI_FLOAT64 && t->dtype != ZCI_INT16 &&
            t->dtype != ZCI_INT32 && t->dtype != ZCI_INT64)
            return zci_error(ZCI_UNSUPPORTED,
                             "input '%s' is %s; Range supports float, double, "
                             "int16, int32 and int64",
                             tname(t), zci_dtype_name(t->dtype));
        if (t->dtype != t0->dtype)
            return zci_error(ZCI_INVALID_MODEL, "inputs '%s' (%s) and '%s' (%s) differ in type",
                             tname(t0), zci_dtype_name(t0->dtype), tname(t),
                             zci_dtype_name(t->dtype));
        if (zci_tensor_numel(t) != 1)
            return zci_error(ZCI_INVALID_MODEL, "input '%s' must be a scalar", tname(t));
        if (t->kind != ZCI_TENSOR_CONSTANT || !t->data)
            return zci_error(ZCI_UNSUPPORTED,
                             "input '%s' is not constant at planning; zcinfer needs Range's "
                             "inputs constant to fix the output shape",
                             tname(t));
        v[i] = t->data;
    }
    int64_t count;
    ZCI_TRY(range_count(t0, v, &count));
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), t0->dtype, &count, 1);
    return ZCI_OK;
}

static zci_status range_cpu(const zci_kernel_ctx *k)
{
    const zci_tensor *t = ZCI_KIN(k, 0);
    const void *v[3] = {ZCI_KIN_DATA(k, 0), ZCI_KIN_DATA(k, 1), ZCI_KIN_DATA(k, 2)};
    int64_t count = zci_tensor_numel(ZCI_KOUT(k, 0));
    void *y = ZCI_KOUT_DATA(k, 0);
    if (range_is_float(t->dtype)) {
        double s = range_scalar_f(t, v[0]), d = range_scalar_f(ZCI_KIN(k, 2), v[2]);
        for (int64_t i = 0; i < count; i++) {
            if (t->dtype == ZCI_FLOAT32)
                ((float *)y)[i] = (float)(s + (double)i * d);
            else
                ((double *)y)[i] = s + (double)i * d;
        }
        return ZCI_OK;
    }
    int64_t s = range_scalar_i(t, v[0]), d = range_scalar_i(ZCI_KIN(k, 2), v[2]);
    for (int64_t i = 0; i < count; i++) {
        int64_t x = s + i * d;
        switch (t->dtype) {
        case ZCI_INT16: ((int16_t *)y)[i] = (int16_t)x; break;
        case ZCI_INT32: ((int32_t *)y)[i] = (int32_t)x; break;
        default: ((int64_t *)y)[i] = x; break;
        }
    }
    return ZCI_OK;
}

/* ================================================================ op table */

const zci_op zci_op_Concat = {
    .type = "Concat", .domain = "", .since = 1, .infer = concat_infer, .cpu = concat_cpu};
const zci_op zci_op_Split = {
    .type = "Split", .domain = "", .since = 1, .infer = split_infer, .cpu = split_cpu};
const zci_op zci_op_Slice = {
    .type = "Slice", .domain = "", .since = 1, .infer = slice_infer, .cpu = copy_cpu};
const zci_op zci_op_Reshape = {.type = "Reshape",
                               .domain = "",
                               .since = 1,
                               .infer = reshape_infer,
                               .cpu = view_cpu,
                               .is_view = 1};
const zci_op zci_op_Transpose = {
    .type = "Transpose", .domain = "", .since = 1, .infer = transpose_infer, .cpu = copy_cpu};
const zci_op zci_op_Flatten = {.type = "Flatten",
                               .domain = "",
                               .since = 1,
                               .infer = flatten_infer,
                               .cpu = view_cpu,
                               .is_view = 1};
const zci_op zci_op_Squeeze = {.type = "Squeeze",
                               .domain = "",
                               .since = 1,
                               .infer = squeeze_infer,
                               .cpu = view_cpu,
                               .is_view = 1};
const zci_op zci_op_Unsqueeze = {.type = "Unsqueeze",
                                 .domain = "",
                                 .since = 1,
                                 .infer = unsqueeze_infer,
                                 .cpu = view_cpu,
                                 .is_view = 1};
const zci_op zci_op_Expand = {
    .type = "Expand", .domain = "", .since = 8, .infer = expand_infer, .cpu = copy_cpu};
const zci_op zci_op_Shape = {
    .type = "Shape", .domain = "", .since = 1, .infer = shape_infer, .cpu = shape_cpu};
const zci_op zci_op_Gather = {
    .type = "Gather", .domain = "", .since = 1, .infer = gather_infer, .cpu = gather_cpu};
const zci_op zci_op_ConstantOfShape = {.type = "ConstantOfShape",
                                       .domain = "",
                                       .since = 9,
                                       .infer = constantofshape_infer,
                                       .cpu = constantofshape_cpu};
const zci_op zci_op_Constant = {
    .type = "Constant", .domain = "", .since = 1, .infer = constant_infer, .cpu = constant_cpu};
const zci_op zci_op_Range = {
    .type = "Range", .domain = "", .since = 11, .infer = range_infer, .cpu = range_cpu};
const zci_op zci_op_Identity = {.type = "Identity",
                                .domain = "",
                                .since = 1,
                                .infer = identity_infer,
                                .cpu = view_cpu,
                                .is_view = 1};
