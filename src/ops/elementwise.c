/* elementwise.c: element-wise operators: arithmetic and comparisons with multidirectional
 * broadcasting (Add, Sub, Mul, Div, Pow, Max, Min, Equal, Less, Greater, Where), unary math and
 * activations (Sqrt, Exp, Log, Reciprocal, Floor, Ceil, Erf, Sigmoid, Tanh, Relu, LeakyRelu,
 * HardSigmoid, HardSwish, Neg, Abs, Clip) and Cast.
 *
 * Each node's typed kernel is chosen once, in infer, and kept in n->params; the CPU entry points
 * only run it. Broadcasting goes through one engine: the output's dimensions are collapsed (size-1
 * dimensions dropped, neighbours that every input walks contiguously merged), so the common cases
 * (same shapes, a tensor and a one-element constant, a per-channel or grid operand) become a few
 * long rows whose operands advance by 1 or stay put (stride 0), and each row is a loop the
 * compiler vectorises.
 *
 * Types: float32 everywhere; int32 and int64 (shape arithmetic) for Add, Sub, Mul, Div, Pow, Max,
 * Min, Equal, Less, Greater, Neg, Abs, Relu and Clip; bool for Equal; any fixed-size type for Where.
 * Integer arithmetic wraps (two's complement) instead of overflowing, and integer division by
 * zero gives 0, so a bad model cannot crash the process. Cast converts among float32, float16,
 * double, bool and the 8-, 16-, 32- and 64-bit integers. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/fast_exp.h"
#include "ops/op.h"

/* Below this many elements a kernel runs on one thread: waking a team costs more than it saves. */
#define PAR_MIN_ELEMS ((int64_t)1 << 16)

/* ================================================================ small helpers */

static const char *tname(const zci_tensor *t) { return t->name ? t->name : "?"; }

/* Replaces n->params (a flat struct: free() releases it). */
static void set_params(zci_node *n, void *p)
{
    free(n->params);
    n->params = p;
}

typedef void (*range_fn)(const void *ctx, int64_t lo, int64_t hi);

/* Runs fn over [0, n) split in contiguous ranges, one per thread when n is large enough. */
static void par_for(int64_t n, int nthreads, range_fn fn, const void *ctx)
{
    int nt = nthreads < 1 ? 1 : nthreads;
    if (n < PAR_MIN_ELEMS) nt = 1;
    else if (n / (PAR_MIN_ELEMS / 4) < nt) nt = (int)(n / (PAR_MIN_ELEMS / 4));
    if (nt <= 1) {
        fn(ctx, 0, n);
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) fn(ctx, n * t / nt, n * (t + 1) / nt);
}

/* Type slots of the per-op kernel tables. */
enum { SLOT_F32, SLOT_I32, SLOT_I64, SLOT_BOOL, N_SLOTS };

static int dtype_slot(zci_dtype t)
{
    switch (t) {
    case ZCI_FLOAT32: return SLOT_F32;
    case ZCI_INT32: return SLOT_I32;
    case ZCI_INT64: return SLOT_I64;
    case ZCI_BOOL: return SLOT_BOOL;
    default: return -1;
    }
}

static const zci_dtype slot_dtype[N_SLOTS] = {ZCI_FLOAT32, ZCI_INT32, ZCI_INT64, ZCI_BOOL};

/* "float, int32 and int64" from the slots that have a kernel (bit s of `have` set). */
static const char *slots_str(unsigned have, char *buf, size_t size)
{
    int count = 0, done = 0;
    for (int s = 0; s < N_SLOTS; s++) count += (have >> s) & 1;
    buf[0] = '\0';
    for (int s = 0; s < N_SLOTS; s++) {
        if (!((have >> s) & 1)) continue;
        size_t len = strlen(buf);
        const char *sep = done == 0 ? "" : done == count - 1 ? " and " : ", ";
        snprintf(buf + len, size - len, "%s%s", sep, zci_dtype_name(slot_dtype[s]));
        done++;
    }
    return buf;
}

/* ONNX type names, including those zci_dtype does not list, for messages about refused types. */
static const char *onnx_type_name(int64_t t)
{
    static const char *const extra[] = {"complex64", "complex128", "bfloat16", "float8e4m3fn",
                                        "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4",
                                        "int4", "float4e2m1", "float8e8m0", "uint2", "int2",
                                        "float6e2m3", "float6e3m2"};
    if (t == ZCI_STRING) return "string";
    if (t >= 14 && t < 14 + (int64_t)(sizeof extra / sizeof extra[0])) return extra[t - 14];
    return zci_dtype_name((zci_dtype)t);
}

static zci_status unsupported_type(const char *op, const zci_tensor *t, const char *supported)
{
    return zci_error(ZCI_UNSUPPORTED, "tensor '%s' has element type %s; zcinfer's %s supports %s", tname(t),
                     onnx_type_name(t->dtype), op, supported);
}

/* Inputs up to the last one present (trailing omitted optionals dropped). */
static int present_inputs(const zci_node *n)
{
    int count = n->n_in;
    while (count > 0 && n->in[count - 1] < 0) count--;
    return count;
}

/* Every input in [0, count) present (an empty name is an error for these ops). */
static zci_status require_inputs(const zci_node *n, int count)
{
    for (int i = 0; i < count; i++)
        if (!ZCI_HAS_IN(n, i)) return zci_error(ZCI_INVALID_MODEL, "required input %d is missing", i);
    return ZCI_OK;
}

/* Float -> integer as ONNX (and C) define it in range: truncation toward zero. Out of range
 * the result is undefined by ONNX; here it saturates (NaN gives 0) instead of invoking C's
 * undefined behaviour. */
static inline int64_t f2i64(double v)
{
    if (!(v == v)) return 0;
    if (v >= 9223372036854775808.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

static inline uint64_t f2u64(double v)
{
    if (v >= 18446744073709551616.0) return UINT64_MAX;
    if (v >= 9223372036854775808.0) return (uint64_t)v;
    return (uint64_t)f2i64(v);
}

/* ================================================================ broadcasting engine */

#define BC_MAX_IN 3

/* Output dimensions after collapsing, and each input's element stride along each of them (0
 * where the input is broadcast). */
typedef struct bc_plan {
    int rank, nin;
    int64_t dims[ZCI_MAX_DIMS];
    int64_t st[BC_MAX_IN][ZCI_MAX_DIMS];
} bc_plan;

/* A row kernel: `rows` rows of n outputs, contiguous from y. In a row, input k starts at x[k]
 * (advanced by rs[k] elements per row) and advances s[k] (0 or 1) per element. */
typedef void (*bc_row_fn)(void *y, const void *const *x, const int64_t *s, int64_t n, int64_t rows,
                          const int64_t *rs, const void *params);

static void bc_plan_make(bc_plan *p, const int64_t *ydims, int yrank, int nin, const zci_tensor *const *in)
{
    p->rank = 0;
    p->nin = nin;
    for (int i = 0; i < yrank; i++) {
        if (ydims[i] == 1) continue;
        int64_t s[BC_MAX_IN];
        for (int k = 0; k < nin; k++) {
            int j = i - (yrank - in[k]->ndim);
            s[k] = 0;
            if (j >= 0 && in[k]->dims[j] != 1) {
                s[k] = 1;
                for (int m = j + 1; m < in[k]->ndim; m++) s[k] *= in[k]->dims[m];
            }
        }
        int r = p->rank;
        /* merge with the previous dimension when every input walks both as one */
        bool merge = r > 0;
        for (int k = 0; k < nin && merge; k++) merge = p->st[k][r - 1] == s[k] * ydims[i];
        if (merge) {
            p->dims[r - 1] *= ydims[i];
            for (int k = 0; k < nin; k++) p->st[k][r - 1] = s[k];
        } else {
            p->dims[r] = ydims[i];
            for (int k = 0; k < nin; k++) p->st[k][r] = s[k];
            p->rank++;
        }
    }
    if (p->rank == 0) { /* one element */
        p->rank = 1;
        p->dims[0] = 1;
        for (int k = 0; k < nin; k++) p->st[k][0] = 0;
    }
}

typedef struct bc_job {
    const bc_plan *p;
    bc_row_fn fn;
    const void *params;
    char *y;
    size_t ysz;
    const char *x[BC_MAX_IN];
    size_t xsz[BC_MAX_IN];
} bc_job;

/* Output elements [lo, hi) in row order: an odometer over the outer dimensions. Whole rows go to
 * the row kernel in batches along the second innermost dimension, so a short innermost dimension
 * (the 2 of a (1,3,80,80,2) box tensor) does not cost a call per row. */
static void bc_range(const void *ctx, int64_t lo, int64_t hi)
{
    const bc_job *j = ctx;
    const bc_plan *p = j->p;
    const int r = p->rank, nin = p->nin;
    const int64_t inner = p->dims[r - 1];
    int64_t idx[ZCI_MAX_DIMS], off[BC_MAX_IN] = {0}, s[BC_MAX_IN], rs[BC_MAX_IN];
    int64_t rest = lo / inner, col = lo % inner;
    for (int i = r - 2; i >= 0; i--) {
        idx[i] = rest % p->dims[i];
        rest /= p->dims[i];
        for (int k = 0; k < nin; k++) off[k] += idx[i] * p->st[k][i];
    }
    for (int k = 0; k < nin; k++) {
        s[k] = p->st[k][r - 1];
        rs[k] = r >= 2 ? p->st[k][r - 2] : 0;
    }
    for (int64_t pos = lo; pos < hi;) {
        const void *x[BC_MAX_IN];
        for (int k = 0; k < nin; k++) x[k] = j->x[k] + (size_t)(off[k] + col * s[k]) * j->xsz[k];
        int64_t cnt = inner - col, rows = 1;
        if (hi - pos < cnt) {
            cnt = hi - pos; /* the range ends inside this row */
        } else if (col == 0 && r >= 2) {
            rows = (hi - pos) / inner;
            if (rows > p->dims[r - 2] - idx[r - 2]) rows = p->dims[r - 2] - idx[r - 2];
        }
        j->fn(j->y + (size_t)pos * j->ysz, x, s, cnt, rows, rs, j->params);
        pos += rows * cnt;
        col += cnt;
        if (col < inner) break;
        col = 0;
        /* advance `rows` rows along dimension r-2, carrying into the outer ones */
        int64_t step = rows;
        for (int i = r - 2; i >= 0 && step; i--) {
            idx[i] += step;
            for (int k = 0; k < nin; k++) off[k] += step * p->st[k][i];
            if (idx[i] < p->dims[i]) break;
            for (int k = 0; k < nin; k++) off[k] -= p->dims[i] * p->st[k][i];
            idx[i] = 0;
            step = 1;
        }
    }
}

/* Runs fn over output tensor yt (data y) from the nin input tensors in[] (data x[]). */
static void bc_run(const zci_tensor *yt, void *y, int nin, const zci_tensor *const *in, const void *const *x,
                   bc_row_fn fn, const void *params, int nthreads)
{
    int64_t total = zci_tensor_numel(yt);
    if (total <= 0) return;
    bc_plan p;
    bc_plan_make(&p, yt->dims, yt->ndim, nin, in);
    bc_job j = {.p = &p, .fn = fn, .params = params, .y = y, .ysz = zci_dtype_size(yt->dtype)};
    for (int k = 0; k < nin; k++) {
        j.x[k] = x[k];
        j.xsz[k] = zci_dtype_size(in[k]->dtype);
    }
    par_for(total, nthreads, bc_range, &j);
}

/* ================================================================ binary row kernels */

/* Rows of y = EXPR(a, b), with a loop per stride pattern so each one vectorises. */
#define BINARY_ROW(NAME, TA, TB, TY, EXPR)                                                         \
    static void NAME(void *yv, const void *const *xv, const int64_t *s, int64_t n, int64_t rows,  \
                     const int64_t *rs, const void *params)                                        \
    {                                                                                              \
        const TA *A = xv[0];                                                                       \
        const TB *B = xv[1];                                                                       \
        TY *Y = yv;                                                                                \
        (void)params;                                                                              \
        for (int64_t row = 0; row < rows; row++, A += rs[0], B += rs[1], Y += n) {                 \
            if (s[0] && s[1]) {                                                                    \
                for (int64_t i = 0; i < n; i++) {                                                  \
                    const TA a = A[i];                                                             \
                    const TB b = B[i];                                                             \
                    Y[i] = (EXPR);                                                                 \
                }                                                                                  \
            } else if (s[0]) {                                                                     \
                const TB b = B[0];                                                                 \
                for (int64_t i = 0; i < n; i++) {                                                  \
                    const TA a = A[i];                                                             \
                    Y[i] = (EXPR);                                                                 \
                }                                                                                  \
            } else if (s[1]) {                                                                     \
                const TA a = A[0];                                                                 \
                for (int64_t i = 0; i < n; i++) {                                                  \
                    const TB b = B[i];                                                             \
                    Y[i] = (EXPR);                                                                 \
                }                                                                                  \
            } else {                                                                               \
                const TA a = A[0];                                                                 \
                const TB b = B[0];                                                                 \
                const TY v = (EXPR);                                                               \
                for (int64_t i = 0; i < n; i++) Y[i] = v;                                          \
            }                                                                                      \
        }                                                                                          \
    }

/* Wrapping integer arithmetic: through the unsigned type, where overflow is defined. */
#define WRAP(T, UT, OP) ((T)((UT)a OP(UT) b))

static inline int32_t div_i32(int32_t a, int32_t b)
{
    if (b == 0) return 0;
    if (b == -1) return (int32_t)(0u - (uint32_t)a); /* INT32_MIN / -1 traps on x86 */
    return a / b;
}

static inline int64_t div_i64(int64_t a, int64_t b)
{
    if (b == 0) return 0;
    if (b == -1) return (int64_t)(0u - (uint64_t)a);
    return a / b;
}

/* Integer power by squaring, wrapping; a negative exponent gives the truncated 1 / a^-e. */
static inline int64_t ipow(int64_t a, int64_t e)
{
    if (e < 0) return a == 1 ? 1 : a == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, base = (uint64_t)a;
    while (e) {
        if (e & 1) r *= base;
        base *= base;
        e >>= 1;
    }
    return (int64_t)r;
}

/* Max/Min of floats propagate NaN (as numpy.maximum and the ONNX reference do). */
#define FMAX(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))
#define FMIN(a, b) (((a) != (a) || (a) < (b)) ? (a) : (b))

BINARY_ROW(add_f32, float, float, float, a + b)
BINARY_ROW(add_i32, int32_t, int32_t, int32_t, WRAP(int32_t, uint32_t, +))
BINARY_ROW(add_i64, int64_t, int64_t, int64_t, WRAP(int64_t, uint64_t, +))
BINARY_ROW(sub_f32, float, float, float, a - b)
BINARY_ROW(sub_i32, int32_t, int32_t, int32_t, WRAP(int32_t, uint32_t, -))
BINARY_ROW(sub_i64, int64_t, int64_t, int64_t, WRAP(int64_t, uint64_t, -))
BINARY_ROW(mul_f32, float, float, float, a * b)
BINARY_ROW(mul_i32, int32_t, int32_t, int32_t, WRAP(int32_t, uint32_t, *))
BINARY_ROW(mul_i64, int64_t, int64_t, int64_t, WRAP(int64_t, uint64_t, *))
BINARY_ROW(div_f32, float, float, float, a / b)
BINARY_ROW(div_i32r, int32_t, int32_t, int32_t, div_i32(a, b))
BINARY_ROW(div_i64r, int64_t, int64_t, int64_t, div_i64(a, b))
BINARY_ROW(max_f32, float, float, float, FMAX(a, b))
BINARY_ROW(max_i32, int32_t, int32_t, int32_t, a > b ? a : b)
BINARY_ROW(max_i64, int64_t, int64_t, int64_t, a > b ? a : b)
BINARY_ROW(min_f32, float, float, float, FMIN(a, b))
BINARY_ROW(min_i32, int32_t, int32_t, int32_t, a < b ? a : b)
BINARY_ROW(min_i64, int64_t, int64_t, int64_t, a < b ? a : b)
BINARY_ROW(eq_f32, float, float, uint8_t, a == b)
BINARY_ROW(eq_i32, int32_t, int32_t, uint8_t, a == b)
BINARY_ROW(eq_i64, int64_t, int64_t, uint8_t, a == b)
BINARY_ROW(eq_bool, uint8_t, uint8_t, uint8_t, (a != 0) == (b != 0))
BINARY_ROW(lt_f32, float, float, uint8_t, a < b)
BINARY_ROW(lt_i32, int32_t, int32_t, uint8_t, a < b)
BINARY_ROW(lt_i64, int64_t, int64_t, uint8_t, a < b)
BINARY_ROW(gt_f32, float, float, uint8_t, a > b)
BINARY_ROW(gt_i32, int32_t, int32_t, uint8_t, a > b)
BINARY_ROW(gt_i64, int64_t, int64_t, uint8_t, a > b)

/* Pow: the output has the base's type. Float math goes through double when the exponent is
 * not float (as numpy promotes), integer powers are exact. */
BINARY_ROW(pow_f32_f32, float, float, float, powf(a, b))
BINARY_ROW(pow_f32_i32, float, int32_t, float, (float)pow(a, (double)b))
BINARY_ROW(pow_f32_i64, float, int64_t, float, (float)pow(a, (double)b))
BINARY_ROW(pow_i32_f32, int32_t, float, int32_t, (int32_t)f2i64(pow(a, b)))
BINARY_ROW(pow_i32_i32, int32_t, int32_t, int32_t, (int32_t)ipow(a, b))
BINARY_ROW(pow_i32_i64, int32_t, int64_t, int32_t, (int32_t)ipow(a, b))
BINARY_ROW(pow_i64_f32, int64_t, float, int64_t, f2i64(pow((double)a, b)))
BINARY_ROW(pow_i64_i32, int64_t, int32_t, int64_t, ipow(a, b))
BINARY_ROW(pow_i64_i64, int64_t, int64_t, int64_t, ipow(a, b))

/* ================================================================ binary and variadic ops */

typedef struct binary_def {
    const char *name;
    bc_row_fn fn[N_SLOTS];
    bool bool_out; /* comparisons */
} binary_def;

typedef struct bc_params {
    bc_row_fn fn;
} bc_params;

static const binary_def def_add = {"Add", {add_f32, add_i32, add_i64, NULL}, false};
static const binary_def def_sub = {"Sub", {sub_f32, sub_i32, sub_i64, NULL}, false};
static const binary_def def_mul = {"Mul", {mul_f32, mul_i32, mul_i64, NULL}, false};
static const binary_def def_div = {"Div", {div_f32, div_i32r, div_i64r, NULL}, false};
static const binary_def def_max = {"Max", {max_f32, max_i32, max_i64, NULL}, false};
static const binary_def def_min = {"Min", {min_f32, min_i32, min_i64, NULL}, false};
static const binary_def def_equal = {"Equal", {eq_f32, eq_i32, eq_i64, eq_bool}, true};
static const binary_def def_less = {"Less", {lt_f32, lt_i32, lt_i64, NULL}, true};
static const binary_def def_greater = {"Greater", {gt_f32, gt_i32, gt_i64, NULL}, true};

static zci_status set_row_params(zci_node *n, bc_row_fn fn)
{
    bc_params *p = zci_malloc(sizeof *p, "element-wise params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->fn = fn;
    set_params(n, p);
    return ZCI_OK;
}

/* Checks that inputs [0, count) share one element type with a kernel in def; the kernel. */
static zci_status pick_kernel(const zci_graph *g, const zci_node *n, int count, const binary_def *def,
                              bc_row_fn *fn)
{
    const zci_tensor *a = ZCI_IN(g, n, 0);
    for (int i = 1; i < count; i++) {
        const zci_tensor *b = ZCI_IN(g, n, i);
        if (b->dtype != a->dtype)
            return zci_error(ZCI_INVALID_MODEL, "inputs '%s' (%s) and '%s' (%s) must have the same element type",
                             tname(a), onnx_type_name(a->dtype), tname(b), onnx_type_name(b->dtype));
    }
    int slot = dtype_slot(a->dtype);
    if (slot < 0 || !def->fn[slot]) {
        unsigned have = 0;
        for (int s = 0; s < N_SLOTS; s++) have |= def->fn[s] ? 1u << s : 0u;
        char buf[96];
        return unsupported_type(def->name, a, slots_str(have, buf, sizeof buf));
    }
    *fn = def->fn[slot];
    return ZCI_OK;
}

/* Broadcast shape of inputs [0, count). */
static zci_status broadcast_inputs(const zci_graph *g, const zci_node *n, int count, int64_t *dims, int *nd)
{
    const zci_tensor *a = ZCI_IN(g, n, 0);
    *nd = a->ndim;
    memcpy(dims, a->dims, sizeof(int64_t) * (size_t)a->ndim);
    for (int i = 1; i < count; i++) {
        const zci_tensor *b = ZCI_IN(g, n, i);
        int64_t tmp[ZCI_MAX_DIMS];
        int nt;
        ZCI_TRY(zci_broadcast_shape(dims, *nd, b->dims, b->ndim, tmp, &nt));
        memcpy(dims, tmp, sizeof(int64_t) * (size_t)nt);
        *nd = nt;
    }
    return ZCI_OK;
}

/* Add, Sub, Mul, Div, Equal, Less, Greater and (variadic, 1..N inputs) Max, Min. */
static zci_status nary_infer(zci_graph *g, zci_node *n, const binary_def *def, bool variadic)
{
    int count = present_inputs(n);
    if (variadic) {
        ZCI_TRY(zci_check_arity(n, 1, count > 0 ? count : 1, 1));
    } else {
        ZCI_TRY(zci_check_arity(n, 2, 2, 1));
        count = 2;
    }
    ZCI_TRY(require_inputs(n, count));
    bc_row_fn fn = NULL;
    ZCI_TRY(pick_kernel(g, n, count, def, &fn));
    int64_t dims[ZCI_MAX_DIMS];
    int nd;
    ZCI_TRY(broadcast_inputs(g, n, count, dims, &nd));
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), def->bool_out ? ZCI_BOOL : ZCI_IN(g, n, 0)->dtype, dims, nd);
    return set_row_params(n, fn);
}

static zci_status nary_cpu(const zci_kernel_ctx *k)
{
    const zci_node *n = k->n;
    const bc_params *p = n->params;
    const zci_tensor *yt = ZCI_KOUT(k, 0);
    void *y = ZCI_KOUT_DATA(k, 0);
    const int count = present_inputs(n);
    if (count == 1) { /* Max/Min of one tensor: a copy */
        if (y != ZCI_KIN_DATA(k, 0)) memcpy(y, ZCI_KIN_DATA(k, 0), zci_tensor_bytes(yt));
        return ZCI_OK;
    }
    const zci_tensor *in[2] = {ZCI_KIN(k, 0), ZCI_KIN(k, 1)};
    const void *x[2] = {ZCI_KIN_DATA(k, 0), ZCI_KIN_DATA(k, 1)};
    bc_run(yt, y, 2, in, x, p->fn, NULL, k->nthreads);
    /* further Max/Min inputs fold into the output in place */
    for (int i = 2; i < count; i++) {
        in[0] = yt;
        in[1] = ZCI_KIN(k, i);
        x[0] = y;
        x[1] = ZCI_KIN_DATA(k, i);
        bc_run(yt, y, 2, in, x, p->fn, NULL, k->nthreads);
    }
    return ZCI_OK;
}

#define NARY_INFER(NAME, DEF, VARIADIC)                                                            \
    static zci_status NAME(zci_graph *g, zci_node *n) { return nary_infer(g, n, &DEF, VARIADIC); }
NARY_INFER(add_infer, def_add, false)
NARY_INFER(sub_infer, def_sub, false)
NARY_INFER(mul_infer, def_mul, false)
NARY_INFER(div_infer, def_div, false)
NARY_INFER(equal_infer, def_equal, false)
NARY_INFER(less_infer, def_less, false)
NARY_INFER(greater_infer, def_greater, false)
NARY_INFER(max_infer, def_max, true)
NARY_INFER(min_infer, def_min, true)

/* Pow: base float32, int32 or int64; exponent any of those (from opset 12 they may differ). */
static zci_status pow_infer(zci_graph *g, zci_node *n)
{
    static const bc_row_fn table[3][3] = {
        {pow_f32_f32, pow_f32_i32, pow_f32_i64},
        {pow_i32_f32, pow_i32_i32, pow_i32_i64},
        {pow_i64_f32, pow_i64_i32, pow_i64_i64},
    };
    ZCI_TRY(zci_check_arity(n, 2, 2, 1));
    const zci_tensor *a = ZCI_IN(g, n, 0), *b = ZCI_IN(g, n, 1);
    int sa = dtype_slot(a->dtype), sb = dtype_slot(b->dtype);
    if (sa < 0 || sa > SLOT_I64) return unsupported_type("Pow", a, "float, int32 and int64");
    if (sb < 0 || sb > SLOT_I64) return unsupported_type("Pow", b, "float, int32 and int64");
    int64_t dims[ZCI_MAX_DIMS];
    int nd;
    ZCI_TRY(zci_broadcast_shape(a->dims, a->ndim, b->dims, b->ndim, dims, &nd));
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), a->dtype, dims, nd);
    return set_row_params(n, table[sa][sb]);
}

/* ---------------------------------------------------------------- Where */

/* Rows of Where for elements of one width (the select copies bits: the type does not matter). */
#define WHERE_ROW(NAME, T)                                                                         \
    static void NAME(void *yv, const void *const *xv, const int64_t *s, int64_t n, int64_t rows,  \
                     const int64_t *rs, const void *params)                                        \
    {                                                                                              \
        const uint8_t *C = xv[0];                                                                  \
        const T *X = xv[1], *Z = xv[2];                                                            \
        T *Y = yv;                                                                                 \
        (void)params;                                                                              \
        const int64_t sc = s[0], sx = s[1], sz = s[2];                                             \
        for (int64_t row = 0; row < rows; row++, C += rs[0], X += rs[1], Z += rs[2], Y += n) {     \
            if (sc && sx && sz)                                                                    \
                for (int64_t i = 0; i < n; i++) Y[i] = C[i] ? X[i] : Z[i];                         \
            else                                                                                   \
                for (int64_t i = 0; i < n; i++) Y[i] = C[i * sc] ? X[i * sx] : Z[i * sz];         \
        }                                                                                          \
    }
WHERE_ROW(where_8, uint8_t)
WHERE_ROW(where_16, uint16_t)
WHERE_ROW(where_32, uint32_t)
WHERE_ROW(where_64, uint64_t)

static zci_status where_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 3, 3, 1));
    const zci_tensor *c = ZCI_IN(g, n, 0), *x = ZCI_IN(g, n, 1), *z = ZCI_IN(g, n, 2);
    if (c->dtype != ZCI_BOOL)
        return zci_error(ZCI_INVALID_MODEL, "condition '%s' must be bool, found %s", tname(c),
                         onnx_type_name(c->dtype));
    if (x->dtype != z->dtype)
        return zci_error(ZCI_INVALID_MODEL, "inputs '%s' (%s) and '%s' (%s) must have the same element type",
                         tname(x), onnx_type_name(x->dtype), tname(z), onnx_type_name(z->dtype));
    bc_row_fn fn = NULL;
    switch (zci_dtype_size(x->dtype)) {
    case 1: fn = where_8; break;
    case 2: fn = where_16; break;
    case 4: fn = where_32; break;
    case 8: fn = where_64; break;
    default: return unsupported_type("Where", x, "element types of 1, 2, 4 or 8 bytes");
    }
    int64_t dims[ZCI_MAX_DIMS];
    int nd;
    ZCI_TRY(broadcast_inputs(g, n, 3, dims, &nd));
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, dims, nd);
    return set_row_params(n, fn);
}

static zci_status where_cpu(const zci_kernel_ctx *k)
{
    const bc_params *p = k->n->params;
    const zci_tensor *in[3] = {ZCI_KIN(k, 0), ZCI_KIN(k, 1), ZCI_KIN(k, 2)};
    const void *x[3] = {ZCI_KIN_DATA(k, 0), ZCI_KIN_DATA(k, 1), ZCI_KIN_DATA(k, 2)};
    bc_run(ZCI_KOUT(k, 0), ZCI_KOUT_DATA(k, 0), 3, in, x, p->fn, NULL, k->nthreads);
    return ZCI_OK;
}

/* ================================================================ unary ops */

/* n elements from x to y; params are the node's (an op's alpha, beta; Clip's bounds). */
typedef void (*unary_fn)(const void *x, void *y, int64_t n, const void *params);

typedef struct unary_params {
    unary_fn fn;
    float alpha, beta;
} unary_params;

/* alpha and beta are read into locals first: Y's stores could alias them, which would keep the
 * compiler from vectorising the loop. */
#define UNARY_ROW(NAME, T, TY, EXPR)                                                               \
    static void NAME(const void *xv, void *yv, int64_t n, const void *pv)                         \
    {                                                                                              \
        const T *X = xv;                                                                           \
        TY *Y = yv;                                                                                \
        const unary_params *p = pv;                                                                \
        const float alpha = p->alpha, beta = p->beta;                                              \
        (void)alpha;                                                                               \
        (void)beta;                                                                                \
        for (int64_t i = 0; i < n; i++) {                                                          \
            const T x = X[i];                                                                      \
            Y[i] = (EXPR);                                                                         \
        }                                                                                          \
    }

static inline float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e^x for x in [-104, 89] or NaN (callers clamp), within about 1 ulp: Cephes' polynomial on
 * r = x - n ln2, times 2^n applied in two halves so that subnormal results and the overflow to
 * infinity come out right. It is plain arithmetic and bit moves, so loops calling it vectorise
 * (libm's expf is a call per element, about ten times slower). */
static inline float exp_core(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it leaves round(v) in the low bits */
    float t = x * 1.44269504088896341f + magic;
    float n = t - magic;
    int32_t k = (int32_t)(float_bits(t) - float_bits(magic));
    float r = x - n * 0.693359375f - n * -2.12194440e-4f; /* ln2 in two parts */
    float p = zci_exp_poly(r);
    int32_t k1 = k / 2;
    return p * bits_to_float((uint32_t)(k1 + 127) << 23) * bits_to_float((uint32_t)(k - k1 + 127) << 23);
}

/* Exp and Sigmoid clamp their arguments in a first pass over a block on the stack: with the
 * clamp in the same loop the compiler folds the constant bound through the polynomial into a
 * branch, and under -ftrapping-math (the default) that keeps the loop scalar. */
#define EXP_BLOCK 256

static void exp_row(const void *xv, void *yv, int64_t n, const void *params)
{
    const float *X = xv;
    float *Y = yv;
    float b[EXP_BLOCK];
    (void)params;
    for (int64_t i0 = 0; i0 < n; i0 += EXP_BLOCK) {
        const int64_t m = n - i0 < EXP_BLOCK ? n - i0 : EXP_BLOCK;
        for (int64_t j = 0; j < m; j++) {
            float v = X[i0 + j];
            v = v < -104.0f ? -104.0f : v; /* e^-104 is below the smallest subnormal; NaN passes */
            b[j] = v > 89.0f ? 89.0f : v;  /* e^89 overflows to infinity */
        }
        for (int64_t j = 0; j < m; j++) Y[i0 + j] = exp_core(b[j]);
    }
}

/* 1 / (1 + e^-x) as (x >= 0 ? 1 : e) / (1 + e) with e = e^-|x| in (0, 1]: nothing overflows for
 * any x, and the result keeps full relative precision on both tails. */
static void sigmoid_row(const void *xv, void *yv, int64_t n, const void *params)
{
    const float *X = xv;
    float *Y = yv;
    float b[EXP_BLOCK];
    (void)params;
    for (int64_t i0 = 0; i0 < n; i0 += EXP_BLOCK) {
        const int64_t m = n - i0 < EXP_BLOCK ? n - i0 : EXP_BLOCK;
        for (int64_t j = 0; j < m; j++) {
            float v = -fabsf(X[i0 + j]);
            b[j] = v < -104.0f ? -104.0f : v;
        }
        for (int64_t j = 0; j < m; j++) {
            float e = exp_core(b[j]);
            float num = X[i0 + j] >= 0.0f ? 1.0f : e;
            Y[i0 + j] = num / (1.0f + e);
        }
    }
}

/* Clamps to [0, 1] keeping NaN (comparisons are false for NaN). */
static inline float unit_clamp(float v)
{
    v = v < 0.0f ? 0.0f : v;
    return v > 1.0f ? 1.0f : v;
}

UNARY_ROW(sqrt_f32, float, float, sqrtf(x))
UNARY_ROW(log_f32, float, float, logf(x))
UNARY_ROW(reciprocal_f32, float, float, 1.0f / x)
UNARY_ROW(floor_f32, float, float, floorf(x))
UNARY_ROW(ceil_f32, float, float, ceilf(x))
UNARY_ROW(erf_f32, float, float, erff(x))
UNARY_ROW(tanh_f32, float, float, tanhf(x))
UNARY_ROW(relu_f32, float, float, x < 0.0f ? 0.0f : x)
UNARY_ROW(relu_i32, int32_t, int32_t, x < 0 ? 0 : x)
UNARY_ROW(relu_i64, int64_t, int64_t, x < 0 ? 0 : x)
/* x times a selected factor rather than a selected product: the product would be computed on one
 * branch only, which -ftrapping-math does not let the compiler vectorise */
UNARY_ROW(leakyrelu_f32, float, float, x * (x < 0.0f ? alpha : 1.0f))
UNARY_ROW(hardsigmoid_f32, float, float, unit_clamp(alpha * x + beta))
UNARY_ROW(hardswish_f32, float, float, x * unit_clamp(x * (1.0f / 6.0f) + 0.5f))
UNARY_ROW(neg_f32, float, float, -x)
UNARY_ROW(neg_i32, int32_t, int32_t, (int32_t)(0u - (uint32_t)x))
UNARY_ROW(neg_i64, int64_t, int64_t, (int64_t)(0u - (uint64_t)x))
UNARY_ROW(abs_f32, float, float, fabsf(x))
UNARY_ROW(abs_i32, int32_t, int32_t, x < 0 ? (int32_t)(0u - (uint32_t)x) : x)
UNARY_ROW(abs_i64, int64_t, int64_t, x < 0 ? (int64_t)(0u - (uint64_t)x) : x)

typedef struct unary_def {
    const char *name;
    unary_fn fn[N_SLOTS];
    const char *alpha_attr, *beta_attr; /* NULL: the op has none */
    float alpha, beta;                  /* their defaults */
} unary_def;

static const unary_def def_sqrt = {"Sqrt", {sqrt_f32}, NULL, NULL, 0, 0};
static const unary_def def_exp = {"Exp", {exp_row}, NULL, NULL, 0, 0};
static const unary_def def_log = {"Log", {log_f32}, NULL, NULL, 0, 0};
static const unary_def def_reciprocal = {"Reciprocal", {reciprocal_f32}, NULL, NULL, 0, 0};
static const unary_def def_floor = {"Floor", {floor_f32}, NULL, NULL, 0, 0};
static const unary_def def_ceil = {"Ceil", {ceil_f32}, NULL, NULL, 0, 0};
static const unary_def def_erf = {"Erf", {erf_f32}, NULL, NULL, 0, 0};
static const unary_def def_tanh = {"Tanh", {tanh_f32}, NULL, NULL, 0, 0};
static const unary_def def_sigmoid = {"Sigmoid", {sigmoid_row}, NULL, NULL, 0, 0};
static const unary_def def_relu = {"Relu", {relu_f32, relu_i32, relu_i64}, NULL, NULL, 0, 0};
static const unary_def def_leakyrelu = {"LeakyRelu", {leakyrelu_f32}, "alpha", NULL, 0.01f, 0};
static const unary_def def_hardsigmoid = {"HardSigmoid", {hardsigmoid_f32}, "alpha", "beta", 0.2f, 0.5f};
static const unary_def def_hardswish = {"HardSwish", {hardswish_f32}, NULL, NULL, 0, 0};
static const unary_def def_neg = {"Neg", {neg_f32, neg_i32, neg_i64}, NULL, NULL, 0, 0};
static const unary_def def_abs = {"Abs", {abs_f32, abs_i32, abs_i64}, NULL, NULL, 0, 0};

static zci_status unary_infer(zci_graph *g, zci_node *n, const unary_def *def)
{
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int slot = dtype_slot(x->dtype);
    if (slot < 0 || !def->fn[slot]) {
        unsigned have = 0;
        for (int s = 0; s < N_SLOTS; s++) have |= def->fn[s] ? 1u << s : 0u;
        char buf[96];
        return unsupported_type(def->name, x, slots_str(have, buf, sizeof buf));
    }
    zci_status st = ZCI_OK;
    float alpha = def->alpha_attr ? zci_attr_float(n, def->alpha_attr, def->alpha, &st) : def->alpha;
    float beta = def->beta_attr ? zci_attr_float(n, def->beta_attr, def->beta, &st) : def->beta;
    if (st != ZCI_OK) return st;
    unary_params *p = zci_malloc(sizeof *p, "element-wise params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    *p = (unary_params){def->fn[slot], alpha, beta};
    set_params(n, p);
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, x->dims, x->ndim);
    return ZCI_OK;
}

typedef struct unary_job {
    unary_fn fn;
    const void *params;
    const char *x;
    char *y;
    size_t xsz, ysz;
} unary_job;

static void unary_range(const void *ctx, int64_t lo, int64_t hi)
{
    const unary_job *j = ctx;
    j->fn(j->x + (size_t)lo * j->xsz, j->y + (size_t)lo * j->ysz, hi - lo, j->params);
}

/* Output 0 = fn(input 0) element by element. */
static void unary_run(const zci_kernel_ctx *k, unary_fn fn, const void *params)
{
    const zci_tensor *xt = ZCI_KIN(k, 0), *yt = ZCI_KOUT(k, 0);
    unary_job j = {fn, params, ZCI_KIN_DATA(k, 0), ZCI_KOUT_DATA(k, 0), zci_dtype_size(xt->dtype),
                   zci_dtype_size(yt->dtype)};
    par_for(zci_tensor_numel(yt), k->nthreads, unary_range, &j);
}

static zci_status unary_cpu(const zci_kernel_ctx *k)
{
    const unary_params *p = k->n->params;
    unary_run(k, p->fn, p);
    return ZCI_OK;
}

#define UNARY_INFER(NAME, DEF)                                                                     \
    static zci_status NAME(zci_graph *g, zci_node *n) { return unary_infer(g, n, &DEF); }
UNARY_INFER(sqrt_infer, def_sqrt)
UNARY_INFER(exp_infer, def_exp)
UNARY_INFER(log_infer, def_log)
UNARY_INFER(reciprocal_infer, def_reciprocal)
UNARY_INFER(floor_infer, def_floor)
UNARY_INFER(ceil_infer, def_ceil)
UNARY_INFER(erf_infer, def_erf)
UNARY_INFER(tanh_infer, def_tanh)
UNARY_INFER(sigmoid_infer, def_sigmoid)
UNARY_INFER(relu_infer, def_relu)
UNARY_INFER(leakyrelu_infer, def_leakyrelu)
UNARY_INFER(hardsigmoid_infer, def_hardsigmoid)
UNARY_INFER(hardswish_infer, def_hardswish)
UNARY_INFER(neg_infer, def_neg)
UNARY_INFER(abs_infer, def_abs)

/* ---------------------------------------------------------------- Clip */

/* Bounds in the input's type. v < lo then v > hi: NaN passes through, and min > max gives max
 * everywhere (as ONNX specifies). */
typedef struct clip_bounds {
    float f32[2];
    int32_t i32[2];
    int64_t i64[2];
} clip_bounds;

#define CLIP_ROW(NAME, T, FIELD)                                                                   \
    static void NAME(const void *xv, void *yv, int64_t n, const void *pv)                         \
    {                                                                                              \
        const T *X = xv;                                                                           \
        T *Y = yv;                                                                                 \
        const clip_bounds *b = pv;                                                                 \
        const T lo = b->FIELD[0], hi = b->FIELD[1];                                                \
        for (int64_t i = 0; i < n; i++) {                                                          \
            T v = X[i] < lo ? lo : X[i];                                                           \
            Y[i] = v > hi ? hi : v;                                                                \
        }                                                                                          \
    }
CLIP_ROW(clip_f32, float, f32)
CLIP_ROW(clip_i32, int32_t, i32)
CLIP_ROW(clip_i64, int64_t, i64)

typedef struct clip_params {
    float attr_min, attr_max; /* before opset 11 */
} clip_params;

static zci_status clip_infer(zci_graph *g, zci_node *n)
{
    const bool from_inputs = n->opset >= 11;
    ZCI_TRY(zci_check_arity(n, 1, from_inputs ? 3 : 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    int slot = dtype_slot(x->dtype);
    if (slot < 0 || slot > SLOT_I64) return unsupported_type("Clip", x, "float, int32 and int64");
    clip_params *p = zci_malloc(sizeof *p, "Clip params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    zci_status st = ZCI_OK;
    /* ONNX's defaults: the type's lowest and highest finite values */
    p->attr_min = from_inputs ? -FLT_MAX : zci_attr_float(n, "min", -FLT_MAX, &st);
    p->attr_max = from_inputs ? FLT_MAX : zci_attr_float(n, "max", FLT_MAX, &st);
    set_params(n, p);
    if (st != ZCI_OK) return st;
    for (int i = 1; i < 3 && from_inputs; i++) {
        if (!ZCI_HAS_IN(n, i)) continue;
        const zci_tensor *b = ZCI_IN(g, n, i);
        if (b->dtype != x->dtype)
            return zci_error(ZCI_INVALID_MODEL, "bound '%s' is %s but input '%s' is %s", tname(b),
                             onnx_type_name(b->dtype), tname(x), onnx_type_name(x->dtype));
        if (zci_tensor_numel(b) != 1)
            return zci_error(ZCI_INVALID_MODEL, "bound '%s' must hold one value, found %lld", tname(b),
                             (long long)zci_tensor_numel(b));
    }
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), x->dtype, x->dims, x->ndim);
    return ZCI_OK;
}

static zci_status clip_cpu(const zci_kernel_ctx *k)
{
    const zci_node *n = k->n;
    const clip_params *p = n->params;
    const bool from_inputs = n->opset >= 11;
    const void *bound[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        if (from_inputs && ZCI_HAS_IN(n, i + 1)) bound[i] = ZCI_KIN_DATA(k, i + 1);
    clip_bounds b;
    unary_fn fn;
    switch (ZCI_KIN(k, 0)->dtype) {
    case ZCI_FLOAT32:
        b.f32[0] = bound[0] ? *(const float *)bound[0] : p->attr_min;
        b.f32[1] = bound[1] ? *(const float *)bound[1] : p->attr_max;
        fn = clip_f32;
        break;
    case ZCI_INT32:
        b.i32[0] = bound[0] ? *(const int32_t *)bound[0] : INT32_MIN;
        b.i32[1] = bound[1] ? *(const int32_t *)bound[1] : INT32_MAX;
        fn = clip_i32;
        break;
    case ZCI_INT64:
        b.i64[0] = bound[0] ? *(const int64_t *)bound[0] : INT64_MIN;
        b.i64[1] = bound[1] ? *(const int64_t *)bound[1] : INT64_MAX;
        fn = clip_i64;
        break;
    default: return zci_error(ZCI_INTERNAL, "element type changed after planning");
    }
    unary_run(k, fn, &b);
    return ZCI_OK;
}

/* ================================================================ Cast */

/* The types Cast converts among, by short name: C type, how a value is loaded for conversion,
 * whether it is a floating type, and how a loaded value is stored. Float -> integer truncates
 * toward zero; anything -> bool is x != 0; integer -> narrower integer wraps. */
typedef float c_f32;
typedef double c_f64;
typedef uint16_t c_f16;
typedef uint8_t c_bl;
typedef int8_t c_i8;
typedef uint8_t c_u8;
typedef int16_t c_i16;
typedef uint16_t c_u16;
typedef int32_t c_i32;
typedef uint32_t c_u32;
typedef int64_t c_i64;
typedef uint64_t c_u64;

#define LOAD_f32(v) (v)
#define LOAD_f64(v) (v)
#define LOAD_f16(v) zci_f16_to_f32(v)
#define LOAD_bl(v) ((v) != 0)
#define LOAD_i8(v) (v)
#define LOAD_u8(v) (v)
#define LOAD_i16(v) (v)
#define LOAD_u16(v) (v)
#define LOAD_i32(v) (v)
#define LOAD_u32(v) (v)
#define LOAD_i64(v) (v)
#define LOAD_u64(v) (v)

#define ISF_f32 1
#define ISF_f64 1
#define ISF_f16 1
#define ISF_bl 0
#define ISF_i8 0
#define ISF_u8 0
#define ISF_i16 0
#define ISF_u16 0
#define ISF_i32 0
#define ISF_u32 0
#define ISF_i64 0
#define ISF_u64 0

/* isf is a constant, so only one branch of the integer stores is compiled in. */
#define STORE_INT(T, v, isf) ((T)((isf) ? f2i64((double)(v)) : (int64_t)(v)))
#define STORE_f32(v, isf) ((float)(v))
#define STORE_f64(v, isf) ((double)(v))
#define STORE_f16(v, isf) zci_f32_to_f16((float)(v))
#define STORE_bl(v, isf) ((uint8_t)((v) != 0))
#define STORE_i8(v, isf) STORE_INT(int8_t, v, isf)
#define STORE_u8(v, isf) STORE_INT(uint8_t, v, isf)
#define STORE_i16(v, isf) STORE_INT(int16_t, v, isf)
#define STORE_u16(v, isf) STORE_INT(uint16_t, v, isf)
#define STORE_i32(v, isf) STORE_INT(int32_t, v, isf)
#define STORE_u32(v, isf) STORE_INT(uint32_t, v, isf)
#define STORE_i64(v, isf) STORE_INT(int64_t, v, isf)
#define STORE_u64(v, isf) ((isf) ? f2u64((double)(v)) : (uint64_t)(v))

/* Two copies of the type list: a macro cannot expand itself, and the table is source x target. */
#define CAST_SRC_TYPES(X)                                                                          \
    X(f32, ZCI_FLOAT32) X(f64, ZCI_FLOAT64) X(f16, ZCI_FLOAT16) X(bl, ZCI_BOOL) X(i8, ZCI_INT8)   \
    X(u8, ZCI_UINT8) X(i16, ZCI_INT16) X(u16, ZCI_UINT16) X(i32, ZCI_INT32) X(u32, ZCI_UINT32)      \
    X(i64, ZCI_INT64) X(u64, ZCI_UINT64)
#define CAST_DST_TYPES(X, S)                                                                       \
    X(S, f32) X(S, f64) X(S, f16) X(S, bl) X(S, i8) X(S, u8) X(S, i16) X(S, u16) X(S, i32)        \
    X(S, u32) X(S, i64) X(S, u64)

#define CAST_FN(S, D)                                                                              \
    static void cast_##S##_##D(const void *xv, void *yv, int64_t n, const void *params)            \
    {                                                                                              \
        const c_##S *x = xv;                                                                       \
        c_##D *y = yv;                                                                             \
        (void)params;                                                                              \
        for (int64_t i = 0; i < n; i++) y[i] = STORE_##D(LOAD_##S(x[i]), ISF_##S);                \
    }
#define CAST_FNS_FROM(S, DT) CAST_DST_TYPES(CAST_FN, S)
CAST_SRC_TYPES(CAST_FNS_FROM)

#define CAST_ENTRY(S, D) cast_##S##_##D,
#define CAST_ROW(S, DT) {CAST_DST_TYPES(CAST_ENTRY, S)},
static const unary_fn cast_table[][12] = {CAST_SRC_TYPES(CAST_ROW)};

#define CAST_DTYPE(S, DT) DT,
static const zci_dtype cast_types[] = {CAST_SRC_TYPES(CAST_DTYPE)};
#define N_CAST_TYPES ((int)(sizeof cast_types / sizeof cast_types[0]))

static int cast_index(int64_t t)
{
    for (int i = 0; i < N_CAST_TYPES; i++)
        if ((int64_t)cast_types[i] == t) return i;
    return -1;
}

static const char cast_supported[] =
    "float, double, float16, bool, int8, uint8, int16, uint16, int32, uint32, int64 and uint64";

static zci_status cast_infer(zci_graph *g, zci_node *n)
{
    ZCI_TRY(zci_check_arity(n, 1, 1, 1));
    const zci_tensor *x = ZCI_IN(g, n, 0);
    const zci_attr *to_attr = zci_attr_find(n, "to");
    if (!to_attr || to_attr->type != ZCI_ATTR_INT)
        return zci_error(ZCI_INVALID_MODEL, "the integer attribute 'to' is %s",
                         to_attr ? "not an integer" : "missing");
    int64_t to = to_attr->i;
    int si = cast_index(x->dtype), di = cast_index(to);
    if (si < 0 || di < 0)
        return zci_error(ZCI_UNSUPPORTED, "Cast from %s to %s ('%s'): zcinfer casts among %s",
                         onnx_type_name(x->dtype), onnx_type_name(to), tname(x), cast_supported);
    unary_params *p = zci_malloc(sizeof *p, "Cast params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    *p = (unary_params){cast_table[si][di], 0, 0};
    set_params(n, p);
    zci_tensor_set_shape(ZCI_OUT(g, n, 0), (zci_dtype)to, x->dims, x->ndim);
    return ZCI_OK;
}

static zci_status cast_cpu(const zci_kernel_ctx *k)
{
    const unary_params *p = k->n->params;
    const void *x = ZCI_KIN_DATA(k, 0);
    void *y = ZCI_KOUT_DATA(k, 0);
    if (ZCI_KIN(k, 0)->dtype == ZCI_KOUT(k, 0)->dtype) { /* a copy keeps NaN payloads intact */
        if (x != y) memcpy(y, x, zci_tensor_bytes(ZCI_KOUT(k, 0)));
        return ZCI_OK;
    }
    unary_run(k, p->fn, p);
    return ZCI_OK;
}

/* ================================================================ the op table */

#define ELEMENTWISE_OP(TYPE, SINCE, INFER, CPU)                                                    \
    const zci_op zci_op_##TYPE = {.type = #TYPE, .domain = "", .since = SINCE, .infer = INFER, .cpu = CPU};

/* Opsets 1 and 6 of the binary ops broadcast only with a 'broadcast' attribute and an axis:
 * they start at 7, where numpy broadcasting arrived. */
ELEMENTWISE_OP(Add, 7, add_infer, nary_cpu)
ELEMENTWISE_OP(Sub, 7, sub_infer, nary_cpu)
ELEMENTWISE_OP(Mul, 7, mul_infer, nary_cpu)
ELEMENTWISE_OP(Div, 7, div_infer, nary_cpu)
ELEMENTWISE_OP(Pow, 7, pow_infer, nary_cpu)
ELEMENTWISE_OP(Equal, 7, equal_infer, nary_cpu)
ELEMENTWISE_OP(Less, 7, less_infer, nary_cpu)
ELEMENTWISE_OP(Greater, 7, greater_infer, nary_cpu)
/* Max/Min 6 take same-shape inputs, a special case of 8's broadcasting */
ELEMENTWISE_OP(Max, 6, max_infer, nary_cpu)
ELEMENTWISE_OP(Min, 6, min_infer, nary_cpu)
ELEMENTWISE_OP(Where, 9, where_infer, where_cpu)
/* opset 1 of the unary ops only adds 'consumed_inputs', a hint for old runtimes */
ELEMENTWISE_OP(Sqrt, 1, sqrt_infer, unary_cpu)
ELEMENTWISE_OP(Exp, 1, exp_infer, unary_cpu)
ELEMENTWISE_OP(Log, 1, log_infer, unary_cpu)
ELEMENTWISE_OP(Reciprocal, 1, reciprocal_infer, unary_cpu)
ELEMENTWISE_OP(Floor, 1, floor_infer, unary_cpu)
ELEMENTWISE_OP(Ceil, 1, ceil_infer, unary_cpu)
ELEMENTWISE_OP(Erf, 9, erf_infer, unary_cpu)
ELEMENTWISE_OP(Tanh, 1, tanh_infer, unary_cpu)
ELEMENTWISE_OP(Sigmoid, 1, sigmoid_infer, unary_cpu)
ELEMENTWISE_OP(Relu, 1, relu_infer, unary_cpu)
ELEMENTWISE_OP(LeakyRelu, 1, leakyrelu_infer, unary_cpu)
ELEMENTWISE_OP(HardSigmoid, 1, hardsigmoid_infer, unary_cpu)
ELEMENTWISE_OP(HardSwish, 14, hardswish_infer, unary_cpu)
ELEMENTWISE_OP(Neg, 1, neg_infer, unary_cpu)
ELEMENTWISE_OP(Abs, 1, abs_infer, unary_cpu)
ELEMENTWISE_OP(Clip, 1, clip_infer, clip_cpu)
/* Cast 1 named the target type with a string; 6 onwards with the integer 'to' */
ELEMENTWISE_OP(Cast, 6, cast_infer, cast_cpu)
