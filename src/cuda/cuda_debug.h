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

#ifdef __cplusplus
}
#endif

#endif
