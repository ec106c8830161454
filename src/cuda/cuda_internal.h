/* cuda_internal.h: what the CUDA backend's files share: the backend context, the per-op
 * dispatch table, the checked-call macros and the launchers of the kernels that are not tied to
 * one op. Included from C (backend.c, ops.c, run.c) and from CUDA C++ (the .cu files). */
#ifndef ZCI_CUDA_INTERNAL_H
#define ZCI_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "core/session.h"
#include "ops/op.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cu_ctx cu_ctx;

/* One row of the dispatch table (ops.c): how the CUDA backend runs one ONNX op type.
 * supports: load-time check of a node beyond its type (attributes, dtypes, ranks); NULL = every
 *           node of the type. Its error (any code) becomes ZCI_UNSUPPORTED naming the node.
 * prepare:  builds the node's state once (descriptors, uploaded tables, algorithm); NULL = none.
 * launch:   queues the node's kernels on `stream`; reads tensor pointers from c->ptr at call
 *           time (so that a run with rebound input/output pointers needs no new plan).
 * release:  frees the state; NULL = free(). */
typedef struct cu_op {
    const char *type;
    zci_status (*supports)(const cu_ctx *c, const zci_node *n);
    zci_status (*prepare)(cu_ctx *c, const zci_node *n, void **state);
    zci_status (*launch)(cu_ctx *c, const zci_node *n, void *state, cudaStream_t stream);
    void (*release)(void *state);
    int nhwc; /* 1: also runs with its 4-D tensors in NHWC (layout.c decides per node) */
} cu_op;

/* The table's row for n's op type, or NULL. */
const cu_op *cu_op_find(const char *type);

typedef struct cu_node {
    const cu_op *op; /* NULL for aliased views (nothing to launch) and dead nodes */
    void *state;
    int nhwc;        /* runs in NHWC: its non-trivial 4-D tensors are read and written in NHWC */
    uint64_t alt_in; /* bit k: input k is read from the tensor's other-layout copy (c->alt) */
} cu_node;

/* The backend context (session->be_ctx). Tensors are indexed as in the graph. */
struct cu_ctx {
    const zci_graph *g;
    zci_session *s;
    int device;
    int fp16;                /* precision FP16: float tensors are half on the device */
    int allow_tf32;
    int verbose;
    cudaStream_t own_stream; /* created by the session: capture stream, default if none given */
    cudaStream_t stream;     /* the default stream: opts.cuda_stream or own_stream */
    cudnnHandle_t cudnn;
    cublasHandle_t cublas;

    void **ptr;              /* per tensor: device buffer (NULL: none, e.g. dead) */
    zci_dtype *dt;           /* per tensor: element type on the device */
    unsigned char *lay;      /* per tensor: layout of ptr: CU_NCHW (also every non-4-D tensor) or CU_NHWC */
    void **alt;              /* per tensor: a copy in the other layout for the readers that need it, or NULL */
    unsigned char *need_alt; /* per tensor: some reader needs the other layout (layout.c) */
    int *alt_c;              /* per tensor: channels of an NHWC copy padded with zeros, or 0 */
    unsigned char *view_nhwc; /* per tensor: a Reshape view (N, A, B, H, W) of an NHWC tensor (N, A*B, H, W)
                                 whose readers (Transposes) read the NHWC bytes through strides (layout.c) */
    int *alias;              /* per tensor: tensor whose storage a view shares, or -1 */
    cu_node *nodes;          /* per graph node */

    void *arena;             /* activations, planned by zci_memplan */
    size_t arena_size;
    void *workspace;         /* shared by cuDNN convolutions and cuBLAS */
    size_t workspace_size;   /* what prepare functions asked for (max), then allocated */

    /* Device allocations made through cu_malloc, freed at release. */
    void **allocs;
    int n_allocs, cap_allocs;
    size_t device_bytes;     /* total of those allocations */

    /* Model inputs and outputs. in_buf/out_buf: the session's own device buffers, in the I/O
     * type that zci_tensor_info reports. A tensor's device buffer (ptr) is the own buffer when
     * the types agree, else a separate buffer in the device type. */
    void **in_buf, **out_buf;
    void *pinned;            /* host staging for the regular path (pinned) */
    void **in_stage, **out_stage;
    int n_host_threads;      /* threads for staging copies */

    /* CUDA graph of the body (all nodes), captured at prepare on the own buffers. */
    cudaGraph_t graph;
    cudaGraphExec_t graph_exec;
    /* The same body without the early output rows (c->early_*), which only the regular path
     * uses, for the zero-copy and own-buffer paths (whose output tail writes every row); NULL:
     * graph_exec serves them too. */
    cudaGraph_t graph_dev;
    cudaGraphExec_t graph_exec_dev;

    /* Ordering between runs queued on different streams (they share the arena). */
    cudaEvent_t done;
    cudaStream_t last_stream;
    int ran;                 /* done has been recorded at least once */
    cudaEvent_t chunk_ev[16]; /* regular path: D2H chunks the host may copy out */

    struct cu_fused_plans *fused_plans; /* conv_fused.c's plans, shared by equal graphs */
    int convs_fused;         /* convolutions planned as one cuDNN graph with their epilogue */
    int convs_epilogue;      /* convolutions with an epilogue (fused or not) */
    int convs_igemm;         /* convolutions on our own kernel (conv_igemm.cu) */
    int convs_direct;        /* convolutions on conv_direct.cu's kernel */
    int *igemm_counters;     /* split-K tile counters (CU_IGEMM_MAX_TILES, zero between launches) */
    int igemm_smem_set;      /* conv_igemm.cu's kernels were allowed their shared memory on this device */
    struct cu_igemm_tuning *igemm_tuning; /* planning only: timed choices, shared by equal geometries */
    int *igemm_forced;       /* per graph node: an engine file's kernel choice (cfg + 2 + 64 * splits), 0: none */
    int from_engine;         /* prepared from an engine file's state: no timing, the file's choices */
    size_t *alias_off;       /* per tensor: byte offset inside alias[t]'s storage (Concat inputs), else 0 */
    int *slice_ld;           /* per tensor: channel stride of the wider NHWC buffer it is written into
                                (an input of a Concat done in place), else 0 */
    int concats_in_place;
    int convs_both;          /* convolutions planned both ways until cu_conv_settle */
    int conv_variant;        /* while any is: CU_CONV_CUDNN, CU_CONV_EACH or CU_CONV_OWN */
    struct cu_fused_saved *fused_saved; /* an engine file's cuDNN plans (JSON), restored instead of compiled */
    int n_fused_saved;

    /* A second stream in the captured graph for convolutions off the critical path (streams.c). */
    unsigned char *side;     /* per graph node: runs on the side stream (NULL: none does) */
    int n_side;
    int use_side;            /* captures fork onto the side stream (timed at planning) */
    int engine_side;         /* an engine file's use_side */
    unsigned char *record;   /* per graph node: records node_ev (a reader runs on the other stream) */
    int *wait_start, *wait_list; /* per position: the nodes whose events it waits for (CSR) */
    int *span_lo, *span_hi;  /* per position: where its node may run, for the memory plan */
    cudaStream_t side_stream;
    cudaEvent_t *node_ev;    /* per graph node, where record[] says so */
    cudaEvent_t fork_ev, join_ev;
    void *workspace2;        /* the side stream's workspace and split-K counters */
    int *igemm_counters2;

    /* Early output rows (cu_plan_early_output): a RowMap model output whose first part is ready
     * before the rest of the model has run (a YOLO head's finest level) writes those rows right
     * after their source and records early_ev, so that the regular path copies them to the host
     * on copy_stream while the rest still runs. early_rm -1: none. */
    int early_rm;            /* the RowMap node (graph index) */
    int early_after;         /* the node after which its rows [0, early_rows) are written */
    int early_out;           /* the model output it produces */
    int64_t early_rows;      /* rows per image written early */
    cudaEvent_t early_ev, copy_ev;
    cudaStream_t copy_stream;

    /* The output tail (cu_plan_tail): a RowMap that writes a model output nothing else reads is
     * left out of the captured graph (capture_body set while capturing it) and launched after it
     * by the output edge, into the caller's buffer in the caller's type: at batch 32 that saves
     * yolov5s the FP16 output's write, its read and the conversion kernel (0.4 GB). tail_node -1:
     * none. */
    int tail_node;           /* the RowMap node (graph index) */
    int tail_out;            /* the model output it writes */
    int capture_body;
    int capture_no_early;    /* set while capturing graph_dev */
    /* Its counterpart at the inputs (cu_plan_input_heads), per model input: 1 where only the
     * padded NHWC copy is read, which the input edge then writes straight from the caller's
     * buffer and type (one pass instead of a conversion and the graph's layout pass). */
    unsigned char *in_head;
};

/* An engine file's cuDNN plan: the key of its graph (conv_fused.c's plan_key) and its JSON. */
struct cu_fused_saved {
    unsigned char key[256];
    char *json;
    size_t len;
};

/* ---- layouts (layout.c) ----
 * In FP16 sessions the 4-D activations between convolutions live in NHWC, where cuDNN's tensor
 * core kernels read and write them directly (in NCHW it transposes around each convolution).
 * Each node runs in one layout (cu_node.nhwc); a tensor whose readers need the other layout gets
 * a converted copy (alt) made right after it is produced. A 4-D tensor with one channel or one
 * pixel has the same bytes in both layouts and is never converted. */
enum { CU_NCHW = 0, CU_NHWC = 1 };

/* 1 for a 4-D tensor whose NCHW and NHWC layouts differ. */
int cu_layout_matters(const zci_tensor *t);
/* Decides every node's layout and every tensor's (before anything is uploaded). */
zci_status cu_decide_layout(cu_ctx *c);
/* Allocates the converted copies (and converts the constants that need one, once). */
zci_status cu_plan_layout(cu_ctx *c);
/* 1 if constant t is read only as the weights of NHWC convolutions, which upload their own
 * reordered copy: its NCHW copy need not be uploaded. */
int cu_weights_only(const cu_ctx *c, int t);
/* Convolution weights w (M, C, R, S) as (M, R, S, cp) in FP16 (half) or FP32 at host, which
 * holds M * R * S * cp elements and is zero where ch >= C (on the host's threads). */
void cu_reorder_krsc(const zci_tensor *w, int64_t cp, int half, void *host);
/* NHWC channel Concats whose inputs are all written by convolutions our kernel can run (and read
 * by nothing else) are done in place: each producer writes its channels of the Concat's output
 * (c->slice_ld, c->alias/alias_off for the memory plan) and the Concat node launches nothing.
 * ZCI_CUDA_NO_CONCAT_IN_PLACE=1: off. After cu_plan_layout, before the memory plan. */
zci_status cu_plan_concat_in_place(cu_ctx *c);
/* Pads the rows of head convolutions' outputs (channels not a multiple of 8, read only through a
 * view_nhwc) to a multiple of 8 channels: slice_ld without an alias. After
 * cu_plan_concat_in_place; ZCI_CUDA_NO_PAD_HEADS=1 turns it off. */
zci_status cu_plan_padded_heads(cu_ctx *c);
/* The padded channel stride of view t's source (cu_plan_padded_heads), or 0. */
int cu_view_source_ld(const cu_ctx *c, int t);
/* Queues the node at execution position p, then the conversions of its outputs. */
zci_status cu_launch_node(cu_ctx *c, int p, cudaStream_t stream);
/* Queues the conversions of model inputs and constants (the start of a run's body). */
zci_status cu_launch_prologue(cu_ctx *c, cudaStream_t stream);

/* ---- a second stream (streams.c) ---- */
/* Picks the convolutions that run on the side stream and the waits between the streams
 * (c->side, c->wait_*, c->span_*); after cu_plan_concat_in_place, before the memory plan.
 * ZCI_CUDA_STREAMS=1: one stream. */
zci_status cu_plan_streams(cu_ctx *c);
/* Creates the side stream, the events and the side stream's scratch; after the node states
 * (which size the workspace). */
zci_status cu_streams_create(cu_ctx *c);
/* Queues the body with the side nodes on c->side_stream, forked from and joined back into
 * `stream` (inside a capture). */
zci_status cu_run_nodes_streams(cu_ctx *c, cudaStream_t stream);
void cu_streams_release(cu_ctx *c);
/* Finds an early output (c->early_*; none where the model has no such RowMap output) and makes
 * its stream and events; after the node states. */
zci_status cu_plan_early_output(cu_ctx *c);
/* Queues the early rows and records early_ev when graph node i is the one they wait for. */
zci_status cu_launch_early_rows(cu_ctx *c, int i, cudaStream_t s);
/* RowMap (rowmap.cu): rows [lo, hi) of every image of node n's output; ..._to: into y, of type
 * yt (FP16 or FP32) instead of the node's own buffer. */
zci_status cu_rowmap_launch_rows(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s, int64_t lo, int64_t hi);
zci_status cu_rowmap_launch_to(cu_ctx *c, const zci_node *n, void *state, cudaStream_t s, int64_t lo, int64_t hi,
                               void *y, zci_dtype yt);
/* Finds the output tail (c->tail_*), after cu_plan_early_output. ZCI_CUDA_NO_TAIL=1: none. */
void cu_plan_tail(cu_ctx *c);
/* Finds the input heads (c->in_head; ZCI_CUDA_NO_TAIL=1: none), once layouts are decided, and
 * writes head input i's NHWC copy from src (NCHW, of type st). */
zci_status cu_plan_input_heads(cu_ctx *c);
zci_status cu_input_head(cu_ctx *c, int i, const void *src, zci_dtype st, cudaStream_t s);

static inline const cu_node *cu_node_of(const cu_ctx *c, const zci_node *n) { return &c->nodes[n - c->g->nodes]; }
/* The buffer node n reads for input k, in the layout the node runs in. */
static inline void *cu_in(const cu_ctx *c, const zci_node *n, int k)
{
    int t = n->in[k];
    if (t < 0) return NULL;
    return k < 64 && (cu_node_of(c, n)->alt_in >> k & 1) ? c->alt[t] : c->ptr[t];
}
/* 1 if what cu_in(c, n, k) returns is in NHWC. */
static inline int cu_in_nhwc(const cu_ctx *c, const zci_node *n, int k)
{
    int t = n->in[k];
    return t >= 0 && (c->lay[t] ^ (int)(k < 64 && (cu_node_of(c, n)->alt_in >> k & 1)));
}
/* 1 if node n runs in NHWC. */
static inline int cu_nhwc(const cu_ctx *c, const zci_node *n) { return cu_node_of(c, n)->nhwc; }
/* The element strides of a view_nhwc tensor t (5-D, N, A, B, H, W) in its source's NHWC bytes;
 * 0 when t is no such view. */
int cu_view_nhwc_strides(const cu_ctx *c, int t, int64_t *strides);
/* Physical dims of 4-D tensor t in layout `nhwc` (N, H, W, C), else its dims as they are. */
void cu_physical_dims(const zci_tensor *t, int nhwc, int64_t *dims);

/* ---- errors ---- */

/* The status for a failed CUDA runtime call, with the call's text and CUDA's message; OUT_OF_MEMORY
 * for allocation failures, NO_DEVICE for a missing driver or GPU, else DEVICE_ERROR. */
zci_status cu_cuda_error(cudaError_t e, const char *call);
zci_status cu_cudnn_error(cudnnStatus_t e, const char *call);
zci_status cu_cublas_error(cublasStatus_t e, const char *call);

#define CU_TRY(call)                                                                               \
    do {                                                                                           \
        cudaError_t cu_e_ = (call);                                                                \
        if (cu_e_ != cudaSuccess) return cu_cuda_error(cu_e_, #call);                              \
    } while (0)
#define CUDNN_TRY(call)                                                                            \
    do {                                                                                           \
        cudnnStatus_t cu_e_ = (call);                                                              \
        if (cu_e_ != CUDNN_STATUS_SUCCESS) return cu_cudnn_error(cu_e_, #call);                    \
    } while (0)
#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t cu_e_ = (call);                                                             \
        if (cu_e_ != CUBLAS_STATUS_SUCCESS) return cu_cublas_error(cu_e_, #call);                  \
    } while (0)
/* After a kernel launch: a bad configuration (or an earlier asynchronous fault) shows here. */
#define CU_LAUNCHED(what) CU_TRY(cudaGetLastError())

/* ---- memory ---- */

/* cudaMalloc recorded in c->allocs (freed at release). ZCI_OUT_OF_MEMORY names `what`. */
zci_status cu_malloc(cu_ctx *c, size_t bytes, const char *what, void **out);
/* Uploads `bytes` of host data into a new cu_malloc buffer. */
zci_status cu_upload(cu_ctx *c, const void *host, size_t bytes, const char *what, void **out);
/* Uploads constant tensor t converted to `dtype` (float32 <-> float16 conversions, else the
 * same type); returns the device pointer (owned by c). */
zci_status cu_upload_const(cu_ctx *c, int t, zci_dtype dtype, void **out);
/* Asks for at least `bytes` of the shared workspace (allocated after every node is prepared). */
void cu_need_workspace(cu_ctx *c, size_t bytes);

/* ---- shapes ---- */

/* Element count of tensor t. */
static inline int64_t cu_numel(const cu_ctx *c, int t) { return zci_tensor_numel(&c->g->tensors[t]); }
/* Device element size of tensor t. */
static inline size_t cu_esize(const cu_ctx *c, int t) { return zci_dtype_size(c->dt[t]); }

/* Kernels index with 32-bit integers: refuses tensors of 2^31 elements or more. */
zci_status cu_check_index_range(const cu_ctx *c, const zci_node *n);

/* Dense row-major element strides of a shape. */
void cu_strides(const int64_t *dims, int nd, int64_t *strides);

/* ---- kernels shared by several ops and by the I/O edges (elementwise.cu, tensor.cu) ---- */

/* y[i] = (dst type) x[i] for n elements of the given device types (any pair of float32,
 * float16, float64, int8/16/32/64, uint8/16/32/64, bool). */
zci_status cu_convert(const void *x, zci_dtype xt, void *y, zci_dtype yt, int64_t n, cudaStream_t s);

/* A strided gather: y (packed, `nd` dims) [i...] = x[offset + sum i_k * stride[k]] for elements
 * of `esize` bytes; strides may be 0 (broadcast) or negative. Dims are simplified here. */
typedef struct cu_gather_plan {
    int nd;
    int64_t dims[ZCI_MAX_DIMS];
    int64_t stride[ZCI_MAX_DIMS];
    int64_t offset;
} cu_gather_plan;
void cu_gather_simplify(cu_gather_plan *p);
zci_status cu_strided_copy(const void *x, void *y, const cu_gather_plan *p, size_t esize, cudaStream_t s);

/* Broadcasts input tensor `in` of node n to the shape of tensor `out_t` (numpy rules) and
 * copies it there: the plan for cu_strided_copy. */
void cu_broadcast_plan(const zci_tensor *in, const zci_tensor *out, cu_gather_plan *p);

/* y (N, H, W, cp) = x (N, C, H, W) with channels C..cp-1 zero, for elements of `esize` bytes. */
zci_status cu_nchw_to_nhwc_pad(const void *x, void *y, int64_t n, int64_t c, int64_t hw, int64_t cp, size_t esize,
                               cudaStream_t s);
/* The same from x of type xt into y of type yt: FP32 into FP16, or either into its own type. */
zci_status cu_nchw_to_nhwc_pad_as(const void *x, zci_dtype xt, void *y, zci_dtype yt, int64_t n, int64_t c, int64_t hw,
                                  int64_t cp, cudaStream_t s);

/* ---- fused convolutions (conv_fused.c) ----
 * A 2-D NHWC FP16 convolution with its epilogue (bias, ReLU/SiLU/Sigmoid, residual add) as one
 * cuDNN backend-API graph. build leaves *out NULL (and returns ZCI_OK) when the epilogue has no
 * cuDNN form or no engine runs the graph within max_ws bytes of workspace: the caller keeps its
 * two-kernel path. The bias is read as FP16 (bias_half) or FP32. launch takes the buffers of
 * this run. */
typedef struct cu_fused_conv cu_fused_conv;
typedef struct cu_fused_plans cu_fused_plans;
zci_status cu_fused_conv_build(cu_ctx *c, const zci_node *n, int bias_half, size_t max_ws, cu_fused_conv **out);
/* Compiles the fused kernels of every NHWC FP16 convolution in parallel before the nodes are
 * prepared (conv_fused.c says why); failures only cost time. ZCI_CUDA_FUSE_PREWARM=0: off. */
void cu_fused_prewarm(cu_ctx *c, int bias_half, size_t max_ws);
zci_status cu_fused_conv_launch(cu_ctx *c, cu_fused_conv *f, const void *x, const void *w, const void *bias,
                                const void *sum, void *y);
void cu_fused_conv_release(cu_fused_conv *f);
/* Mean GPU time of the fused convolution on these buffers (warm-up, then 8 launches timed twice;
 * planning time only: it synchronizes). */
zci_status cu_fused_conv_time(cu_ctx *c, cu_fused_conv *f, const void *x, const void *w, const void *bias,
                              const void *sum, void *y, float *us);
/* The session's compiled plans as a malloc'd engine-file section, and back (into c->fused_saved,
 * which cu_fused_conv_build consults before compiling); cu_fused_saved_release frees them. */
zci_status cu_fused_export(const cu_ctx *c, unsigned char **data, size_t *size);
zci_status cu_fused_import(cu_ctx *c, const unsigned char *p, size_t size);
void cu_fused_saved_release(cu_ctx *c);
/* Frees the session's plans (after every node's state). */
void cu_fused_plans_release(cu_ctx *c);

/* ---- our implicit-GEMM convolution (conv_igemm.cu) ----
 * NHWC FP16 2-D convolutions with one group and a multiple of 8 input channels (xc: the channel
 * count of the buffer read, padded copies included) run on our own tensor-core kernel with the
 * whole epilogue fused. build records the geometry; tune picks the tile shape and k split (the
 * fastest on this GPU, timed on the session's buffers, or forced_cfg/forced_splits from an engine
 * file: forced_cfg < -1 means "time it"); launch queues it, reading the buffers of this run. */
#define CU_IGEMM_MAX_TILES 4096
typedef struct cu_igemm cu_igemm;
int cu_igemm_eligible(const cu_ctx *c, const zci_node *n, int xc);
zci_status cu_igemm_build(cu_ctx *c, const zci_node *n, int xc, cu_igemm **out);
zci_status cu_igemm_tune(cu_ctx *c, const zci_node *n, cu_igemm *g, const void *w, const float *bias, int forced_cfg,
                         int forced_splits, float *best_us);
zci_status cu_igemm_launch(cu_ctx *c, const zci_node *n, cu_igemm *g, const void *w, const float *bias,
                           cudaStream_t stream);
void cu_igemm_choice(const cu_igemm *g, int *cfg, int *splits);
const char *cu_igemm_describe(const cu_igemm *g, char *buf, size_t size);
/* Frees the planning-time tuning table (after every node is prepared). */
void cu_igemm_tuning_release(cu_ctx *c);
/* conv.cu: for a Conv node's prepared state on our kernel, its choice (cu_igemm_choice) and 1;
 * else 0. */
int cu_conv_igemm_choice(const cu_ctx *c, const zci_node *n, const void *state, int *cfg, int *splits);
/* Which kernel the convolutions planned both ways run: cuDNN's fused graph, whichever was faster
 * timed alone, or ours. backend.c times the whole model under each and settles on the fastest;
 * cu_conv_settle then frees the other plan of node n (state: its prepared state). */
enum { CU_CONV_CUDNN = 0, CU_CONV_EACH = 1, CU_CONV_OWN = 2 };
void cu_conv_settle(cu_ctx *c, const zci_node *n, void *state, int variant);
/* conv.cu: 1 if Conv node n can write its output into a wider NHWC buffer (our kernel can run
 * it, so that there is a way even where cuDNN refuses the strides). */
int cu_conv_may_write_slice(const cu_ctx *c, const zci_node *n);
/* conv.cu: 0 if node n (a Conv) will not be planned as a cuDNN fused graph (our kernel only). */
int cu_conv_may_fuse(const cu_ctx *c, const zci_node *n);
/* The cuDNN handle, created on first need (sessions whose convolutions all run on our kernels
 * never load cuDNN's engines). */
zci_status cu_cudnn_handle(cu_ctx *c);

/* ---- running (run.c) ---- */

/* Queues every planned node on `stream` (the library handles are pointed at it first). */
zci_status cu_run_nodes(cu_ctx *c, cudaStream_t stream);
/* Points every aliased view at its source's current buffer. */
void cu_resolve_views(cu_ctx *c);
zci_status cu_backend_run(zci_session *s, const zci_run_args *args);
zci_status cu_backend_own_buffer(zci_session *s, int is_output, int index, void **ptr);
zci_status cu_backend_synchronize(zci_session *s, void *stream);
zci_status cu_backend_copy_own_buffer(zci_session *s, int is_output, int index, void *host, size_t bytes, void *stream);
zci_status cu_backend_describe_device(const zci_options *opts, zci_device_desc *desc);

/* ---- direct convolution for few input channels (conv_direct.cu) ----
 * YOLO's first convolution (6x6/2, 3 channels padded to 8, 32 outputs) and its kind: a block
 * stages its tile's input patch and all the weights in shared memory once and runs the tensor
 * cores over them, instead of gathering 16 bytes per (output pixel, tap) as conv_igemm.cu does. */
typedef struct cu_dconv_geom {
    int N, H, W, C;        /* input, NHWC FP16, C = padded channels: 8 or 16 */
    int K;                 /* output channels: a multiple of 8, <= 64 */
    int R, S;              /* kernel, <= 7 each */
    int stride_h, stride_w, pad_h, pad_w; /* stride 1 or 2 */
    int P, Q;              /* output height, width */
    int ldy;               /* channel stride of y in elements (>= K, multiple of 8): y may be a slice of a wider buffer */
    int act;               /* zci_activation (src/ops/conv.h): NONE, RELU, SILU, LEAKY_RELU, CLIP, HARDSWISH, SIGMOID */
    float alpha, beta;     /* activation parameters as zci_activation_apply takes them */
    int C_used;            /* channels that may be nonzero in w (the rest of C is padding with zero
                              weights), 0: all C. With 4 or fewer and stride_w 2 the kernel reads
                              only channels 0-3 of x and does half the work (YOLO's 3 channels). */
} cu_dconv_geom;
/* 1 if the kernel handles g: the limits above, 32-bit offsets inside one image, and its shared
 * memory within the current device's per-block limit (so it asks the runtime). */
int cu_dconv_supported(const cu_dconv_geom *g);
/* y[n,p,q,k] = act(bias[k] + sum_{r,s,c} x[n, p*sh - ph + r, q*sw - pw + s, c] * w[k,r,s,c]), zero padding.
 * x: N*H*W*C halves; w: K*R*S*C halves (KRSC); bias: K floats (never NULL); y: rows of ldy halves.
 * x, w and y 16-byte aligned. Queues one kernel on s; cudaErrorInvalidValue for a geometry
 * cu_dconv_supported refuses or a misaligned pointer. Each call plans on the host (device
 * attributes, cudaFuncSetAttribute, up to 7 occupancy queries to pick the block shape). */
cudaError_t cu_dconv_run(const cu_dconv_geom *g, const void *x, const void *w, const float *bias, void *y, cudaStream_t s);

#ifdef __cplusplus
}
#endif

#endif
