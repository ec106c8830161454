/* dnnl_conv.h: convolutions through oneDNN (built only with ZCI_HAVE_DNNL).
 *
 * One object per Conv node, made at planning: the primitive for the node's fixed shapes, its
 * weights reordered once into the layout the primitive prefers and the fused epilogue as oneDNN
 * post-ops (after a Winograd convolution, which takes none, as a pass of its own). What a run
 * needs besides (the blocked copies of source and destination when the primitive prefers a
 * blocked layout to the graph's plain NCHW, a Winograd convolution's output before its epilogue,
 * and oneDNN's scratchpad) lives in a workspace the caller passes, so that nodes that run one
 * after another can share one. A run allocates nothing.
 *
 * Threads: Debian's oneDNN uses OpenMP and sizes its parallel regions (and, at creation, its
 * work split) from omp_get_max_threads(). Both functions below set the calling thread's OpenMP
 * thread count to the object's for their duration and restore it before returning. One object
 * may be run by one thread at a time. */
#ifndef ZCI_CPU_DNNL_CONV_H
#define ZCI_CPU_DNNL_CONV_H

#ifdef ZCI_HAVE_DNNL

#include "ops/conv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zci_dnnl_conv zci_dnnl_conv;

/* The channel block of the layout oneDNN's fast kernels use on this CPU (16 with AVX-512, 8
 * with AVX2), 0 when there is none worth keeping tensors in. */
int zci_dnnl_block_size(void);

/* 0 for the convolutions zci_dnnl_conv_create declines whatever the layouts (a oneDNN defect
 * they would hit), 1 otherwise. */
int zci_dnnl_conv_supported(const zci_conv_params *p);

/* Builds the convolution described by p (shapes, geometry, group, epilogue) with the given
 * weights (plain (M, C / group, kernel...) layout, read only here). src_block, dst_block and
 * res_block say how the graph stores the input, the output and the residual: 0 = plain
 * (N, C, H, W), 8 or 16 = channel-blocked (N, C / B, H, W, B), 4-D only (conv.c decides which
 * tensors are kept so). `nthreads` is the thread count for creation and for every run.
 * ZCI_UNSUPPORTED when oneDNN has no implementation for it (the caller falls back to the
 * built-in kernels), ZCI_OUT_OF_MEMORY, or ZCI_INTERNAL with oneDNN's status for anything else. */
zci_status zci_dnnl_conv_create(const zci_conv_params *p, const float *weights, int src_block, int dst_block,
                                int res_block, int nthreads, zci_dnnl_conv **out);

/* Bytes of workspace zci_dnnl_conv_run needs (0: none). */
size_t zci_dnnl_conv_workspace_size(const zci_dnnl_conv *c);

/* y = conv(x) with the epilogue. bias: M floats or NULL (as p->has_bias said at creation); sum:
 * the residual (the output's shape) or NULL when p->sum_input < 0; y may equal sum. workspace:
 * zci_dnnl_conv_workspace_size bytes, 64-byte aligned, its content free to overwrite. */
zci_status zci_dnnl_conv_run(zci_dnnl_conv *c, const float *x, const float *bias, const float *sum, float *y,
                             void *workspace);

/* Which oneDNN implementation was chosen ("brgconv:avx512_core", ...), for logs and benches. */
const char *zci_dnnl_conv_impl(const zci_dnnl_conv *c);

/* Accepts NULL. */
void zci_dnnl_conv_free(zci_dnnl_conv *c);

#ifdef __cplusplus
}
#endif

#endif /* ZCI_HAVE_DNNL */
#endif
