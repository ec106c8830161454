/* backend.c: the CUDA backend's planning: device, streams and library handles; the element
 * type of every tensor on the device; the load-time check of every node against the dispatch
 * table; constants uploaded once; one activation arena from the liveness planner; the own
 * input/output buffers and pinned staging; per-node state; then a warm-up run and the capture
 * of the whole body as a CUDA graph, so that the first inference has no lazy work left.
 * The run paths are in run.c. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cuda/cuda_internal.h"
#include "cuda/dl.h"

enum { CU_ALIGN = 256 };

/* cuBLAS wants some workspace of its own for its faster kernels; when no convolution asks for
 * more, the shared workspace still gets this much. */
#define CU_MIN_WORKSPACE ((size_t)4 << 20)

/* ---------------------------------------------------------------- errors */

zci_status cu_cuda_error(cudaError_t e, const char *call)
{
    zci_status code = ZCI_DEVICE_ERROR;
    if (e == cudaErrorMemoryAllocation) code = ZCI_OUT_OF_MEMORY;
    else if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) code = ZCI_NO_DEVICE;
    return zci_error(code, "%s failed: %s (%s)", call, cudaGetErrorString(e), cudaGetErrorName(e));
}

zci_status cu_cudnn_error(cudnnStatus_t e, const char *call)
{
    zci_status code = e == CUDNN_STATUS_ALLOC_FAILED ? ZCI_OUT_OF_MEMORY : ZCI_DEVICE_ERROR;
    return zci_error(code, "%s failed: cuDNN: %s", call, cudnnGetErrorString(e));
}

zci_status cu_cublas_error(cublasStatus_t e, const char *call)
{
    zci_status code = e == CUBLAS_STATUS_ALLOC_FAILED ? ZCI_OUT_OF_MEMORY : ZCI_DEVICE_ERROR;
    return zci_error(code, "%s failed: cuBLAS: %s (%s)", call, cublasGetStatusString(e), cublasGetStatusName(e));
}

/* ---------------------------------------------------------------- memory */

zci_status cu_malloc(cu_ctx *c, size_t bytes, const char *what, void **out)
{
    *out = NULL;
    ZCI_TRY(zci_grow((void **)&c->allocs, c->n_allocs, &c->cap_allocs, sizeof(void *)));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        if (e == cudaErrorMemoryAllocation)
            return zci_error(ZCI_OUT_OF_MEMORY, "cannot allocate %zu bytes of device memory for %s", bytes, what);
        return cu_cuda_error(e, "cudaMalloc");
    }
    c->allocs[c->n_allocs++] = p;
    c->device_bytes += bytes;
    *out = p;
    return ZCI_OK;
}

zci_status cu_upload(cu_ctx *c, const void *host, size_t bytes, const char *what, void **out)
{
    ZCI_TRY(cu_malloc(c, bytes, what, out));
    if (bytes) CU_TRY(cudaMemcpy(*out, host, bytes, cudaMemcpyHostToDevice));
    return ZCI_OK;
}

/* Converts n elements of host data between float32 and float16 (or copies same types). */
static void host_convert(const void *src, zci_dtype st, void *dst, zci_dtype dt, int64_t n)
{
    if (st == dt) {
        memcpy(dst, src, (size_t)n * zci_dtype_size(st));
    } else if (st == ZCI_FLOAT32 && dt == ZCI_FLOAT16) {
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = zci_f32_to_f16(((const float *)src)[i]);
    } else {
        for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = zci_f16_to_f32(((const uint16_t *)src)[i]);
    }
}

zci_status cu_upload_const(cu_ctx *c, int t, zci_dtype dtype, void **out)
{
    const zci_tensor *x = &c->g->tensors[t];
    if (x->kind != ZCI_TENSOR_CONSTANT || !x->data)
        return zci_error(ZCI_INTERNAL, "tensor '%s' is not a constant", x->name);
    int64_t n = zci_tensor_numel(x);
    if (x->dtype == dtype) return cu_upload(c, x->data, (size_t)n * zci_dtype_size(dtype), x->name, out);
    int conv = (x->dtype == ZCI_FLOAT32 && dtype == ZCI_FLOAT16) || (x->dtype == ZCI_FLOAT16 && dtype == ZCI_FLOAT32);
    if (!conv)
        return zci_error(ZCI_INTERNAL, "constant '%s': no conversion from %s to %s", x->name,
                         zci_dtype_name(x->dtype), zci_dtype_name(dtype));
    size_t bytes = (size_t)n * zci_dtype_size(dtype);
    void *tmp = zci_malloc(bytes ? bytes : 1, "constant conversion");
    if (!tmp) return ZCI_OUT_OF_MEMORY;
    host_convert(x->data, x->dtype, tmp, dtype, n);
    zci_status st = cu_upload(c, tmp, bytes, x->name, out);
    free(tmp);
    return st;
}

void cu_need_workspace(cu_ctx *c, size_t bytes)
{
    if (bytes > c->workspace_size) c->workspace_size = bytes;
}

/* ---------------------------------------------------------------- shapes */

void cu_strides(const int64_t *dims, int nd, int64_t *strides)
{
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        strides[i] = s;
        s *= dims[i];
    }
}

zci_status cu_check_index_range(const cu_ctx *c, const zci_node *n)
{
    for (int k = 0; k < n->n_in + n->n_out; k++) {
        int t = k < n->n_in ? n->in[k] : n->out[k - n->n_in];
        if (t < 0) continue;
        const zci_tensor *x = &c->g->tensors[t];
        if (zci_tensor_numel(x) >= ((int64_t)1 << 31))
            return zci_error(ZCI_UNSUPPORTED, "tensor '%s' has %lld elements; the CUDA kernels index up to 2^31",
                             x->name, (long long)zci_tensor_numel(x));
    }
    return ZCI_OK;
}

/* ---------------------------------------------------------------- devices */

zci_status zci_cuda_device_count(int *count)
{
    if (!count) return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_device_count: count is NULL");
    *count = 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return ZCI_OK; /* no driver or no GPU: zero devices, not an error */
    }
    *count = n;
    return ZCI_OK;
}

/* ---------------------------------------------------------------- planning */

/* A view's output shares its input's storage unless it is a model output (the caller's buffer,
 * or the session's output buffer, must receive the bytes): as the CPU backend decides. */
static int can_alias(const zci_graph *g, const zci_node *n)
{
    return n->op->is_view && n->in[0] >= 0 && !g->tensors[n->out[0]].is_output;
}

static zci_dtype device_dtype(const cu_ctx *c, zci_dtype t) { return c->fp16 && t == ZCI_FLOAT32 ? ZCI_FLOAT16 : t; }

/* Checks every live node against the dispatch table, so that what the GPU cannot run is known
 * before any device memory is taken. */
static zci_status check_nodes(cu_ctx *c)
{
    const zci_graph *g = c->g;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        for (int k = 0; k < n->n_in + n->n_out; k++) {
            int t = k < n->n_in ? n->in[k] : n->out[k - n->n_in];
            if (t >= 0 && !zci_dtype_size(g->tensors[t].dtype))
                return zci_error(ZCI_UNSUPPORTED, "%s: tensor '%s' has type %s, which the CUDA backend cannot hold",
                                 zci_node_desc(g, n), g->tensors[t].name, zci_dtype_name(g->tensors[t].dtype));
        }
        if (can_alias(g, n)) continue;
        const cu_op *op = cu_op_find(n->op_type);
        if (!op)
            return zci_error(ZCI_UNSUPPORTED, "%s: the CUDA backend has no kernel for op %s", zci_node_desc(g, n),
                             n->op_type);
        zci_status st = cu_check_index_range(c, n);
        if (st == ZCI_OK && op->supports) st = op->supports(c, n);
        if (st != ZCI_OK)
            return zci_error_prefix(ZCI_UNSUPPORTED, "%s: not supported by the CUDA backend", zci_node_desc(g, n));
        c->nodes[g->order[p]].op = op;
    }
    return ZCI_OK;
}

/* Every constant a live node reads (or a model output names), in the device type, packed into
 * one allocation. */
static zci_status upload_constants(cu_ctx *c)
{
    const zci_graph *g = c->g;
    int nt = g->n_tensors;
    char *need = zci_calloc((size_t)nt + 1, 1, "constant table");
    if (!need) return ZCI_OUT_OF_MEMORY;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && g->tensors[n->in[k]].kind == ZCI_TENSOR_CONSTANT && !cu_weights_only(c, n->in[k]))
                need[n->in[k]] = 1;
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (g->tensors[g->outputs[i]].kind == ZCI_TENSOR_CONSTANT) need[g->outputs[i]] = 1;
    size_t total = 0;
    for (int t = 0; t < nt; t++)
        if (need[t] && g->tensors[t].data) total += zci_align((size_t)cu_numel(c, t) * cu_esize(c, t), CU_ALIGN);
    zci_status st = ZCI_OK;
    char *host = total ? zci_malloc(total, "constants") : NULL;
    void *dev = NULL;
    if (total && !host) st = ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK && total) st = cu_malloc(c, total, "the model's constants", &dev);
    size_t off = 0;
    for (int t = 0; st == ZCI_OK && t < nt; t++) {
        const zci_tensor *x = &g->tensors[t];
        if (!need[t] || !x->data) continue;
        host_convert(x->data, x->dtype, host + off, c->dt[t], cu_numel(c, t));
        c->ptr[t] = (char *)dev + off;
        off += zci_align((size_t)cu_numel(c, t) * cu_esize(c, t), CU_ALIGN);
    }
    if (st == ZCI_OK && total) {
        cudaError_t e = cudaMemcpy(dev, host, total, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) st = cu_cuda_error(e, "cudaMemcpy (constants)");
    }
    free(host);
    free(need);
    return st;
}

/* The activation arena (zci_memplan over device sizes), and where views point. */
static zci_status plan_memory(cu_ctx *c)
{
    const zci_graph *g = c->g;
    int nt = g->n_tensors;
    size_t *size = zci_calloc((size_t)nt + 1, sizeof *size, "memory plan");
    size_t *offset = zci_calloc((size_t)nt + 1, sizeof *offset, "memory plan");
    zci_status st = size && offset ? ZCI_OK : ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK) {
        for (int t = 0; t < nt; t++) {
            const zci_tensor *x = &g->tensors[t];
            if (x->kind == ZCI_TENSOR_ACTIVATION && !x->is_output && c->alias[t] < 0 && x->producer >= 0) {
                size[t] = (size_t)zci_tensor_numel(x) * cu_esize(c, t);
                if (c->slice_ld && c->slice_ld[t] && x->ndim == 4) /* rows padded (cu_plan_padded_heads) */
                    size[t] = size[t] / (size_t)x->dims[1] * (size_t)c->slice_ld[t];
            }
        }
        st = zci_memplan_spans(g, size, c->alias, c->alias_off, c->span_lo, c->span_hi, CU_ALIGN, offset,
                               &c->arena_size);
    }
    if (st == ZCI_OK && c->arena_size) st = cu_malloc(c, c->arena_size, "the activation arena", &c->arena);
    for (int t = 0; st == ZCI_OK && t < nt; t++)
        if (size[t] || (c->slice_ld && c->slice_ld[t])) c->ptr[t] = (char *)c->arena + offset[t];
    free(size);
    free(offset);
    return st;
}

void cu_resolve_views(cu_ctx *c)
{
    const zci_graph *g = c->g;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        if (!can_alias(g, n)) continue;
        int x = n->in[0]; /* the view reinterprets NCHW bytes, or NHWC ones through strides */
        int nhwc_bytes = c->view_nhwc && c->view_nhwc[n->out[0]];
        c->ptr[n->out[0]] = c->lay && c->lay[x] == CU_NHWC && !nhwc_bytes ? c->alt[x] : c->ptr[x];
    }
}

/* Own input/output buffers (I/O types), device buffers of the model's inputs and outputs where
 * the device type differs, and the pinned staging for the regular path. */
static zci_status plan_io(cu_ctx *c)
{
    zci_session *s = c->s;
    const zci_graph *g = c->g;
    c->in_buf = zci_calloc((size_t)s->n_in + 1, sizeof(void *), "input buffers");
    c->out_buf = zci_calloc((size_t)s->n_out + 1, sizeof(void *), "output buffers");
    c->in_stage = zci_calloc((size_t)s->n_in + 1, sizeof(void *), "staging");
    c->out_stage = zci_calloc((size_t)s->n_out + 1, sizeof(void *), "staging");
    if (!c->in_buf || !c->out_buf || !c->in_stage || !c->out_stage) return ZCI_OUT_OF_MEMORY;
    size_t pinned = 0;
    for (int i = 0; i < s->n_in; i++) {
        int t = g->inputs[i];
        ZCI_TRY(cu_malloc(c, s->in_info[i].bytes, s->in_info[i].name, &c->in_buf[i]));
        CU_TRY(cudaMemset(c->in_buf[i], 0, s->in_info[i].bytes));
        if (s->in_info[i].dtype == c->dt[t]) {
            c->ptr[t] = c->in_buf[i];
        } else {
            size_t b = (size_t)cu_numel(c, t) * cu_esize(c, t);
            ZCI_TRY(cu_malloc(c, b, s->in_info[i].name, &c->ptr[t]));
            CU_TRY(cudaMemset(c->ptr[t], 0, b));
        }
        pinned += zci_align(s->in_info[i].bytes, CU_ALIGN);
    }
    for (int i = 0; i < s->n_out; i++) {
        int t = g->outputs[i];
        ZCI_TRY(cu_malloc(c, s->out_info[i].bytes, s->out_info[i].name, &c->out_buf[i]));
        CU_TRY(cudaMemset(c->out_buf[i], 0, s->out_info[i].bytes));
        /* a produced output lives in the own buffer when the types agree and no earlier output
         * names the same tensor; inputs and constants keep their own storage */
        int first = 1;
        for (int j = 0; j < i; j++) first &= g->outputs[j] != t;
        if (g->tensors[t].producer >= 0 && first && !c->ptr[t]) {
            if (s->out_info[i].dtype == c->dt[t]) {
                c->ptr[t] = c->out_buf[i];
            } else {
                ZCI_TRY(cu_malloc(c, (size_t)cu_numel(c, t) * cu_esize(c, t), s->out_info[i].name, &c->ptr[t]));
            }
        }
        pinned += zci_align(s->out_info[i].bytes, CU_ALIGN);
    }
    if (pinned) {
        CU_TRY(cudaHostAlloc(&c->pinned, pinned, cudaHostAllocDefault));
        memset(c->pinned, 0, pinned); /* touch every page now, not in the first run */
    }
    size_t off = 0;
    for (int i = 0; i < s->n_in; i++) {
        c->in_stage[i] = (char *)c->pinned + off;
        off += zci_align(s->in_info[i].bytes, CU_ALIGN);
    }
    for (int i = 0; i < s->n_out; i++) {
        c->out_stage[i] = (char *)c->pinned + off;
        off += zci_align(s->out_info[i].bytes, CU_ALIGN);
    }
    return ZCI_OK;
}

/* conv.cu: compiles the fused convolutions' kernels in parallel (conv_fused.c). */
void cu_conv_prewarm(cu_ctx *c);

static zci_status prepare_nodes(cu_ctx *c)
{
    const zci_graph *g = c->g;
    for (int p = 0; p < g->n_order; p++) {
        int ni = g->order[p];
        const zci_node *n = &g->nodes[ni];
        cu_node *cn = &c->nodes[ni];
        if (!cn->op || !cn->op->prepare) continue;
        zci_status st = cn->op->prepare(c, n, &cn->state);
        if (st != ZCI_OK) return zci_error_prefix(st, "%s", zci_node_desc(g, n));
    }
    return ZCI_OK;
}

zci_status cu_cudnn_handle(cu_ctx *c)
{
    if (!c->cudnn) CUDNN_TRY(cudnnCreate(&c->cudnn));
    return ZCI_OK;
}

static zci_status create_handles(cu_ctx *c)
{
    CU_TRY(cudaStreamCreateWithFlags(&c->own_stream, cudaStreamNonBlocking));
    c->stream = c->s->opts.cuda_stream ? (cudaStream_t)c->s->opts.cuda_stream : c->own_stream;
    CU_TRY(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
    for (int i = 0; i < (int)(sizeof c->chunk_ev / sizeof c->chunk_ev[0]); i++)
        CU_TRY(cudaEventCreateWithFlags(&c->chunk_ev[i], cudaEventDisableTiming));
    /* cuDNN's handle: on first need (cu_cudnn_handle) */
    /* a cuBLAS handle takes device memory of its own: only for models that multiply matrices */
    int gemms = 0;
    for (int p = 0; p < c->g->n_order; p++) {
        const char *ty = c->g->nodes[c->g->order[p]].op_type;
        gemms |= !strcmp(ty, "MatMul") || !strcmp(ty, "Gemm");
    }
    if (!gemms) return ZCI_OK;
    ZCI_TRY(cu_load_cublas(c->verbose));
    CUBLAS_TRY(cublasCreate(&c->cublas));
    /* FP32 GEMMs stay IEEE FP32 unless TF32 is allowed; FP16 GEMMs use tensor cores in any mode */
    CUBLAS_TRY(cublasSetMathMode(c->cublas, c->allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    CUBLAS_TRY(cublasSetPointerMode(c->cublas, CUBLAS_POINTER_MODE_HOST));
    return ZCI_OK;
}

/* The shared workspace, for cuDNN (passed per call) and cuBLAS (set once: a captured graph must
 * not allocate). */
static zci_status alloc_workspace(cu_ctx *c)
{
    if (c->cublas) cu_need_workspace(c, CU_MIN_WORKSPACE);
    if (!c->workspace_size) return ZCI_OK;
    ZCI_TRY(cu_malloc(c, c->workspace_size, "the convolution workspace", &c->workspace));
    if (c->cublas) CUBLAS_TRY(cublasSetWorkspace(c->cublas, c->workspace, c->workspace_size));
    return ZCI_OK;
}

/* The body captured on the own stream without the output tail and input heads (the edges
 * launch them), and without the early output rows where no_early is set; instantiated, uploaded
 * and replayed once. */
static zci_status capture_body_graph(cu_ctx *c, int no_early, cudaGraph_t *graph_out, cudaGraphExec_t *exec_out)
{
    CU_TRY(cudaStreamBeginCapture(c->own_stream, cudaStreamCaptureModeThreadLocal));
    c->capture_body = 1;
    c->capture_no_early = no_early;
    zci_status st = c->use_side ? cu_run_nodes_streams(c, c->own_stream) : cu_run_nodes(c, c->own_stream);
    c->capture_body = c->capture_no_early = 0;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->own_stream, &graph);
    if (st != ZCI_OK) {
        if (graph) cudaGraphDestroy(graph);
        return zci_error_prefix(st, "while capturing the CUDA graph");
    }
    if (e != cudaSuccess) return cu_cuda_error(e, "cudaStreamEndCapture");
    *graph_out = graph;
    CU_TRY(cudaGraphInstantiate(exec_out, graph, 0));
    CU_TRY(cudaGraphUpload(*exec_out, c->own_stream));
    CU_TRY(cudaGraphLaunch(*exec_out, c->own_stream));
    CU_TRY(cudaStreamSynchronize(c->own_stream));
    return ZCI_OK;
}

/* One eager run (loads kernels, lets the libraries initialise lazily what they do), then the
 * capture of the body on the own stream: the graph of every path, and where the regular path
 * writes early output rows, the device paths' graph without them (their output tail writes every
 * row; at batch 1 a kernel less before the tail). */
static zci_status warm_up_and_capture(cu_ctx *c)
{
    ZCI_TRY(cu_run_nodes(c, c->own_stream));
    CU_TRY(cudaStreamSynchronize(c->own_stream));
    if (!c->s->opts.use_cuda_graph) return ZCI_OK;
    ZCI_TRY(capture_body_graph(c, 0, &c->graph, &c->graph_exec));
    if (c->early_rm < 0 || c->early_rm != c->tail_node) return ZCI_OK;
    return capture_body_graph(c, 1, &c->graph_dev, &c->graph_exec_dev);
}

/* The whole body captured as a graph with the both-ways convolutions on `variant`, on one stream
 * or two (`side`), replayed: the best of three means of 10 back-to-back replays, in ms. */
static zci_status time_variant(cu_ctx *c, int variant, int side, float *ms_out)
{
    c->conv_variant = variant;
    cudaStream_t st = c->own_stream;
    ZCI_TRY(cu_run_nodes(c, st)); /* eager once: variant packs and modules in place */
    CU_TRY(cudaStreamSynchronize(st));
    CU_TRY(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    zci_status r = side ? cu_run_nodes_streams(c, st) : cu_run_nodes(c, st);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(st, &graph);
    if (r == ZCI_OK && e != cudaSuccess) r = cu_cuda_error(e, "cudaStreamEndCapture");
    cudaGraphExec_t exec = NULL;
    if (r == ZCI_OK && (e = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess) r = cu_cuda_error(e, "cudaGraphInstantiate");
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (r == ZCI_OK && (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess))
        r = zci_error(ZCI_DEVICE_ERROR, "cudaEventCreate failed while timing the model");
    float best = 1e30f;
    int reps = 10;
    for (int round = 0; r == ZCI_OK && round < 4; round++) {
        cudaEventRecord(e0, st);
        for (int i = 0; i < reps; i++) cudaGraphLaunch(exec, st);
        cudaEventRecord(e1, st);
        if ((e = cudaEventSynchronize(e1)) != cudaSuccess) {
            r = cu_cuda_error(e, "timing the model");
            break;
        }
        float ms = 0.f;
        cudaEventElapsedTime(&ms, e0, e1);
        if (round > 0 && ms / reps < best) best = ms / reps; /* round 0: warm-up */
        if (round == 0 && ms / reps > 2.f) reps = 4; /* large batches: a run is long enough to time */
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    *ms_out = best;
    return r;
}

/* Convolutions planned both ways (conv.cu: cuDNN's fused graph and our kernel) settle on the
 * variant whose whole model runs fastest: each alone-timed choice does not add up, because our
 * kernels lose more between cuDNN's than they gain alone (measured on the H100, yolov5s batch 1:
 * cuDNN everywhere 0.578 ms, the alone-faster per convolution 0.615 ms). */
static zci_status settle_convolutions(cu_ctx *c, float *best_ms)
{
    *best_ms = 0.f;
    if (!c->convs_both) return ZCI_OK;
    float t[3] = {0, 0, 0};
    static const char *names[3] = {"cuDNN's fused graphs", "the faster of the two per convolution", "our kernel"};
    int best = 0;
    for (int v = 0; v < 3; v++) {
        ZCI_TRY(time_variant(c, v, 0, &t[v]));
        if (t[v] < t[best]) best = v;
    }
    *best_ms = t[best];
    zci_log(c->verbose, "CUDA: %d convolutions planned both ways; whole model on %s %.3f ms, on %s %.3f ms, on %s %.3f ms: %s",
            c->convs_both, names[0], t[0], names[1], t[1], names[2], t[2], names[best]);
    const zci_graph *g = c->g;
    for (int p = 0; p < g->n_order; p++) {
        const int i = g->order[p];
        if (c->nodes[i].state) cu_conv_settle(c, &g->nodes[i], c->nodes[i].state, best);
    }
    c->convs_both = 0;
    return ZCI_OK;
}

/* The side stream (streams.c) stays on when the model runs faster with it, timed the same way
 * as the convolutions' settling (one_ms: that timing's one-stream result, 0 if none ran).
 * ZCI_CUDA_STREAMS=2: on without timing. */
static zci_status settle_streams(cu_ctx *c, float one_ms)
{
    if (!c->n_side) return ZCI_OK;
    ZCI_TRY(cu_streams_create(c));
    const char *env = getenv("ZCI_CUDA_STREAMS");
    if (env && *env == '2') {
        c->use_side = 1;
        zci_log(c->verbose, "CUDA: the second stream is on (ZCI_CUDA_STREAMS=2)");
        return ZCI_OK;
    }
    if (c->from_engine) { /* the engine file keeps the timing's decision */
        c->use_side = c->engine_side;
        zci_log(c->verbose, "CUDA: the second stream is %s, as the engine file says", c->use_side ? "on" : "off");
        return ZCI_OK;
    }
    const int variant = c->conv_variant;
    float two_ms = 0.f;
    if (one_ms <= 0.f) ZCI_TRY(time_variant(c, variant, 0, &one_ms));
    ZCI_TRY(time_variant(c, variant, 1, &two_ms));
    c->use_side = two_ms < one_ms;
    zci_log(c->verbose, "CUDA: whole model on one stream %.3f ms, with %d convolutions on a second stream %.3f ms: %s",
            one_ms, c->n_side, two_ms, c->use_side ? "two streams" : "one stream");
    return ZCI_OK;
}

/* Runs an OpenMP region once so that the staging threads exist before the first inference. */
static void warm_threads(cu_ctx *c)
{
#ifdef _OPENMP
    int procs = omp_get_num_procs();
    c->n_host_threads = procs < 8 ? procs : 8;
    if (c->s->opts.num_threads > 0 && c->s->opts.num_threads < c->n_host_threads)
        c->n_host_threads = c->s->opts.num_threads;
    volatile int sink = 0;
#pragma omp parallel num_threads(c->n_host_threads)
    {
        sink = sink + 1;
    }
    (void)sink;
#endif
    if (c->n_host_threads < 1) c->n_host_threads = 1;
}

static void release_ctx(cu_ctx *c)
{
    const zci_graph *g = c->g;
    if (c->done) cudaEventSynchronize(c->done);
    if (c->own_stream) cudaStreamSynchronize(c->own_stream);
    if (c->side_stream) cudaStreamSynchronize(c->side_stream);
    if (c->graph_exec) cudaGraphExecDestroy(c->graph_exec);
    if (c->graph) cudaGraphDestroy(c->graph);
    if (c->graph_exec_dev) cudaGraphExecDestroy(c->graph_exec_dev);
    if (c->graph_dev) cudaGraphDestroy(c->graph_dev);
    cu_streams_release(c);
    if (c->nodes)
        for (int i = 0; i < g->n_nodes; i++) {
            cu_node *cn = &c->nodes[i];
            if (!cn->state) continue;
            if (cn->op && cn->op->release) cn->op->release(cn->state);
            else free(cn->state);
        }
    cu_fused_plans_release(c);
    for (int i = 0; i < c->n_allocs; i++) cudaFree(c->allocs[i]);
    if (c->pinned) cudaFreeHost(c->pinned);
    if (c->cublas) cublasDestroy(c->cublas);
    if (c->cudnn) cudnnDestroy(c->cudnn);
    for (int i = 0; i < (int)(sizeof c->chunk_ev / sizeof c->chunk_ev[0]); i++)
        if (c->chunk_ev[i]) cudaEventDestroy(c->chunk_ev[i]);
    if (c->done) cudaEventDestroy(c->done);
    if (c->own_stream) cudaStreamDestroy(c->own_stream);
    (void)cudaGetLastError();
    cu_igemm_tuning_release(c);
    cu_fused_saved_release(c);
    free(c->igemm_forced);
    free(c->alias_off);
    free(c->slice_ld);
    free(c->allocs);
    free(c->ptr);
    free(c->dt);
    free(c->alias);
    free(c->lay);
    free(c->alt);
    free(c->need_alt);
    free(c->alt_c);
    free(c->in_head);
    free(c->view_nhwc);
    free(c->nodes);
    free(c->in_buf);
    free(c->out_buf);
    free(c->in_stage);
    free(c->out_stage);
    free(c);
}

static void cuda_release(zci_session *s)
{
    cu_ctx *c = s->be_ctx;
    if (!c) return;
    int prev = -1;
    if (cudaGetDevice(&prev) == cudaSuccess && prev != c->device) cudaSetDevice(c->device);
    release_ctx(c);
    if (prev >= 0 && prev != c->device) cudaSetDevice(prev);
    s->be_ctx = NULL;
}

/* Verbose mode: the device memory each planning step took (cudaMemGetInfo, so library
 * allocations show too). */
static void log_memory(const cu_ctx *c, const char *step, size_t *last)
{
    if (!c->verbose) return;
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) return;
    static _Thread_local double t_last;
    const double now = zci_now();
    if (*last)
        zci_log(1, "CUDA memory: %-28s %+8.1f MB %8.1f ms", step, ((double)*last - (double)f) / 1048576.0,
                (now - t_last) * 1e3);
    *last = f;
    t_last = now;
}

static zci_status prepare_ctx(cu_ctx *c)
{
    const zci_graph *g = c->g;
    int nt = g->n_tensors;
    c->ptr = zci_calloc((size_t)nt + 1, sizeof *c->ptr, "tensor table");
    c->dt = zci_calloc((size_t)nt + 1, sizeof *c->dt, "tensor table");
    c->alias = zci_malloc(((size_t)nt + 1) * sizeof *c->alias, "tensor table");
    c->nodes = zci_calloc((size_t)g->n_nodes + 1, sizeof *c->nodes, "node table");
    if (!c->ptr || !c->dt || !c->alias || !c->nodes) return ZCI_OUT_OF_MEMORY;
    for (int t = 0; t < nt; t++) {
        c->dt[t] = device_dtype(c, g->tensors[t].dtype);
        c->alias[t] = -1;
    }
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        if (can_alias(g, n)) c->alias[n->out[0]] = n->in[0];
    }
    size_t mem = 0;
    log_memory(c, "start", &mem);
    ZCI_TRY(check_nodes(c));
    ZCI_TRY(cu_decide_layout(c));
    ZCI_TRY(create_handles(c));
    log_memory(c, "streams and library handles", &mem);
    ZCI_TRY(upload_constants(c));
    log_memory(c, "constants", &mem);
    ZCI_TRY(plan_io(c));
    log_memory(c, "input/output buffers", &mem);
    ZCI_TRY(cu_plan_layout(c));
    log_memory(c, "layout conversions", &mem);
    ZCI_TRY(cu_plan_concat_in_place(c));
    ZCI_TRY(cu_plan_padded_heads(c));
    ZCI_TRY(cu_plan_streams(c));
    ZCI_TRY(plan_memory(c));
    log_memory(c, "activation arena", &mem);
    cu_resolve_views(c);
    cu_conv_prewarm(c);
    zci_status pst = prepare_nodes(c);
    cu_igemm_tuning_release(c);
    ZCI_TRY(pst);
    log_memory(c, "node state", &mem);
    ZCI_TRY(alloc_workspace(c));
    log_memory(c, "workspace", &mem);
    ZCI_TRY(cu_plan_early_output(c));
    cu_plan_tail(c);
    ZCI_TRY(cu_plan_input_heads(c));
    float settled_ms = 0.f;
    ZCI_TRY(settle_convolutions(c, &settled_ms));
    log_memory(c, "convolutions settled", &mem);
    ZCI_TRY(settle_streams(c, settled_ms));
    log_memory(c, "second stream", &mem);
    if (c->convs_igemm) zci_log(c->verbose, "CUDA: %d convolutions on our implicit-GEMM kernel", c->convs_igemm);
    if (c->convs_direct)
        zci_log(c->verbose, "CUDA: %d convolutions on our direct kernel for few input channels", c->convs_direct);
    if (c->convs_epilogue)
        zci_log(c->verbose, "CUDA: %d of %d convolutions with an epilogue fused into one cuDNN graph", c->convs_fused,
                c->convs_epilogue);
    warm_threads(c);
    ZCI_TRY(warm_up_and_capture(c));
    log_memory(c, "warm-up run and CUDA graph", &mem);
    return ZCI_OK;
}

/* ---- engine files: the kernel choices of our convolutions (conv_igemm.cu) ----
 * Blob: u32 magic, u32 version, u32 count, u32 flags (bit 0: the second stream is on, as the
 * timing at planning decided), then per convolution five int32: its position in the
 * execution order (engine files store the nodes in that order),
 * kernel configuration, k split, and the output's rows and channels (a check that the entry
 * belongs to this node); then the cuDNN plans (cu_fused_export's section). All little-endian, as
 * the engine file. */
#define IGEMM_BLOB_MAGIC 0x4749435au /* "ZCIG" */
#define IGEMM_BLOB_VERSION 3u
#define BLOB_HEAD 16 /* bytes */

static zci_status cuda_export_blob(zci_session *s, void **data, size_t *size)
{
    cu_ctx *c = s->be_ctx;
    const zci_graph *g = c->g;
    *data = NULL;
    *size = 0;
    int count = 0;
    for (int p = 0; p < g->n_order; p++) {
        const int i = g->order[p];
        int cfg, splits;
        if (c->nodes[i].state && cu_conv_igemm_choice(c, &g->nodes[i], c->nodes[i].state, &cfg, &splits)) count++;
    }
    unsigned char *plans = NULL;
    size_t plans_size = 0;
    ZCI_TRY(cu_fused_export(c, &plans, &plans_size));
    size_t bytes = BLOB_HEAD + (size_t)count * 20 + plans_size;
    int32_t *b = zci_malloc(bytes, "engine blob");
    if (!b) {
        free(plans);
        return ZCI_OUT_OF_MEMORY;
    }
    b[0] = (int32_t)IGEMM_BLOB_MAGIC;
    b[1] = (int32_t)IGEMM_BLOB_VERSION;
    b[2] = count;
    b[3] = c->use_side ? 1 : 0;
    int k = 4;
    for (int p = 0; p < g->n_order; p++) {
        const int i = g->order[p];
        int cfg, splits;
        const zci_node *n = &g->nodes[i];
        if (!c->nodes[i].state || !cu_conv_igemm_choice(c, n, c->nodes[i].state, &cfg, &splits)) continue;
        const zci_tensor *y = &g->tensors[n->out[0]];
        b[k++] = p;
        b[k++] = cfg;
        b[k++] = splits;
        b[k++] = (int32_t)(y->dims[0] * y->dims[2] * y->dims[3]);
        b[k++] = (int32_t)y->dims[1];
    }
    memcpy((unsigned char *)b + BLOB_HEAD + (size_t)count * 20, plans, plans_size);
    free(plans);
    *data = b;
    *size = bytes;
    return ZCI_OK;
}

/* Reads an export_blob blob into c->igemm_forced. Entries that do not match the graph are
 * refused: the file was altered (its checksum passed) or written by another build. */
static zci_status read_blob(cu_ctx *c, const void *blob, size_t size)
{
    const zci_graph *g = c->g;
    if (size < BLOB_HEAD)
        return zci_error(ZCI_INVALID_MODEL, "engine file: the CUDA backend's state is %zu bytes, too short", size);
    uint32_t head[4];
    memcpy(head, blob, sizeof head);
    if (head[0] != IGEMM_BLOB_MAGIC || head[1] != IGEMM_BLOB_VERSION)
        return zci_error(ZCI_INVALID_MODEL, "engine file: the CUDA backend's state has an unknown format (version %u); "
                                            "rebuild the engine with this version of zcinfer", head[1]);
    if (head[2] > (uint32_t)g->n_order || head[3] > 1 || size < BLOB_HEAD + (size_t)head[2] * 20 + 4)
        return zci_error(ZCI_INVALID_MODEL, "engine file: the CUDA backend's state holds %u entries in %zu bytes", head[2], size);
    c->igemm_forced = zci_calloc((size_t)g->n_nodes + 1, sizeof *c->igemm_forced, "engine state");
    if (!c->igemm_forced) return ZCI_OUT_OF_MEMORY;
    const unsigned char *p = (const unsigned char *)blob + BLOB_HEAD;
    for (uint32_t e = 0; e < head[2]; e++, p += 20) {
        int32_t v[5];
        memcpy(v, p, sizeof v);
        const zci_node *n = v[0] >= 0 && v[0] < g->n_order ? &g->nodes[g->order[v[0]]] : NULL;
        const zci_tensor *y = n && !strcmp(n->op_type, "Conv") && n->n_out > 0 && n->out[0] >= 0 ? &g->tensors[n->out[0]] : NULL;
        if (!y || y->ndim != 4 || v[3] != (int32_t)(y->dims[0] * y->dims[2] * y->dims[3]) || v[4] != (int32_t)y->dims[1] ||
            v[1] < -1 || v[1] > 61 || v[2] < 1 || v[2] > 64)
            return zci_error(ZCI_INVALID_MODEL, "engine file: the CUDA backend's entry %u does not match the graph "
                                                "(node %d); rebuild the engine", e, v[0]);
        c->igemm_forced[g->order[v[0]]] = (v[1] + 2) + 64 * v[2];
    }
    c->from_engine = 1;
    c->engine_side = (int)(head[3] & 1);
    const size_t at = BLOB_HEAD + (size_t)head[2] * 20;
    return cu_fused_import(c, (const unsigned char *)blob + at, size - at);
}

static zci_status cuda_prepare_blob(zci_session *s, const void *blob, size_t size)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return zci_error(ZCI_NO_DEVICE, "no usable CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (count == 0) return zci_error(ZCI_NO_DEVICE, "no CUDA device found");
    if (s->opts.device_id >= count)
        return zci_error(ZCI_NO_DEVICE, "options: device_id %d, but there %s %d CUDA device%s", s->opts.device_id,
                         count == 1 ? "is" : "are", count, count == 1 ? "" : "s");
    /* only now, with a GPU to run on: a process that never plans for one never maps cuDNN */
    ZCI_TRY(cu_load_cudnn(s->opts.verbose));
    cu_ctx *c = zci_calloc(1, sizeof *c, "CUDA backend");
    if (!c) return ZCI_OUT_OF_MEMORY;
    c->g = s->g;
    c->s = s;
    c->device = s->opts.device_id;
    c->fp16 = s->opts.precision == ZCI_PRECISION_FP16;
    c->allow_tf32 = s->opts.allow_tf32;
    c->verbose = s->opts.verbose;
    c->early_rm = c->early_after = c->early_out = -1;
    c->tail_node = c->tail_out = -1;
    const int device = c->device;
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
    zci_status st = ZCI_OK;
    e = cudaSetDevice(device);
    if (e != cudaSuccess) st = cu_cuda_error(e, "cudaSetDevice");
    s->be_ctx = c;
    if (st == ZCI_OK && blob) st = read_blob(c, blob, size);
    if (st == ZCI_OK) st = prepare_ctx(c);
    if (st == ZCI_OK) {
        s->summary.activation_bytes = c->arena_size;
        zci_log(c->verbose, "CUDA backend: device %d, %s, arena %.2f MB, workspace %.2f MB, %.2f MB of device memory, %s",
                c->device, c->fp16 ? "fp16" : "fp32", c->arena_size / 1048576.0, c->workspace_size / 1048576.0,
                c->device_bytes / 1048576.0, c->graph_exec ? "CUDA graph" : "eager launches");
    } else {
        release_ctx(c);
        s->be_ctx = NULL;
    }
    if (prev >= 0 && prev != device) cudaSetDevice(prev);
    return st;
}

static zci_status cuda_prepare(zci_session *s) { return cuda_prepare_blob(s, NULL, 0); }

const zci_backend_iface zci_cuda_backend_iface = {
    /* .name = */ "cuda",
    /* .prepare = */ cuda_prepare,
    /* .run = */ cu_backend_run,
    /* .own_buffer = */ cu_backend_own_buffer,
    /* .synchronize = */ cu_backend_synchronize,
    /* .release = */ cuda_release,
    /* .describe_device = */ cu_backend_describe_device,
    /* .export_blob = */ cuda_export_blob,
    /* .prepare_with_blob = */ cuda_prepare_blob,
    /* .copy_own_buffer = */ cu_backend_copy_own_buffer,
};

const zci_backend_iface *zci_cuda_backend(void) { return &zci_cuda_backend_iface; }
