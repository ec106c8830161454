/* gemm.h: zcinfer's single-precision matrix multiply (row-major), shared by MatMul, Gemm and the
 * convolutions that do not go through oneDNN.
 *
 * The engine is the classic cache-blocked GEMM (Goto / BLIS): B is packed into panels of KC rows
 * that stay in L3/L2, A into MR-row strips that stay in L2, and a register-blocked micro-kernel
 * multiplies one MR x NR tile at a time. The micro-kernel is written with GCC vector extensions
 * (AVX-512, AVX2 or 128-bit vectors, whichever the build targets; plain scalars for other
 * compilers). Threads split C into a grid of tiles chosen to balance work against repeated
 * packing.
 *
 * Two hooks let a caller avoid materialising operands: a B source packs B's panels itself (the
 * convolution packs straight from the image: implicit im2col) and an epilogue runs on each block
 * of C once its sum is final (bias, activation, residual while the block is still in cache).
 *
 * All functions may be called from several threads at once on different outputs. */
#ifndef ZCI_CPU_GEMM_H
#define ZCI_CPU_GEMM_H

#include "core/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A packed in the micro-kernel's layout (a constant operand, e.g. convolution weights, packed
 * once at planning). Owns `data`. */
typedef struct zci_packed_a {
    int64_t m, k;
    float *data;
} zci_packed_a;

/* Packs op(A) (m x k; trans_a: A is stored k x m) into *out. ZCI_OUT_OF_MEMORY on failure. */
zci_status zci_sgemm_pack_a(int trans_a, int64_t m, int64_t k, const float *a, int64_t lda, zci_packed_a *out);
/* Frees what zci_sgemm_pack_a allocated; accepts a zeroed struct. */
void zci_packed_a_free(zci_packed_a *p);

/* Packs rows [k0, k0 + kc) and columns [n0, n0 + nc) of B into dst: ceil(nc / nr) strips one
 * after the other, each kc rows of nr floats (row p of a strip holds B[k0 + p][strip's columns]),
 * columns beyond nc zero. Called concurrently from several threads with different dst. */
typedef void (*zci_gemm_pack_b_fn)(const void *ctx, int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr,
                                   float *dst);

/* Called once for each block of C whose value is final: rows [m0, m0 + mc), columns
 * [n0, n0 + nc), starting at c (= C + m0 * ldc + n0), while the block is still in cache. Blocks
 * never overlap and together cover C; calls may come from several threads at once. */
typedef void (*zci_gemm_epilogue_fn)(const void *ctx, float *c, int64_t ldc, int64_t m0, int64_t mc, int64_t n0,
                                     int64_t nc);

typedef struct zci_gemm_args {
    int64_t m, n, k;
    float alpha;          /* C = alpha * op(A) op(B) + beta * C */
    float beta;           /* 0: C is not read (may hold NaNs) */
    /* A: packed (preferred when it is reused) or plain */
    const zci_packed_a *packed_a;
    const float *a;
    int64_t lda;
    int trans_a;
    /* B: a packing callback or plain */
    zci_gemm_pack_b_fn pack_b;
    const void *pack_b_ctx;
    const float *b;
    int64_t ldb;
    int trans_b;
    float *c;
    int64_t ldc;
    zci_gemm_epilogue_fn epilogue; /* NULL: none */
    const void *epilogue_ctx;
    /* zci_sgemm_workspace_size(m, n, k, nthreads) bytes, 64-byte aligned; NULL: allocated here */
    void *workspace;
    int nthreads;
} zci_gemm_args;

/* Runs the multiply described by *args. ZCI_OUT_OF_MEMORY only when it had to allocate its
 * workspace and could not; ZCI_INVALID_ARGUMENT for negative sizes. m, n or k zero is allowed
 * (k = 0 gives C = beta * C, then the epilogue). */
zci_status zci_sgemm_run(const zci_gemm_args *args);

/* Bytes of workspace zci_sgemm_run needs for these sizes and at most `nthreads` threads. */
size_t zci_sgemm_workspace_size(int64_t m, int64_t n, int64_t k, int nthreads);

/* C = alpha * op(A) op(B) + beta * C with plain operands, allocating its workspace. */
zci_status zci_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                     int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc, int nthreads);

/* The micro-tile the build uses (rows of A, columns of B per tile), for callers that shape their
 * packing or partitioning after it. */
int zci_sgemm_mr(void);
int zci_sgemm_nr(void);

#ifdef __cplusplus
}
#endif

#endif
