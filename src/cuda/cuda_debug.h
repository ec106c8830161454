/* cuda_debug.h: hooks of the CUDA backend for the GPU tests (not API: the tests link the static
 * library and reach into the session). */
#ifndef ZCI_CUDA_DEBUG_H
#define ZCI_CUDA_DEBUG_H

#include "core/session.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if s is a prepared CUDA session. */
int zci_cuda_is_session(const zci_session *s);
/* Device bytes the session allocated itself (arena, constants, buffers, workspace, node state). */
size_t zci_cuda_device_bytes(const zci_session *s);
/* 1 if the session replays a captured CUDA graph. */
int zci_cuda_uses_graph(const zci_session *s);
/* Runs the model from the session's own input buffers into its own output buffers, one node at a
 * time on the session's stream, waiting after each, and calls visit(user, node index) after each
 * node (while its inputs and outputs are still in place); a nonzero return stops the walk. */
zci_status zci_cuda_debug_run(zci_session *s, int (*visit)(void *user, int node), void *user);
/* GPU time of each planned node: the body is captured with timing events between the nodes and
 * replayed `iters` times; node_ms[node index] receives the median (nodes not planned are left
 * alone). */
zci_status zci_cuda_profile(zci_session *s, int iters, double *node_ms);
/* Copies tensor t's device contents into `host` in the graph's type (half data of a float tensor
 * converted to float). `bytes` must be the tensor's byte size in the graph's type. */
zci_status zci_cuda_read_tensor(zci_session *s, int t, void *host, size_t bytes);

/* One convolution on conv_igemm.cu's kernel, outside any session: NHWC FP16 input x (N, H, W, C;
 * C a multiple of 8), weights w (Nc, R, S, C), an optional FP32 bias and FP16 residual (N*OH*OW,
 * Nc), output y (N*OH*OW rows of ldy >= Nc halves; the caller's contents are kept where the
 * kernel does not write, so a poison shows what it wrote). Halves are IEEE binary16 bits. */
typedef struct zci_igemm_test {
    int N, H, W, C, Nc, R, S, sh, sw, ph, pw, dh, dw, OH, OW;
    int act; /* ops/conv.h's zci_activation */
    float alpha, beta;
    int sum_first;
    int ldy;
    const uint16_t *x, *w, *res; /* res may be NULL */
    const float *bias;           /* may be NULL */
} zci_igemm_test;
/* Number of tile configurations; cfg -1 is the one-thread-per-output fallback kernel. */
int zci_cuda_igemm_configs(void);
/* Runs t with tile configuration cfg and `splits` blocks along k (twice, on the same buffers) and
 * copies y back into y_host (which also supplies y's initial contents). us != NULL: then times
 * 100 more launches back to back and stores the mean in microseconds. */
zci_status zci_cuda_igemm_test_run(const zci_igemm_test *t, int cfg, int splits, uint16_t *y_host, float *us);

/* One convolution on conv_direct.cu's kernel (cu_dconv_run), outside any session: NHWC FP16
 * input x (N, H, W, C), weights w (K, R, S, C), FP32 bias (K, required), output y (N*P*Q rows of
 * ldy halves; the caller's contents are kept where the kernel does not write). */
typedef struct zci_dconv_test {
    int N, H, W, C, K, R, S, sh, sw, ph, pw, P, Q, ldy;
    int act; /* ops/conv.h's zci_activation */
    float alpha, beta;
    const uint16_t *x, *w;
    const float *bias;
    int C_used; /* cu_dconv_geom's: channels that may be nonzero in w, 0: all */
} zci_dconv_test;
/* cu_dconv_supported for t's geometry (on the current device). */
int zci_cuda_dconv_supported(const zci_dconv_test *t);
/* Runs t once with `warps` warps per block (2, 4 or 8; 0: cu_dconv_run's own choice), the
 * regular or (small = 1, K <= 32 only) half-size warp tile, and at most max_blocks blocks (0: as
 * many as fit on the GPU at once, as cu_dconv_run does; fewer make each block go through more
 * tiles), and copies y back into y_host (which also supplies y's initial contents);
 * ZCI_UNSUPPORTED for a geometry or block shape the kernel refuses. us != NULL: then also times
 * 100 more launches back to back and stores the mean in microseconds. */
zci_status zci_cuda_dconv_test_run(const zci_dconv_test *t, int warps, int small, int max_blocks, uint16_t *y_host,
                                   float *us);

#ifdef __cplusplus
}
#endif

#endif
