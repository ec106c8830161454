/* conv_fused.c: a convolution and its epilogue (bias, activation, residual add; ops/conv.h) as
 * one cuDNN operation graph, so that one kernel reads the input once and writes the activated
 * output once, instead of cuDNN's convolution followed by our epilogue kernel (conv.cu).
 *
 * The graph (cuDNN's backend API), NHWC FP16 tensors, FP32 intermediates (virtual: they never
 * reach memory):
 *
 *     X, W -> CONVOLUTION_FORWARD -> [ADD bias] -> [ADD residual if sum_first] -> [activation]
 *          -> [ADD residual if !sum_first] -> Y
 *
 * Planning asks cuDNN's heuristics (mode A, then the fallback list) for engine configurations
 * and keeps the first execution plan that finalizes within the workspace limit. A graph no
 * engine takes leaves the node on conv.cu's two-kernel path. Nodes with equal graphs share one
 * plan. Runs build a variant pack (the buffers' addresses) only when the addresses differ from
 * the last run's: inside the captured CUDA graph they are the arena's, fixed.
 *
 * Every engine cuDNN 9.19 offers for these graphs on the H100 compiles its kernel at planning
 * (NVRTC, then the driver's PTX compiler, which keeps the result in its on-disk cache): 60-200 ms
 * per plan when cold. cu_fused_prewarm therefore builds the session's distinct plans once on
 * parallel threads, each with a cuDNN handle of its own, and drops them; the serial planning on
 * the session's handle then finds the compiled kernels in the caches. (The threads' plans are
 * not kept: a plan belongs to the handle it was built on, and a handle costs device memory.) */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "cuda/cuda_internal.h"
#include "ops/conv.h"

enum { UID_X = 1, UID_W = 2, UID_B = 3, UID_S = 4, UID_Y = 5, UID_V = 100, MAX_DESC = 32 };

/* A finalized plan and every descriptor it was built from (kept alive with it). Nodes whose
 * graphs are the same (shapes, geometry, epilogue) share one: the session's cache (c->fused_plans). */
typedef struct fused_plan {
    cudnnBackendDescriptor_t desc[MAX_DESC];
    int n_desc;
    cudnnBackendDescriptor_t *cfgs; /* the heuristics' engine configurations */
    int64_t n_cfgs;
    cudnnBackendDescriptor_t plan;
    int64_t ws;         /* workspace bytes of the plan */
    int64_t engine;     /* the engine's global index, or -1 */
    int rtc;            /* the engine compiles its kernel at planning (NVRTC) */
    int n_uids;
    int64_t uids[5];
    unsigned char key[256]; /* what the graph depends on */
} fused_plan;

struct cu_fused_plans {
    fused_plan **p;
    int n, cap;
};

struct cu_fused_conv {
    const fused_plan *fp;          /* owned by the session's cache */
    cudnnBackendDescriptor_t pack; /* variant pack for ptrs[] (NULL: none built yet) */
    void *ptrs[5];
    void *pack_ws;
};

/* The graph under construction: the first failing call's status and name stick, later calls do
 * nothing. */
typedef struct builder {
    fused_plan *f;
    cudnnStatus_t err;
    const char *what;
} builder;

static void note(builder *b, cudnnStatus_t e, const char *what)
{
    if (b->err == CUDNN_STATUS_SUCCESS && e != CUDNN_STATUS_SUCCESS) {
        b->err = e;
        b->what = what;
    }
}

static cudnnBackendDescriptor_t make(builder *b, cudnnBackendDescriptorType_t type)
{
    if (b->err != CUDNN_STATUS_SUCCESS) return NULL;
    if (b->f->n_desc == MAX_DESC) {
        note(b, CUDNN_STATUS_INTERNAL_ERROR, "descriptor table full");
        return NULL;
    }
    cudnnBackendDescriptor_t d = NULL;
    note(b, cudnnBackendCreateDescriptor(type, &d), "cudnnBackendCreateDescriptor");
    if (d) b->f->desc[b->f->n_desc++] = d;
    return d;
}

static void set(builder *b, cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                int64_t count, const void *value, const char *what)
{
    if (b->err != CUDNN_STATUS_SUCCESS || !d) return;
    note(b, cudnnBackendSetAttribute(d, name, type, count, value), what);
}

static void finalize(builder *b, cudnnBackendDescriptor_t d, const char *what)
{
    if (b->err != CUDNN_STATUS_SUCCESS || !d) return;
    note(b, cudnnBackendFinalize(d), what);
}

/* A 4-D tensor (N, C, H, W) stored NHWC with `ld` elements per pixel (0: C; more for a slice of
 * a wider buffer: an input of a Concat done in place), or a virtual FP32 intermediate. */
static cudnnBackendDescriptor_t tensor_ld(builder *b, int64_t uid, cudnnDataType_t dt, const int64_t *dims, int is_virtual,
                                          int64_t ld)
{
    if (ld <= 0) ld = dims[1];
    const int64_t strides[4] = {ld * dims[2] * dims[3], 1, dims[3] * ld, ld};
    const int64_t align = 16;
    const bool virt = is_virtual != 0;
    cudnnBackendDescriptor_t d = make(b, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    set(b, d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor type");
    set(b, d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims, "tensor dims");
    set(b, d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides, "tensor strides");
    set(b, d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    set(b, d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align, "tensor alignment");
    set(b, d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt, "tensor virtual");
    finalize(b, d, "tensor");
    return d;
}

static cudnnBackendDescriptor_t tensor(builder *b, int64_t uid, cudnnDataType_t dt, const int64_t *dims, int is_virtual)
{
    return tensor_ld(b, uid, dt, dims, is_virtual, 0);
}

/* y = mode(x) or y = mode(x, t), in FP32. */
static cudnnBackendDescriptor_t pointwise(builder *b, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                                          cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y)
{
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    cudnnBackendDescriptor_t pw = make(b, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(b, pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(b, pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    finalize(b, pw, "pointwise descriptor");
    cudnnBackendDescriptor_t op = make(b, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw, "pointwise op");
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "pointwise x");
    if (t) set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, "pointwise b");
    set(b, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "pointwise y");
    finalize(b, op, "pointwise operation");
    return op;
}

static void plan_release(fused_plan *f)
{
    if (!f) return;
    if (f->plan) cudnnBackendDestroyDescriptor(f->plan);
    for (int64_t i = 0; i < f->n_cfgs; i++)
        if (f->cfgs[i]) cudnnBackendDestroyDescriptor(f->cfgs[i]);
    free(f->cfgs);
    for (int i = f->n_desc - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(f->desc[i]);
    free(f);
}

void cu_fused_conv_release(cu_fused_conv *f)
{
    if (!f) return;
    if (f->pack) cudnnBackendDestroyDescriptor(f->pack);
    free(f);
}

void cu_fused_plans_release(cu_ctx *c)
{
    if (!c->fused_plans) return;
    for (int i = 0; i < c->fused_plans->n; i++) plan_release(c->fused_plans->p[i]);
    free(c->fused_plans->p);
    free(c->fused_plans);
    c->fused_plans = NULL;
}

static int pointwise_mode(int act, cudnnPointwiseMode_t *mode)
{
    switch (act) {
    case ZCI_ACT_RELU: *mode = CUDNN_POINTWISE_RELU_FWD; return 1;
    case ZCI_ACT_SILU: *mode = CUDNN_POINTWISE_SWISH_FWD; return 1; /* swish beta defaults to 1: x * sigmoid(x) */
    case ZCI_ACT_SIGMOID: *mode = CUDNN_POINTWISE_SIGMOID_FWD; return 1;
    default: return 0;
    }
}

/* The first execution plan of the heuristics' list (mode) that finalizes within max_ws. */
/* Engine facts of a configuration: its global index and whether it compiles at planning. */
static void engine_info(cudnnBackendDescriptor_t cfg, int64_t *index, int *rtc)
{
    *index = -1;
    *rtc = 0;
    cudnnBackendDescriptor_t eng = NULL;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &eng) != CUDNN_STATUS_SUCCESS) return;
    int64_t got = 0;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &got, &eng) ==
            CUDNN_STATUS_SUCCESS &&
        got == 1) {
        cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &got, index);
        cudnnBackendBehaviorNote_t notes[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
        int64_t n = 0;
        if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                     CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, notes) == CUDNN_STATUS_SUCCESS)
            for (int64_t i = 0; i < n; i++) *rtc |= notes[i] == CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION;
    }
    cudnnBackendDestroyDescriptor(eng);
}

/* The first execution plan of the heuristics' list (mode) that finalizes within max_ws; with
 * no_rtc, engines that compile at planning only when no other one finalizes. */
static int pick_plan(cudnnHandle_t handle, fused_plan *f, cudnnBackendDescriptor_t graph, cudnnBackendHeurMode_t mode,
                     size_t max_ws, int no_rtc)
{
    cudnnBackendDescriptor_t heur = NULL;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur) != CUDNN_STATUS_SUCCESS) return 0;
    int ok = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                      &graph) == CUDNN_STATUS_SUCCESS &&
             cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode) ==
                 CUDNN_STATUS_SUCCESS &&
             cudnnBackendFinalize(heur) == CUDNN_STATUS_SUCCESS;
    int64_t count = 0;
    if (ok)
        ok = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                      NULL) == CUDNN_STATUS_SUCCESS &&
             count > 0;
    cudnnBackendDescriptor_t *cfgs = ok ? calloc((size_t)count, sizeof *cfgs) : NULL;
    int64_t made = 0;
    for (; cfgs && made < count; made++)
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[made]) != CUDNN_STATUS_SUCCESS) break;
    int64_t got = 0;
    if (cfgs && made == count &&
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs) !=
            CUDNN_STATUS_SUCCESS)
        got = 0;
    cudnnBackendDestroyDescriptor(heur);
    int found = 0;
    for (int64_t j = 0; j < (no_rtc ? 2 : 1) * got && !found; j++) {
        const int64_t i = j % got;
        int64_t index = -1;
        int rtc = 0;
        engine_info(cfgs[i], &index, &rtc);
        if (no_rtc && rtc != (j >= got)) continue;
        cudnnBackendDescriptor_t plan = NULL;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS) break;
        int64_t ws = 0;
        if (cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle) ==
                CUDNN_STATUS_SUCCESS &&
            cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                     &cfgs[i]) == CUDNN_STATUS_SUCCESS &&
            cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
            cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, NULL, &ws) ==
                CUDNN_STATUS_SUCCESS &&
            ws >= 0 && (size_t)ws <= max_ws) {
            f->plan = plan;
            f->ws = ws;
            f->engine = index;
            f->rtc = rtc;
            found = 1;
        } else {
            cudnnBackendDestroyDescriptor(plan);
        }
    }
    if (found) {
        f->cfgs = cfgs;
        f->n_cfgs = made;
    } else {
        for (int64_t i = 0; cfgs && i < made; i++) cudnnBackendDestroyDescriptor(cfgs[i]);
        free(cfgs);
    }
    return found;
}

/* What a node's graph depends on: equal keys, equal graphs. */
typedef struct plan_key {
    int64_t xd[4], wd[4], yd[4], pre[2], post[2], strides[2], dil[2], y_ld;
    int act, has_bias, bias_half, has_sum, sum_first, no_rtc;
    size_t max_ws;
} plan_key;

_Static_assert(sizeof(plan_key) <= sizeof(((fused_plan *)0)->key), "plan_key fits fused_plan.key");

/* Builds the graph of key k and its plan on `handle`; *out NULL when cuDNN takes no such graph.
 * n: the node, for verbose messages (NULL: none; the planning threads of cu_fused_prewarm). */
static zci_status build_plan(const cu_ctx *c, cudnnHandle_t handle, const zci_node *n, const plan_key *k, fused_plan **out)
{
    *out = NULL;
    fused_plan *f = zci_calloc(1, sizeof *f, "fused convolution");
    if (!f) return ZCI_OUT_OF_MEMORY;
    builder bb = {f, CUDNN_STATUS_SUCCESS, NULL}, *b = &bb;
    const int64_t bd[4] = {1, k->yd[1], 1, 1};
    cudnnBackendDescriptor_t tx = tensor(b, UID_X, CUDNN_DATA_HALF, k->xd, 0);
    cudnnBackendDescriptor_t tw = tensor(b, UID_W, CUDNN_DATA_HALF, k->wd, 0);
    cudnnBackendDescriptor_t ty = tensor_ld(b, UID_Y, CUDNN_DATA_HALF, k->yd, 0, k->y_ld);
    cudnnBackendDescriptor_t tb = k->has_bias ? tensor(b, UID_B, k->bias_half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT, bd, 0) : NULL;
    cudnnBackendDescriptor_t ts = k->has_sum ? tensor(b, UID_S, CUDNN_DATA_HALF, k->yd, 0) : NULL;

    /* the convolution */
    const int64_t nsp = 2;
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    cudnnBackendDescriptor_t cd = make(b, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
    set(b, cd, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &nsp, "conv dims");
    set(b, cd, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "conv compute type");
    set(b, cd, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "conv mode");
    set(b, cd, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, k->dil, "conv dilations");
    set(b, cd, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, k->strides, "conv strides");
    set(b, cd, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, k->pre, "conv pre-paddings");
    set(b, cd, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, k->post, "conv post-paddings");
    finalize(b, cd, "convolution descriptor");

    /* the stages after it, each writing an FP32 virtual tensor, the last one Y */
    cudnnPointwiseMode_t act_mode = CUDNN_POINTWISE_ADD;
    const int has_act = k->act != ZCI_ACT_NONE && pointwise_mode(k->act, &act_mode);
    int n_stage = 0;
    cudnnPointwiseMode_t st_mode[4];
    cudnnBackendDescriptor_t st_in[4]; /* the second operand, or NULL */
    const cudnnBackendDescriptor_t order[4] = {tb, k->sum_first ? ts : NULL, NULL, k->sum_first ? NULL : ts};
    for (int i = 0; i < 4; i++) {
        if (i == 2 && has_act) {
            st_mode[n_stage] = act_mode;
            st_in[n_stage++] = NULL;
        } else if (i != 2 && order[i]) {
            st_mode[n_stage] = CUDNN_POINTWISE_ADD;
            st_in[n_stage++] = order[i];
        }
    }

    cudnnBackendDescriptor_t ops[5];
    int n_ops = 0;
    cudnnBackendDescriptor_t prev = tensor(b, UID_V, CUDNN_DATA_FLOAT, k->yd, 1);
    const float one = 1.f, zero = 0.f;
    cudnnBackendDescriptor_t conv = make(b, CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
    set(b, conv, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tx, "conv x");
    set(b, conv, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &tw, "conv w");
    set(b, conv, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &prev, "conv y");
    set(b, conv, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd, "conv desc");
    set(b, conv, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &one, "conv alpha");
    set(b, conv, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &zero, "conv beta");
    finalize(b, conv, "convolution operation");
    ops[n_ops++] = conv;
    for (int i = 0; i < n_stage; i++) {
        cudnnBackendDescriptor_t next = i == n_stage - 1 ? ty : tensor(b, UID_V + 1 + i, CUDNN_DATA_FLOAT, k->yd, 1);
        ops[n_ops++] = pointwise(b, st_mode[i], prev, st_in[i], next);
        prev = next;
    }
    cudnnBackendDescriptor_t graph = make(b, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(b, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "graph handle");
    set(b, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_ops, ops, "graph ops");
    finalize(b, graph, "operation graph");
    if (b->err != CUDNN_STATUS_SUCCESS) {
        if (c->verbose && n)
            zci_log(1, "%s: no fused convolution: %s: %s", zci_node_desc(c->g, n), b->what, cudnnGetErrorString(b->err));
        plan_release(f);
        return ZCI_OK;
    }
    if (!pick_plan(handle, f, graph, CUDNN_HEUR_MODE_A, k->max_ws, k->no_rtc) &&
        !pick_plan(handle, f, graph, CUDNN_HEUR_MODE_FALLBACK, k->max_ws, k->no_rtc)) {
        if (c->verbose && n) zci_log(1, "%s: no cuDNN engine runs the fused convolution", zci_node_desc(c->g, n));
        plan_release(f);
        return ZCI_OK;
    }
    f->uids[f->n_uids++] = UID_X;
    f->uids[f->n_uids++] = UID_W;
    f->uids[f->n_uids++] = UID_Y;
    if (tb) f->uids[f->n_uids++] = UID_B;
    if (ts) f->uids[f->n_uids++] = UID_S;
    *out = f;
    return ZCI_OK;
}

/* A plan restored from its JSON form (cu_fused_export) instead of compiled: *out NULL when cuDNN
 * refuses it (another cuDNN build, say). The tensors' uids follow from the key. */
static zci_status plan_from_json(const cu_ctx *c, const plan_key *k, const char *json, size_t len, fused_plan **out)
{
    *out = NULL;
    fused_plan *f = zci_calloc(1, sizeof *f, "fused convolution");
    if (!f) return ZCI_OUT_OF_MEMORY;
    cudnnBackendDescriptor_t plan = NULL;
    int64_t ws = 0;
    cudnnHandle_t h = c->cudnn;
    if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, (int64_t)len,
                                 json) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS &&
        cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, NULL, &ws) ==
            CUDNN_STATUS_SUCCESS &&
        ws >= 0 && (size_t)ws <= k->max_ws) {
        f->plan = plan;
        f->ws = ws;
        f->engine = -1;
        f->uids[f->n_uids++] = UID_X;
        f->uids[f->n_uids++] = UID_W;
        f->uids[f->n_uids++] = UID_Y;
        if (k->has_bias) f->uids[f->n_uids++] = UID_B;
        if (k->has_sum) f->uids[f->n_uids++] = UID_S;
        *out = f;
        return ZCI_OK;
    }
    if (plan) cudnnBackendDestroyDescriptor(plan);
    free(f);
    return ZCI_OK;
}

/* The key of node n's graph (bias in FP16 when bias_half); 0 when cuDNN has no form of its
 * epilogue. xc/wc: the input's and the weights' channels, padded (layout.c) or not. */
static int node_key(const cu_ctx *c, const zci_node *n, int bias_half, size_t max_ws, plan_key *k)
{
    const zci_graph *g = c->g;
    const zci_conv_params *p = n->params;
    cudnnPointwiseMode_t act_mode;
    if (p->activation != ZCI_ACT_NONE && !pointwise_mode(p->activation, &act_mode)) return 0;
    if (!p->has_bias && p->activation == ZCI_ACT_NONE && p->sum_input < 0) return 0;
    if (p->w.nsp != 2 || p->group != 1) return 0;
    const zci_tensor *x = ZCI_IN(g, n, 0), *w = ZCI_IN(g, n, 1), *y = ZCI_OUT(g, n, 0);
    const int xc = (cu_node_of(c, n)->alt_in & 1) && c->alt_c[n->in[0]] ? c->alt_c[n->in[0]] : (int)x->dims[1];
    const int wc = xc == (int)x->dims[1] ? (int)w->dims[1] : xc;
    const char *no_rtc = getenv("ZCI_CUDA_FUSE_NO_RTC");
    memset(k, 0, sizeof *k); /* padding too: keys are compared with memcmp */
    for (int d = 0; d < 4; d++) {
        k->xd[d] = x->dims[d];
        k->wd[d] = w->dims[d];
        k->yd[d] = y->dims[d];
    }
    k->xd[1] = xc;
    k->wd[1] = wc;
    k->y_ld = c->slice_ld && c->slice_ld[n->out[0]] ? c->slice_ld[n->out[0]] : 0;
    for (int d = 0; d < 2; d++) {
        k->pre[d] = p->w.pad_begin[d];
        k->post[d] = p->w.pad_end[d];
        k->strides[d] = p->w.stride[d];
        k->dil[d] = p->w.dilation[d];
    }
    k->act = p->activation;
    k->has_bias = p->has_bias;
    k->bias_half = p->has_bias && bias_half;
    k->has_sum = p->sum_input >= 0;
    k->sum_first = k->has_sum && p->sum_first;
    k->no_rtc = no_rtc && *no_rtc == '1';
    k->max_ws = max_ws;
    return 1;
}

zci_status cu_fused_conv_build(cu_ctx *c, const zci_node *n, int bias_half, size_t max_ws, cu_fused_conv **out)
{
    *out = NULL;
    const zci_graph *g = c->g;
    plan_key k;
    if (!node_key(c, n, bias_half, max_ws, &k)) return ZCI_OK;
    if (!c->fused_plans) {
        c->fused_plans = zci_calloc(1, sizeof *c->fused_plans, "fused convolution plans");
        if (!c->fused_plans) return ZCI_OUT_OF_MEMORY;
    }
    cu_fused_plans *cache = c->fused_plans;
    const fused_plan *fp = NULL;
    int found = 0;
    for (int i = 0; i < cache->n && !found; i++)
        if (!memcmp(cache->p[i]->key, &k, sizeof k)) {
            found = 1;
            fp = cache->p[i]->plan ? cache->p[i] : NULL;
        }
    if (!found) {
        double t0 = zci_now();
        fused_plan *f = NULL;
        for (int i = 0; i < c->n_fused_saved && !f; i++)
            if (!memcmp(c->fused_saved[i].key, &k, sizeof k)) {
                ZCI_TRY(plan_from_json(c, &k, c->fused_saved[i].json, c->fused_saved[i].len, &f));
                if (!f && c->verbose)
                    zci_log(1, "%s: the engine file's cuDNN plan did not load; planning it again", zci_node_desc(g, n));
            }
        if (!f) ZCI_TRY(build_plan(c, c->cudnn, n, &k, &f));
        if (!f) { /* remembered as refused: an empty entry */
            f = zci_calloc(1, sizeof *f, "fused convolution");
            if (!f) return ZCI_OUT_OF_MEMORY;
        }
        memcpy(f->key, &k, sizeof k);
        zci_status st = zci_grow((void **)&cache->p, cache->n, &cache->cap, sizeof *cache->p);
        if (st != ZCI_OK) {
            plan_release(f);
            return st;
        }
        cache->p[cache->n++] = f;
        fp = f->plan ? f : NULL;
        if (fp && c->verbose)
            zci_log(1, "%s: fused convolution: engine %lld%s, workspace %lld bytes, planned in %.1f ms", zci_node_desc(g, n),
                    (long long)fp->engine, fp->rtc ? " (runtime-compiled)" : "", (long long)fp->ws,
                    (zci_now() - t0) * 1e3);
    }
    if (!fp) return ZCI_OK;
    cu_fused_conv *f = zci_calloc(1, sizeof *f, "fused convolution");
    if (!f) return ZCI_OUT_OF_MEMORY;
    f->fp = fp;
    cu_need_workspace(c, (size_t)fp->ws);
    *out = f;
    return ZCI_OK;
}

static zci_status launch_ws(cu_ctx *c, cu_fused_conv *f, const void *x, const void *w, const void *bias, const void *sum,
                           void *y, void *workspace)
{
    const fused_plan *fp = f->fp;
    void *ptrs[5] = {(void *)x, (void *)w, y, NULL, NULL};
    for (int i = 3; i < fp->n_uids; i++) ptrs[i] = fp->uids[i] == UID_B ? (void *)bias : (void *)sum;
    void *ws = fp->ws ? workspace : NULL;
    if (!f->pack || memcmp(ptrs, f->ptrs, sizeof ptrs) || ws != f->pack_ws) {
        if (f->pack) cudnnBackendDestroyDescriptor(f->pack);
        f->pack = NULL;
        cudnnBackendDescriptor_t pack = NULL;
        CUDNN_TRY(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
        cudnnStatus_t e = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, fp->n_uids,
                                                   fp->uids);
        if (e == CUDNN_STATUS_SUCCESS)
            e = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, fp->n_uids, ptrs);
        if (e == CUDNN_STATUS_SUCCESS)
            e = cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
        if (e == CUDNN_STATUS_SUCCESS) e = cudnnBackendFinalize(pack);
        if (e != CUDNN_STATUS_SUCCESS) {
            cudnnBackendDestroyDescriptor(pack);
            return cu_cudnn_error(e, "cuDNN variant pack of the fused convolution");
        }
        f->pack = pack;
        memcpy(f->ptrs, ptrs, sizeof ptrs);
        f->pack_ws = ws;
    }
    CUDNN_TRY(cudnnBackendExecute(c->cudnn, fp->plan, f->pack));
    return ZCI_OK;
}

zci_status cu_fused_conv_launch(cu_ctx *c, cu_fused_conv *f, const void *x, const void *w, const void *bias,
                                const void *sum, void *y)
{
    return launch_ws(c, f, x, w, bias, sum, y, c->workspace);
}

zci_status cu_fused_conv_time(cu_ctx *c, cu_fused_conv *f, const void *x, const void *w, const void *bias,
                              const void *sum, void *y, float *us)
{
    /* planning runs before the shared workspace exists: a temporary one */
    void *ws = NULL;
    if (f->fp->ws) CU_TRY(cudaMalloc(&ws, (size_t)f->fp->ws));
    cudaEvent_t e0 = NULL, e1 = NULL;
    zci_status st = ZCI_OK;
    cudnnStatus_t ce = cudnnSetStream(c->cudnn, c->own_stream);
    if (ce != CUDNN_STATUS_SUCCESS) st = cu_cudnn_error(ce, "cudnnSetStream");
    if (st == ZCI_OK && (cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess))
        st = zci_error(ZCI_DEVICE_ERROR, "cudaEventCreate failed while timing a convolution");
    if (st == ZCI_OK) st = launch_ws(c, f, x, w, bias, sum, y, ws); /* warm-up */
    float best = 1e30f;
    for (int rep = 0; rep < 2 && st == ZCI_OK; rep++) {
        cudaEventRecord(e0, c->own_stream);
        for (int i = 0; i < 8 && st == ZCI_OK; i++) st = launch_ws(c, f, x, w, bias, sum, y, ws);
        cudaEventRecord(e1, c->own_stream);
        cudaError_t e = cudaEventSynchronize(e1);
        if (st == ZCI_OK && e != cudaSuccess) st = cu_cuda_error(e, "timing a fused convolution");
        float ms = 0.f;
        if (st == ZCI_OK) cudaEventElapsedTime(&ms, e0, e1);
        if (st == ZCI_OK && ms / 8 < best) best = ms / 8;
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (ws) {
        cudaStreamSynchronize(c->own_stream);
        cudaFree(ws);
    }
    /* the variant pack named the temporary workspace: rebuilt at the next launch */
    if (f->pack) cudnnBackendDestroyDescriptor(f->pack);
    f->pack = NULL;
    *us = best * 1000.f;
    return st;
}

/* 1 for a node that conv.cu plans through cu_fused_conv_build: an NHWC FP16 convolution. */
static int fused_candidate(const cu_ctx *c, const zci_node *n)
{
    const cu_node *cn = cu_node_of(c, n);
    return cn->op && !strcmp(n->op_type, "Conv") && cn->nhwc && c->dt[n->in[0]] == ZCI_FLOAT16 && n->params &&
           cu_conv_may_fuse(c, n);
}

/* The prewarm threads' shared work list. */
typedef struct prewarm_work {
    const cu_ctx *c;
    const plan_key *keys;
    int nk;
    int next; /* the next key to build, taken under lock */
    pthread_mutex_t lock;
} prewarm_work;

static void *prewarm_thread(void *arg)
{
    prewarm_work *w = arg;
    cudnnHandle_t h = NULL;
    if (cudaSetDevice(w->c->device) != cudaSuccess || cudnnCreate(&h) != CUDNN_STATUS_SUCCESS) h = NULL;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        const int i = w->next++;
        pthread_mutex_unlock(&w->lock);
        if (i >= w->nk || !h) break;
        fused_plan *f = NULL;
        if (build_plan(w->c, h, NULL, &w->keys[i], &f) == ZCI_OK) plan_release(f);
    }
    if (h) cudnnDestroy(h);
    (void)cudaGetLastError();
    return NULL;
}

void cu_fused_prewarm(cu_ctx *c, int bias_half, size_t max_ws)
{
    const zci_graph *g = c->g;
    const char *env = getenv("ZCI_CUDA_FUSE_PREWARM");
    if (env && *env == '0') return;
    plan_key *keys = zci_calloc((size_t)g->n_order + 1, sizeof *keys, "fused convolution keys");
    if (!keys) return;
    int nk = 0;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        plan_key k;
        if (!fused_candidate(c, n) || !node_key(c, n, bias_half, max_ws, &k)) continue;
        int seen = 0;
        for (int i = 0; i < c->n_fused_saved && !seen; i++) seen = !memcmp(c->fused_saved[i].key, &k, sizeof k);
        for (int i = 0; i < nk && !seen; i++) seen = !memcmp(&keys[i], &k, sizeof k);
        if (!seen) keys[nk++] = k;
    }
    /* At most 8 threads: the handles of concurrent planning threads leave device memory with the
     * library for the rest of the process (measured on the H100: 138 MB after 16 threads, 68 MB
     * after 8; a second session adds nothing), and 8 already bring the cold planning of YOLOv5s
     * from 8.1 s to under 4 s. Threads of their own, ended here, so that no pool keeps them. */
    long procs = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = procs < 8 ? (int)procs : 8;
    if (threads > nk) threads = nk;
    if (nk < 4 || threads < 2) {
        free(keys);
        return;
    }
    const double t0 = zci_now();
    prewarm_work w = {c, keys, nk, 0, PTHREAD_MUTEX_INITIALIZER};
    pthread_t tid[8];
    int started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, prewarm_thread, &w) != 0) break;
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);
    zci_log(c->verbose, "CUDA: %d fused convolution plans compiled on %d threads in %.1f ms (warming the kernel caches)", nk,
            started, (zci_now() - t0) * 1e3);
    free(keys);
}

/* ---- engine files: the compiled plans as cuDNN's JSON form ----
 * Section: u32 count, then per plan: u32 key size, the key's bytes (plan_key, zero padding
 * included), u64 JSON length, the JSON. Restoring a plan skips its runtime compilation, which is
 * most of the planning time of an FP16 session. */
zci_status cu_fused_export(const cu_ctx *c, unsigned char **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    const cu_fused_plans *cache = c->fused_plans;
    size_t total = 4;
    int count = 0;
    char **json = NULL;
    int64_t *len = NULL;
    const int n = cache ? cache->n : 0;
    if (n) {
        json = zci_calloc((size_t)n, sizeof *json, "engine blob");
        len = zci_calloc((size_t)n, sizeof *len, "engine blob");
        if (!json || !len) {
            free(json);
            free(len);
            return ZCI_OUT_OF_MEMORY;
        }
    }
    zci_status st = ZCI_OK;
    for (int i = 0; i < n && st == ZCI_OK; i++) {
        const fused_plan *f = cache->p[i];
        if (!f->plan) continue;
        int64_t got = 0;
        if (cudnnBackendGetAttribute(f->plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, 0, &got,
                                     NULL) != CUDNN_STATUS_SUCCESS ||
            got <= 0)
            continue; /* not serializable: compiled again at load */
        json[i] = zci_malloc((size_t)got + 1, "engine blob");
        if (!json[i]) {
            st = ZCI_OUT_OF_MEMORY;
            break;
        }
        int64_t got2 = 0;
        if (cudnnBackendGetAttribute(f->plan, CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION, CUDNN_TYPE_CHAR, got, &got2,
                                     json[i]) != CUDNN_STATUS_SUCCESS ||
            got2 != got) {
            free(json[i]);
            json[i] = NULL;
            continue;
        }
        len[i] = got;
        total += 4 + sizeof(plan_key) + 8 + (size_t)got;
        count++;
    }
    unsigned char *b = st == ZCI_OK ? zci_malloc(total, "engine blob") : NULL;
    if (st == ZCI_OK && !b) st = ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK) {
        size_t o = 0;
        uint32_t u = (uint32_t)count;
        memcpy(b + o, &u, 4);
        o += 4;
        for (int i = 0; i < n; i++) {
            if (!json[i]) continue;
            u = (uint32_t)sizeof(plan_key);
            memcpy(b + o, &u, 4);
            o += 4;
            memcpy(b + o, cache->p[i]->key, sizeof(plan_key));
            o += sizeof(plan_key);
            uint64_t l = (uint64_t)len[i];
            memcpy(b + o, &l, 8);
            o += 8;
            memcpy(b + o, json[i], (size_t)len[i]);
            o += (size_t)len[i];
        }
        *data = b;
        *size = total;
    }
    for (int i = 0; i < n; i++) free(json[i]);
    free(json);
    free(len);
    return st;
}

zci_status cu_fused_import(cu_ctx *c, const unsigned char *p, size_t size)
{
    if (size < 4) return zci_error(ZCI_INVALID_MODEL, "engine file: the cuDNN plans section is truncated");
    uint32_t count;
    memcpy(&count, p, 4);
    size_t o = 4;
    if (count > (uint32_t)c->g->n_order + 1)
        return zci_error(ZCI_INVALID_MODEL, "engine file: %u cuDNN plans for %d nodes", count, c->g->n_order);
    c->fused_saved = zci_calloc((size_t)count + 1, sizeof *c->fused_saved, "engine plans");
    if (!c->fused_saved) return ZCI_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t ks;
        uint64_t l;
        if (size - o < 4) goto bad;
        memcpy(&ks, p + o, 4);
        o += 4;
        if (ks != sizeof(plan_key) || ks > sizeof c->fused_saved[i].key || size - o < (size_t)ks + 8) goto bad;
        memcpy(c->fused_saved[i].key, p + o, ks);
        o += ks;
        memcpy(&l, p + o, 8);
        o += 8;
        if (l == 0 || l > size - o) goto bad;
        c->fused_saved[i].json = zci_malloc((size_t)l, "engine plans");
        if (!c->fused_saved[i].json) return ZCI_OUT_OF_MEMORY;
        memcpy(c->fused_saved[i].json, p + o, (size_t)l);
        c->fused_saved[i].len = (size_t)l;
        o += (size_t)l;
        c->n_fused_saved = (int)i + 1;
    }
    if (o != size) goto bad;
    return ZCI_OK;
bad:
    return zci_error(ZCI_INVALID_MODEL, "engine file: the cuDNN plans section is malformed; rebuild the engine");
}

void cu_fused_saved_release(cu_ctx *c)
{
    for (int i = 0; i < c->n_fused_saved; i++) free(c->fused_saved[i].json);
    free(c->fused_saved);
    c->fused_saved = NULL;
    c->n_fused_saved = 0;
}
