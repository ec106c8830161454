/* elementwise.cu: the element-wise ops on the GPU: arithmetic and comparisons with numpy
 * broadcasting (Add, Sub, Mul, Div, Pow, Max, Min, Equal, Less, Greater, Where), unary math and
 * activations, and Cast; plus cu_convert, the type conversion the I/O edges use.
 *
 * Broadcasting is planned once: the output's dimensions are collapsed (size-1 dims dropped,
 * neighbours that every operand walks contiguously, or not at all, merged) so that the common
 * cases become one flat loop (same shapes, a scalar operand) or a short loop nest. Half tensors
 * compute in float; int32/int64 in int64 (wrapping, division by zero gives 0, as on the CPU). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.cuh"

using namespace zci_cu;

namespace {

enum ew_op {
    EW_ADD, EW_SUB, EW_MUL, EW_DIV, EW_POW, EW_MAX, EW_MIN, /* arithmetic: out type = in type */
    EW_EQ, EW_LT, EW_GT,                                    /* comparisons: out bool */
    EW_WHERE,                                               /* cond, x, y */
    EW_SQRT, EW_EXP, EW_SIGMOID, EW_TANH, EW_RELU, EW_LEAKY, EW_CLIP, EW_HSIG, EW_HSWISH,
    EW_NEG, EW_ABS, EW_LOG, EW_RECIP, EW_FLOOR, EW_CEIL, EW_ERF,
    EW_COPY,                                                /* broadcast copy (Max/Min's first step) */
    EW_CAST,
};

struct op_name {
    const char *type;
    ew_op op;
};

const op_name kNames[] = {
    {"Add", EW_ADD},         {"Sub", EW_SUB},       {"Mul", EW_MUL},     {"Div", EW_DIV},
    {"Pow", EW_POW},         {"Max", EW_MAX},       {"Min", EW_MIN},     {"Equal", EW_EQ},
    {"Less", EW_LT},         {"Greater", EW_GT},    {"Where", EW_WHERE}, {"Sqrt", EW_SQRT},
    {"Exp", EW_EXP},         {"Sigmoid", EW_SIGMOID}, {"Tanh", EW_TANH}, {"Relu", EW_RELU},
    {"LeakyRelu", EW_LEAKY}, {"Clip", EW_CLIP},     {"HardSigmoid", EW_HSIG}, {"HardSwish", EW_HSWISH},
    {"Neg", EW_NEG},         {"Abs", EW_ABS},       {"Log", EW_LOG},     {"Reciprocal", EW_RECIP},
    {"Floor", EW_FLOOR},     {"Ceil", EW_CEIL},     {"Erf", EW_ERF},     {"Cast", EW_CAST},
};

int find_op(const char *type)
{
    for (const op_name &o : kNames)
        if (!strcmp(o.type, type)) return o.op;
    return -1;
}

bool is_compare(int op) { return op >= EW_EQ && op <= EW_GT; }
bool is_unary(int op) { return op >= EW_SQRT && op <= EW_ERF; }
/* Unary ops that are defined on integers too. */
bool int_unary(int op) { return op == EW_NEG || op == EW_ABS || op == EW_RELU || op == EW_CLIP; }

constexpr int kMaxNd = 6;
constexpr int kMaxIn = 3;

/* Collapsed broadcast: out dims and, per operand, its element stride along each (0 = broadcast). */
struct bplan {
    int nd;
    int nin;
    uint32_t n;
    uint32_t dims[kMaxNd];
    int32_t st[kMaxIn][kMaxNd];
    int flat; /* nd <= 1: offsets are i * stride */
};

/* Plans operands `ins` (shapes; in_nhwc[k]: operand k is a 4-D tensor stored in NHWC) against
 * output shape `out` (stored in NHWC when out_nhwc): the loop runs over the output's memory order;
 * false if more than kMaxNd dims remain. */
bool plan_broadcast(const zci_tensor *const *ins, const int *in_nhwc, int nin, const zci_tensor *out, int out_nhwc,
                    bplan *p)
{
    int nd = out->ndim;
    int64_t ldims[ZCI_MAX_DIMS], lst[kMaxIn][ZCI_MAX_DIMS], dims[ZCI_MAX_DIMS], st[kMaxIn][ZCI_MAX_DIMS];
    for (int d = 0; d < nd; d++) ldims[d] = out->dims[d];
    for (int k = 0; k < nin; k++) {
        const zci_tensor *x = ins[k];
        if (in_nhwc[k] && x->ndim == 4 && nd == 4) {
            const int64_t C = x->dims[1], H = x->dims[2], W = x->dims[3];
            const int64_t nhwc[4] = {H * W * C, 1, W * C, C};
            for (int d = 0; d < 4; d++) lst[k][d] = x->dims[d] == 1 ? 0 : nhwc[d];
            continue;
        }
        int64_t s = 1;
        for (int d = nd - 1; d >= 0; d--) {
            int xd = d - (nd - x->ndim);
            int64_t len = xd >= 0 ? x->dims[xd] : 1;
            lst[k][d] = len == 1 ? 0 : s;
            s *= len;
        }
    }
    /* the output's memory order: N, H, W, C for NHWC */
    static const int nhwc_order[4] = {0, 2, 3, 1};
    for (int d = 0; d < nd; d++) {
        int src = out_nhwc && nd == 4 ? nhwc_order[d] : d;
        dims[d] = ldims[src];
        for (int k = 0; k < nin; k++) st[k][d] = lst[k][src];
    }
    /* drop size-1 dims, then merge neighbours */
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (dims[d] == 1) continue;
        bool merge = m > 0;
        for (int k = 0; merge && k < nin; k++) merge = st[k][m - 1] == st[k][d] * dims[d];
        if (merge) {
            dims[m - 1] *= dims[d];
            for (int k = 0; k < nin; k++) st[k][m - 1] = st[k][d];
            continue;
        }
        dims[m] = dims[d];
        for (int k = 0; k < nin; k++) st[k][m] = st[k][d];
        m++;
    }
    if (m > kMaxNd) return false;
    memset(p, 0, sizeof *p);
    p->nd = m;
    p->nin = nin;
    p->n = (uint32_t)zci_tensor_numel(out);
    for (int d = 0; d < m; d++) {
        p->dims[d] = (uint32_t)dims[d];
        for (int k = 0; k < nin; k++) p->st[k][d] = (int32_t)st[k][d];
    }
    p->flat = m <= 1;
    if (m == 0)
        for (int k = 0; k < nin; k++) p->st[k][0] = 0;
    return true;
}

__device__ __forceinline__ void bc_offsets(const bplan &p, uint32_t i, uint32_t *off)
{
    if (p.flat) {
        for (int k = 0; k < kMaxIn; k++) off[k] = i * (uint32_t)p.st[k][0];
        return;
    }
    for (int k = 0; k < kMaxIn; k++) off[k] = 0;
    for (int d = p.nd - 1; d >= 0; d--) {
        uint32_t c = i % p.dims[d];
        i /= p.dims[d];
        for (int k = 0; k < kMaxIn; k++) off[k] += c * (uint32_t)p.st[k][d];
    }
}

/* Accumulation types: float for float and half, int64 for the integers. */
template <typename T> struct acc { typedef float type; };
template <> struct acc<int32_t> { typedef int64_t type; };
template <> struct acc<int64_t> { typedef int64_t type; };
template <> struct acc<uint8_t> { typedef int64_t type; };

template <typename T> __device__ __forceinline__ typename acc<T>::type load(const T *p, uint32_t i)
{
    return (typename acc<T>::type)p[i];
}
template <> __device__ __forceinline__ float load<__half>(const __half *p, uint32_t i) { return __half2float(p[i]); }
template <typename T> __device__ __forceinline__ void store(T *p, uint32_t i, typename acc<T>::type v) { p[i] = (T)v; }
template <> __device__ __forceinline__ void store<__half>(__half *p, uint32_t i, float v) { p[i] = __float2half_rn(v); }

__device__ __forceinline__ float arith(int op, float a, float b)
{
    switch (op) {
    case EW_ADD: return a + b;
    case EW_SUB: return a - b;
    case EW_MUL: return a * b;
    case EW_DIV: return a / b;
    case EW_POW: return b == 2.f ? a * a : powf(a, b);
    case EW_MAX: return a != a || a > b ? a : b;
    case EW_MIN: return a != a || a < b ? a : b;
    default: return 0.f;
    }
}

__device__ __forceinline__ int64_t arith(int op, int64_t a, int64_t b)
{
    uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
    switch (op) {
    case EW_ADD: return (int64_t)(ua + ub);
    case EW_SUB: return (int64_t)(ua - ub);
    case EW_MUL: return (int64_t)(ua * ub);
    case EW_DIV: return b == 0 || (b == -1 && a == INT64_MIN) ? (b == -1 ? (int64_t)(0 - ua) : 0) : a / b;
    case EW_POW: {
        if (b < 0) return a == 1 ? 1 : a == -1 ? (b & 1 ? -1 : 1) : 0;
        uint64_t r = 1, base = ua;
        for (uint64_t e = ub; e; e >>= 1) {
            if (e & 1) r *= base;
            base *= base;
        }
        return (int64_t)r;
    }
    case EW_MAX: return a > b ? a : b;
    case EW_MIN: return a < b ? a : b;
    default: return 0;
    }
}

template <typename A> __device__ __forceinline__ bool compare(int op, A a, A b)
{
    return op == EW_EQ ? a == b : op == EW_LT ? a < b : a > b;
}

template <typename T>
__global__ void k_binary(const T *__restrict__ a, const T *__restrict__ b, T *__restrict__ y, bplan p, int op)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    uint32_t off[kMaxIn];
    bc_offsets(p, i, off);
    store<T>(y, i, arith(op, load<T>(a, off[0]), load<T>(b, off[1])));
}

template <typename T>
__global__ void k_compare(const T *__restrict__ a, const T *__restrict__ b, uint8_t *__restrict__ y, bplan p, int op)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    uint32_t off[kMaxIn];
    bc_offsets(p, i, off);
    y[i] = compare(op, load<T>(a, off[0]), load<T>(b, off[1])) ? 1 : 0;
}

/* Where, and the broadcast copy (cond NULL): elements of E bytes moved as is. */
template <typename E>
__global__ void k_select(const uint8_t *__restrict__ cond, const E *__restrict__ x, const E *__restrict__ z,
                         E *__restrict__ y, bplan p)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.n) return;
    uint32_t off[kMaxIn];
    bc_offsets(p, i, off);
    y[i] = !cond || cond[off[0]] ? x[off[1]] : z[off[2]];
}

__device__ __forceinline__ float unary(int op, float x, float a, float b)
{
    switch (op) {
    case EW_SQRT: return sqrtf(x);
    case EW_EXP: return expf(x);
    case EW_SIGMOID: return 1.f / (1.f + expf(-x));
    case EW_TANH: return tanhf(x);
    case EW_RELU: return x > 0.f ? x : 0.f;
    case EW_LEAKY: return x >= 0.f ? x : a * x;
    case EW_CLIP: return fminf(fmaxf(x, a), b);
    case EW_HSIG: return fmaxf(0.f, fminf(1.f, a * x + b));
    case EW_HSWISH: return x * fmaxf(0.f, fminf(1.f, x / 6.f + 0.5f));
    case EW_NEG: return -x;
    case EW_ABS: return fabsf(x);
    case EW_LOG: return logf(x);
    case EW_RECIP: return 1.f / x;
    case EW_FLOOR: return floorf(x);
    case EW_CEIL: return ceilf(x);
    case EW_ERF: return erff(x);
    default: return x;
    }
}

__device__ __forceinline__ int64_t unary(int op, int64_t x, float a, float b)
{
    switch (op) {
    case EW_NEG: return (int64_t)(0 - (uint64_t)x);
    case EW_ABS: return x < 0 ? (int64_t)(0 - (uint64_t)x) : x;
    case EW_RELU: return x > 0 ? x : 0;
    case EW_CLIP: {
        double v = (double)x;
        return v < (double)a ? (int64_t)a : v > (double)b ? (int64_t)b : x;
    }
    default: return x;
    }
}

template <typename T>
__global__ void k_unary(const T *__restrict__ x, T *__restrict__ y, uint32_t n, int op, float a, float b)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    store<T>(y, i, unary(op, load<T>(x, i), a, b));
}

/* Two halves at a time for the common activations of FP16 models. */
__global__ void k_unary_half2(const __half2 *__restrict__ x, __half2 *__restrict__ y, uint32_t n2, int op, float a,
                              float b)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n2) return;
    float2 v = __half22float2(x[i]);
    y[i] = __floats2half2_rn(unary(op, v.x, a, b), unary(op, v.y, a, b));
}

/* ---------------------------------------------------------------- Cast */

/* Loads element i of any supported type as double (integers beyond 2^53 lose bits: ONNX's Cast
 * of such values through float is lossy anyway; int64 -> int64 is a copy and never comes here). */
__device__ double load_any(const void *p, int t, uint32_t i)
{
    switch (t) {
    case ZCI_FLOAT32: return ((const float *)p)[i];
    case ZCI_FLOAT16: return __half2float(((const __half *)p)[i]);
    case ZCI_FLOAT64: return ((const double *)p)[i];
    case ZCI_INT8: return ((const int8_t *)p)[i];
    case ZCI_UINT8: return ((const uint8_t *)p)[i];
    case ZCI_BOOL: return ((const uint8_t *)p)[i] ? 1.0 : 0.0;
    case ZCI_INT16: return ((const int16_t *)p)[i];
    case ZCI_UINT16: return ((const uint16_t *)p)[i];
    case ZCI_INT32: return ((const int32_t *)p)[i];
    case ZCI_UINT32: return ((const uint32_t *)p)[i];
    case ZCI_INT64: return (double)((const int64_t *)p)[i];
    case ZCI_UINT64: return (double)((const uint64_t *)p)[i];
    default: return 0;
    }
}

/* Float -> integer truncates toward zero and saturates (NaN gives 0), as the CPU kernel does. */
__device__ int64_t f2i(double v, double lo, double hi)
{
    if (!(v == v)) return 0;
    if (v <= lo) return (int64_t)lo;
    if (v >= hi) return (int64_t)hi;
    return (int64_t)v;
}

__device__ void store_any(void *p, int t, uint32_t i, double v)
{
    switch (t) {
    case ZCI_FLOAT32: ((float *)p)[i] = (float)v; break;
    case ZCI_FLOAT16: ((__half *)p)[i] = __double2half(v); break;
    case ZCI_FLOAT64: ((double *)p)[i] = v; break;
    case ZCI_BOOL: ((uint8_t *)p)[i] = v != 0.0; break;
    case ZCI_INT8: ((int8_t *)p)[i] = (int8_t)f2i(v, -128.0, 127.0); break;
    case ZCI_UINT8: ((uint8_t *)p)[i] = (uint8_t)f2i(v, 0.0, 255.0); break;
    case ZCI_INT16: ((int16_t *)p)[i] = (int16_t)f2i(v, -32768.0, 32767.0); break;
    case ZCI_UINT16: ((uint16_t *)p)[i] = (uint16_t)f2i(v, 0.0, 65535.0); break;
    case ZCI_INT32: ((int32_t *)p)[i] = (int32_t)f2i(v, -2147483648.0, 2147483647.0); break;
    case ZCI_UINT32: ((uint32_t *)p)[i] = (uint32_t)f2i(v, 0.0, 4294967295.0); break;
    case ZCI_INT64: ((int64_t *)p)[i] = f2i(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case ZCI_UINT64: ((uint64_t *)p)[i] = v <= 0.0 || !(v == v) ? 0 : v >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)v; break;
    default: break;
    }
}

__global__ void k_cast_any(const void *x, int xt, void *y, int yt, uint32_t n)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) store_any(y, yt, i, load_any(x, xt, i));
}

__global__ void k_f32_to_f16(const float4 *__restrict__ x, __half2 *__restrict__ y, uint32_t n4)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 v = x[i];
    y[2 * i] = __floats2half2_rn(v.x, v.y);
    y[2 * i + 1] = __floats2half2_rn(v.z, v.w);
}

__global__ void k_f16_to_f32(const __half2 *__restrict__ x, float4 *__restrict__ y, uint32_t n4)
{
    uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float2 a = __half22float2(x[2 * i]), b = __half22float2(x[2 * i + 1]);
    y[i] = make_float4(a.x, a.y, b.x, b.y);
}

template <typename S, typename D> __global__ void k_cvt_tail(const S *x, D *y, uint32_t from, uint32_t n)
{
    uint32_t i = from + blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = from_f<D>(to_f<S>(x[i]));
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* ---------------------------------------------------------------- node state */

constexpr int kMaxSteps = 8;

/* One launch: y = a op b (binary, compare), y = where(cond=a, b, c), y = copy(b), or unary. */
struct step {
    int op;
    int a, b, cc;  /* the node's input numbers; -1 = none; -2 = the node's output (Max/Min chains) */
    bplan plan;
};

struct ew_state {
    int op;
    float alpha, beta;
    int nsteps;
    step steps[kMaxSteps];
};

zci_status const_scalar(const cu_ctx *c, const zci_node *n, int input, float *v)
{
    const zci_tensor *t = ZCI_IN(c->g, n, input);
    if (t->kind != ZCI_TENSOR_CONSTANT || !t->data || zci_tensor_numel(t) != 1)
        return zci_error(ZCI_UNSUPPORTED, "input %d ('%s') must be a constant scalar", input, t->name);
    switch (t->dtype) {
    case ZCI_FLOAT32: *v = *(const float *)t->data; break;
    case ZCI_FLOAT16: *v = zci_f16_to_f32(*(const uint16_t *)t->data); break;
    case ZCI_FLOAT64: *v = (float)*(const double *)t->data; break;
    case ZCI_INT32: *v = (float)*(const int32_t *)t->data; break;
    case ZCI_INT64: *v = (float)*(const int64_t *)t->data; break;
    default: return zci_error(ZCI_UNSUPPORTED, "input %d ('%s') has type %s", input, t->name, zci_dtype_name(t->dtype));
    }
    return ZCI_OK;
}

/* Attributes and constant inputs of the unary ops. */
zci_status unary_params(const cu_ctx *c, const zci_node *n, int op, float *alpha, float *beta)
{
    zci_status st = ZCI_OK;
    *alpha = 0;
    *beta = 0;
    switch (op) {
    case EW_LEAKY: *alpha = zci_attr_float(n, "alpha", 0.01f, &st); break;
    case EW_HSIG:
        *alpha = zci_attr_float(n, "alpha", 0.2f, &st);
        *beta = zci_attr_float(n, "beta", 0.5f, &st);
        break;
    case EW_CLIP:
        *alpha = -FLT_MAX;
        *beta = FLT_MAX;
        if (n->opset < 11) {
            *alpha = zci_attr_float(n, "min", -FLT_MAX, &st);
            *beta = zci_attr_float(n, "max", FLT_MAX, &st);
        } else {
            if (ZCI_HAS_IN(n, 1)) ZCI_TRY(const_scalar(c, n, 1, alpha));
            if (ZCI_HAS_IN(n, 2)) ZCI_TRY(const_scalar(c, n, 2, beta));
        }
        break;
    default: break;
    }
    return st;
}

bool arith_type(zci_dtype t) { return t == ZCI_FLOAT32 || t == ZCI_FLOAT16 || t == ZCI_INT32 || t == ZCI_INT64; }
bool movable(size_t es) { return es == 1 || es == 2 || es == 4 || es == 8; }

zci_status build(const cu_ctx *c, const zci_node *n, ew_state *s)
{
    const zci_graph *g = c->g;
    memset(s, 0, sizeof *s);
    s->op = find_op(n->op_type);
    if (s->op < 0) return zci_error(ZCI_INTERNAL, "not an element-wise op");
    const int y = n->out[0];
    const zci_tensor *out = &g->tensors[y];
    const int out_nhwc = c->lay ? c->lay[y] == CU_NHWC : 0;
    int in_nhwc[kMaxIn] = {0, 0, 0};
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0 && !(s->op == EW_CLIP && k > 0)) return zci_error(ZCI_UNSUPPORTED, "input %d is omitted", k);
        if (k < kMaxIn && c->lay) in_nhwc[k] = cu_in_nhwc(c, n, k);
    }
    if (s->op == EW_CAST || is_unary(s->op)) {
        zci_dtype t = c->dt[n->in[0]];
        if (s->op != EW_CAST) {
            if (t != ZCI_FLOAT32 && t != ZCI_FLOAT16 && !((t == ZCI_INT32 || t == ZCI_INT64) && int_unary(s->op)))
                return zci_error(ZCI_UNSUPPORTED, "%s of %s tensors", n->op_type, zci_dtype_name(t));
            ZCI_TRY(unary_params(c, n, s->op, &s->alpha, &s->beta));
        }
        s->nsteps = 1;
        s->steps[0].op = s->op;
        s->steps[0].a = 0;
        return ZCI_OK;
    }
    if (s->op == EW_WHERE) {
        if (n->n_in != 3) return zci_error(ZCI_UNSUPPORTED, "Where needs 3 inputs");
        if (c->dt[n->in[0]] != ZCI_BOOL || !movable(zci_dtype_size(c->dt[y])))
            return zci_error(ZCI_UNSUPPORTED, "Where with condition %s, values %s", zci_dtype_name(c->dt[n->in[0]]),
                             zci_dtype_name(c->dt[y]));
        const zci_tensor *ins[3] = {ZCI_IN(g, n, 0), ZCI_IN(g, n, 1), ZCI_IN(g, n, 2)};
        s->nsteps = 1;
        s->steps[0] = step{EW_WHERE, 0, 1, 2, {}};
        if (!plan_broadcast(ins, in_nhwc, 3, out, out_nhwc, &s->steps[0].plan))
            return zci_error(ZCI_UNSUPPORTED, "broadcast over more than %d dimensions", kMaxNd);
        return ZCI_OK;
    }
    /* binary and variadic Max/Min */
    zci_dtype t = c->dt[n->in[0]];
    for (int k = 1; k < n->n_in; k++)
        if (c->dt[n->in[k]] != t)
            return zci_error(ZCI_UNSUPPORTED, "inputs of types %s and %s", zci_dtype_name(t), zci_dtype_name(c->dt[n->in[k]]));
    if (!arith_type(t) && !(s->op == EW_EQ && t == ZCI_BOOL))
        return zci_error(ZCI_UNSUPPORTED, "%s of %s tensors", n->op_type, zci_dtype_name(t));
    if (n->n_in == 2) {
        const zci_tensor *ins[2] = {ZCI_IN(g, n, 0), ZCI_IN(g, n, 1)};
        s->nsteps = 1;
        s->steps[0] = step{s->op, 0, 1, -1, {}};
        if (!plan_broadcast(ins, in_nhwc, 2, out, out_nhwc, &s->steps[0].plan))
            return zci_error(ZCI_UNSUPPORTED, "broadcast over more than %d dimensions", kMaxNd);
        return ZCI_OK;
    }
    if ((s->op != EW_MAX && s->op != EW_MIN) || n->n_in < 1 || n->n_in > kMaxSteps)
        return zci_error(ZCI_UNSUPPORTED, "%s with %d inputs", n->op_type, n->n_in);
    /* y = copy(x0); y = y op x_k: every step on the output's shape (variadic Max/Min run in NCHW:
     * their inputs need not share a layout) */
    s->steps[0] = step{EW_COPY, -1, 0, -1, {}};
    const zci_tensor *pair0[2] = {out, ZCI_IN(g, n, 0)};
    int lay0[2] = {out_nhwc, in_nhwc[0]};
    if (!plan_broadcast(pair0, lay0, 2, out, out_nhwc, &s->steps[0].plan))
        return zci_error(ZCI_UNSUPPORTED, "broadcast over more than %d dimensions", kMaxNd);
    s->nsteps = n->n_in;
    for (int k = 1; k < n->n_in; k++) {
        const zci_tensor *pair[2] = {out, ZCI_IN(g, n, k)};
        int lay[2] = {out_nhwc, k < kMaxIn ? in_nhwc[k] : (c->lay && cu_in_nhwc(c, n, k))};
        s->steps[k] = step{s->op, -2, k, -1, {}};
        if (!plan_broadcast(pair, lay, 2, out, out_nhwc, &s->steps[k].plan))
            return zci_error(ZCI_UNSUPPORTED, "broadcast over more than %d dimensions", kMaxNd);
    }
    return ZCI_OK;
}

zci_status launch_select(const void *cond, const void *x, const void *z, void *y, const bplan &p, size_t es,
                         cudaStream_t st)
{
    unsigned nb = blocks_for(p.n);
    switch (es) {
    case 1: k_select<uint8_t><<<nb, kThreads, 0, st>>>((const uint8_t *)cond, (const uint8_t *)x, (const uint8_t *)z, (uint8_t *)y, p); break;
    case 2: k_select<uint16_t><<<nb, kThreads, 0, st>>>((const uint8_t *)cond, (const uint16_t *)x, (const uint16_t *)z, (uint16_t *)y, p); break;
    case 4: k_select<uint32_t><<<nb, kThreads, 0, st>>>((const uint8_t *)cond, (const uint32_t *)x, (const uint32_t *)z, (uint32_t *)y, p); break;
    default: k_select<uint64_t><<<nb, kThreads, 0, st>>>((const uint8_t *)cond, (const uint64_t *)x, (const uint64_t *)z, (uint64_t *)y, p); break;
    }
    CU_LAUNCHED("select");
    return ZCI_OK;
}

template <typename T>
void launch_binary_t(const void *a, const void *b, void *y, const bplan &p, int op, bool cmp, cudaStream_t st)
{
    unsigned nb = blocks_for(p.n);
    if (cmp) k_compare<T><<<nb, kThreads, 0, st>>>((const T *)a, (const T *)b, (uint8_t *)y, p, op);
    else k_binary<T><<<nb, kThreads, 0, st>>>((const T *)a, (const T *)b, (T *)y, p, op);
}

zci_status launch_binary(zci_dtype t, const void *a, const void *b, void *y, const bplan &p, int op, cudaStream_t st)
{
    bool cmp = is_compare(op);
    switch (t) {
    case ZCI_FLOAT32: launch_binary_t<float>(a, b, y, p, op, cmp, st); break;
    case ZCI_FLOAT16: launch_binary_t<__half>(a, b, y, p, op, cmp, st); break;
    case ZCI_INT32: launch_binary_t<int32_t>(a, b, y, p, op, cmp, st); break;
    case ZCI_INT64: launch_binary_t<int64_t>(a, b, y, p, op, cmp, st); break;
    case ZCI_BOOL: launch_binary_t<uint8_t>(a, b, y, p, op, cmp, st); break;
    default: return zci_error(ZCI_INTERNAL, "binary op on %s", zci_dtype_name(t));
    }
    CU_LAUNCHED("binary");
    return ZCI_OK;
}

zci_status launch_unary(zci_dtype t, const void *x, void *y, int64_t n, int op, float a, float b, cudaStream_t st)
{
    uint32_t nn = (uint32_t)n;
    switch (t) {
    case ZCI_FLOAT32: k_unary<float><<<blocks_for(n), kThreads, 0, st>>>((const float *)x, (float *)y, nn, op, a, b); break;
    case ZCI_FLOAT16:
        if ((n & 1) == 0 && ((uintptr_t)x & 3) == 0 && ((uintptr_t)y & 3) == 0)
            k_unary_half2<<<blocks_for(n / 2), kThreads, 0, st>>>((const __half2 *)x, (__half2 *)y, nn / 2, op, a, b);
        else
            k_unary<__half><<<blocks_for(n), kThreads, 0, st>>>((const __half *)x, (__half *)y, nn, op, a, b);
        break;
    case ZCI_INT32: k_unary<int32_t><<<blocks_for(n), kThreads, 0, st>>>((const int32_t *)x, (int32_t *)y, nn, op, a, b); break;
    case ZCI_INT64: k_unary<int64_t><<<blocks_for(n), kThreads, 0, st>>>((const int64_t *)x, (int64_t *)y, nn, op, a, b); break;
    default: return zci_error(ZCI_INTERNAL, "unary op on %s", zci_dtype_name(t));
    }
    CU_LAUNCHED("unary");
    return ZCI_OK;
}

} // namespace

extern "C" zci_status cu_convert(const void *x, zci_dtype xt, void *y, zci_dtype yt, int64_t n, cudaStream_t st)
{
    if (n <= 0) return ZCI_OK;
    if (xt == yt) {
        CU_TRY(cudaMemcpyAsync(y, x, (size_t)n * zci_dtype_size(xt), cudaMemcpyDeviceToDevice, st));
        return ZCI_OK;
    }
    uint32_t nn = (uint32_t)n, n4 = 0;
    if (xt == ZCI_FLOAT32 && yt == ZCI_FLOAT16) {
        if (aligned16(x) && aligned16(y)) {
            n4 = nn / 4;
            if (n4) k_f32_to_f16<<<blocks_for(n4), kThreads, 0, st>>>((const float4 *)x, (__half2 *)y, n4);
        }
        if (4 * n4 < nn)
            k_cvt_tail<float, __half><<<blocks_for(nn - 4 * n4), kThreads, 0, st>>>((const float *)x, (__half *)y, 4 * n4, nn);
    } else if (xt == ZCI_FLOAT16 && yt == ZCI_FLOAT32) {
        if (aligned16(x) && aligned16(y)) {
            n4 = nn / 4;
            if (n4) k_f16_to_f32<<<blocks_for(n4), kThreads, 0, st>>>((const __half2 *)x, (float4 *)y, n4);
        }
        if (4 * n4 < nn)
            k_cvt_tail<__half, float><<<blocks_for(nn - 4 * n4), kThreads, 0, st>>>((const __half *)x, (float *)y, 4 * n4, nn);
    } else {
        k_cast_any<<<blocks_for(n), kThreads, 0, st>>>(x, (int)xt, y, (int)yt, nn);
    }
    CU_LAUNCHED("convert");
    return ZCI_OK;
}

extern "C" zci_status cu_ew_supports(const cu_ctx *c, const zci_node *n)
{
    ew_state s;
    return build(c, n, &s);
}

extern "C" zci_status cu_ew_prepare(cu_ctx *c, const zci_node *n, void **state)
{
    ew_state *s = (ew_state *)zci_malloc(sizeof(ew_state), "element-wise state");
    if (!s) return ZCI_OUT_OF_MEMORY;
    zci_status st = build(c, n, s);
    if (st != ZCI_OK) {
        free(s);
        return st;
    }
    *state = s;
    return ZCI_OK;
}

extern "C" zci_status cu_ew_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t st)
{
    const ew_state *s = (const ew_state *)state;
    const int y = n->out[0];
    void *yp = c->ptr[y];
    const int64_t count = cu_numel(c, y);
    if (count == 0) return ZCI_OK;
    if (s->op == EW_CAST) return cu_convert(cu_in(c, n, 0), c->dt[n->in[0]], yp, c->dt[y], count, st);
    if (is_unary(s->op)) return launch_unary(c->dt[y], cu_in(c, n, 0), yp, count, s->op, s->alpha, s->beta, st);
    for (int k = 0; k < s->nsteps; k++) {
        const step &p = s->steps[k];
        const void *a = p.a == -2 ? yp : p.a >= 0 ? cu_in(c, n, p.a) : NULL;
        const void *b = p.b >= 0 ? cu_in(c, n, p.b) : NULL;
        if (p.op == EW_WHERE) {
            ZCI_TRY(launch_select(a, b, cu_in(c, n, p.cc), yp, p.plan, cu_esize(c, y), st));
        } else if (p.op == EW_COPY) {
            /* operand 1 of the plan is the source; the select kernel with no condition copies it */
            ZCI_TRY(launch_select(NULL, b, b, yp, p.plan, cu_esize(c, y), st));
        } else {
            ZCI_TRY(launch_binary(c->dt[n->in[0]], a, b, yp, p.plan, p.op, st));
        }
    }
    return ZCI_OK;
}
