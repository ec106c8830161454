/* normalize.cu: reductions and normalisations on the GPU: Softmax, ReduceMean,
 * GlobalAveragePool, GlobalMaxPool and BatchNormalization (inference form).
 *
 * Every reduction is seen as (outer, len, inner): reduce `len` elements spaced `inner` apart.
 * With inner == 1 a block reduces one contiguous row; otherwise each thread walks one column,
 * so that neighbouring threads read neighbouring elements. Sums accumulate in float (also for
 * half tensors). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

enum red_kind { RED_SOFTMAX, RED_MEAN, RED_MAX };

struct red_state {
    int kind;
    uint32_t outer, len, inner;
};

constexpr int kRowThreads = 256;

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide reduction of one value per thread; every thread gets the result. */
template <bool kMax> __device__ float block_reduce(float v, float *shared)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = kMax ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* shared may still be read from a previous call */
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < nw ? shared[lane] : (kMax ? -INFINITY : 0.f);
    return kMax ? warp_max(v) : warp_sum(v);
}

template <typename T> __global__ void k_reduce_rows(const T *__restrict__ x, T *__restrict__ y, uint32_t len, int kind)
{
    __shared__ float shared[32];
    const T *row = x + (size_t)blockIdx.x * len;
    if (kind == RED_MAX) {
        float m = -INFINITY;
        for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, to_f<T>(row[j]));
        m = block_reduce<true>(m, shared);
        if (threadIdx.x == 0) y[blockIdx.x] = from_f<T>(m);
        return;
    }
    if (kind == RED_MEAN) {
        float s = 0.f;
        for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) s += to_f<T>(row[j]);
        s = block_reduce<false>(s, shared);
        if (threadIdx.x == 0) y[blockIdx.x] = from_f<T>(s / (float)len);
        return;
    }
    float m = -INFINITY;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, to_f<T>(row[j]));
    m = block_reduce<true>(m, shared);
    float s = 0.f;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) s += expf(to_f<T>(row[j]) - m);
    s = block_reduce<false>(s, shared);
    const float inv = 1.f / s;
    T *out = y + (size_t)blockIdx.x * len;
    for (uint32_t j = threadIdx.x; j < len; j += blockDim.x) out[j] = from_f<T>(expf(to_f<T>(row[j]) - m) * inv);
}

template <typename T>
__global__ void k_reduce_cols(const T *__restrict__ x, T *__restrict__ y, uint32_t outer, uint32_t len, uint32_t inner,
                              int kind)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= outer * inner) return;
    uint32_t o = i / inner, in = i - o * inner;
    const T *col = x + (size_t)o * len * inner + in;
    if (kind == RED_MAX || kind == RED_MEAN) {
        float acc = kind == RED_MAX ? -INFINITY : 0.f;
        for (uint32_t j = 0; j < len; j++) {
            float v = to_f<T>(col[(size_t)j * inner]);
            acc = kind == RED_MAX ? fmaxf(acc, v) : acc + v;
        }
        y[i] = from_f<T>(kind == RED_MAX ? acc : acc / (float)len);
        return;
    }
    float m = -INFINITY, s = 0.f;
    for (uint32_t j = 0; j < len; j++) m = fmaxf(m, to_f<T>(col[(size_t)j * inner]));
    for (uint32_t j = 0; j < len; j++) s += expf(to_f<T>(col[(size_t)j * inner]) - m);
    const float inv = 1.f / s;
    T *out = y + (size_t)o * len * inner + in;
    for (uint32_t j = 0; j < len; j++) out[(size_t)j * inner] = from_f<T>(expf(to_f<T>(col[(size_t)j * inner]) - m) * inv);
}

int64_t prod(const int64_t *d, int a, int b)
{
    int64_t p = 1;
    for (int i = a; i < b; i++) p *= d[i];
    return p;
}

/* Which dims ReduceMean reduces (attribute before opset 18, constant input from 18). */
zci_status reduce_axes(const cu_ctx *c, const zci_node *n, int rank, int *reduced, int *noop)
{
    zci_status st = ZCI_OK;
    int64_t *axes = NULL, count = 0;
    *noop = 0;
    if (n->opset < 18) {
        int cnt = 0;
        const int64_t *a = zci_attr_ints(n, "axes", &cnt, &st);
        if (st != ZCI_OK) return st;
        if (a) {
            axes = (int64_t *)zci_malloc((size_t)(cnt ? cnt : 1) * sizeof(int64_t), "axes");
            if (!axes) return ZCI_OUT_OF_MEMORY;
            memcpy(axes, a, (size_t)cnt * sizeof(int64_t));
            count = cnt;
        }
    } else {
        int64_t noop_attr = zci_attr_int(n, "noop_with_empty_axes", 0, &st);
        if (st != ZCI_OK) return st;
        if (ZCI_HAS_IN(n, 1)) ZCI_TRY(zci_const_ints(c->g, n, 1, &axes, &count));
        if (count == 0 && noop_attr) *noop = 1;
    }
    for (int d = 0; d < rank; d++) reduced[d] = count == 0;
    for (int64_t i = 0; i < count && st == ZCI_OK; i++) {
        int a;
        st = zci_norm_axis(axes[i], rank, &a);
        if (st == ZCI_OK) reduced[a] = 1;
    }
    free(axes);
    if (*noop)
        for (int d = 0; d < rank; d++) reduced[d] = 0;
    return st;
}

zci_status build(const cu_ctx *c, const zci_node *n, red_state *s)
{
    const zci_graph *g = c->g;
    if (!ZCI_HAS_IN(n, 0)) return zci_error(ZCI_UNSUPPORTED, "input 0 is omitted");
    const zci_tensor *x = ZCI_IN(g, n, 0);
    zci_dtype t = c->dt[n->in[0]];
    if (t != ZCI_FLOAT32 && t != ZCI_FLOAT16) return zci_error(ZCI_UNSUPPORTED, "%s of %s tensors", n->op_type, zci_dtype_name(t));
    zci_status st = ZCI_OK;
    if (!strcmp(n->op_type, "Softmax")) {
        s->kind = RED_SOFTMAX;
        int64_t axis = zci_attr_int(n, "axis", n->opset < 13 ? 1 : -1, &st);
        if (st != ZCI_OK) return st;
        int a;
        ZCI_TRY(zci_norm_axis(axis, x->ndim, &a));
        s->outer = (uint32_t)prod(x->dims, 0, a);
        if (n->opset < 13) {
            s->len = (uint32_t)prod(x->dims, a, x->ndim);
            s->inner = 1;
        } else {
            s->len = (uint32_t)x->dims[a];
            s->inner = (uint32_t)prod(x->dims, a + 1, x->ndim);
        }
        return ZCI_OK;
    }
    if (!strcmp(n->op_type, "GlobalAveragePool") || !strcmp(n->op_type, "GlobalMaxPool")) {
        if (x->ndim < 3) return zci_error(ZCI_UNSUPPORTED, "%s of rank %d", n->op_type, x->ndim);
        s->kind = n->op_type[6] == 'A' ? RED_MEAN : RED_MAX;
        if (c->lay && cu_in_nhwc(c, n, 0)) { /* NHWC: reduce the pixels of each (n, c) column */
            s->outer = (uint32_t)x->dims[0];
            s->len = (uint32_t)prod(x->dims, 2, x->ndim);
            s->inner = (uint32_t)x->dims[1];
            return ZCI_OK;
        }
        s->outer = (uint32_t)prod(x->dims, 0, 2);
        s->len = (uint32_t)prod(x->dims, 2, x->ndim);
        s->inner = 1;
        return ZCI_OK;
    }
    /* ReduceMean: the reduced dims of size > 1 must be neighbours (size-1 dims in between do not
     * matter) */
    s->kind = RED_MEAN;
    int reduced[ZCI_MAX_DIMS], noop;
    ZCI_TRY(reduce_axes(c, n, x->ndim, reduced, &noop));
    int first = -1, last = -1;
    for (int d = 0; d < x->ndim; d++)
        if (reduced[d] && x->dims[d] > 1) {
            if (first < 0) first = d;
            last = d;
        }
    if (first < 0) {
        s->outer = (uint32_t)zci_tensor_numel(x);
        s->len = 1;
        s->inner = 1;
        return ZCI_OK;
    }
    for (int d = first; d <= last; d++)
        if (!reduced[d] && x->dims[d] > 1)
            return zci_error(ZCI_UNSUPPORTED, "ReduceMean over axes that are not neighbours");
    s->outer = (uint32_t)prod(x->dims, 0, first);
    s->len = (uint32_t)prod(x->dims, first, last + 1);
    s->inner = (uint32_t)prod(x->dims, last + 1, x->ndim);
    return ZCI_OK;
}

template <typename T> void launch_t(const red_state *s, const void *x, void *y, cudaStream_t st)
{
    if (s->inner == 1 && s->len > 32)
        k_reduce_rows<T><<<s->outer, kRowThreads, 0, st>>>((const T *)x, (T *)y, s->len, s->kind);
    else
        k_reduce_cols<T><<<blocks_for((int64_t)s->outer * s->inner), kThreads, 0, st>>>((const T *)x, (T *)y, s->outer,
                                                                                      s->len, s->inner, s->kind);
}

} // namespace

extern "C" zci_status cu_reduce_supports(const cu_ctx *c, const zci_node *n)
{
    red_state s;
    return build(c, n, &s);
}

extern "C" zci_status cu_reduce_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    red_state *s = (red_state *)zci_calloc(1, sizeof *s, "reduction state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    zci_status st = build(c, n, s);
    if (st != ZCI_OK) {
        free(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

extern "C" zci_status cu_reduce_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t st)
{
    const red_state *s = (const red_state *)state;
    if (!s->outer || !s->inner || !cu_numel(c, n->out[0])) return ZCI_OK;
    const void *x = cu_in(c, n, 0);
    void *y = c->ptr[n->out[0]];
    if (s->len == 1 && s->kind != RED_SOFTMAX) {
        CU_TRY(cudaMemcpyAsync(y, x, (size_t)cu_numel(c, n->out[0]) * cu_esize(c, n->out[0]), cudaMemcpyDeviceToDevice, st));
        return ZCI_OK;
    }
    if (c->dt[n->in[0]] == ZCI_FLOAT16) launch_t<__half>(s, x, y, st);
    else launch_t<float>(s, x, y, st);
    CU_LAUNCHED("reduce");
    return ZCI_OK;
}

/* ---------------------------------------------------------------- BatchNormalization */

namespace {

struct bn_state {
    float *scale, *shift; /* per channel, float32 on the device */
    uint32_t channels, inner;
};

template <typename T>
__global__ void k_channel_affine(const T *__restrict__ x, T *__restrict__ y, const float *__restrict__ a,
                                 const float *__restrict__ b, uint32_t n, uint32_t inner, uint32_t channels)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint32_t ch = (i / inner) % channels;
    y[i] = from_f<T>(to_f<T>(x[i]) * a[ch] + b[ch]);
}

zci_status read_floats(const zci_graph *g, const zci_node *n, int input, int64_t count, double *out)
{
    const zci_tensor *t = ZCI_IN(g, n, input);
    if (t->kind != ZCI_TENSOR_CONSTANT || !t->data)
        return zci_error(ZCI_UNSUPPORTED, "input %d ('%s') computed at run time", input, t->name);
    if (zci_tensor_numel(t) != count)
        return zci_error(ZCI_INVALID_MODEL, "input %d ('%s') has %lld values, expected %lld", input, t->name,
                         (long long)zci_tensor_numel(t), (long long)count);
    for (int64_t i = 0; i < count; i++) {
        switch (t->dtype) {
        case ZCI_FLOAT32: out[i] = ((const float *)t->data)[i]; break;
        case ZCI_FLOAT16: out[i] = zci_f16_to_f32(((const uint16_t *)t->data)[i]); break;
        case ZCI_FLOAT64: out[i] = ((const double *)t->data)[i]; break;
        default: return zci_error(ZCI_UNSUPPORTED, "input %d has type %s", input, zci_dtype_name(t->dtype));
        }
    }
    return ZCI_OK;
}

zci_status bn_check(const cu_ctx *c, const zci_node *n)
{
    if (n->n_in != 5) return zci_error(ZCI_UNSUPPORTED, "BatchNormalization with %d inputs", n->n_in);
    for (int k = 0; k < 5; k++)
        if (!ZCI_HAS_IN(n, k)) return zci_error(ZCI_UNSUPPORTED, "input %d is omitted", k);
    for (int k = 1; k < n->n_out; k++)
        if (n->out[k] >= 0) return zci_error(ZCI_UNSUPPORTED, "training-mode outputs");
    zci_dtype t = c->dt[n->in[0]];
    if (t != ZCI_FLOAT32 && t != ZCI_FLOAT16) return zci_error(ZCI_UNSUPPORTED, "on %s tensors", zci_dtype_name(t));
    if (ZCI_IN(c->g, n, 0)->ndim < 2) return zci_error(ZCI_UNSUPPORTED, "input of rank < 2");
    for (int k = 1; k < 5; k++)
        if (ZCI_IN(c->g, n, k)->kind != ZCI_TENSOR_CONSTANT)
            return zci_error(ZCI_UNSUPPORTED, "input %d computed at run time", k);
    return ZCI_OK;
}

} // namespace

extern "C" zci_status cu_bn_supports(const cu_ctx *c, const zci_node *n) { return bn_check(c, n); }

extern "C" zci_status cu_bn_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    ZCI_TRY(bn_check(c, n));
    const zci_tensor *x = ZCI_IN(c->g, n, 0);
    const int64_t ch = x->dims[1];
    zci_status st = ZCI_OK;
    double eps = zci_attr_float(n, "epsilon", 1e-5f, &st);
    if (st != ZCI_OK) return st;
    double *v = (double *)zci_malloc((size_t)(4 * ch + 1) * sizeof(double), "BatchNormalization");
    float *ab = (float *)zci_malloc((size_t)(2 * ch + 1) * sizeof(float), "BatchNormalization");
    bn_state *s = (bn_state *)zci_calloc(1, sizeof *s, "BatchNormalization state");
    if (!v || !ab || !s) st = ZCI_OUT_OF_MEMORY;
    for (int k = 0; st == ZCI_OK && k < 4; k++) st = read_floats(c->g, n, k + 1, ch, v + k * ch);
    if (st == ZCI_OK) {
        /* y = (x - mean) / sqrt(var + eps) * scale + B = x * a + b */
        for (int64_t i = 0; i < ch; i++) {
            double a = v[i] / sqrt(v[3 * ch + i] + eps);
            ab[i] = (float)a;
            ab[ch + i] = (float)(v[ch + i] - v[2 * ch + i] * a);
        }
        void *dev = NULL;
        st = cu_upload(c, ab, (size_t)(2 * ch) * sizeof(float), "BatchNormalization", &dev);
        if (st == ZCI_OK) {
            s->scale = (float *)dev;
            s->shift = (float *)dev + ch;
            s->channels = (uint32_t)ch;
            int64_t inner = 1;
            for (int d = 2; d < x->ndim; d++) inner *= x->dims[d];
            s->inner = cu_in_nhwc(c, n, 0) ? 1 : (uint32_t)inner; /* NHWC: the channel is i % C */
        }
    }
    free(v);
    free(ab);
    if (st != ZCI_OK) {
        free(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

extern "C" zci_status cu_bn_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t st)
{
    const bn_state *s = (const bn_state *)state;
    uint32_t count = (uint32_t)cu_numel(c, n->out[0]);
    if (!count) return ZCI_OK;
    const void *x = cu_in(c, n, 0);
    void *y = c->ptr[n->out[0]];
    if (c->dt[n->in[0]] == ZCI_FLOAT16)
        k_channel_affine<__half><<<blocks_for(count), kThreads, 0, st>>>((const __half *)x, (__half *)y, s->scale, s->shift,
                                                                        count, s->inner, s->channels);
    else
        k_channel_affine<float><<<blocks_for(count), kThreads, 0, st>>>((const float *)x, (float *)y, s->scale, s->shift,
                                                                       count, s->inner, s->channels);
    CU_LAUNCHED("BatchNormalization");
    return ZCI_OK;
}
