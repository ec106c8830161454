/* matmul.cu: MatMul and Gemm through cuBLAS.
 *
 * Tensors are row-major; cuBLAS is column-major, so C = A·B is computed as C^T = B^T·A^T, which
 * reads the same buffers with no transposition. MatMul's batch dimensions broadcast: the common
 * shapes become one strided-batched call (a broadcast operand gets stride 0, and a batch of A
 * against one B folds into the rows of a single GEMM); any other broadcast loops over the batch.
 * FP32 computes in FP32 (TF32 only with allow_tf32); FP16 in FP16 with FP32 accumulation. */
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

namespace {

struct mm_state {
    int gemm;              /* Gemm (else MatMul) */
    int64_t M, N, K;
    int trans_a, trans_b;
    float alpha, beta;
    int c_input;           /* Gemm: tensor index of C, or -1 */
    cu_gather_plan c_plan; /* Gemm: C broadcast to (M, N) */
    /* batching */
    int64_t batch;
    int64_t stride_a, stride_b, stride_c; /* elements; used when offsets == NULL */
    int64_t *offsets;      /* per batch: A and B element offsets (general broadcast), or NULL */
};

void release(void *p)
{
    mm_state *s = (mm_state *)p;
    if (!s) return;
    free(s->offsets);
    free(s);
}

zci_status float_types(const cu_ctx *c, const zci_node *n)
{
    zci_dtype t = c->dt[n->out[0]];
    if (t != ZCI_FLOAT32 && t != ZCI_FLOAT16) return zci_error(ZCI_UNSUPPORTED, "%s on %s tensors", n->op_type, zci_dtype_name(t));
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && c->dt[n->in[k]] != t) return zci_error(ZCI_UNSUPPORTED, "%s with mixed types", n->op_type);
    return ZCI_OK;
}

zci_status build_matmul(const cu_ctx *c, const zci_node *n, mm_state *s)
{
    const zci_graph *g = c->g;
    if (n->n_in != 2 || !ZCI_HAS_IN(n, 0) || !ZCI_HAS_IN(n, 1)) return zci_error(ZCI_UNSUPPORTED, "MatMul needs 2 inputs");
    ZCI_TRY(float_types(c, n));
    const zci_tensor *a = ZCI_IN(g, n, 0), *b = ZCI_IN(g, n, 1), *y = ZCI_OUT(g, n, 0);
    if (a->ndim < 1 || b->ndim < 1) return zci_error(ZCI_UNSUPPORTED, "MatMul of scalars");
    s->M = a->ndim >= 2 ? a->dims[a->ndim - 2] : 1;
    s->K = a->dims[a->ndim - 1];
    s->N = b->ndim >= 2 ? b->dims[b->ndim - 1] : 1;
    s->alpha = 1.f;
    s->beta = 0.f;
    s->c_input = -1;
    /* batch dims of the output, and each operand's batch strides (0 = broadcast) */
    int nb = y->ndim - (a->ndim >= 2 ? 1 : 0) - (b->ndim >= 2 ? 1 : 0);
    if (nb < 0) nb = 0;
    int64_t bdims[ZCI_MAX_DIMS], sa[ZCI_MAX_DIMS], sb[ZCI_MAX_DIMS];
    const int abat = a->ndim - 2 > 0 ? a->ndim - 2 : 0, bbat = b->ndim - 2 > 0 ? b->ndim - 2 : 0;
    int64_t ma = s->M * s->K, mb = s->K * s->N;
    int64_t acc_a = ma, acc_b = mb;
    s->batch = 1;
    for (int d = nb - 1; d >= 0; d--) {
        bdims[d] = y->dims[d];
        int da = d - (nb - abat), db = d - (nb - bbat);
        int64_t la = da >= 0 ? a->dims[da] : 1, lb = db >= 0 ? b->dims[db] : 1;
        sa[d] = la == 1 ? 0 : acc_a;
        sb[d] = lb == 1 ? 0 : acc_b;
        acc_a *= la;
        acc_b *= lb;
        s->batch *= bdims[d];
    }
    /* A batch over one B: fold the batch into M (A's batches are contiguous when none broadcasts) */
    int a_full = 1, b_none = 1, b_full = 1;
    for (int d = 0; d < nb; d++) {
        if (bdims[d] == 1) continue;
        a_full &= sa[d] != 0;
        b_none &= sb[d] == 0;
        b_full &= sb[d] != 0;
    }
    if (s->batch > 1 && a_full && b_none) {
        s->M *= s->batch;
        s->batch = 1;
    }
    s->stride_c = s->M * s->N;
    s->offsets = NULL;
    if (s->batch <= 1) {
        s->stride_a = s->stride_b = 0;
        return ZCI_OK;
    }
    /* one stride per operand covers: every batch dim walked densely, or none */
    int a_none = 1;
    for (int d = 0; d < nb; d++)
        if (bdims[d] != 1) a_none &= sa[d] == 0;
    if ((a_full || a_none) && (b_full || b_none)) {
        s->stride_a = a_full ? ma : 0;
        s->stride_b = b_full ? mb : 0;
        return ZCI_OK;
    }
    s->offsets = (int64_t *)zci_malloc((size_t)(2 * s->batch) * sizeof(int64_t), "MatMul batches");
    if (!s->offsets) return ZCI_OUT_OF_MEMORY;
    for (int64_t i = 0; i < s->batch; i++) {
        int64_t r = i, oa = 0, ob = 0;
        for (int d = nb - 1; d >= 0; d--) {
            int64_t cc = r % bdims[d];
            r /= bdims[d];
            oa += cc * sa[d];
            ob += cc * sb[d];
        }
        s->offsets[2 * i] = oa;
        s->offsets[2 * i + 1] = ob;
    }
    return ZCI_OK;
}

zci_status build_gemm(const cu_ctx *c, const zci_node *n, mm_state *s)
{
    const zci_graph *g = c->g;
    if (n->n_in < 2 || !ZCI_HAS_IN(n, 0) || !ZCI_HAS_IN(n, 1)) return zci_error(ZCI_UNSUPPORTED, "Gemm needs A and B");
    ZCI_TRY(float_types(c, n));
    const zci_tensor *a = ZCI_IN(g, n, 0), *b = ZCI_IN(g, n, 1), *y = ZCI_OUT(g, n, 0);
    if (a->ndim != 2 || b->ndim != 2) return zci_error(ZCI_UNSUPPORTED, "Gemm of ranks %d and %d", a->ndim, b->ndim);
    zci_status st = ZCI_OK;
    s->gemm = 1;
    s->trans_a = (int)zci_attr_int(n, "transA", 0, &st);
    s->trans_b = (int)zci_attr_int(n, "transB", 0, &st);
    s->alpha = zci_attr_float(n, "alpha", 1.f, &st);
    s->beta = zci_attr_float(n, "beta", 1.f, &st);
    if (st != ZCI_OK) return st;
    s->M = s->trans_a ? a->dims[1] : a->dims[0];
    s->K = s->trans_a ? a->dims[0] : a->dims[1];
    s->N = s->trans_b ? b->dims[0] : b->dims[1];
    s->batch = 1;
    s->stride_c = s->M * s->N;
    s->c_input = n->n_in > 2 && n->in[2] >= 0 && s->beta != 0.f ? n->in[2] : -1; /* read as input 2 */
    if (s->c_input >= 0) cu_broadcast_plan(&g->tensors[s->c_input], y, &s->c_plan);
    return ZCI_OK;
}

zci_status build(const cu_ctx *c, const zci_node *n, mm_state *s)
{
    memset(s, 0, sizeof *s);
    return strcmp(n->op_type, "Gemm") ? build_matmul(c, n, s) : build_gemm(c, n, s);
}

} // namespace

extern "C" zci_status cu_mm_supports(const cu_ctx *c, const zci_node *n)
{
    mm_state s;
    zci_status st = build(c, n, &s);
    free(s.offsets);
    return st;
}

extern "C" zci_status cu_mm_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    mm_state *s = (mm_state *)zci_malloc(sizeof *s, "MatMul state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    zci_status st = build(c, n, s);
    if (st != ZCI_OK) {
        release(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

extern "C" void cu_mm_release(void *state) { release(state); }

extern "C" zci_status cu_mm_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t st)
{
    const mm_state *s = (const mm_state *)state;
    const int yt = n->out[0];
    if (!cu_numel(c, yt)) return ZCI_OK;
    const size_t es = cu_esize(c, yt);
    const char *A = (const char *)cu_in(c, n, 0), *B = (const char *)cu_in(c, n, 1);
    char *C = (char *)c->ptr[yt];
    float beta = 0.f;
    if (s->c_input >= 0) {
        ZCI_TRY(cu_strided_copy(cu_in(c, n, 2), C, &s->c_plan, es, st));
        beta = s->beta;
    }
    if (s->K == 0 && s->c_input < 0) {
        CU_TRY(cudaMemsetAsync(C, 0, (size_t)cu_numel(c, yt) * es, st));
        return ZCI_OK;
    }
    const int half = c->dt[yt] == ZCI_FLOAT16;
    const cudaDataType_t dt = half ? CUDA_R_16F : CUDA_R_32F;
    const cublasComputeType_t ct = !half && c->allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const int m = (int)s->M, nn = (int)s->N, k = (int)s->K;
    /* column-major C^T (N x M) = op(B)^T (N x K) * op(A)^T (K x M) */
    const cublasOperation_t opb = s->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opa = s->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int ldb = s->trans_b ? k : nn, lda = s->trans_a ? m : k, ldc = nn;
    if (!s->offsets) {
        CUBLAS_TRY(cublasGemmStridedBatchedEx(c->cublas, opb, opa, nn, m, k, &s->alpha, B, dt, ldb, s->stride_b, A, dt,
                                              lda, s->stride_a, &beta, C, dt, ldc, s->stride_c, (int)s->batch, ct,
                                              CUBLAS_GEMM_DEFAULT));
        return ZCI_OK;
    }
    for (int64_t i = 0; i < s->batch; i++)
        CUBLAS_TRY(cublasGemmEx(c->cublas, opb, opa, nn, m, k, &s->alpha, B + s->offsets[2 * i + 1] * (int64_t)es, dt, ldb,
                                A + s->offsets[2 * i] * (int64_t)es, dt, lda, &beta, C + i * s->stride_c * (int64_t)es, dt,
                                ldc, ct, CUBLAS_GEMM_DEFAULT));
    return ZCI_OK;
}
