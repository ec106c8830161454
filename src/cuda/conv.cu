/* conv.cu: Conv through cuDNN, and the fused epilogue (bias, activation, residual) that a
 * graph pass may attach to it (ops/conv.h). NHWC FP16 convolutions whose epilogue cuDNN can
 * express run as one cuDNN graph (conv_fused.c); the others run the convolution, then one
 * kernel of ours for the epilogue.
 *
 * Planning builds the descriptors once and chooses the algorithm once: cuDNN's heuristics by
 * default (instant), or cudnnFindConvolutionForwardAlgorithmEx timing every algorithm on the
 * real buffers when ZCI_CUDNN_FIND=1 (slower creation; the notes compare both). The algorithm's
 * workspace comes from the session's shared workspace. FP32 runs with FMA math (no TF32) unless
 * opts.allow_tf32; FP16 with tensor-core math and FP32 accumulation. */
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

/* The largest workspace one convolution may ask for: the fastest algorithms rarely need more,
 * and the session's device memory stays bounded. */
constexpr size_t kMaxWorkspace = (size_t)32 << 20;

struct conv_state {
    int nhwc;             /* x, y in NHWC and the weights reordered to KRSC */
    void *w_krsc;         /* the reordered weights (NHWC), a cu_malloc allocation */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    cudnnConvolutionFwdAlgo_t algo;
    size_t ws;
    float *bias;          /* float32 on the device (also in FP16 sessions), or NULL */
    int act;
    float alpha, beta;
    int sum;              /* input number of the residual, or -1 */
    int sum_first;
    uint32_t inner;       /* spatial elements per channel */
    uint32_t channels;
    int epilogue;         /* anything to do after the convolution */
    cu_fused_conv *fused; /* convolution and epilogue in one cuDNN graph, or NULL */
    void *bias_fused;     /* the bias in the type the fused graph reads */
    cu_igemm *igemm;      /* our own kernel (conv_igemm.cu), or NULL */
    int both;             /* fused and igemm both planned: c->conv_variant picks until cu_conv_settle */
    int prefer_own;       /* our kernel was faster timed alone */
    int direct;           /* on conv_direct.cu's kernel, with `dgeom` */
    cu_dconv_geom dgeom;
};

void release(void *p)
{
    conv_state *s = (conv_state *)p;
    if (!s) return;
    if (s->x) cudnnDestroyTensorDescriptor(s->x);
    if (s->y) cudnnDestroyTensorDescriptor(s->y);
    if (s->w) cudnnDestroyFilterDescriptor(s->w);
    if (s->conv) cudnnDestroyConvolutionDescriptor(s->conv);
    cu_fused_conv_release(s->fused);
    free(s->igemm);
    free(s); /* bias: a cu_malloc allocation, freed with the session */
}

template <typename T>
__global__ void k_epilogue(T *__restrict__ y, const float *__restrict__ bias, const T *__restrict__ sum, uint32_t n,
                           uint32_t inner, uint32_t channels, int act, float alpha, float beta, int sum_first)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = to_f<T>(y[i]);
    if (bias) v += bias[(i / inner) % channels];
    if (sum && sum_first) v += to_f<T>(sum[i]);
    v = activate(act, v, alpha, beta);
    if (sum && !sum_first) v += to_f<T>(sum[i]);
    y[i] = from_f<T>(v);
}

/* Two halves at a time when a channel's plane has an even size (both share the channel). */
__global__ void k_epilogue_half2(__half2 *__restrict__ y, const float *__restrict__ bias, const __half2 *__restrict__ sum,
                                 uint32_t n2, uint32_t inner, uint32_t channels, int act, float alpha, float beta,
                                 int sum_first)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    float2 v = __half22float2(y[i]);
    float b = bias ? bias[((2 * i) / inner) % channels] : 0.f;
    v.x += b;
    v.y += b;
    float2 s = sum ? __half22float2(sum[i]) : make_float2(0.f, 0.f);
    if (sum_first) {
        v.x += s.x;
        v.y += s.y;
    }
    v.x = activate(act, v.x, alpha, beta);
    v.y = activate(act, v.y, alpha, beta);
    if (!sum_first) {
        v.x += s.x;
        v.y += s.y;
    }
    y[i] = __floats2half2_rn(v.x, v.y);
}

/* NHWC: the channel of element i is i % C; two halves at a time when C is even. */
__global__ void k_epilogue_nhwc_half2(__half2 *__restrict__ y, const float *__restrict__ bias,
                                      const __half2 *__restrict__ sum, uint32_t n2, uint32_t channels, int act,
                                      float alpha, float beta, int sum_first)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    float2 v = __half22float2(y[i]);
    if (bias) {
        uint32_t ch = (2 * i) % channels;
        v.x += bias[ch];
        v.y += bias[ch + 1];
    }
    float2 s = sum ? __half22float2(sum[i]) : make_float2(0.f, 0.f);
    if (sum_first) {
        v.x += s.x;
        v.y += s.y;
    }
    v.x = activate(act, v.x, alpha, beta);
    v.y = activate(act, v.y, alpha, beta);
    if (!sum_first) {
        v.x += s.x;
        v.y += s.y;
    }
    y[i] = __floats2half2_rn(v.x, v.y);
}

/* The weights (M, C/g, R, S) reordered to (M, R, S, cp) in the device type, uploaded; channels
 * C/g..cp-1 (padding, see layout.c) are zero. The reordering runs on the host's threads
 * (layout.c: cu_reorder_krsc): it is a large part of loading an engine file. */
zci_status upload_krsc(cu_ctx *c, int wt, int64_t cp, void **out)
{
    const zci_tensor *w = &c->g->tensors[wt];
    const int64_t M = w->dims[0], R = w->dims[2], S = w->dims[3];
    const size_t es = cu_esize(c, wt), n = (size_t)(M * cp * R * S);
    void *host = zci_calloc(n * es + 1, 1, "reordered weights");
    if (!host) return ZCI_OUT_OF_MEMORY;
    cu_reorder_krsc(w, cp, es == 2, host);
    zci_status st = cu_upload(c, host, n * es, w->name, out);
    free(host);
    return st;
}

cudnnDataType_t data_type(zci_dtype t) { return t == ZCI_FLOAT16 ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT; }

const zci_conv_params *params(const zci_node *n) { return (const zci_conv_params *)n->params; }

/* Dims of a tensor as cuDNN sees it: a 1-D convolution becomes 2-D with height 1. */
int cudnn_dims(const zci_tensor *t, int nsp, int *dims, int *strides)
{
    int nd = 0;
    dims[nd++] = (int)t->dims[0];
    dims[nd++] = (int)t->dims[1];
    if (nsp == 1) dims[nd++] = 1;
    for (int d = 2; d < t->ndim; d++) dims[nd++] = (int)t->dims[d];
    int s = 1;
    for (int d = nd - 1; d >= 0; d--) {
        strides[d] = s;
        s *= dims[d];
    }
    return nd;
}

/* The first usable entry of a ranked list: successful, within the workspace limit, and (for FP32
 * without TF32) an FMA-only kernel; when no entry says FMA, the first usable one run under the
 * descriptor's FMA math. */
bool pick(cu_ctx *c, conv_state *s, const cudnnConvolutionFwdAlgoPerf_t *perf, int got, cudnnMathType_t math,
          size_t limit)
{
    for (int pass = 0; pass < (math == CUDNN_FMA_MATH ? 2 : 1); pass++)
        for (int i = 0; i < got; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
            if (pass == 0 && math == CUDNN_FMA_MATH && perf[i].mathType != CUDNN_FMA_MATH) continue;
            cudnnMathType_t m = math == CUDNN_FMA_MATH ? CUDNN_FMA_MATH : perf[i].mathType;
            if (cudnnSetConvolutionMathType(s->conv, m) != CUDNN_STATUS_SUCCESS) continue;
            size_t ws = 0;
            if (cudnnGetConvolutionForwardWorkspaceSize(c->cudnn, s->x, s->w, s->conv, s->y, perf[i].algo, &ws) !=
                    CUDNN_STATUS_SUCCESS ||
                ws > limit)
                continue;
            s->algo = perf[i].algo;
            s->ws = ws;
            return true;
        }
    return false;
}

zci_status choose_algo(cu_ctx *c, const zci_node *n, conv_state *s, cudnnMathType_t math)
{
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int got = 0;
    const char *env = getenv("ZCI_CUDNN_FIND");
    if (env && *env == '1') {
        void *ws = NULL;
        size_t limit = kMaxWorkspace;
        if (cudaMalloc(&ws, limit) != cudaSuccess) {
            (void)cudaGetLastError();
            ws = NULL;
            limit = 0;
        }
        cudnnStatus_t e = cudnnFindConvolutionForwardAlgorithmEx(
            c->cudnn, s->x, cu_in(c, n, 0), s->w, s->w_krsc ? s->w_krsc : cu_in(c, n, 1), s->conv, s->y, c->ptr[n->out[0]],
            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf, ws, limit);
        if (ws) cudaFree(ws);
        if (e != CUDNN_STATUS_SUCCESS) return cu_cudnn_error(e, "cudnnFindConvolutionForwardAlgorithmEx");
        if (pick(c, s, perf, got, math, limit)) return ZCI_OK;
        CUDNN_TRY(cudnnSetConvolutionMathType(s->conv, math));
    }
    CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(c->cudnn, s->x, s->w, s->conv, s->y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
    if (pick(c, s, perf, got, math, kMaxWorkspace)) return ZCI_OK;
    return zci_error(ZCI_UNSUPPORTED, "cuDNN has no algorithm for this convolution within %zu MB of workspace",
                     kMaxWorkspace >> 20);
}

zci_status check(const cu_ctx *c, const zci_node *n)
{
    const zci_conv_params *p = params(n);
    if (!p) return zci_error(ZCI_INTERNAL, "Conv has no parameters");
    if (n->n_in < 2 || !ZCI_HAS_IN(n, 0) || !ZCI_HAS_IN(n, 1)) return zci_error(ZCI_UNSUPPORTED, "Conv needs X and W");
    zci_dtype t = c->dt[n->in[0]];
    if (t != ZCI_FLOAT32 && t != ZCI_FLOAT16) return zci_error(ZCI_UNSUPPORTED, "Conv on %s tensors", zci_dtype_name(t));
    if (c->dt[n->in[1]] != t || c->dt[n->out[0]] != t)
        return zci_error(ZCI_UNSUPPORTED, "Conv with mixed types");
    if (p->w.nsp < 1 || p->w.nsp > 3) return zci_error(ZCI_UNSUPPORTED, "Conv with %d spatial dimensions", p->w.nsp);
    for (int d = 0; d < p->w.nsp; d++)
        if (p->w.pad_begin[d] != p->w.pad_end[d])
            return zci_error(ZCI_UNSUPPORTED, "asymmetric padding (%lld before, %lld after along spatial axis %d)",
                             (long long)p->w.pad_begin[d], (long long)p->w.pad_end[d], d);
    if (p->activation < 0 || p->activation >= ZCI_ACT_COUNT_)
        return zci_error(ZCI_UNSUPPORTED, "fused activation %d", p->activation);
    if (p->has_bias && c->g->tensors[n->in[2]].kind != ZCI_TENSOR_CONSTANT)
        return zci_error(ZCI_UNSUPPORTED, "a bias computed at run time");
    if (p->sum_input >= 0 && (p->sum_input >= n->n_in || n->in[p->sum_input] < 0 ||
                              c->dt[n->in[p->sum_input]] != t))
        return zci_error(ZCI_UNSUPPORTED, "the fused residual input %d", p->sum_input);
    return ZCI_OK;
}

/* Channels of the buffer an NHWC convolution reads: an input read from a channel-padded copy
 * has more (zero) channels, and the weights get as many (layout.c). */
int nhwc_in_channels(const cu_ctx *c, const zci_node *n)
{
    const zci_tensor *x = ZCI_IN(c->g, n, 0);
    return (cu_node_of(c, n)->alt_in & 1) && c->alt_c[n->in[0]] ? c->alt_c[n->in[0]] : (int)x->dims[1];
}

/* The geometry for conv_direct.cu's kernel if node n is a convolution it takes (FP16 NHWC, few
 * padded input channels: the first layer of a detector; no residual) and ZCI_CUDA_NO_DIRECT is
 * unset. The choice depends only on the geometry, so an engine file's load makes it again. */
int direct_geom(const cu_ctx *c, const zci_node *n, int xc, cu_dconv_geom *gm)
{
    const zci_conv_params *p = params(n);
    const char *off = getenv("ZCI_CUDA_NO_DIRECT");
    if ((off && *off == '1') || !cu_nhwc(c, n) || c->dt[n->in[0]] != ZCI_FLOAT16 || !p || p->w.nsp != 2 ||
        p->group != 1 || p->sum_input >= 0 || p->w.dilation[0] != 1 || p->w.dilation[1] != 1)
        return 0;
    const zci_tensor *x = ZCI_IN(c->g, n, 0), *y = ZCI_OUT(c->g, n, 0);
    memset(gm, 0, sizeof *gm);
    gm->N = (int)x->dims[0];
    gm->H = (int)x->dims[2];
    gm->W = (int)x->dims[3];
    gm->C = xc;
    gm->K = (int)y->dims[1];
    gm->R = (int)p->w.kernel[0];
    gm->S = (int)p->w.kernel[1];
    gm->stride_h = (int)p->w.stride[0];
    gm->stride_w = (int)p->w.stride[1];
    gm->pad_h = (int)p->w.pad_begin[0];
    gm->pad_w = (int)p->w.pad_begin[1];
    gm->P = (int)y->dims[2];
    gm->Q = (int)y->dims[3];
    gm->ldy = c->slice_ld && c->slice_ld[n->out[0]] ? c->slice_ld[n->out[0]] : gm->K;
    /* the weights' own channels: beyond them the padded input holds zeros (layout.c) */
    gm->C_used = (int)ZCI_IN(c->g, n, 1)->dims[1] < xc ? (int)ZCI_IN(c->g, n, 1)->dims[1] : 0;
    gm->act = p->activation;
    gm->alpha = p->act_alpha;
    gm->beta = p->act_beta;
    return cu_dconv_supported(gm);
}

/* conv_direct.cu's kernel: KRSC weights and an FP32 bias (zeros when the node has none). */
zci_status build_direct(cu_ctx *c, const zci_node *n, conv_state *s, const cu_dconv_geom *gm)
{
    const zci_conv_params *p = params(n);
    ZCI_TRY(upload_krsc(c, n->in[1], gm->C, &s->w_krsc));
    if (p->has_bias) {
        ZCI_TRY(cu_upload_const(c, n->in[2], ZCI_FLOAT32, (void **)&s->bias));
    } else {
        float *zeros = (float *)zci_calloc((size_t)gm->K, sizeof(float), "bias");
        if (!zeros) return ZCI_OUT_OF_MEMORY;
        zci_status st = cu_upload(c, zeros, sizeof(float) * (size_t)gm->K, "bias", (void **)&s->bias);
        free(zeros);
        ZCI_TRY(st);
    }
    s->direct = 1;
    s->dgeom = *gm;
    c->convs_direct++;
    return ZCI_OK;
}

/* Our own kernel: the KRSC weights, an FP32 bias, and the tile shape timed (or taken from an
 * engine file); *us: its time (0 when not timed). */
zci_status build_igemm(cu_ctx *c, const zci_node *n, conv_state *s, int xc, float *us)
{
    const zci_conv_params *p = params(n);
    if (!s->w_krsc) ZCI_TRY(upload_krsc(c, n->in[1], xc, &s->w_krsc));
    if (p->has_bias && !s->bias) ZCI_TRY(cu_upload_const(c, n->in[2], ZCI_FLOAT32, (void **)&s->bias));
    ZCI_TRY(cu_igemm_build(c, n, xc, &s->igemm));
    int cfg = -2, splits = 0;
    const int f = c->igemm_forced ? c->igemm_forced[n - c->g->nodes] : 0;
    if (f > 0) {
        cfg = f % 64 - 2;
        splits = f / 64;
    }
    return cu_igemm_tune(c, n, s->igemm, s->w_krsc, s->bias, cfg, splits, us);
}

/* ZCI_CUDA_CONV: "cudnn" (cuDNN only), "igemm" (our kernel wherever it applies), anything else or
 * unset: per convolution the faster of the two, timed at planning. */
int conv_mode_is(const char *mode)
{
    const char *env = getenv("ZCI_CUDA_CONV");
    return env && !strcmp(env, mode);
}

/* Both the fused cuDNN graph (built) and our kernel for node n, each timed alone on the session's
 * buffers. Which one runs is settled for the whole model by backend.c (cu_conv_settle), which
 * times the complete graph: alone, our kernels look faster than they are between cuDNN's. */
zci_status plan_both(cu_ctx *c, const zci_node *n, conv_state *s, int xc)
{
    const zci_conv_params *p = params(n);
    float t_cudnn = 0.f, t_own = 0.f;
    ZCI_TRY(cu_fused_conv_time(c, s->fused, cu_in(c, n, 0), s->w_krsc, s->bias_fused,
                               p->sum_input >= 0 ? cu_in(c, n, p->sum_input) : NULL, c->ptr[n->out[0]], &t_cudnn));
    ZCI_TRY(build_igemm(c, n, s, xc, &t_own));
    s->both = 1;
    s->prefer_own = t_own > 0.f && t_own < t_cudnn;
    c->convs_both++;
    char how[64];
    zci_log(c->verbose, "%s: cuDNN fused %.1f us, ours (%s) %.1f us alone", zci_node_desc(c->g, n), t_cudnn,
            cu_igemm_describe(s->igemm, how, sizeof how), t_own);
    return ZCI_OK;
}

zci_status build(cu_ctx *c, const zci_node *n, conv_state *s)
{
    const zci_graph *g = c->g;
    const zci_conv_params *p = params(n);
    const zci_tensor *x = ZCI_IN(g, n, 0), *w = ZCI_IN(g, n, 1), *y = ZCI_OUT(g, n, 0);
    const int nsp = p->w.nsp;
    const cudnnDataType_t dt = data_type(c->dt[n->in[0]]);
    int dims[8], strides[8];
    s->nhwc = cu_nhwc(c, n);
    cu_dconv_geom gm;
    if (s->nhwc && direct_geom(c, n, nhwc_in_channels(c, n), &gm)) {
        c->convs_epilogue += p->has_bias || p->activation != ZCI_ACT_NONE;
        return build_direct(c, n, s, &gm);
    }
    const int own_ok = s->nhwc && cu_igemm_eligible(c, n, nhwc_in_channels(c, n));
    const int forced_own = c->igemm_forced && c->igemm_forced[n - c->g->nodes] > 0;
    if (own_ok && (conv_mode_is("igemm") || forced_own)) {
        c->convs_epilogue += p->has_bias || p->activation != ZCI_ACT_NONE || p->sum_input >= 0;
        ZCI_TRY(build_igemm(c, n, s, nhwc_in_channels(c, n), NULL));
        c->convs_igemm++;
        return ZCI_OK;
    }
    ZCI_TRY(cu_cudnn_handle(c));
    CUDNN_TRY(cudnnCreateTensorDescriptor(&s->x));
    CUDNN_TRY(cudnnCreateTensorDescriptor(&s->y));
    CUDNN_TRY(cudnnCreateFilterDescriptor(&s->w));
    CUDNN_TRY(cudnnCreateConvolutionDescriptor(&s->conv));
    if (s->nhwc) {
        /* layout.c runs only 2-D convolutions with constant weights in NHWC */
        const int xc = nhwc_in_channels(c, n);
        const int wc = xc == (int)x->dims[1] ? (int)w->dims[1] : xc;
        CUDNN_TRY(cudnnSetTensor4dDescriptor(s->x, CUDNN_TENSOR_NHWC, dt, (int)x->dims[0], xc, (int)x->dims[2],
                                             (int)x->dims[3]));
        CUDNN_TRY(cudnnSetTensor4dDescriptor(s->y, CUDNN_TENSOR_NHWC, dt, (int)y->dims[0], (int)y->dims[1],
                                             (int)y->dims[2], (int)y->dims[3]));
        CUDNN_TRY(cudnnSetFilter4dDescriptor(s->w, dt, CUDNN_TENSOR_NHWC, (int)w->dims[0], wc, (int)w->dims[2],
                                             (int)w->dims[3]));
        ZCI_TRY(upload_krsc(c, n->in[1], wc, &s->w_krsc));
    } else {
        int nd = cudnn_dims(x, nsp, dims, strides);
        CUDNN_TRY(cudnnSetTensorNdDescriptor(s->x, dt, nd, dims, strides));
        nd = cudnn_dims(y, nsp, dims, strides);
        CUDNN_TRY(cudnnSetTensorNdDescriptor(s->y, dt, nd, dims, strides));
        nd = cudnn_dims(w, nsp, dims, strides);
        CUDNN_TRY(cudnnSetFilterNdDescriptor(s->w, dt, CUDNN_TENSOR_NCHW, nd, dims));
    }
    int pads[3], cstrides[3], dil[3], k = 0;
    if (nsp == 1) {
        pads[k] = 0;
        cstrides[k] = 1;
        dil[k] = 1;
        k++;
    }
    for (int d = 0; d < nsp; d++, k++) {
        pads[k] = (int)p->w.pad_begin[d];
        cstrides[k] = (int)p->w.stride[d];
        dil[k] = (int)p->w.dilation[d];
    }
    CUDNN_TRY(cudnnSetConvolutionNdDescriptor(s->conv, k, pads, cstrides, dil, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    CUDNN_TRY(cudnnSetConvolutionGroupCount(s->conv, (int)p->group));
    cudnnMathType_t math = dt == CUDNN_DATA_HALF ? CUDNN_TENSOR_OP_MATH : c->allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    CUDNN_TRY(cudnnSetConvolutionMathType(s->conv, math));
    const int epilogue = p->has_bias || p->activation != ZCI_ACT_NONE || p->sum_input >= 0;
    c->convs_epilogue += epilogue;
    const char *no_fuse = getenv("ZCI_CUDA_NO_FUSE");
    if (s->nhwc && dt == CUDNN_DATA_HALF && epilogue && !(no_fuse && *no_fuse == '1')) {
        /* the bias in FP16 first (the form cuDNN's fusion samples use), else FP32 */
        const char *b32 = getenv("ZCI_CUDA_FUSE_BIAS32");
        const int first_half = !(b32 && *b32 == '1');
        for (int k = 0; k < 2 && !s->fused; k++) {
            const int half = k == 0 ? first_half : !first_half;
            ZCI_TRY(cu_fused_conv_build(c, n, half, kMaxWorkspace, &s->fused));
            if (s->fused && p->has_bias)
                ZCI_TRY(cu_upload_const(c, n->in[2], half ? ZCI_FLOAT16 : ZCI_FLOAT32, &s->bias_fused));
            if (!p->has_bias) break; /* the bias type cannot matter */
        }
        if (s->fused) {
            /* from an engine file: its choice (cuDNN here; our kernel was taken above) */
            if (own_ok && !c->from_engine) ZCI_TRY(plan_both(c, n, s, nhwc_in_channels(c, n)));
            else c->convs_fused++;
            return ZCI_OK;
        }
    }
    if (own_ok) { /* our kernel instead of cuDNN's convolution plus our epilogue kernel */
        ZCI_TRY(build_igemm(c, n, s, nhwc_in_channels(c, n), NULL));
        c->convs_igemm++;
        return ZCI_OK;
    }
    ZCI_TRY(choose_algo(c, n, s, math));
    cu_need_workspace(c, s->ws);
    s->bias = NULL;
    if (p->has_bias) ZCI_TRY(cu_upload_const(c, n->in[2], ZCI_FLOAT32, (void **)&s->bias));
    s->act = p->activation;
    s->alpha = p->act_alpha;
    s->beta = p->act_beta;
    s->sum = p->sum_input; /* the node's input number */
    s->sum_first = p->sum_first;
    int64_t inner = 1;
    for (int d = 2; d < y->ndim; d++) inner *= y->dims[d];
    s->inner = (uint32_t)inner;
    s->channels = (uint32_t)y->dims[1];
    s->epilogue = s->bias || s->act != ZCI_ACT_NONE || s->sum >= 0;
    return ZCI_OK;
}

} // namespace

extern "C" int cu_conv_may_write_slice(const cu_ctx *c, const zci_node *n)
{
    return n->params && cu_nhwc(c, n) && cu_igemm_eligible(c, n, nhwc_in_channels(c, n));
}

extern "C" int cu_conv_may_fuse(const cu_ctx *c, const zci_node *n)
{
    cu_dconv_geom gm;
    if (!strcmp(n->op_type, "Conv") && n->params && cu_nhwc(c, n) && direct_geom(c, n, nhwc_in_channels(c, n), &gm))
        return 0;
    if (!strcmp(n->op_type, "Conv") && n->params && cu_nhwc(c, n) && cu_igemm_eligible(c, n, nhwc_in_channels(c, n)))
        return !conv_mode_is("igemm") && !(c->igemm_forced && c->igemm_forced[n - c->g->nodes] > 0);
    return 1;
}

extern "C" int cu_conv_igemm_choice(const cu_ctx *c, const zci_node *n, const void *state, int *cfg, int *splits)
{
    (void)c;
    if (strcmp(n->op_type, "Conv") || !state) return 0;
    const conv_state *s = (const conv_state *)state;
    if (!s->igemm) return 0;
    cu_igemm_choice(s->igemm, cfg, splits);
    return 1;
}

extern "C" void cu_conv_settle(cu_ctx *c, const zci_node *n, void *state, int variant)
{
    conv_state *s = (conv_state *)state;
    if (strcmp(n->op_type, "Conv") || !s || !s->both) return;
    const int own = variant == CU_CONV_OWN || (variant == CU_CONV_EACH && s->prefer_own);
    if (own) {
        cu_fused_conv_release(s->fused);
        s->fused = NULL;
        c->convs_igemm++;
    } else {
        free(s->igemm);
        s->igemm = NULL;
        c->convs_fused++;
    }
    s->both = 0;
}

extern "C" void cu_conv_prewarm(cu_ctx *c)
{
    const char *no_fuse = getenv("ZCI_CUDA_NO_FUSE"), *b32 = getenv("ZCI_CUDA_FUSE_BIAS32");
    if (c->fp16 && !(no_fuse && *no_fuse == '1')) cu_fused_prewarm(c, !(b32 && *b32 == '1'), kMaxWorkspace);
}

extern "C" zci_status cu_conv_supports(const cu_ctx *c, const zci_node *n) { return check(c, n); }

extern "C" zci_status cu_conv_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    ZCI_TRY(check(c, n));
    conv_state *s = (conv_state *)zci_calloc(1, sizeof(conv_state), "Conv state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    zci_status st = build(c, n, s);
    if (st != ZCI_OK) {
        release(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

extern "C" void cu_conv_release(void *state) { release(state); }

extern "C" zci_status cu_conv_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t stream)
{
    conv_state *s = (conv_state *)state;
    const int yt = n->out[0];
    const uint32_t count = (uint32_t)cu_numel(c, yt);
    if (!count) return ZCI_OK;
    const int own = s->both ? c->conv_variant == CU_CONV_OWN || (c->conv_variant == CU_CONV_EACH && s->prefer_own)
                            : s->igemm != NULL;
    if (s->direct) {
        CU_TRY(cu_dconv_run(&s->dgeom, cu_in(c, n, 0), s->w_krsc, s->bias, c->ptr[yt], stream));
        return ZCI_OK;
    }
    if (own) return cu_igemm_launch(c, n, s->igemm, s->w_krsc, s->bias, stream);
    if (s->fused) {
        const zci_conv_params *p = params(n);
        return cu_fused_conv_launch(c, s->fused, cu_in(c, n, 0), s->w_krsc, s->bias_fused,
                                    p->sum_input >= 0 ? cu_in(c, n, p->sum_input) : NULL, c->ptr[yt]);
    }
    const float one = 1.f, zero = 0.f;
    void *y = c->ptr[yt];
    CUDNN_TRY(cudnnConvolutionForward(c->cudnn, &one, s->x, cu_in(c, n, 0), s->w, s->w_krsc ? s->w_krsc : cu_in(c, n, 1),
                                      s->conv, s->algo, c->workspace, s->ws, &zero, s->y, y));
    if (!s->epilogue) return ZCI_OK;
    const void *sum = s->sum >= 0 ? cu_in(c, n, s->sum) : NULL;
    if (s->nhwc) {
        /* channel of element i: i % C */
        if (c->dt[yt] == ZCI_FLOAT16 && (s->channels & 1) == 0 && ((uintptr_t)y & 3) == 0 && ((uintptr_t)sum & 3) == 0)
            k_epilogue_nhwc_half2<<<blocks_for(count / 2), kThreads, 0, stream>>>(
                (__half2 *)y, s->bias, (const __half2 *)sum, count / 2, s->channels, s->act, s->alpha, s->beta,
                s->sum_first);
        else if (c->dt[yt] == ZCI_FLOAT16)
            k_epilogue<__half><<<blocks_for(count), kThreads, 0, stream>>>((__half *)y, s->bias, (const __half *)sum, count,
                                                                          1, s->channels, s->act, s->alpha, s->beta,
                                                                          s->sum_first);
        else
            k_epilogue<float><<<blocks_for(count), kThreads, 0, stream>>>((float *)y, s->bias, (const float *)sum, count, 1,
                                                                         s->channels, s->act, s->alpha, s->beta,
                                                                         s->sum_first);
        CU_LAUNCHED("conv epilogue");
        return ZCI_OK;
    }
    if (c->dt[yt] == ZCI_FLOAT16) {
        if ((s->inner & 1) == 0 && ((uintptr_t)y & 3) == 0 && ((uintptr_t)sum & 3) == 0)
            k_epilogue_half2<<<blocks_for(count / 2), kThreads, 0, stream>>>((__half2 *)y, s->bias, (const __half2 *)sum,
                                                                            count / 2, s->inner, s->channels, s->act,
                                                                            s->alpha, s->beta, s->sum_first);
        else
            k_epilogue<__half><<<blocks_for(count), kThreads, 0, stream>>>((__half *)y, s->bias, (const __half *)sum, count,
                                                                          s->inner, s->channels, s->act, s->alpha,
                                                                          s->beta, s->sum_first);
    } else {
        k_epilogue<float><<<blocks_for(count), kThreads, 0, stream>>>((float *)y, s->bias, (const float *)sum, count,
                                                                     s->inner, s->channels, s->act, s->alpha, s->beta,
                                                                     s->sum_first);
    }
    CU_LAUNCHED("conv epilogue");
    return ZCI_OK;
}
