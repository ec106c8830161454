/* matmul.c: MatMul (numpy semantics: 1-D operands promoted, batch dimensions broadcast) and
 * Gemm (alpha, beta, transA, transB, C broadcast to (M, N)), float32, on cpu/gemm.c. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/gemm.h"
#include "ops/op.h"

/* Below this many multiply-adds per matrix, a batch of products is split over threads by
 * product rather than inside each product. */
#define SMALL_PRODUCT ((int64_t)1 << 18)

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

/* ================================================================ MatMul */

/* MatMul's shapes after 1-D promotion: A (batch..., m, k) times B (batch..., k, n), batch
 * dimensions right-aligned and broadcast to `bdims`. */
typedef struct matmul_params {
    int nb;                       /* broadcast batch rank */
    int64_t bdims[ZCI_MAX_DIMS];  /* broadcast batch shape */
    int64_t astride[ZCI_MAX_DIMS], bstride[ZCI_MAX_DIMS]; /* per batch dim, in matrices; 0 = broadcast */
    int64_t m, n, k;
    int64_t batch;                /* product of bdims */
} matmul_params;

static zci_status matmul_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 2, 2, 1));
    const zci_tensor *a = ZCI_IN(g, n, 0), *b = ZCI_IN(g, n, 1);
    if (a->dtype != ZCI_FLOAT32 || b->dtype != ZCI_FLOAT32)
        return zci_error(ZCI_UNSUPPORTED, "A ('%s') and B ('%s') must be float32, found %s and %s", tname(a), tname(b),
                         zci_dtype_name(a->dtype), zci_dtype_name(b->dtype));
    if (a->ndim < 1 || b->ndim < 1)
        return zci_error(ZCI_INVALID_MODEL, "A ('%s') and B ('%s') must have rank 1 or more, found %d and %d", tname(a),
                         tname(b), a->ndim, b->ndim);
    /* 1-D promotion: A (k) is (1, k), B (k) is (k, 1); the added dimension is dropped after */
    int64_t ad[ZCI_MAX_DIMS + 1], bd[ZCI_MAX_DIMS + 1];
    int an = a->ndim, bn = b->ndim;
    if (an == 1) {
        ad[0] = 1;
        ad[1] = a->dims[0];
        an = 2;
    } else {
        memcpy(ad, a->dims, sizeof(int64_t) * (size_t)an);
    }
    if (bn == 1) {
        bd[0] = b->dims[0];
        bd[1] = 1;
        bn = 2;
    } else {
        memcpy(bd, b->dims, sizeof(int64_t) * (size_t)bn);
    }
    if (ad[an - 1] != bd[bn - 2]) {
        char sa[96], sb[96];
        return zci_error(ZCI_INVALID_MODEL, "A ('%s', %s) and B ('%s', %s) do not multiply: %lld columns vs %lld rows",
                         tname(a), zci_shape_str(a->dims, a->ndim, sa, sizeof sa), tname(b),
                         zci_shape_str(b->dims, b->ndim, sb, sizeof sb), (long long)ad[an - 1], (long long)bd[bn - 2]);
    }
    matmul_params *p = zci_calloc(1, sizeof *p, "MatMul params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->m = ad[an - 2];
    p->k = ad[an - 1];
    p->n = bd[bn - 1];
    zci_status st = zci_broadcast_shape(ad, an - 2, bd, bn - 2, p->bdims, &p->nb);
    if (st != ZCI_OK) {
        free(p);
        return zci_error_prefix(st, "batch dimensions of A ('%s') and B ('%s')", tname(a), tname(b));
    }
    /* strides in whole matrices, right-aligned, 0 where an operand broadcasts */
    int64_t as = 1, bs = 1;
    p->batch = 1;
    for (int i = p->nb - 1; i >= 0; i--) {
        int ai = i - (p->nb - (an - 2)), bi = i - (p->nb - (bn - 2));
        int64_t adim = ai >= 0 ? ad[ai] : 1, bdim = bi >= 0 ? bd[bi] : 1;
        p->astride[i] = adim == 1 ? 0 : as;
        p->bstride[i] = bdim == 1 ? 0 : bs;
        as *= adim;
        bs *= bdim;
        p->batch *= p->bdims[i];
    }
    int64_t ydims[ZCI_MAX_DIMS + 2];
    int yn = 0;
    for (int i = 0; i < p->nb; i++) ydims[yn++] = p->bdims[i];
    if (a->ndim > 1) ydims[yn++] = p->m;
    if (b->ndim > 1) ydims[yn++] = p->n;
    if (yn > ZCI_MAX_DIMS) {
        free(p);
        return zci_error(ZCI_UNSUPPORTED, "the output's rank %d exceeds %d", yn, ZCI_MAX_DIMS);
    }
    free(n->params);
    n->params = p;
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), ZCI_FLOAT32, ydims, yn);
    return ZCI_OK;
}

/* Offsets (in matrices) of batch element `idx` in A and B. */
static void batch_offsets(const matmul_params *p, int64_t idx, int64_t *ao, int64_t *bo)
{
    *ao = *bo = 0;
    for (int i = p->nb - 1; i >= 0; i--) {
        int64_t c = idx % p->bdims[i];
        idx /= p->bdims[i];
        *ao += c * p->astride[i];
        *bo += c * p->bstride[i];
    }
}

static int b_is_shared(const matmul_params *p)
{
    for (int i = 0; i < p->nb; i++)
        if (p->bstride[i]) return 0;
    return 1;
}

static int a_is_dense_batch(const matmul_params *p)
{
    /* A's batch elements laid out one after another in output order (no broadcast in A) */
    for (int i = 0; i < p->nb; i++)
        if (p->bdims[i] != 1 && !p->astride[i]) return 0;
    return 1;
}

static zci_status matmul_cpu(const zci_kernel_ctx *k)
{
    const matmul_params *p = k->n->params;
    const float *a = ZCI_KIN_DATA(k, 0), *b = ZCI_KIN_DATA(k, 1);
    float *y = ZCI_KOUT_DATA(k, 0);
    const int64_t m = p->m, n = p->n, kk = p->k;
    if (p->batch == 0 || m == 0 || n == 0) return ZCI_OK;
    if (b_is_shared(p) && a_is_dense_batch(p))
        /* one B for every batch element: the batch folds into M, one large product */
        return zci_sgemm(0, 0, p->batch * m, n, kk, 1.0f, a, kk, b, n, 0.0f, y, n, k->nthreads);
    if (m * n * kk >= SMALL_PRODUCT || p->batch < 2 || k->nthreads <= 1) {
        for (int64_t i = 0; i < p->batch; i++) {
            int64_t ao, bo;
            batch_offsets(p, i, &ao, &bo);
            ZCI_TRY(zci_sgemm(0, 0, m, n, kk, 1.0f, a + ao * m * kk, kk, b + bo * kk * n, n, 0.0f, y + i * m * n, n,
                              k->nthreads));
        }
        return ZCI_OK;
    }
    /* many small products (attention heads): one per thread at a time, each with its own slice of
     * one workspace */
    int nt = k->nthreads;
    size_t per = zci_align(zci_sgemm_workspace_size(m, n, kk, 1), 64);
    char *ws = aligned_alloc(64, per * (size_t)nt);
    if (!ws) return zci_error(ZCI_OUT_OF_MEMORY, "MatMul: cannot allocate a %zu-byte workspace", per * (size_t)nt);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < p->batch; i++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        int64_t ao, bo;
        batch_offsets(p, i, &ao, &bo);
        zci_gemm_args ga = {0};
        ga.m = m;
        ga.n = n;
        ga.k = kk;
        ga.alpha = 1.0f;
        ga.a = a + ao * m * kk;
        ga.lda = kk;
        ga.b = b + bo * kk * n;
        ga.ldb = n;
        ga.c = y + i * m * n;
        ga.ldc = n;
        ga.workspace = ws + (size_t)t * per;
        ga.nthreads = 1;
        zci_sgemm_run(&ga); /* cannot fail: sizes are valid and the workspace is given */
    }
    free(ws);
    return ZCI_OK;
}

/* ================================================================ Gemm */

typedef struct gemm_params {
    int64_t m, n, k;
    int trans_a, trans_b;
    float alpha, beta;
    int has_c;
    int64_t c_rows, c_cols; /* C's shape as (rows, cols) after right-aligning to (M, N): 1 = broadcast */
} gemm_params;

static zci_status gemm_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 2, 3, 1));
    zci_status st = ZCI_OK;
    gemm_params q = {0};
    q.alpha = zci_attr_float(n, "alpha", 1.0f, &st);
    q.beta = zci_attr_float(n, "beta", 1.0f, &st);
    q.trans_a = zci_attr_int(n, "transA", 0, &st) != 0;
    q.trans_b = zci_attr_int(n, "transB", 0, &st) != 0;
    if (st != ZCI_OK) return zci_error(st, "attributes alpha, beta (floats), transA, transB (ints) have the wrong type");
    const zci_tensor *a = ZCI_IN(g, n, 0), *b = ZCI_IN(g, n, 1);
    if (a->dtype != ZCI_FLOAT32 || b->dtype != ZCI_FLOAT32)
        return zci_error(ZCI_UNSUPPORTED, "A ('%s') and B ('%s') must be float32, found %s and %s", tname(a), tname(b),
                         zci_dtype_name(a->dtype), zci_dtype_name(b->dtype));
    if (a->ndim != 2 || b->ndim != 2)
        return zci_error(ZCI_INVALID_MODEL, "A ('%s') and B ('%s') must be 2-D, found ranks %d and %d", tname(a),
                         tname(b), a->ndim, b->ndim);
    q.m = q.trans_a ? a->dims[1] : a->dims[0];
    q.k = q.trans_a ? a->dims[0] : a->dims[1];
    int64_t kb = q.trans_b ? b->dims[1] : b->dims[0];
    q.n = q.trans_b ? b->dims[0] : b->dims[1];
    if (q.k != kb)
        return zci_error(ZCI_INVALID_MODEL, "op(A) ('%s') has %lld columns but op(B) ('%s') has %lld rows", tname(a),
                         (long long)q.k, tname(b), (long long)kb);
    q.has_c = ZCI_HAS_IN(n, 2);
    if (q.has_c) {
        const zci_tensor *c = ZCI_IN(g, n, 2);
        if (c->dtype != ZCI_FLOAT32)
            return zci_error(ZCI_UNSUPPORTED, "C ('%s') must be float32, found %s", tname(c), zci_dtype_name(c->dtype));
        if (c->ndim > 2)
            return zci_error(ZCI_INVALID_MODEL, "C ('%s') has rank %d, at most 2 broadcasts to (M, N)", tname(c), c->ndim);
        q.c_rows = c->ndim == 2 ? c->dims[0] : 1;
        q.c_cols = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
        if ((q.c_rows != 1 && q.c_rows != q.m) || (q.c_cols != 1 && q.c_cols != q.n)) {
            char sc[96];
            return zci_error(ZCI_INVALID_MODEL, "C ('%s', %s) does not broadcast to (%lld, %lld)", tname(c),
                             zci_shape_str(c->dims, c->ndim, sc, sizeof sc), (long long)q.m, (long long)q.n);
        }
    }
    gemm_params *p = zci_malloc(sizeof *p, "Gemm params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    *p = q;
    free(n->params);
    n->params = p;
    int64_t ydims[2] = {q.m, q.n};
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), ZCI_FLOAT32, ydims, 2);
    return ZCI_OK;
}

static zci_status gemm_cpu(const zci_kernel_ctx *k)
{
    const gemm_params *p = k->n->params;
    const float *a = ZCI_KIN_DATA(k, 0), *b = ZCI_KIN_DATA(k, 1);
    float *y = ZCI_KOUT_DATA(k, 0);
    float beta = 0.0f;
    if (p->has_c && p->beta != 0.0f) {
        /* Y = beta * C broadcast, then the product accumulates into it */
        const float *c = ZCI_KIN_DATA(k, 2);
        for (int64_t i = 0; i < p->m; i++) {
            const float *crow = c + (p->c_rows == 1 ? 0 : i) * p->c_cols;
            float *yrow = y + i * p->n;
            if (p->c_cols == 1)
                for (int64_t j = 0; j < p->n; j++) yrow[j] = p->beta * crow[0];
            else
                for (int64_t j = 0; j < p->n; j++) yrow[j] = p->beta * crow[j];
        }
        beta = 1.0f;
    }
    return zci_sgemm(p->trans_a, p->trans_b, p->m, p->n, p->k, p->alpha, a, p->trans_a ? p->m : p->k, b,
                     p->trans_b ? p->k : p->n, beta, y, p->n, k->nthreads);
}

/* clang-format off */
const zci_op zci_op_MatMul = {
    .type = "MatMul", .domain = "", .since = 1,
    .infer = matmul_infer, .cpu = matmul_cpu,
};
const zci_op zci_op_Gemm = {
    .type = "Gemm", .domain = "", .since = 1, .infer = gemm_infer, .cpu = gemm_cpu,
};
/* clang-format on */
