/* dnnl_conv.c: convolutions through oneDNN (see dnnl_conv.h).
 *
 * Layout choice, measured on YOLOv5s's 60 convolutions (2 cores, AVX-512 EPYC, oneDNN 2.6):
 * letting the primitive pick its layout (format_tag_any: blocked nChw16c, "brgconv") and paying
 * a reorder in and out of the graph's NCHW each time beats plain NCHW in and out ("gemm:jit",
 * im2col + GEMM) on every layer, 1x1 ones included, and by far once SiLU is fused: gemm:jit
 * applies post-ops in a slow scalar pass, brgconv inside its JIT kernel. See
 * tests/bench_conv.c. */
#ifdef ZCI_HAVE_DNNL

#include "cpu/dnnl_conv.h"

#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

struct zci_dnnl_conv {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t conv;
    dnnl_primitive_t src_reorder; /* plain x -> blocked src; NULL when the primitive reads x */
    dnnl_primitive_t dst_reorder; /* blocked dst -> plain y; NULL when it writes y */
    dnnl_primitive_t sum_reorder; /* plain residual -> the primitive's dst (sum post-op) */
    /* memories whose handle is set per run (the graph's buffers) */
    dnnl_memory_t x_mem, y_mem, bias_mem, sum_mem;
    /* the reordered weights, owned here */
    dnnl_memory_t weights_mem;
    void *weights_buf;
    /* memories over the caller's workspace: blocked source and destination, scratchpad */
    dnnl_memory_t src_mem, dst_mem, scratch_mem;
    size_t src_off, dst_off, scratch_off, workspace_bytes;
    int has_bias, has_sum;
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
                               dnnl_primitive_t *out)
{
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, NULL);
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

zci_status zci_dnnl_conv_create(const zci_conv_params *p, const float *weights, int nthreads, zci_dnnl_conv **out)
{
    *out = NULL;
    zci_status st = ZCI_OK;
    /* oneDNN 2.6's brgconv crashes (SIGSEGV in its JIT code) when a residual and an activation
     * are both fused and some output's window lies wholly in the padding (a pad as wide as the
     * kernel's extent); such a convolution goes to the built-in kernels instead */
    if (p->sum_input >= 0 && p->activation != ZCI_ACT_NONE)
        for (int i = 0; i < p->w.nsp; i++) {
            int64_t extent = (p->w.kernel[i] - 1) * p->w.dilation[i] + 1;
            if (p->w.pad_begin[i] >= extent || p->w.pad_end[i] >= extent)
                return zci_error(ZCI_UNSUPPORTED, "oneDNN: a fused residual and activation with a pad as wide as "
                                                  "the kernel (oneDNN 2.6 crashes on it)");
        }
    zci_dnnl_conv *c = zci_calloc(1, sizeof *c, "oneDNN convolution");
    if (!c) return ZCI_OUT_OF_MEMORY;
    c->nthreads = nthreads < 1 ? 1 : nthreads;
    c->has_bias = p->has_bias;
    c->has_sum = p->sum_input >= 0;
    int old_threads = threads_enter(c->nthreads);

    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t post_ops = NULL;
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

    dnnl_memory_desc_t src_any, dst_any, w_any, bias_md, src_plain, dst_plain, w_plain;
    DNNL_TRY(dnnl_engine_create(&c->engine, dnnl_cpu, 0), "engine creation");
    DNNL_TRY(dnnl_stream_create(&c->stream, c->engine, dnnl_stream_default_flags), "stream creation");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&src_plain, ndims, src_dims, dnnl_f32, plain_tag(ndims)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&dst_plain, ndims, dst_dims, dnnl_f32, plain_tag(ndims)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_plain, wd, w_dims, dnnl_f32, plain_tag(wd)), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&bias_md, 1, bias_dims, dnnl_f32, dnnl_a), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&src_any, ndims, src_dims, dnnl_f32, dnnl_format_tag_any), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&dst_any, ndims, dst_dims, dnnl_f32, dnnl_format_tag_any), "descriptor");
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&w_any, wd, w_dims, dnnl_f32, dnnl_format_tag_any), "descriptor");

    dnnl_convolution_desc_t cd;
    DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                        &src_any, &w_any, p->has_bias ? &bias_md : NULL, &dst_any,
                                                        strides, dilates, pad_l, pad_r),
             "convolution descriptor");

    /* the epilogue as post-ops, in the order conv.h defines */
    DNNL_TRY(dnnl_primitive_attr_create(&attr), "attribute creation");
    DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode");
    DNNL_TRY(dnnl_post_ops_create(&post_ops), "post-op creation");
    dnnl_alg_kind_t alg;
    float ea, eb;
    int has_act = eltwise_alg(p->activation, &alg, &ea, &eb, p->act_alpha, p->act_beta);
    if (c->has_sum && p->sum_first) DNNL_TRY(dnnl_post_ops_append_sum(post_ops, 1.0f), "sum post-op");
    if (has_act) DNNL_TRY(dnnl_post_ops_append_eltwise(post_ops, 1.0f, alg, ea, eb), "activation post-op");
    if (c->has_sum && !p->sum_first) DNNL_TRY(dnnl_post_ops_append_sum(post_ops, 1.0f), "sum post-op");
    DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, post_ops), "post-ops");

    DNNL_TRY(dnnl_primitive_desc_create(&pd, &cd, attr, c->engine, NULL), "convolution");
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(c->impl, sizeof c->impl, "%s", impl);
    DNNL_TRY(dnnl_primitive_create(&c->conv, pd), "convolution creation");

    const dnnl_memory_desc_t *src_md = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dst_md = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *scratch_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);

    DNNL_TRY(dnnl_memory_create(&c->x_mem, &src_plain, c->engine, DNNL_MEMORY_NONE), "memory creation");
    DNNL_TRY(dnnl_memory_create(&c->y_mem, &dst_plain, c->engine, DNNL_MEMORY_NONE), "memory creation");
    if (p->has_bias) DNNL_TRY(dnnl_memory_create(&c->bias_mem, &bias_md, c->engine, DNNL_MEMORY_NONE), "memory creation");
    if (!dnnl_memory_desc_equal(src_md, &src_plain)) {
        if ((st = workspace_memory(src_md, c->engine, &c->src_mem, &c->src_off, &c->workspace_bytes)) != ZCI_OK) goto done;
        if ((st = make_reorder(&src_plain, src_md, c->engine, &c->src_reorder)) != ZCI_OK) goto done;
    }
    if (!dnnl_memory_desc_equal(dst_md, &dst_plain)) {
        if ((st = workspace_memory(dst_md, c->engine, &c->dst_mem, &c->dst_off, &c->workspace_bytes)) != ZCI_OK) goto done;
        if ((st = make_reorder(dst_md, &dst_plain, c->engine, &c->dst_reorder)) != ZCI_OK) goto done;
    }
    if (c->has_sum) {
        /* the sum post-op accumulates into dst: the residual must be in it before the run */
        DNNL_TRY(dnnl_memory_create(&c->sum_mem, &dst_plain, c->engine, DNNL_MEMORY_NONE), "memory creation");
        if ((st = make_reorder(&dst_plain, dst_md, c->engine, &c->sum_reorder)) != ZCI_OK) goto done;
    }
    if (dnnl_memory_desc_get_size(scratch_md) > 0 &&
        (st = workspace_memory(scratch_md, c->engine, &c->scratch_mem, &c->scratch_off, &c->workspace_bytes)) != ZCI_OK)
        goto done;

    /* weights: reordered once into the primitive's layout; the reorder only reads the source */
    if ((st = owned_memory(w_md, c->engine, &c->weights_buf, &c->weights_mem)) != ZCI_OK) goto done;
    DNNL_TRY(dnnl_memory_create(&w_plain_mem, &w_plain, c->engine, (void *)weights), "memory creation");
    if ((st = make_reorder(&w_plain, w_md, c->engine, &w_reorder)) != ZCI_OK) goto done;
    if ((st = exec_reorder(w_reorder, c->stream, w_plain_mem, c->weights_mem)) != ZCI_OK) goto done;
    DNNL_TRY(dnnl_stream_wait(c->stream), "weight reorder");

done:
    dnnl_primitive_destroy(w_reorder);
    dnnl_memory_destroy(w_plain_mem);
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(post_ops);
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
    if (c->scratch_mem)
        DNNL_TRY(dnnl_memory_set_data_handle(c->scratch_mem, ws + c->scratch_off), "binding the workspace");
    /* oneDNN takes non-const handles for every memory; it does not write x, bias or sum */
    DNNL_TRY(dnnl_memory_set_data_handle(c->x_mem, (void *)x), "binding the input");
    DNNL_TRY(dnnl_memory_set_data_handle(c->y_mem, y), "binding the output");
    if (c->has_bias) DNNL_TRY(dnnl_memory_set_data_handle(c->bias_mem, (void *)bias), "binding the bias");
    dnnl_memory_t src = c->src_reorder ? c->src_mem : c->x_mem;
    dnnl_memory_t dst = c->dst_reorder ? c->dst_mem : c->y_mem;
    if (c->src_reorder && (st = exec_reorder(c->src_reorder, c->stream, c->x_mem, c->src_mem)) != ZCI_OK) goto done;
    if (c->has_sum && !(dst == c->y_mem && sum == y)) {
        DNNL_TRY(dnnl_memory_set_data_handle(c->sum_mem, (void *)sum), "binding the residual");
        if ((st = exec_reorder(c->sum_reorder, c->stream, c->sum_mem, dst)) != ZCI_OK) goto done;
    }
    dnnl_exec_arg_t args[5];
    int nargs = 0;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, src};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->weights_mem};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
    if (c->has_bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias_mem};
    if (c->scratch_mem) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch_mem};
    DNNL_TRY(dnnl_primitive_execute(c->conv, c->stream, nargs, args), "convolution");
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
    dnnl_primitive_destroy(c->sum_reorder);
    dnnl_memory_destroy(c->x_mem);
    dnnl_memory_destroy(c->y_mem);
    dnnl_memory_destroy(c->bias_mem);
    dnnl_memory_destroy(c->sum_mem);
    dnnl_memory_destroy(c->src_mem);
    dnnl_memory_destroy(c->dst_mem);
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
