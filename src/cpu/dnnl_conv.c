/* dnnl_conv.c: convolutions through oneDNN (see dnnl_conv.h).
 *
 * Layouts, measured on YOLOv5s's 60 convolutions (2 cores, AVX-512 EPYC, oneDNN 2.6; see
 * tests/bench_conv.c): oneDNN's blocked kernels (brgconv, jit) with a reorder from and to the
 * graph's NCHW around each convolution beat plain NCHW ("gemm:jit", im2col + GEMM) on every layer,
 * 1x1 ones included, and by far once SiLU is fused (gemm:jit applies post-ops in a slow scalar
 * pass). The reorders still cost about a fifth of the convolution time, hence the tensors conv.c
 * keeps blocked between convolutions: where the graph's side is blocked the primitive's must be
 * the same, elsewhere it is left to oneDNN ("any").
 *
 * The residual of the fused epilogue enters one of two ways:
 *  - a binary-add post-op reading it where it lies, when its layout is the primitive's output
 *    layout (both blocked), or after a reorder into the workspace when the output is blocked but
 *    the residual is not. oneDNN 2.6's blocked jit kernels take "activation, then residual" only
 *    this way (with a sum post-op they fall to the reference kernel);
 *  - a sum post-op, the residual first reordered into the primitive's output, when everything is
 *    plain on the graph's side (the layouts oneDNN picks for "any" are not known in advance).
 *
 * 3x3 stride-1 convolutions on blocked tensors run as Winograd convolutions where oneDNN has
 * them (F(4x4, 3x3) or F(2x2, 3x3), its choice): on YOLOv5s's eleven such layers they take half
 * the time of the direct kernels. Those kernels take no activation post-op, so the activation and
 * the residual run as a pass of their own over the output (winograd_epilogue). Their rounding
 * differs from a direct convolution's: YOLOv5s's relative error against onnxruntime went from
 * 3.4e-6 to 3.7e-6. ZCI_CPU_NO_WINOGRAD=1 keeps the direct kernels. */
#ifdef ZCI_HAVE_DNNL

#include "cpu/dnnl_conv.h"

#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* For winograd_epilogue: its selects and exponential vectorise only when both sides may be
 * evaluated (nothing here reads floating-point exception flags); jump threading would copy the
 * SiLU loop's tail for each clamp of the exponent's argument, and the copies, computed in every
 * lane and blended, divide by 1 + e^88, whose denormal quotients cost microcode assists (4x
 * slower); contraction gives the polynomial its FMAs. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "no-thread-jumps", "fp-contract=fast")
#endif
/* after the pragma: an inline function compiled under other options would not inline */
#include "cpu/fast_exp.h"

enum residual_mode {
    RESIDUAL_NONE,
    RESIDUAL_BINARY, /* binary-add post-op on res_mem (the residual, or its reordered copy) */
    RESIDUAL_SUM,    /* residual reordered into the primitive's dst, then a sum post-op */
};

struct zci_dnnl_conv {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t conv;
    dnnl_primitive_t src_reorder; /* x (graph layout) -> the primitive's src; NULL: it reads x */
    dnnl_primitive_t dst_reorder; /* the primitive's dst -> y (graph layout); NULL: it writes y */
    dnnl_primitive_t res_reorder; /* residual (graph layout) -> where the epilogue reads it */
    /* memories whose handle is set per run (the graph's buffers) */
    dnnl_memory_t x_mem, y_mem, bias_mem, sum_mem;
    /* the reordered weights, owned here */
    dnnl_memory_t weights_mem;
    void *weights_buf;
    /* memories over the caller's workspace: the primitive's src and dst when they differ from the
     * graph's, the residual's copy, the scratchpad */
    dnnl_memory_t src_mem, dst_mem, res_mem, scratch_mem;
    size_t src_off, dst_off, res_off, scratch_off, workspace_bytes;
    int has_bias;
    int residual;    /* enum residual_mode */
    int binary_arg;  /* the binary post-op's execution argument (0: none) */
    int winograd;    /* the primitive computes conv + bias only; winograd_epilogue does the rest */
    int activation;  /* zci_activation, for winograd_epilogue */
    size_t out_len;  /* floats in the primitive's dst, for winograd_epilogue */
    int nthreads;
    char impl[64];
};

/* ---------------------------------------------------------------- helpers */

static zci_status dnnl_fail(dnnl_status_t s, const char *what)
{
    switch (s) {
    case dnnl_unimplemented:
        return zci_error(ZCI_UNSUPPORTED, "oneDNN: %s: no implementation for this convolution", what);
    case dnnl_out_of_memory: return zci_error(ZCI_OUT_OF_MEMORY, "oneDNN: %s: out of memory", what);
    default: return zci_error(ZCI_INTERNAL, "oneDNN: %s failed with status %d", what, (int)s);
    }
}

#define DNNL_TRY(call, what)                                                                                       \
    do {                                                                                                           \
        dnnl_status_t dnnl_try_s_ = (call);                                                                        \
        if (dnnl_try_s_ != dnnl_success) {                                                                         \
            st = dnnl_fail(dnnl_try_s_, what);                                                                     \
            goto done;                                                                                             \
        }                                                                                                          \
    } while (0)

/* oneDNN reads its thread count from the calling thread's OpenMP setting; this pair scopes it. */
static int threads_enter(int n)
{
#ifdef _OPENMP
    int old = omp_get_max_threads();
    omp_set_num_threads(n);
    return old;
#else
    (void)n;
    return 1;
#endif
}

static void threads_leave(int old)
{
#ifdef _OPENMP
    omp_set_num_threads(old);
#else
    (void)old;
#endif
}

int zci_dnnl_block_size(void)
{
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    if ((isa & (unsigned)dnnl_cpu_isa_avx512_core) == (unsigned)dnnl_cpu_isa_avx512_core) return 16;
    if ((isa & (unsigned)dnnl_cpu_isa_avx2) == (unsigned)dnnl_cpu_isa_avx2) return 8;
    return 0;
}

static dnnl_format_tag_t plain_tag(int ndims)
{
    switch (ndims) {
    case 3: return dnnl_abc;
    case 4: return dnnl_abcd;
    case 5: return dnnl_abcde;
    default: return dnnl_abcdef;
    }
}

/* An owned buffer of md's size, and a memory over it. */
static zci_status owned_memory(const dnnl_memory_desc_t *md, dnnl_engine_t engine, void **buf, dnnl_memory_t *mem)
{
    size_t bytes = dnnl_memory_desc_get_size(md);
    *buf = aligned_alloc(64, zci_align(bytes ? bytes : 64, 64));
    if (!*buf) return zci_error(ZCI_OUT_OF_MEMORY, "oneDNN convolution: cannot allocate %zu bytes", bytes);
    dnnl_status_t s = dnnl_memory_create(mem, md, engine, *buf);
    return s == dnnl_success ? ZCI_OK : dnnl_fail(s, "memory creation");
}

/* A memory placed in the workspace at the next 64-byte aligned offset (bound per run). */
static zci_status workspace_memory(const dnnl_memory_desc_t *md, dnnl_engine_t engine, dnnl_memory_t *mem,
                                   size_t *offset, size_t *total)
{
    *offset = *total;
    *total += zci_align(dnnl_memory_desc_get_size(md), 64);
    dnnl_status_t s = dnnl_memory_create(mem, md, engine, DNNL_MEMORY_NONE);
    return s == dnnl_success ? ZCI_OK : dnnl_fail(s, "memory creation");
}

static zci_status make_reorder(const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, dnnl_engine_t engine,
                               const_dnnl_primitive_attr_t attr, dnnl_primitive_t *out)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr);
    if (s == dnnl_success) s = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return s == dnnl_success ? ZCI_OK : dnnl_fail(s, "reorder creation");
}

static zci_status exec_reorder(dnnl_primitive_t r, dnnl_stream_t stream, dnnl_memory_t from, dnnl_memory_t to)
{
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    dnnl_status_t s = dnnl_primitive_execute(r, stream, 2, args);
    return s == dnnl_success ? ZCI_OK : dnnl_fail(s, "reorder");
}

static int eltwise_alg(int act, dnnl_alg_kind_t *alg, float *alpha, float *beta, float a, float b)
{
    *alpha = 0.0f;
    *beta = 0.0f;
    switch (act) {
    case ZCI_ACT_RELU: *alg = dnnl_eltwise_relu; return 1;
    case ZCI_ACT_LEAKY_RELU:
        *alg = dnnl_eltwise_relu;
        *alpha = a;
        return 1;
    case ZCI_ACT_SILU:
        *alg = dnnl_eltwise_swish;
        *alpha = 1.0f;
        return 1;
    case ZCI_ACT_CLIP:
        *alg = dnnl_eltwise_clip;
        *alpha = a;
        *beta = b;
        return 1;
    case ZCI_ACT_HARDSWISH: *alg = dnnl_eltwise_hardswish; return 1;
    case ZCI_ACT_SIGMOID: *alg = dnnl_eltwise_logistic; return 1;
    default: return 0;
    }
}

/* ---------------------------------------------------------------- creation */

int zci_dnnl_conv_supported(const zci_conv_params *p)
{
    /* oneDNN 2.6's brgconv crashes (SIGSEGV in its JIT code) when a residual and an activation
     * are both fused and some output's window lies wholly in the padding (a pad as wide as the
     * kernel's extent) */
    if (p->sum_input >= 0 && p->activation != ZCI_ACT_NONE)
        for (int i = 0; i < p->w.nsp; i++) {
            int64_t extent = (p->w.kernel[i] - 1) * p->w.dilation[i] + 1;
            if (p->w.pad_begin[i] >= extent || p->w.pad_end[i] >= extent) return 0;
        }
    return 1;
}

/* How the graph stores a 4-D activation: plain, or channel-blocked by `block`. */
static dnnl_format_tag_t graph_tag(int ndims, int block)
{
    if (!block) return plain_tag(ndims);
    return block == 16 ? dnnl_aBcd16b : dnnl_aBcd8b;
}

/* A fresh attribute with the epilogue as post-ops: oneDNN 2.6 keeps old post-ops when an
 * attribute's are set again, so each attempt builds its own. */
static zci_status epilogue_attr(const zci_conv_params *p, int residual, const dnnl_memory_desc_t *res_md,
                                dnnl_primitive_attr_t *out, int *binary_index)
{
    zci_status st = ZCI_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_alg_kind_t alg = dnnl_eltwise_relu;
    float ea, eb;
    int has_act = eltwise_alg(p->activation, &alg, &ea, &eb, p->act_alpha, p->act_beta);
    int n = 0;
    *binary_index = -1;
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attribute creation");
    DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode");
    DNNL_TRY(dnnl_post_ops_create(&po), "post-op creation");
    for (int pass = 0; pass < 2; pass++) {
        /* residual then activation (sum_first), or activation then residual */
        int residual_now = (pass == 0) == (p->sum_first != 0);
        if (residual_now && residual == RESIDUAL_SUM) {
            DNNL_TRY(dnnl_post_ops_append_sum(po, 1.0f), "sum post-op");
            n++;
        } else if (residual_now && residual == RESIDUAL_BINARY) {
            DNNL_TRY(dnnl_post_ops_append_binary(po, dnnl_binary_add, res_md), "binary post-op");
            *binary_index = n++;
        } else if (!residual_now && has_act) {
            DNNL_TRY(dnnl_post_ops_append_eltwise(po, 1.0f, alg, ea, eb), "activation post-op");
            n++;
        }
    }
    DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, po), "post-ops");
done:
    dnnl_post_ops_destroy(po);
    if (st != ZCI_OK) {
        dnnl_primitive_attr_destroy(attr);
        attr = NULL;
    }
    *out = attr;
    return st;
}

static int valid_block(int b) { return b == 0 || b == 8 || b == 16; }

static int winograd_disabled(void)
{
    const char *e = getenv("ZCI_CPU_NO_WINOGRAD");
    return e && *e && strcmp(e, "0");
}

/* Whether a Winograd convolution may stand for p: 3x3, stride 1, no dilation, no groups, and an
 * epilogue winograd_epilogue applies (none, ReLU or SiLU, then the residual if any). */
static int winograd_candidate(const zci_conv_params *p)
{
    if (p->w.nsp != 2 || p->group != 1 || winograd_disabled()) return 0;
    for (int i = 0; i < 2; i++)
        if (p->w.kernel[i] != 3 || p->w.stride[i] != 1 || p->w.dilation[i] != 1) return 0;
    if (p->activation != ZCI_ACT_NONE && p->activation != ZCI_ACT_RELU && p->activation != ZCI_ACT_SILU) return 0;
    return !(p->sum_input >= 0 && p->sum_first && p->activation != ZCI_ACT_NONE);
}

/* oneDNN's Winograd convolution for the direct one's descriptor, without post-ops; NULL into
 * *out when oneDNN has none, or when it would not write y's layout. */
static zci_status winograd_pd(const zci_dnnl_conv *c, const dnnl_convolution_desc_t *direct,
                              const dnnl_memory_desc_t *y_md, dnnl_primitive_desc_t *out)
{
    zci_status st = ZCI_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_convolution_desc_t cd = *direct;
    cd.alg_kind = dnnl_convolution_winograd;
    *out = NULL;
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attribute creation");
    DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode");
    if (dnnl_primitive_desc_create(out, &cd, attr, c->engine, NULL) != dnnl_success) {
        *out = NULL;
    } else if (!dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(*out, dnnl_query_dst_md, 0), y_md)) {
        dnnl_primitive_desc_destroy(*out);
        *out = NULL;
    }
done:
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* y = act(t) + r (r may be NULL) over n floats, r and y the same layout as t; y may be t or r. */
static void winograd_epilogue(int act, float *y, const float *t, const float *r, size_t n, int nthreads)
{
    enum { CHUNK = 4096 };
    const int64_t chunks = (int64_t)((n + CHUNK - 1) / CHUNK);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t ci = 0; ci < chunks; ci++) {
        const size_t lo = (size_t)ci * CHUNK, m = n - lo < CHUNK ? n - lo : CHUNK;
        float *yc = y + lo;
        const float *tc = t + lo, *rc = r ? r + lo : NULL;
        /* ivdep: y may be t or r exactly (elementwise, so safe), which GCC's overlap test rejects */
        switch (act) {
        case ZCI_ACT_SILU:
            if (rc)
#pragma GCC ivdep
                for (size_t i = 0; i < m; i++) yc[i] = tc[i] / (1.0f + zci_exp_fast(-tc[i])) + rc[i];
            else
#pragma GCC ivdep
                for (size_t i = 0; i < m; i++) yc[i] = tc[i] / (1.0f + zci_exp_fast(-tc[i]));
            break;
        case ZCI_ACT_RELU:
            if (rc)
#pragma GCC ivdep
                for (size_t i = 0; i < m; i++) yc[i] = (tc[i] > 0.0f ? tc[i] : 0.0f) + rc[i];
            else
#pragma GCC ivdep
                for (size_t i = 0; i < m; i++) yc[i] = tc[i] > 0.0f ? tc[i] : 0.0f;
            break;
        default:
            if (rc)
#pragma GCC ivdep
                for (size_t i = 0; i < m; i++) yc[i] = tc[i] + rc[i];
            break;
        }
    }
}

zci_status zci_dnnl_conv_create(const zci_conv_params *p, const float *weights, int src_block, int dst_block,
                                int res_block, int nthreads, zci_dnnl_conv **out)
{
    *out = NULL;
    zci_status st = ZCI_OK;
    if (!zci_dnnl_conv_supported(p))
        return zci_error(ZCI_UNSUPPORTED, "oneDNN: a fused residual and activation with a pad as wide as the "
                                          "kernel (oneDNN 2.6 crashes on it)");
    int has_sum = p->sum_input >= 0;
    if (!has_sum) res_block = 0;
    if (!valid_block(src_block) || !valid_block(dst_block) || !valid_block(res_block) ||
        ((src_block || dst_block || res_block) && p->w.nsp != 2))
        return zci_error(ZCI_INTERNAL, "oneDNN convolution: channel blocks %d, %d, %d on a %d-D convolution",
                         src_block, dst_block, res_block, p->w.nsp);
    zci_dnnl_conv *c = zci_calloc(1, sizeof *c, "oneDNN convolution");
    if (!c) return ZCI_OUT_OF_MEMORY;
    c->nthreads = nthreads < 1 ? 1 : nthreads;
    c->has_bias = p->has_bias;
    int old_threads = threads_enter(c->nthreads);

    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_t w_plain_mem = NULL;
    dnnl_primitive_t w_reorder = NULL;

    const int nsp = p->w.nsp, ndims = 2 + nsp;
    const int grouped = p->group > 1;
    dnnl_dims_t src_dims = {p->batch, p->in_ch}, dst_dims = {p->batch, p->out_ch}, w_dims, bias_dims = {p->out_ch};
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    int wd = 0;
    if (grouped) w_dims[wd++] = p->group;
    w_dims[wd++] = p->out_ch / p->group;
    w_dims[wd++] = p->in_ch / p->group;
    for (int i = 0; i < nsp; i++) {
        src_dims[2 + i] = p->w.in[i];
        dst_dims[2 + i] = p->w.out[i];
        w_dims[wd++] = p->w.kernel[i];
        strides[i] = p->w.stride[i];
        dilates[i] = p->w.dilation[i] - 1; /* oneDNN counts the gaps, ONNX the step */
        pad_l[i] = p->w.pad_begin[i];
        pad_r[i] = p->w.pad_end[i];
    }

    /* x_md, y_md, r_md: input, output and residual as the graph stores them. The primitive's own
     * src and dst are left to oneDNN where the graph's side is plain, and blocked where it is
     * blocked; with a blocked input or residual the output is computed blocked too (oneDNN 2.6
     * otherwise picks mismatched layouts and its reference kernel), then reordered if need be. */
    int block = src_block ? src_block : dst_block ? dst_block : res_block;
    dnnl_memory_desc_t src_md, dst_md, w_any, bias_md, x_md, y_md, r_md, w_plain;
    DNNL_TRY(dnnl_engine_create(&c->engine, dnnl_cpu, 0), "engine creation");
    DNNL_TRY(dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags), "stream creation");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&x_md, ndims, src_dims, dnnl_f32, graph_tag(ndims, src_block)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&y_md, ndims, dst_dims, dnnl_f32, graph_tag(ndims, dst_block)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&r_md, ndims, dst_dims, dnnl_f32, graph_tag(ndims, res_block)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_plain, wd, w_dims, dnnl_f32, plain_tag(wd)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&bias_md, 1, bias_dims, dnnl_f32, dnnl_a), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&src_md, ndims, src_dims, dnnl_f32,
                                          src_block ? graph_tag(ndims, src_block) : dnnl_format_tag_any),
             "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&dst_md, ndims, dst_dims, dnnl_f32,
                                          block ? graph_tag(ndims, block) : dnnl_format_tag_any),
             "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_any, wd, w_dims, dnnl_f32, dnnl_format_tag_any), "descriptor");

    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                        &src_md, &w_any, p->has_bias ? &bias_md : NULL, &dst_md,
                                                        strides, dilates, pad_l, pad_r),
             "convolution descriptor");

    /* the residual's way in: see the top of this file */
    c->residual = !has_sum ? RESIDUAL_NONE : block ? RESIDUAL_BINARY : RESIDUAL_SUM;
    dnnl_memory_desc_t res_md;
    if (block) DNNL_TRY(dnnl_memory_desc_init_by_tag(&res_md, ndims, dst_dims, dnnl_f32, graph_tag(ndims, block)), "descriptor");
    int binary_index = -1;
    if (block && winograd_candidate(p) && (st = winograd_pd(c, &cd, &y_md, &pd)) != ZCI_OK) goto done;
    c->winograd = pd != NULL;
    c->activation = p->activation;
    if (!c->winograd) {
        if ((st = epilogue_attr(p, c->residual, &res_md, &attr, &binary_index)) != ZCI_OK) goto done;
        DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, attr, c->engine, NULL), "convolution");
    }
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) impl = "";
    snprintf(c->impl, sizeof c->impl, "%s", impl);
    c->binary_arg = binary_index >= 0 ? (DNNL_ARG_ATTR_MULTIPLE_POST_OP(binary_index) | DNNL_ARG_SRC_1) : 0;
    DNNL_TRY(dnnl_primitive_create(&c->conv, pd), "convolution creation");

    const dnnl_memory_desc_t *psrc = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *pdst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *pw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *pscratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);

    DNNL_TRY(dnnl_memory_create(&c->x_mem, &x_md, c->engine, DNNL_MEMORY_NONE), "memory creation");
    DNNL_TRY(dnnl_memory_create(&c->y_mem, &y_md, c->engine, DNNL_MEMORY_NONE), "memory creation");
    if (p->has_bias) DNNL_TRY(dnnl_memory_create(&c->bias_mem, &bias_md, c->engine, DNNL_MEMORY_NONE), "memory creation");
    if (!dnnl_memory_desc_equal(psrc, &x_md)) {
        if ((st = workspace_memory(psrc, c->engine, &c->src_mem, &c->src_off, &c->workspace_bytes)) != ZCI_OK) goto done;
        if ((st = make_reorder(&x_md, psrc, c->engine, NULL, &c->src_reorder)) != ZCI_OK) goto done;
    }
    c->out_len = dnnl_memory_desc_get_size(pdst) / sizeof(float);
    if (!dnnl_memory_desc_equal(pdst, &y_md)) {
        if ((st = workspace_memory(pdst, c->engine, &c->dst_mem, &c->dst_off, &c->workspace_bytes)) != ZCI_OK) goto done;
        if ((st = make_reorder(pdst, &y_md, c->engine, NULL, &c->dst_reorder)) != ZCI_OK) goto done;
    } else if (c->winograd && has_sum) {
        /* the residual may lie in y's buffer: the convolution writes aside, the epilogue into y */
        if ((st = workspace_memory(pdst, c->engine, &c->dst_mem, &c->dst_off, &c->workspace_bytes)) != ZCI_OK) goto done;
    }
    if (has_sum) {
        DNNL_TRY(dnnl_memory_create(&c->sum_mem, &r_md, c->engine, DNNL_MEMORY_NONE), "memory creation");
        if (c->residual == RESIDUAL_SUM) {
            /* the sum post-op accumulates into dst: the residual goes there before the run */
            if ((st = make_reorder(&r_md, pdst, c->engine, NULL, &c->res_reorder)) != ZCI_OK) goto done;
        } else if (!dnnl_memory_desc_equal(&r_md, &res_md)) {
            if ((st = workspace_memory(&res_md, c->engine, &c->res_mem, &c->res_off, &c->workspace_bytes)) != ZCI_OK)
                goto done;
            if ((st = make_reorder(&r_md, &res_md, c->engine, NULL, &c->res_reorder)) != ZCI_OK) goto done;
        }
    }
    if (dnnl_memory_desc_get_size(pscratch) > 0 &&
        (st = workspace_memory(pscratch, c->engine, &c->scratch_mem, &c->scratch_off, &c->workspace_bytes)) != ZCI_OK)
        goto done;

    /* weights: reordered once into the primitive's layout; the reorder only reads the source */
    if ((st = owned_memory(pw, c->engine, &c->weights_buf, &c->weights_mem)) != ZCI_OK) goto done;
    DNNL_TRY(dnnl_memory_create(&w_plain_mem, &w_plain, c->engine, (void *)weights), "memory creation");
    if ((st = make_reorder(&w_plain, pw, c->engine, NULL, &w_reorder)) != ZCI_OK) goto done;
    if ((st = exec_reorder(w_reorder, c->stream, w_plain_mem, c->weights_mem)) != ZCI_OK) goto done;
    DNNL_TRY(dnnl_stream_wait(c->stream), "weight reorder");

done:
    dnnl_primitive_destroy(w_reorder);
    dnnl_memory_destroy(w_plain_mem);
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    threads_leave(old_threads);
    if (st != ZCI_OK) {
        zci_dnnl_conv_free(c);
        return st;
    }
    *out = c;
    return ZCI_OK;
}

/* ---------------------------------------------------------------- run */

zci_status zci_dnnl_conv_run(zci_dnnl_conv *c, const float *x, const float *bias, const float *sum, float *y,
                             void *workspace)
{
    zci_status st = ZCI_OK;
    if (c->workspace_bytes && !workspace)
        return zci_error(ZCI_INVALID_ARGUMENT, "oneDNN convolution: a %zu-byte workspace is required",
                         c->workspace_bytes);
    int old_threads = threads_enter(c->nthreads);
    char *ws = workspace;
    if (c->src_mem) DNNL_TRY(dnnl_memory_set_data_handle(c->src_mem, ws + c->src_off), "binding the workspace");
    if (c->dst_mem) DNNL_TRY(dnnl_memory_set_data_handle(c->dst_mem, ws + c->dst_off), "binding the workspace");
    if (c->res_mem) DNNL_TRY(dnnl_memory_set_data_handle(c->res_mem, ws + c->res_off), "binding the workspace");
    if (c->scratch_mem)
        DNNL_TRY(dnnl_memory_set_data_handle(c->scratch_mem, ws + c->scratch_off), "binding the workspace");
    /* oneDNN takes non-const handles for every memory; it does not write x, bias or sum */
    DNNL_TRY(dnnl_memory_set_data_handle(c->x_mem, (void *)x), "binding the input");
    DNNL_TRY(dnnl_memory_set_data_handle(c->y_mem, y), "binding the output");
    if (c->has_bias) DNNL_TRY(dnnl_memory_set_data_handle(c->bias_mem, (void *)bias), "binding the bias");
    if (c->sum_mem) DNNL_TRY(dnnl_memory_set_data_handle(c->sum_mem, (void *)sum), "binding the residual");
    dnnl_memory_t src = c->src_reorder ? c->src_mem : c->x_mem;
    dnnl_memory_t dst = c->dst_mem ? c->dst_mem : c->y_mem;
    if (c->src_reorder && (st = exec_reorder(c->src_reorder, c->stream, c->x_mem, c->src_mem)) != ZCI_OK) goto done;
    dnnl_memory_t res = c->sum_mem;
    if (c->residual == RESIDUAL_SUM && !(sum == y && dst == c->y_mem)) {
        if ((st = exec_reorder(c->res_reorder, c->stream, c->sum_mem, dst)) != ZCI_OK) goto done;
    } else if (c->residual == RESIDUAL_BINARY && c->res_reorder) {
        if ((st = exec_reorder(c->res_reorder, c->stream, c->sum_mem, c->res_mem)) != ZCI_OK) goto done;
        res = c->res_mem;
    }
    dnnl_exec_arg_t args[6];
    int nargs = 0;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->weights_mem};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
    if (c->has_bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias_mem};
    if (c->scratch_mem) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch_mem};
    if (c->binary_arg) args[nargs++] = (dnnl_exec_arg_t){c->binary_arg, res};
    DNNL_TRY(dnnl_primitive_execute(c->conv, c->stream, nargs, args), "convolution");
    if (c->winograd && (c->activation != ZCI_ACT_NONE || res)) {
        DNNL_TRY(dnnl_stream_wait(c->stream), "convolution");
        const float *r = !res ? NULL : res == c->res_mem ? (const float *)(ws + c->res_off) : sum;
        winograd_epilogue(c->activation, y, c->dst_mem ? (const float *)(ws + c->dst_off) : y, r, c->out_len,
                          c->nthreads);
    }
    if (c->dst_reorder && (st = exec_reorder(c->dst_reorder, c->stream, c->dst_mem, c->y_mem)) != ZCI_OK) goto done;
    DNNL_TRY(dnnl_stream_wait(c->stream), "convolution");
done:
    threads_leave(old_threads);
    return st;
}

const char *zci_dnnl_conv_impl(const zci_dnnl_conv *c) { return c->impl; }

size_t zci_dnnl_conv_workspace_size(const zci_dnnl_conv *c) { return c->workspace_bytes; }

void zci_dnnl_conv_free(zci_dnnl_conv *c)
{
    if (!c) return;
    dnnl_primitive_destroy(c->conv);
    dnnl_primitive_destroy(c->src_reorder);
    dnnl_primitive_destroy(c->dst_reorder);
    dnnl_primitive_destroy(c->res_reorder);
    dnnl_memory_destroy(c->x_mem);
    dnnl_memory_destroy(c->y_mem);
    dnnl_memory_destroy(c->bias_mem);
    dnnl_memory_destroy(c->sum_mem);
    dnnl_memory_destroy(c->src_mem);
    dnnl_memory_destroy(c->dst_mem);
    dnnl_memory_destroy(c->res_mem);
    dnnl_memory_destroy(c->weights_mem);
    dnnl_memory_destroy(c->scratch_mem);
    dnnl_stream_destroy(c->stream);
    dnnl_engine_destroy(c->engine);
    free(c->weights_buf);
    free(c);
}

#else
/* ISO C forbids an empty translation unit. */
typedef int zci_dnnl_conv_unused_;
#endif /* ZCI_HAVE_DNNL */
