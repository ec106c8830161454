/* run.c: the CUDA backend's three ways in.
 *
 * Zero-copy (device buffers): the caller's pointers are checked with cudaPointerGetAttributes,
 * then everything is queued on the caller's stream: the input edges (a type conversion or a
 * device-to-device copy into the planned input tensor), the body (the captured CUDA graph, or
 * the nodes launched one by one, in which case the caller's buffers are bound directly and no
 * edge copies are needed) and the output edges into the caller's output buffers.
 * Own buffers: the same from the session's buffers.
 * Regular (host buffers): pinned caller buffers go straight to DMA. Pageable ones are staged
 * through the session's pinned buffers in chunks, the host copy of one chunk overlapping the
 * DMA of the previous one; in FP16 with FP32 host buffers the host converts while it copies, so
 * only half the bytes cross PCIe and no conversion kernel runs. The call ends with a wait on the
 * stream.
 * Runs queued on different streams are ordered through an event: they share the arena. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "cuda/cuda_debug.h"
#include "cuda/cuda_internal.h"
#include "cuda/dl.h"
#include "ops/rowmap.h"

/* Staging chunks: large enough that a DMA is efficient, small enough to overlap. */
#define CHUNK_MIN ((size_t)512 << 10)

zci_status cu_run_nodes(cu_ctx *c, cudaStream_t stream)
{
    const zci_graph *g = c->g;
    if (c->cudnn) CUDNN_TRY(cudnnSetStream(c->cudnn, stream));
    if (c->cublas) CUBLAS_TRY(cublasSetStream(c->cublas, stream));
    ZCI_TRY(cu_launch_prologue(c, stream));
    for (int p = 0; p < g->n_order; p++) ZCI_TRY(cu_launch_node(c, p, stream));
    return ZCI_OK;
}

/* ---------------------------------------------------------------- edges */

static zci_status input_edge(cu_ctx *c, int i, const void *src, cudaStream_t s)
{
    int t = c->g->inputs[i];
    const zci_tensor_info *info = &c->s->in_info[i];
    if (info->dtype != c->dt[t]) return cu_convert(src, info->dtype, c->ptr[t], c->dt[t], cu_numel(c, t), s);
    if (src != c->ptr[t]) CU_TRY(cudaMemcpyAsync(c->ptr[t], src, info->bytes, cudaMemcpyDeviceToDevice, s));
    return ZCI_OK;
}

static zci_status output_edge(cu_ctx *c, int i, void *dst, cudaStream_t s)
{
    int t = c->g->outputs[i];
    const zci_tensor_info *info = &c->s->out_info[i];
    if (info->dtype != c->dt[t]) return cu_convert(c->ptr[t], c->dt[t], dst, info->dtype, cu_numel(c, t), s);
    if (dst != c->ptr[t]) CU_TRY(cudaMemcpyAsync(dst, c->ptr[t], info->bytes, cudaMemcpyDeviceToDevice, s));
    return ZCI_OK;
}

/* Input i before the captured body: an input head (cu_plan_input_heads) goes straight into its
 * padded NHWC copy, which the graph does not write; other inputs take input_edge. */
static zci_status input_edge_before_graph(cu_ctx *c, int i, const void *src, cudaStream_t s)
{
    if (!c->graph_exec || !c->in_head || !c->in_head[i]) return input_edge(c, i, src, s);
    return cu_input_head(c, i, src, c->s->in_info[i].dtype, s);
}

/* The regular path's input heads: the layout pass the graph leaves out, from the planned input
 * (in the device type) where the uploads left it. */
static zci_status input_heads_from_own(cu_ctx *c, cudaStream_t s)
{
    for (int i = 0; c->graph_exec && c->in_head && i < c->s->n_in; i++) {
        const int t = c->g->inputs[i];
        if (c->in_head[i]) ZCI_TRY(cu_input_head(c, i, c->ptr[t], c->dt[t], s));
    }
    return ZCI_OK;
}

/* Output i after the captured body: the output tail (cu_plan_tail) writes it straight into dst in
 * the I/O type; other outputs take output_edge. */
static zci_status output_edge_after_graph(cu_ctx *c, int i, void *dst, cudaStream_t s)
{
    if (i != c->tail_out || !c->graph_exec) return output_edge(c, i, dst, s);
    const zci_node *n = &c->g->nodes[c->tail_node];
    const int64_t rows = ((const zci_rowmap_params *)n->params)->rows; /* per image */
    return cu_rowmap_launch_to(c, n, c->nodes[c->tail_node].state, s, 0, rows, dst, c->s->out_info[i].dtype);
}

/* The output tail into the session's own buffer (the regular path's downloads read it there),
 * less the rows the graph wrote early. */
static zci_status tail_to_own(cu_ctx *c, cudaStream_t s)
{
    if (c->tail_node < 0 || !c->graph_exec) return ZCI_OK;
    const zci_node *n = &c->g->nodes[c->tail_node];
    const int64_t rows = ((const zci_rowmap_params *)n->params)->rows; /* per image */
    return cu_rowmap_launch_rows(c, n, c->nodes[c->tail_node].state, s, c->early_rm == c->tail_node ? c->early_rows : 0,
                                 rows);
}

/* ---------------------------------------------------------------- pointer checks */

typedef enum host_kind { HOST_PAGEABLE, HOST_PINNED } host_kind;

static const char *mem_name(enum cudaMemoryType t)
{
    switch (t) {
    case cudaMemoryTypeHost: return "pinned host memory";
    case cudaMemoryTypeDevice: return "device memory";
    case cudaMemoryTypeManaged: return "managed memory";
    default: return "pageable host memory";
    }
}

static zci_status pointer_type(const void *p, enum cudaMemoryType *type, int *device)
{
    struct cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (e == cudaErrorInvalidValue) { /* older drivers: plain host memory */
            *type = cudaMemoryTypeUnregistered;
            *device = -1;
            return ZCI_OK;
        }
        return cu_cuda_error(e, "cudaPointerGetAttributes");
    }
    *type = a.type;
    *device = a.device;
    return ZCI_OK;
}

static zci_status check_device_ptr(const cu_ctx *c, const void *p, int is_out, const char *name)
{
    enum cudaMemoryType type = cudaMemoryTypeUnregistered;
    int device = -1;
    ZCI_TRY(pointer_type(p, &type, &device));
    if (type == cudaMemoryTypeManaged) return ZCI_OK;
    if (type != cudaMemoryTypeDevice)
        return zci_error(ZCI_INVALID_ARGUMENT,
                         "zci_run_device: the buffer for %s '%s' is %s; device buffers (cudaMalloc) are required "
                         "(use zci_run for host buffers)",
                         is_out ? "output" : "input", name, mem_name(type));
    if (device != c->device)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_run_device: the buffer for %s '%s' is on device %d; the session runs on device %d",
                         is_out ? "output" : "input", name, device, c->device);
    return ZCI_OK;
}

static zci_status check_host_ptr(const void *p, int is_out, const char *name, host_kind *kind)
{
    enum cudaMemoryType type = cudaMemoryTypeUnregistered;
    int device = -1;
    ZCI_TRY(pointer_type(p, &type, &device));
    if (type == cudaMemoryTypeDevice)
        return zci_error(ZCI_INVALID_ARGUMENT,
                         "zci_run: the buffer for %s '%s' is device memory (device %d); zci_run takes host buffers "
                         "(use zci_run_device for device pointers)",
                         is_out ? "output" : "input", name, device);
    *kind = type == cudaMemoryTypeHost ? HOST_PINNED : HOST_PAGEABLE;
    return ZCI_OK;
}

/* ---------------------------------------------------------------- host staging */

typedef enum xform { XF_COPY, XF_F32_TO_F16, XF_F16_TO_F32 } xform;

static void f32_to_f16(uint16_t *d, const float *s, size_t n)
{
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) d[i] = zci_f32_to_f16(s[i]);
}

static void f16_to_f32(float *d, const uint16_t *s, size_t n)
{
    size_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
    for (; i < n; i++) d[i] = zci_f16_to_f32(s[i]);
}

/* Source elements [e0, e1) of a transform (an element is a byte for XF_COPY). */
static void xform_range(void *dst, const void *src, size_t e0, size_t e1, xform x)
{
    if (e1 <= e0) return;
    switch (x) {
    case XF_COPY: memcpy((char *)dst + e0, (const char *)src + e0, e1 - e0); break;
    case XF_F32_TO_F16: f32_to_f16((uint16_t *)dst + e0, (const float *)src + e0, e1 - e0); break;
    case XF_F16_TO_F32: f16_to_f32((float *)dst + e0, (const uint16_t *)src + e0, e1 - e0); break;
    }
}

/* One staged transfer: `elems` elements, host side `host`, pinned side `stage`, device `dev`. */
typedef struct staged {
    void *host, *stage, *dev;
    size_t elems;
    size_t dev_esize; /* bytes per element on the pinned/device side */
    xform x;
    cudaStream_t stream; /* downloads: the stream its DMAs go on (NULL: the run's) */
} staged;

/* Chunk boundaries: k-th of `chunks` element ranges, aligned to 64 elements. */
static size_t chunk_at(size_t elems, int chunks, int k)
{
    if (k >= chunks) return elems;
    size_t e = elems / (size_t)chunks * (size_t)k;
    return e & ~(size_t)63;
}

static int chunk_count(size_t bytes, int max_chunks)
{
    size_t k = bytes / CHUNK_MIN;
    if (k < 1) k = 1;
    if (k > (size_t)max_chunks) k = (size_t)max_chunks;
    return (int)k;
}

/* Host -> pinned (transformed) -> device, chunk by chunk: the calling thread queues each chunk's
 * DMA as soon as the team has filled it, and the team goes on with the next. */
static zci_status upload_staged(cu_ctx *c, const staged *u, cudaStream_t s)
{
    const int chunks = chunk_count(u->elems * u->dev_esize, 8), nt = c->n_host_threads;
    cudaError_t err = cudaSuccess;
#pragma omp parallel num_threads(nt)
    for (int k = 0; k < chunks; k++) {
        size_t e0 = chunk_at(u->elems, chunks, k), e1 = chunk_at(u->elems, chunks, k + 1);
#pragma omp for schedule(static)
        for (int part = 0; part < nt; part++) {
            size_t p0 = e0 + (e1 - e0) / (size_t)nt * (size_t)part;
            size_t p1 = part == nt - 1 ? e1 : e0 + (e1 - e0) / (size_t)nt * (size_t)(part + 1);
            xform_range(u->stage, u->host, p0, p1, u->x);
        }
#pragma omp master
        {
            if (err == cudaSuccess)
                err = cudaMemcpyAsync((char *)u->dev + e0 * u->dev_esize, (const char *)u->stage + e0 * u->dev_esize,
                                      (e1 - e0) * u->dev_esize, cudaMemcpyHostToDevice, s);
        }
    }
    if (err != cudaSuccess) return cu_cuda_error(err, "cudaMemcpyAsync (host to device)");
    return ZCI_OK;
}

/* Device -> pinned -> host (transformed) for several outputs, in two steps: every chunk's DMA is
 * queued with an event behind it (queue_downloads); then the team copies each chunk out as soon
 * as its event fires (finish_downloads). per[i]: chunks of d[i]. */
static zci_status queue_downloads(cu_ctx *c, const staged *d, int n, int *per, cudaStream_t s)
{
    enum { MAXCH = (int)(sizeof c->chunk_ev / sizeof c->chunk_ev[0]) };
    int total = 0;
    if (n > 65) return zci_error(ZCI_INTERNAL, "too many outputs to stage");
    for (int i = 0; i < n; i++) {
        int left = MAXCH - total - (n - i - 1);
        per[i] = chunk_count(d[i].elems * d[i].dev_esize, left < 8 ? (left < 1 ? 1 : left) : 8);
        total += per[i];
    }
    if (total > MAXCH) return zci_error(ZCI_INTERNAL, "too many staging chunks");
    int k = 0;
    for (int i = 0; i < n; i++) {
        cudaStream_t ds = d[i].stream ? d[i].stream : s;
        for (int j = 0; j < per[i]; j++, k++) {
            size_t e0 = chunk_at(d[i].elems, per[i], j), e1 = chunk_at(d[i].elems, per[i], j + 1);
            CU_TRY(cudaMemcpyAsync((char *)d[i].stage + e0 * d[i].dev_esize, (const char *)d[i].dev + e0 * d[i].dev_esize,
                                   (e1 - e0) * d[i].dev_esize, cudaMemcpyDeviceToHost, ds));
            CU_TRY(cudaEventRecord(c->chunk_ev[k], ds));
        }
    }
    return ZCI_OK;
}

static zci_status finish_downloads(cu_ctx *c, const staged *d, int n, const int *per)
{
    const int nt = c->n_host_threads;
    cudaError_t err = cudaSuccess;
#pragma omp parallel num_threads(nt)
    {
        int kk = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < per[i]; j++, kk++) {
#pragma omp master
                {
                    if (err == cudaSuccess) err = cudaEventSynchronize(c->chunk_ev[kk]);
                }
#pragma omp barrier
                if (err == cudaSuccess) {
                    size_t e0 = chunk_at(d[i].elems, per[i], j), e1 = chunk_at(d[i].elems, per[i], j + 1);
#pragma omp for schedule(static)
                    for (int part = 0; part < nt; part++) {
                        size_t p0 = e0 + (e1 - e0) / (size_t)nt * (size_t)part;
                        size_t p1 = part == nt - 1 ? e1 : e0 + (e1 - e0) / (size_t)nt * (size_t)(part + 1);
                        xform_range(d[i].host, d[i].stage, p0, p1, d[i].x);
                    }
                }
            }
    }
    if (err != cudaSuccess) return cu_cuda_error(err, "cudaEventSynchronize (device to host)");
    return ZCI_OK;
}

/* ---------------------------------------------------------------- the body */

/* Waits for the previous run when it was queued on another stream: runs share the arena. */
static zci_status order_after_last(cu_ctx *c, cudaStream_t s)
{
    if (c->ran && s != c->last_stream) CU_TRY(cudaStreamWaitEvent(s, c->done, 0));
    return ZCI_OK;
}

static zci_status mark_done(cu_ctx *c, cudaStream_t s)
{
    CU_TRY(cudaEventRecord(c->done, s));
    c->last_stream = s;
    c->ran = 1;
    return ZCI_OK;
}

static zci_status run_body(cu_ctx *c, cudaStream_t s)
{
    if (c->graph_exec) {
        CU_TRY(cudaGraphLaunch(c->graph_exec, s));
        return ZCI_OK;
    }
    return cu_run_nodes(c, s);
}

/* The body for the zero-copy and own-buffer paths (graph_dev where there is one). */
static zci_status run_body_dev(cu_ctx *c, cudaStream_t s)
{
    if (c->graph_exec_dev) {
        CU_TRY(cudaGraphLaunch(c->graph_exec_dev, s));
        return ZCI_OK;
    }
    return run_body(c, s);
}

/* Model outputs the body writes straight into the caller's buffer (no graph): produced by a
 * node, in the I/O type, and not named twice. */
static int can_bind_output(const cu_ctx *c, int i)
{
    int t = c->g->outputs[i];
    return c->ptr[t] == c->out_buf[i] && c->s->out_info[i].dtype == c->dt[t];
}

static void restore_bindings(cu_ctx *c)
{
    for (int i = 0; i < c->s->n_in; i++)
        if (c->s->in_info[i].dtype == c->dt[c->g->inputs[i]]) c->ptr[c->g->inputs[i]] = c->in_buf[i];
    for (int i = 0; i < c->s->n_out; i++) {
        int t = c->g->outputs[i];
        if (c->g->tensors[t].producer >= 0 && c->s->out_info[i].dtype == c->dt[t]) {
            int first = 1;
            for (int j = 0; j < i; j++) first &= c->g->outputs[j] != t;
            if (first) c->ptr[t] = c->out_buf[i];
        }
    }
    cu_resolve_views(c);
}

static zci_status run_device(cu_ctx *c, const zci_run_args *a, cudaStream_t s)
{
    zci_session *ss = c->s;
    if (ss->n_out > 64)
        return zci_error(ZCI_UNSUPPORTED, "zci_run_device: the CUDA backend binds at most 64 outputs");
    for (int i = 0; i < ss->n_in; i++) ZCI_TRY(check_device_ptr(c, a->inputs[i], 0, ss->in_info[i].name));
    for (int i = 0; i < ss->n_out; i++) ZCI_TRY(check_device_ptr(c, a->outputs[i], 1, ss->out_info[i].name));
    ZCI_TRY(order_after_last(c, s));
    if (c->graph_exec) {
        for (int i = 0; i < ss->n_in; i++) ZCI_TRY(input_edge_before_graph(c, i, a->inputs[i], s));
        ZCI_TRY(run_body_dev(c, s));
        for (int i = 0; i < ss->n_out; i++) ZCI_TRY(output_edge_after_graph(c, i, a->outputs[i], s));
        return mark_done(c, s);
    }
    /* eager launches read the tensor table at launch: bind the caller's buffers */
    int bound_out[64] = {0};
    zci_status st = ZCI_OK;
    for (int i = 0; st == ZCI_OK && i < ss->n_in; i++) {
        int t = c->g->inputs[i];
        if (ss->in_info[i].dtype == c->dt[t]) c->ptr[t] = a->inputs[i];
        else st = input_edge(c, i, a->inputs[i], s);
    }
    for (int i = 0; i < ss->n_out; i++)
        if (can_bind_output(c, i)) {
            c->ptr[c->g->outputs[i]] = a->outputs[i];
            bound_out[i] = 1;
        }
    cu_resolve_views(c);
    if (st == ZCI_OK) st = cu_run_nodes(c, s);
    for (int i = 0; st == ZCI_OK && i < ss->n_out; i++)
        if (!bound_out[i]) st = output_edge(c, i, a->outputs[i], s);
    restore_bindings(c);
    if (st == ZCI_OK) st = mark_done(c, s);
    return st;
}

static zci_status run_own(cu_ctx *c, cudaStream_t s)
{
    ZCI_TRY(order_after_last(c, s));
    for (int i = 0; i < c->s->n_in; i++) ZCI_TRY(input_edge_before_graph(c, i, c->in_buf[i], s));
    ZCI_TRY(run_body_dev(c, s));
    for (int i = 0; i < c->s->n_out; i++) ZCI_TRY(output_edge_after_graph(c, i, c->out_buf[i], s));
    return mark_done(c, s);
}

static int host_converts(const cu_ctx *c, zci_dtype io, int t) { return io == ZCI_FLOAT32 && c->dt[t] == ZCI_FLOAT16; }

/* The early output (cu_plan_early_output, batch 1) into host buffer `host`: rows [0, early_rows)
 * go on the copy stream once the graph has written them (early_ev), the rest on the run's stream
 * after the body. Pinned: converted on the device if the types differ (into the own buffer) and
 * copied straight into `host`. Pageable: staged in two pieces, the first on the copy stream
 * (down[0..*n_staged), for queue_downloads). */
static zci_status early_download(cu_ctx *c, void *host, int pinned, cudaStream_t s, staged *down, int *n_staged)
{
    const int i = c->early_out, t = c->g->outputs[i];
    const zci_tensor_info *info = &c->s->out_info[i];
    const zci_tensor *y = &c->g->tensors[t];
    const size_t io_es = zci_dtype_size(info->dtype), dev_es = cu_esize(c, t), n = (size_t)cu_numel(c, t);
    const size_t e0 = (size_t)c->early_rows * (size_t)y->dims[y->ndim - 1];
    const int converts = info->dtype != c->dt[t];
    *n_staged = 0;
    if (!pinned && converts && !host_converts(c, info->dtype, t)) { /* the plain way */
        ZCI_TRY(output_edge(c, i, c->out_buf[i], s));
        down[(*n_staged)++] = (staged){host, c->out_stage[i], c->out_buf[i], info->bytes, 1, XF_COPY, NULL};
        return ZCI_OK;
    }
    CU_TRY(cudaStreamWaitEvent(c->copy_stream, c->early_ev, 0));
    if (!pinned) {
        if (converts) {
            down[0] = (staged){host, c->out_stage[i], c->ptr[t], e0, 2, XF_F16_TO_F32, c->copy_stream};
            down[1] = (staged){(float *)host + e0, (uint16_t *)c->out_stage[i] + e0, (uint16_t *)c->ptr[t] + e0, n - e0, 2,
                               XF_F16_TO_F32, NULL};
        } else {
            down[0] = (staged){host, c->out_stage[i], c->ptr[t], e0 * io_es, 1, XF_COPY, c->copy_stream};
            down[1] = (staged){(char *)host + e0 * io_es, (char *)c->out_stage[i] + e0 * io_es, (char *)c->ptr[t] + e0 * io_es,
                               (n - e0) * io_es, 1, XF_COPY, NULL};
        }
        *n_staged = 2;
        return ZCI_OK;
    }
    const void *src = converts ? c->out_buf[i] : c->ptr[t];
    for (int part = 0; part < 2; part++) {
        cudaStream_t ps = part ? s : c->copy_stream;
        const size_t lo = part ? e0 : 0, hi = part ? n : e0;
        if (converts)
            ZCI_TRY(cu_convert((const char *)c->ptr[t] + lo * dev_es, c->dt[t], (char *)c->out_buf[i] + lo * io_es,
                               info->dtype, (int64_t)(hi - lo), ps));
        CU_TRY(cudaMemcpyAsync((char *)host + lo * io_es, (const char *)src + lo * io_es, (hi - lo) * io_es,
                               cudaMemcpyDeviceToHost, ps));
    }
    return ZCI_OK;
}

static zci_status run_host(cu_ctx *c, const zci_run_args *a, cudaStream_t s)
{
    zci_session *ss = c->s;
    host_kind kin[64], kout[64];
    if (ss->n_in > 64 || ss->n_out > 64)
        return zci_error(ZCI_UNSUPPORTED, "zci_run: the CUDA backend stages at most 64 inputs and 64 outputs");
    for (int i = 0; i < ss->n_in; i++) ZCI_TRY(check_host_ptr(a->inputs[i], 0, ss->in_info[i].name, &kin[i]));
    for (int i = 0; i < ss->n_out; i++) ZCI_TRY(check_host_ptr(a->outputs[i], 1, ss->out_info[i].name, &kout[i]));
    ZCI_TRY(order_after_last(c, s));
    for (int i = 0; i < ss->n_in; i++) {
        int t = c->g->inputs[i];
        const zci_tensor_info *info = &ss->in_info[i];
        if (kin[i] == HOST_PINNED) {
            CU_TRY(cudaMemcpyAsync(c->in_buf[i], a->inputs[i], info->bytes, cudaMemcpyHostToDevice, s));
            ZCI_TRY(input_edge(c, i, c->in_buf[i], s));
        } else if (host_converts(c, info->dtype, t)) {
            staged u = {a->inputs[i], c->in_stage[i], c->ptr[t], (size_t)cu_numel(c, t), 2, XF_F32_TO_F16, NULL};
            ZCI_TRY(upload_staged(c, &u, s));
        } else {
            staged u = {a->inputs[i], c->in_stage[i], c->in_buf[i], info->bytes, 1, XF_COPY, NULL};
            ZCI_TRY(upload_staged(c, &u, s));
            ZCI_TRY(input_edge(c, i, c->in_buf[i], s));
        }
    }
    ZCI_TRY(input_heads_from_own(c, s));
    ZCI_TRY(run_body(c, s));
    ZCI_TRY(tail_to_own(c, s));
    staged down[65];
    int n_down = 0, per[65], early_queued = 0;
    for (int i = 0; i < ss->n_out; i++) {
        int t = c->g->outputs[i];
        const zci_tensor_info *info = &ss->out_info[i];
        if (i == c->early_out) {
            int q = 0;
            ZCI_TRY(early_download(c, a->outputs[i], kout[i] == HOST_PINNED, s, down + n_down, &q));
            n_down += q;
            early_queued = 1;
        } else if (kout[i] == HOST_PINNED) {
            ZCI_TRY(output_edge(c, i, c->out_buf[i], s));
            CU_TRY(cudaMemcpyAsync(a->outputs[i], c->out_buf[i], info->bytes, cudaMemcpyDeviceToHost, s));
        } else if (host_converts(c, info->dtype, t)) {
            down[n_down++] = (staged){a->outputs[i], c->out_stage[i], c->ptr[t], (size_t)cu_numel(c, t), 2, XF_F16_TO_F32, NULL};
        } else {
            ZCI_TRY(output_edge(c, i, c->out_buf[i], s));
            down[n_down++] = (staged){a->outputs[i], c->out_stage[i], c->out_buf[i], info->bytes, 1, XF_COPY, NULL};
        }
    }
    if (n_down) ZCI_TRY(queue_downloads(c, down, n_down, per, s));
    if (early_queued) { /* the copy stream's work joins the run's before it counts as done */
        CU_TRY(cudaEventRecord(c->copy_ev, c->copy_stream));
        CU_TRY(cudaStreamWaitEvent(s, c->copy_ev, 0));
    }
    ZCI_TRY(mark_done(c, s));
    if (n_down) ZCI_TRY(finish_downloads(c, down, n_down, per));
    CU_TRY(cudaStreamSynchronize(s));
    return ZCI_OK;
}

/* ---------------------------------------------------------------- entry points */

/* Makes the session's device current for the call and puts the caller's back after it. */
typedef struct device_guard {
    int prev;
} device_guard;

static zci_status enter_device(const cu_ctx *c, device_guard *gd)
{
    gd->prev = -1;
    CU_TRY(cudaGetDevice(&gd->prev));
    if (gd->prev != c->device) CU_TRY(cudaSetDevice(c->device));
    return ZCI_OK;
}

static void leave_device(const cu_ctx *c, const device_guard *gd)
{
    if (gd->prev >= 0 && gd->prev != c->device) cudaSetDevice(gd->prev);
}

static cudaStream_t pick_stream(const cu_ctx *c, void *stream) { return stream ? (cudaStream_t)stream : c->stream; }

zci_status cu_backend_run(zci_session *s, const zci_run_args *a)
{
    cu_ctx *c = s->be_ctx;
    device_guard gd;
    ZCI_TRY(enter_device(c, &gd));
    cudaStream_t stream = pick_stream(c, a->stream);
    zci_status st;
    switch (a->mem) {
    case ZCI_MEM_HOST: st = run_host(c, a, stream); break;
    case ZCI_MEM_DEVICE: st = run_device(c, a, stream); break;
    default: st = run_own(c, stream); break;
    }
    if (st == ZCI_OK && a->wait && a->mem != ZCI_MEM_HOST) {
        cudaError_t e = cudaStreamSynchronize(stream);
        if (e != cudaSuccess) st = cu_cuda_error(e, "cudaStreamSynchronize");
    }
    leave_device(c, &gd);
    return st;
}

zci_status cu_backend_own_buffer(zci_session *s, int is_output, int index, void **ptr)
{
    cu_ctx *c = s->be_ctx;
    *ptr = is_output ? c->out_buf[index] : c->in_buf[index];
    return ZCI_OK;
}

zci_status cu_backend_synchronize(zci_session *s, void *stream)
{
    cu_ctx *c = s->be_ctx;
    device_guard gd;
    ZCI_TRY(enter_device(c, &gd));
    cudaError_t e = cudaStreamSynchronize(pick_stream(c, stream));
    leave_device(c, &gd);
    if (e != cudaSuccess) return cu_cuda_error(e, "cudaStreamSynchronize");
    return ZCI_OK;
}

zci_status cu_backend_copy_own_buffer(zci_session *s, int is_output, int index, void *host, size_t bytes, void *stream)
{
    cu_ctx *c = s->be_ctx;
    device_guard gd;
    ZCI_TRY(enter_device(c, &gd));
    cudaStream_t st = pick_stream(c, stream);
    /* after the last run, whichever stream it went to: it reads the input, writes the output */
    zci_status r = order_after_last(c, st);
    if (r == ZCI_OK) {
        cudaError_t e = is_output ? cudaMemcpyAsync(host, c->out_buf[index], bytes, cudaMemcpyDeviceToHost, st)
                                  : cudaMemcpyAsync(c->in_buf[index], host, bytes, cudaMemcpyHostToDevice, st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(st);
        if (e != cudaSuccess) r = cu_cuda_error(e, is_output ? "cudaMemcpyAsync (output buffer)" : "cudaMemcpyAsync (input buffer)");
    }
    leave_device(c, &gd);
    return r;
}

zci_status cu_backend_describe_device(const zci_options *opts, zci_device_desc *desc)
{
    memset(desc, 0, sizeof *desc);
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return zci_error(ZCI_NO_DEVICE, "no usable CUDA device: %s", cudaGetErrorString(e));
    }
    if (opts->device_id < 0 || opts->device_id >= count)
        return zci_error(ZCI_NO_DEVICE, "CUDA device %d does not exist (%d found)", opts->device_id, count);
    /* an engine file records the cuDNN version; reading one checks it before planning */
    ZCI_TRY(cu_load_cudnn(opts->verbose));
    struct cudaDeviceProp prop;
    CU_TRY(cudaGetDeviceProperties(&prop, opts->device_id));
    desc->compute_capability = prop.major * 10 + prop.minor;
    desc->cuda_version = CUDART_VERSION;
    desc->cudnn_version = (int)cudnnGetVersion();
    memcpy(desc->name, prop.name, sizeof desc->name - 1); /* both NUL-padded; the name is short */
    desc->name[sizeof desc->name - 1] = 0;
    return ZCI_OK;
}

/* ---------------------------------------------------------------- test hooks */

int zci_cuda_is_session(const zci_session *s) { return s && s->be == zci_cuda_backend() && s->be_ctx; }

size_t zci_cuda_device_bytes(const zci_session *s)
{
    return zci_cuda_is_session(s) ? ((const cu_ctx *)s->be_ctx)->device_bytes : 0;
}

int zci_cuda_uses_graph(const zci_session *s)
{
    return zci_cuda_is_session(s) && ((const cu_ctx *)s->be_ctx)->graph_exec != NULL;
}

zci_status zci_cuda_debug_run(zci_session *s, int (*visit)(void *user, int node), void *user)
{
    if (!zci_cuda_is_session(s)) return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_debug_run: not a CUDA session");
    cu_ctx *c = s->be_ctx;
    const zci_graph *g = c->g;
    device_guard gd;
    ZCI_TRY(enter_device(c, &gd));
    cudaStream_t st = c->own_stream;
    zci_status r = order_after_last(c, st);
    for (int i = 0; r == ZCI_OK && i < s->n_in; i++) r = input_edge(c, i, c->in_buf[i], st);
    if (r == ZCI_OK) {
        cudnnStatus_t e1 = c->cudnn ? cudnnSetStream(c->cudnn, st) : CUDNN_STATUS_SUCCESS;
        cublasStatus_t e2 = c->cublas ? cublasSetStream(c->cublas, st) : CUBLAS_STATUS_SUCCESS;
        if (e1 != CUDNN_STATUS_SUCCESS) r = cu_cudnn_error(e1, "cudnnSetStream");
        else if (e2 != CUBLAS_STATUS_SUCCESS) r = cu_cublas_error(e2, "cublasSetStream");
    }
    if (r == ZCI_OK) r = cu_launch_prologue(c, st);
    for (int p = 0; r == ZCI_OK && p < g->n_order; p++) {
        int ni = g->order[p];
        r = cu_launch_node(c, p, st);
        if (r == ZCI_OK) {
            cudaError_t e = cudaStreamSynchronize(st);
            if (e != cudaSuccess) r = zci_error_prefix(cu_cuda_error(e, "cudaStreamSynchronize"), "%s", zci_node_desc(g, &g->nodes[ni]));
        }
        if (r == ZCI_OK && visit(user, ni)) break;
    }
    for (int i = 0; r == ZCI_OK && i < s->n_out; i++) r = output_edge(c, i, c->out_buf[i], st);
    if (r == ZCI_OK) r = mark_done(c, st);
    if (r == ZCI_OK) {
        cudaError_t e = cudaStreamSynchronize(st);
        if (e != cudaSuccess) r = cu_cuda_error(e, "cudaStreamSynchronize");
    }
    leave_device(c, &gd);
    return r;
}

zci_status zci_cuda_profile(zci_session *s, int iters, double *node_ms)
{
    if (!zci_cuda_is_session(s)) return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_profile: not a CUDA session");
    cu_ctx *c = s->be_ctx;
    const zci_graph *g = c->g;
    device_guard gd;
    ZCI_TRY(enter_device(c, &gd));
    const int n = g->n_order;
    cudaEvent_t *ev = zci_calloc((size_t)n + 1, sizeof *ev, "profile events");
    double *samples = zci_calloc((size_t)(n + 1) * (size_t)(iters > 0 ? iters : 1), sizeof *samples, "profile");
    zci_status r = ev && samples ? ZCI_OK : ZCI_OUT_OF_MEMORY;
    for (int i = 0; r == ZCI_OK && i <= n; i++) {
        cudaError_t e = cudaEventCreate(&ev[i]);
        if (e != cudaSuccess) r = cu_cuda_error(e, "cudaEventCreate");
    }
    /* the body captured with an event between nodes: replayed, the kernels run back to back as
     * in the session's own graph, and each pair of events brackets one node */
    cudaStream_t st = c->own_stream;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    if (r == ZCI_OK) r = order_after_last(c, st);
    if (r == ZCI_OK) {
        cudaError_t e = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
        if (e != cudaSuccess) r = cu_cuda_error(e, "cudaStreamBeginCapture");
    }
    if (r == ZCI_OK) {
        if ((c->cudnn && cudnnSetStream(c->cudnn, st) != CUDNN_STATUS_SUCCESS) ||
            (c->cublas && cublasSetStream(c->cublas, st) != CUBLAS_STATUS_SUCCESS))
            r = zci_error(ZCI_DEVICE_ERROR, "cannot set the library streams");
        if (r == ZCI_OK) r = cu_launch_prologue(c, st);
        for (int p = 0; r == ZCI_OK && p < n; p++) {
            cudaError_t e = cudaEventRecordWithFlags(ev[p], st, cudaEventRecordExternal);
            if (e != cudaSuccess) r = cu_cuda_error(e, "cudaEventRecordWithFlags");
            if (r == ZCI_OK) r = cu_launch_node(c, p, st);
        }
        if (r == ZCI_OK) {
            cudaError_t e = cudaEventRecordWithFlags(ev[n], st, cudaEventRecordExternal);
            if (e != cudaSuccess) r = cu_cuda_error(e, "cudaEventRecordWithFlags");
        }
        cudaError_t e = cudaStreamEndCapture(st, &graph);
        if (r == ZCI_OK && e != cudaSuccess) r = cu_cuda_error(e, "cudaStreamEndCapture");
    }
    if (r == ZCI_OK) {
        cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
        if (e != cudaSuccess) r = cu_cuda_error(e, "cudaGraphInstantiate");
    }
    for (int it = 0; r == ZCI_OK && it < iters; it++) {
        cudaError_t e = cudaGraphLaunch(exec, st);
        if (e == cudaSuccess) e = cudaStreamSynchronize(st);
        if (e != cudaSuccess) r = cu_cuda_error(e, "profile run");
        for (int p = 0; r == ZCI_OK && p < n; p++) {
            float ms = 0;
            cudaEventElapsedTime(&ms, ev[p], ev[p + 1]);
            samples[(size_t)p * iters + it] = ms;
        }
    }
    /* per node: the median over the runs */
    for (int p = 0; r == ZCI_OK && p < n; p++) {
        double *v = samples + (size_t)p * iters;
        for (int i = 1; i < iters; i++)
            for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
                double t = v[j];
                v[j] = v[j - 1];
                v[j - 1] = t;
            }
        node_ms[g->order[p]] = iters > 0 ? v[iters / 2] : 0;
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    for (int i = 0; ev && i <= n; i++)
        if (ev[i]) cudaEventDestroy(ev[i]);
    free(ev);
    free(samples);
    if (r == ZCI_OK) r = mark_done(c, st);
    leave_device(c, &gd);
    return r;
}

zci_status zci_cuda_read_tensor(zci_session *s, int t, void *host, size_t bytes)
{
    if (!zci_cuda_is_session(s)) return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_read_tensor: not a CUDA session");
    cu_ctx *c = s->be_ctx;
    if (t < 0 || t >= c->g->n_tensors || !c->ptr[t])
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_read_tensor: tensor %d has no device buffer", t);
    const zci_tensor *x = &c->g->tensors[t];
    int64_t n = zci_tensor_numel(x);
    if (bytes != (size_t)n * zci_dtype_size(x->dtype))
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_read_tensor: '%s' has %zu bytes, %zu given", x->name,
                         (size_t)n * zci_dtype_size(x->dtype), bytes);
    device_guard gd;
    ZCI_TRY(enter_device(c, &gd));
    zci_status st = ZCI_OK;
    size_t dbytes = (size_t)n * cu_esize(c, t);
    void *tmp = c->dt[t] == x->dtype ? host : zci_malloc(dbytes ? dbytes : 1, "tensor copy");
    if (!tmp) st = ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK) {
        cudaError_t e;
        const int view_ld = cu_view_source_ld(c, t);
        if (c->slice_ld && c->slice_ld[t] && x->ndim == 4) { /* a Concat input's channels of the wider buffer */
            const size_t row = (size_t)x->dims[1] * cu_esize(c, t);
            e = cudaMemcpy2D(tmp, row, c->ptr[t], (size_t)c->slice_ld[t] * cu_esize(c, t), row,
                             (size_t)(x->dims[0] * x->dims[2] * x->dims[3]), cudaMemcpyDeviceToHost);
        } else if (view_ld && x->ndim == 5) { /* a head's view of padded rows: the rows without their padding */
            const size_t row = (size_t)(x->dims[1] * x->dims[2]) * cu_esize(c, t);
            e = cudaMemcpy2D(tmp, row, c->ptr[t], (size_t)view_ld * cu_esize(c, t), row,
                             (size_t)(x->dims[0] * x->dims[3] * x->dims[4]), cudaMemcpyDeviceToHost);
        } else {
            e = cudaMemcpy(tmp, c->ptr[t], dbytes, cudaMemcpyDeviceToHost);
        }
        if (e != cudaSuccess) st = cu_cuda_error(e, "cudaMemcpy");
    }
    if (st == ZCI_OK && tmp != host) xform_range(host, tmp, 0, (size_t)n, XF_F16_TO_F32);
    if (tmp != host) free(tmp);
    int64_t vs[5];
    if (st == ZCI_OK && cu_view_nhwc_strides(c, t, vs)) { /* a head's view of NHWC bytes: gathered */
        if (cu_view_source_ld(c, t)) { /* copied above without the padding: packed NHWC strides */
            const int64_t C = x->dims[1] * x->dims[2];
            vs[0] = x->dims[3] * x->dims[4] * C;
            vs[3] = x->dims[4] * C;
            vs[4] = C;
        }
        size_t es = zci_dtype_size(x->dtype);
        char *copy = zci_malloc(bytes ? bytes : 1, "tensor copy");
        if (!copy) st = ZCI_OUT_OF_MEMORY;
        const int64_t *d = x->dims;
        size_t o = 0;
        for (int64_t i0 = 0; copy && i0 < d[0]; i0++)
            for (int64_t i1 = 0; i1 < d[1]; i1++)
                for (int64_t i2 = 0; i2 < d[2]; i2++)
                    for (int64_t i3 = 0; i3 < d[3]; i3++)
                        for (int64_t i4 = 0; i4 < d[4]; i4++, o += es)
                            memcpy(copy + o, (char *)host + (i0 * vs[0] + i1 * vs[1] + i2 * vs[2] + i3 * vs[3] + i4 * vs[4]) * es,
                                   es);
        if (copy) memcpy(host, copy, bytes);
        free(copy);
    }
    if (st == ZCI_OK && c->lay[t] == CU_NHWC) { /* to NCHW, in place through a copy */
        size_t es = zci_dtype_size(x->dtype);
        char *copy = zci_malloc(bytes ? bytes : 1, "tensor copy");
        if (!copy) st = ZCI_OUT_OF_MEMORY;
        const int64_t N = x->dims[0], C = x->dims[1], HW = x->dims[2] * x->dims[3];
        for (int64_t i = 0; st == ZCI_OK && i < N; i++)
            for (int64_t p = 0; p < HW; p++)
                for (int64_t ch = 0; ch < C; ch++)
                    memcpy(copy + ((i * C + ch) * HW + p) * es, (char *)host + ((i * HW + p) * C + ch) * es, es);
        if (copy && st == ZCI_OK) memcpy(host, copy, bytes);
        free(copy);
    }
    leave_device(c, &gd);
    return st;
}
