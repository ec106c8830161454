/* ops_elementwise_kernels.c: the element-wise and normalisation kernels (src/ops/elementwise.c,
 * src/ops/normalize.c) on what the ONNX node tests leave out: tensors large enough to run on
 * several threads, every broadcasting pattern the collapsing engine distinguishes (same shape,
 * one-element operand, per-channel, grid, both sides broadcast, zero-size), extreme values
 * (Sigmoid at +-1e30, integer division by zero and INT64_MIN / -1, Cast out of the obvious
 * cases), Softmax and ReduceMean along inner axes, and infer's refusals. Each kernel runs with 1
 * and with 4 threads and is compared with a plain reference written here. */
#include <math.h>
#include <stdlib.h>

#define TEST_RNG_SEED 88172645463325252ull
#include "onenode.h"

/* ================================================================ reference helpers */

static int64_t numel(const int64_t *d, int nd)
{
    int64_t p = 1;
    for (int i = 0; i < nd; i++) p *= d[i];
    return p;
}

/* Flat index into an input of shape (d, nd) broadcast to output (od, ond) at output index o. */
static int64_t bcast_index(int64_t o, const int64_t *od, int ond, const int64_t *d, int nd)
{
    int64_t idx = 0, stride = 1;
    for (int i = ond - 1; i >= 0; i--) {
        int64_t c = o % od[i];
        o /= od[i];
        int j = i - (ond - nd);
        if (j >= 0) {
            if (d[j] != 1) idx += c * stride;
            stride *= d[j];
        }
    }
    return idx;
}

static void bcast_dims(const int64_t *a, int na, const int64_t *b, int nb, int64_t *out, int *nout)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - na ? 1 : a[i - (n - na)], db = i < n - nb ? 1 : b[i - (n - nb)];
        out[i] = da == 1 ? db : da;
    }
    *nout = n;
}

typedef struct shape {
    int nd;
    int64_t d[6];
} shape;

/* ================================================================ binary float ops */

static float ref_binary(const char *op, float a, float b)
{
    if (!strcmp(op, "Add")) return a + b;
    if (!strcmp(op, "Sub")) return a - b;
    if (!strcmp(op, "Mul")) return a * b;
    if (!strcmp(op, "Div")) return a / b;
    if (!strcmp(op, "Pow")) return powf(a, b);
    if (!strcmp(op, "Max")) return a > b ? a : b;
    if (!strcmp(op, "Min")) return a < b ? a : b;
    if (!strcmp(op, "Equal")) return a == b;
    if (!strcmp(op, "Less")) return a < b;
    return a > b; /* Greater */
}

static void test_binary_float(void)
{
    /* every pattern the engine collapses differently; several above the threading threshold */
    static const shape pairs[][2] = {
        {{5, {1, 3, 160, 160, 2}}, {5, {1, 3, 160, 160, 2}}}, /* same shape */
        {{4, {1, 64, 40, 40}}, {0, {0}}},                     /* rank-0 scalar */
        {{4, {1, 64, 40, 40}}, {1, {1}}},                     /* one-element constant */
        {{1, {1}}, {4, {1, 64, 40, 40}}},                     /* scalar first */
        {{4, {1, 64, 40, 40}}, {4, {1, 64, 1, 1}}},           /* per-channel */
        {{5, {1, 3, 80, 80, 2}}, {5, {1, 1, 80, 80, 2}}},     /* YOLO grid */
        {{5, {1, 3, 80, 80, 2}}, {5, {1, 3, 1, 1, 2}}},       /* YOLO anchor grid */
        {{3, {3, 1, 5}}, {3, {1, 4, 1}}},                     /* both broadcast */
        {{4, {2, 3, 4, 5}}, {1, {5}}},
        {{3, {64, 1, 1024}}, {2, {33, 1}}},                   /* both, large */
        {{3, {2, 0, 3}}, {1, {3}}},                           /* zero-size */
        {{0, {0}}, {0, {0}}},                                 /* scalars */
    };
    static const char *ops[] = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater"};
    for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
        const shape *sa = &pairs[p][0], *sb = &pairs[p][1];
        int64_t na = numel(sa->d, sa->nd), nb = numel(sb->d, sb->nd);
        float *a = malloc(sizeof *a * (size_t)(na + 1)), *b = malloc(sizeof *b * (size_t)(nb + 1));
        /* small integers make Equal true now and then; positive values keep Pow real */
        for (int64_t i = 0; i < na; i++) a[i] = (float)(rng() % 7) * 0.5f + 0.25f;
        for (int64_t i = 0; i < nb; i++) b[i] = (float)(rng() % 7) * 0.5f + 0.25f;
        int64_t od[8];
        int ond;
        bcast_dims(sa->d, sa->nd, sb->d, sb->nd, od, &ond);
        int64_t no = numel(od, ond);
        for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
            onenode t;
            on_init(&t, 17);
            int in[2] = {on_tensor(&t, ZCI_FLOAT32, sa->d, sa->nd, a, 0), on_tensor(&t, ZCI_FLOAT32, sb->d, sb->nd, b, 0)};
            on_node(&t, ops[o], in, 2, 17);
            CHECK_OK(on_infer(&t));
            const zci_tensor *y = on_out(&t);
            bool is_bool = y->dtype == ZCI_BOOL;
            CHECK(y->ndim == ond && !memcmp(y->dims, od, sizeof(int64_t) * (size_t)ond), "%s pair %zu: shape", ops[o], p);
            for (int threads = 1; threads <= 4; threads += 3) {
                void *out = on_run(&t, NULL, threads);
                int64_t bad = 0, first = -1;
                for (int64_t i = 0; i < no; i++) {
                    float want = ref_binary(ops[o], a[bcast_index(i, od, ond, sa->d, sa->nd)],
                                            b[bcast_index(i, od, ond, sb->d, sb->nd)]);
                    float got = is_bool ? ((uint8_t *)out)[i] : ((float *)out)[i];
                    if (got != want && !(isnan(got) && isnan(want))) {
                        bad++;
                        if (first < 0) first = i;
                    }
                }
                CHECK(bad == 0, "%s pair %zu threads %d: %lld wrong, first at %lld", ops[o], p, threads,
                      (long long)bad, (long long)first);
                free(out);
            }
            on_free(&t);
        }
        free(a);
        free(b);
    }
}

/* ================================================================ integers */

static void test_integers(void)
{
    const int64_t da[2] = {3, 4}, db[1] = {4};
    const int64_t a[12] = {7, -7, INT64_MIN, 100, 9, -9, INT64_MAX, 0, 1, 2, 3, 4};
    const int64_t b[4] = {2, 0, -1, -3};
    onenode t;
    on_init(&t, 17);
    int in[2] = {on_tensor(&t, ZCI_INT64, da, 2, a, 0), on_tensor(&t, ZCI_INT64, db, 1, b, 0)};
    on_node(&t, "Div", in, 2, 17);
    CHECK_OK(on_infer(&t));
    int64_t *y = on_run(&t, NULL, 1);
    /* truncation toward zero; / 0 gives 0; INT64_MIN / -1 wraps instead of trapping */
    const int64_t want[12] = {3, 0, INT64_MIN, -33, 4, 0, -INT64_MAX, 0, 0, 0, -3, -1};
    for (int i = 0; i < 12; i++) CHECK(y[i] == want[i], "Div int64 [%d]: %lld, want %lld", i, (long long)y[i], (long long)want[i]);
    free(y);
    on_free(&t);

    const int32_t xa[4] = {2147483647, -5, 3, -2147483647 - 1}, xb[1] = {2};
    const int64_t d4[1] = {4}, d1[1] = {1};
    on_init(&t, 17);
    int in2[2] = {on_tensor(&t, ZCI_INT32, d4, 1, xa, 0), on_tensor(&t, ZCI_INT32, d1, 1, xb, 0)};
    on_node(&t, "Mul", in2, 2, 17);
    CHECK_OK(on_infer(&t));
    int32_t *z = on_run(&t, NULL, 1);
    CHECK(z[0] == -2 && z[1] == -10 && z[2] == 6 && z[3] == 0, "Mul int32 wraps: %d %d %d %d", z[0], z[1], z[2], z[3]);
    free(z);
    on_free(&t);

    on_init(&t, 17);
    int in3[1] = {on_tensor(&t, ZCI_INT32, d4, 1, xa, 0)};
    on_node(&t, "Abs", in3, 1, 17);
    CHECK_OK(on_infer(&t));
    z = on_run(&t, NULL, 1);
    CHECK(z[0] == 2147483647 && z[1] == 5 && z[2] == 3 && z[3] == -2147483647 - 1, "Abs int32");
    free(z);
    on_free(&t);

    /* Pow with integer types and an integer exponent on a float base */
    const int64_t pb[3] = {2, -3, 5}, pe[3] = {10, 3, 0};
    on_init(&t, 17);
    int in4[2] = {on_tensor(&t, ZCI_INT64, (int64_t[]){3}, 1, pb, 0), on_tensor(&t, ZCI_INT64, (int64_t[]){3}, 1, pe, 0)};
    on_node(&t, "Pow", in4, 2, 17);
    CHECK_OK(on_infer(&t));
    y = on_run(&t, NULL, 1);
    CHECK(y[0] == 1024 && y[1] == -27 && y[2] == 1, "Pow int64: %lld %lld %lld", (long long)y[0], (long long)y[1],
          (long long)y[2]);
    free(y);
    on_free(&t);
}

/* ================================================================ Where, variadic Max */

static void test_where_and_max(void)
{
    const int64_t dc[3] = {4, 1, 160}, dx[3] = {1, 160, 160}, dz[1] = {160};
    int64_t nc = numel(dc, 3), nx = numel(dx, 3), nz = 160;
    uint8_t *c = malloc((size_t)nc);
    float *x = malloc(sizeof *x * (size_t)nx), *z = malloc(sizeof *z * (size_t)nz);
    for (int64_t i = 0; i < nc; i++) c[i] = rng() & 1;
    for (int64_t i = 0; i < nx; i++) x[i] = frand(-1, 1);
    for (int64_t i = 0; i < nz; i++) z[i] = frand(-1, 1);
    onenode t;
    on_init(&t, 17);
    int in[3] = {on_tensor(&t, ZCI_BOOL, dc, 3, c, 0), on_tensor(&t, ZCI_FLOAT32, dx, 3, x, 0),
                 on_tensor(&t, ZCI_FLOAT32, dz, 1, z, 0)};
    on_node(&t, "Where", in, 3, 17);
    CHECK_OK(on_infer(&t));
    const zci_tensor *yt = on_out(&t);
    int64_t no = zci_tensor_numel(yt);
    CHECK(no == 4 * 160 * 160, "Where shape");
    for (int threads = 1; threads <= 4; threads += 3) {
        float *y = on_run(&t, NULL, threads);
        int64_t bad = 0;
        for (int64_t i = 0; i < no; i++) {
            float want = c[bcast_index(i, yt->dims, 3, dc, 3)] ? x[bcast_index(i, yt->dims, 3, dx, 3)]
                                                               : z[bcast_index(i, yt->dims, 3, dz, 1)];
            bad += y[i] != want;
        }
        CHECK(bad == 0, "Where threads %d: %lld wrong", threads, (long long)bad);
        free(y);
    }
    on_free(&t);
    free(c);
    free(x);
    free(z);

    /* Max of three inputs of different shapes, NaN propagating */
    float m0[6] = {1, 5, NAN, 0, -1, 2}, m1[3] = {3, 3, 3}, m2[2] = {4, -4};
    on_init(&t, 13);
    int im[3] = {on_tensor(&t, ZCI_FLOAT32, (int64_t[]){2, 3}, 2, m0, 0),
                 on_tensor(&t, ZCI_FLOAT32, (int64_t[]){3}, 1, m1, 0),
                 on_tensor(&t, ZCI_FLOAT32, (int64_t[]){2, 1}, 2, m2, 0)};
    on_node(&t, "Max", im, 3, 13);
    CHECK_OK(on_infer(&t));
    float *y = on_run(&t, NULL, 1);
    CHECK(y[0] == 4 && y[1] == 5 && isnan(y[2]) && y[3] == 3 && y[4] == 3 && y[5] == 3, "Max variadic: %g %g %g %g %g %g",
          y[0], y[1], y[2], y[3], y[4], y[5]);
    free(y);
    on_free(&t);
}

/* ================================================================ unary */

static void test_unary(void)
{
    const int64_t n = 200000;
    float *x = malloc(sizeof *x * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = frand(-30, 30);
    const float extremes[] = {1e30f, -1e30f, 100.0f, -100.0f, 88.8f, -88.8f, INFINITY, -INFINITY, 0.0f, -0.0f};
    memcpy(x, extremes, sizeof extremes);
    onenode t;
    on_init(&t, 17);
    int in = on_tensor(&t, ZCI_FLOAT32, &n, 1, x, 0);
    on_node(&t, "Sigmoid", &in, 1, 17);
    CHECK_OK(on_infer(&t));
    for (int threads = 1; threads <= 4; threads += 3) {
        float *y = on_run(&t, NULL, threads);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < n; i++) {
            double want = 1.0 / (1.0 + exp(-(double)x[i]));
            if (!(fabs(y[i] - want) <= 1e-6 * want + 1e-30) && !(want < 1e-38 && y[i] < 1e-37f)) {
                bad++;
                if (first < 0) first = i;
            }
        }
        CHECK(bad == 0, "Sigmoid threads %d: %lld wrong, first x=%g y=%g", threads, (long long)bad,
              first >= 0 ? x[first] : 0.0, first >= 0 ? y[first] : 0.0);
        free(y);
    }
    on_free(&t);
    free(x);

    /* HardSwish, HardSigmoid, LeakyRelu against their formulas */
    const float v[7] = {-4, -3, -1, 0, 1, 3, 4};
    const float hswish[7] = {0, 0, -1.0f / 3.0f, 0, 2.0f / 3.0f, 3, 4};
    on_init(&t, 17);
    in = on_tensor(&t, ZCI_FLOAT32, (int64_t[]){7}, 1, v, 0);
    on_node(&t, "HardSwish", &in, 1, 17);
    CHECK_OK(on_infer(&t));
    float *y = on_run(&t, NULL, 1);
    for (int i = 0; i < 7; i++) CHECK(fabsf(y[i] - hswish[i]) < 1e-6f, "HardSwish(%g) = %g", v[i], y[i]);
    free(y);
    on_free(&t);

    on_init(&t, 17);
    in = on_tensor(&t, ZCI_FLOAT32, (int64_t[]){7}, 1, v, 0);
    on_node(&t, "LeakyRelu", &in, 1, 17);
    on_attr_float(&t, "alpha", 0.1f);
    CHECK_OK(on_infer(&t));
    y = on_run(&t, NULL, 1);
    for (int i = 0; i < 7; i++) CHECK(y[i] == (v[i] < 0 ? 0.1f * v[i] : v[i]), "LeakyRelu(%g) = %g", v[i], y[i]);
    free(y);
    on_free(&t);
}

/* ================================================================ Clip */

static void test_clip(void)
{
    const float x[5] = {-2, 0.5f, 3, NAN, 10};
    const float lo = 1, hi = 0; /* min > max: every value becomes max */
    onenode t;
    on_init(&t, 13);
    int in[3] = {on_tensor(&t, ZCI_FLOAT32, (int64_t[]){5}, 1, x, 0), on_tensor(&t, ZCI_FLOAT32, NULL, 0, &lo, 0),
                 on_tensor(&t, ZCI_FLOAT32, NULL, 0, &hi, 0)};
    on_node(&t, "Clip", in, 3, 13);
    CHECK_OK(on_infer(&t));
    float *y = on_run(&t, NULL, 1);
    CHECK(y[0] == 0 && y[1] == 0 && y[2] == 0 && y[4] == 0, "Clip min > max: %g %g %g %g", y[0], y[1], y[2], y[4]);
    free(y);
    on_free(&t);

    /* opset 6: attributes; only max given, NaN passes through */
    on_init(&t, 6);
    int in1 = on_tensor(&t, ZCI_FLOAT32, (int64_t[]){5}, 1, x, 0);
    on_node(&t, "Clip", &in1, 1, 6);
    on_attr_float(&t, "max", 2.0f);
    CHECK_OK(on_infer(&t));
    y = on_run(&t, NULL, 1);
    CHECK(y[0] == -2 && y[1] == 0.5f && y[2] == 2 && isnan(y[3]) && y[4] == 2, "Clip-6: %g %g %g %g %g", y[0], y[1],
          y[2], y[3], y[4]);
    free(y);
    on_free(&t);

    /* int64, min only (max omitted by an empty name) */
    const int64_t xi[3] = {-5, 0, 5}, loi = -1;
    on_init(&t, 13);
    int ini[3] = {on_tensor(&t, ZCI_INT64, (int64_t[]){3}, 1, xi, 0), on_tensor(&t, ZCI_INT64, NULL, 0, &loi, 1), -1};
    on_node(&t, "Clip", ini, 3, 13);
    CHECK_OK(on_infer(&t));
    int64_t *yi = on_run(&t, NULL, 1);
    CHECK(yi[0] == -1 && yi[1] == 0 && yi[2] == 5, "Clip int64");
    free(yi);
    on_free(&t);
}

/* ================================================================ Cast */

static void *cast_run(zci_dtype from, zci_dtype to, const void *x, int64_t n)
{
    onenode t;
    on_init(&t, 21);
    int in = on_tensor(&t, from, &n, 1, x, 0);
    on_node(&t, "Cast", &in, 1, 21);
    on_attr_int(&t, "to", to);
    void *y = NULL;
    zci_status st = on_infer(&t);
    CHECK(st == ZCI_OK, "Cast %d -> %d: %s", from, to, zci_last_error());
    if (st == ZCI_OK) y = on_run(&t, NULL, 4);
    on_free(&t);
    return y;
}

static void test_cast(void)
{
    const float f[6] = {-2.7f, 2.7f, 0.0f, -0.0f, NAN, 255.9f};
    int32_t *i32 = cast_run(ZCI_FLOAT32, ZCI_INT32, f, 4);
    CHECK(i32[0] == -2 && i32[1] == 2 && i32[2] == 0 && i32[3] == 0, "float -> int32 truncates");
    free(i32);
    uint8_t *b = cast_run(ZCI_FLOAT32, ZCI_BOOL, f, 5);
    CHECK(b[0] == 1 && b[1] == 1 && b[2] == 0 && b[3] == 0 && b[4] == 1, "float -> bool is x != 0");
    free(b);
    uint8_t *u8 = cast_run(ZCI_FLOAT32, ZCI_UINT8, f + 5, 1);
    CHECK(u8[0] == 255, "float -> uint8");
    free(u8);
    const int64_t big[2] = {((int64_t)1 << 32) + 5, -1};
    i32 = cast_run(ZCI_INT64, ZCI_INT32, big, 2);
    CHECK(i32[0] == 5 && i32[1] == -1, "int64 -> int32 wraps");
    free(i32);
    const float third = 1.0f / 3.0f;
    uint16_t *h = cast_run(ZCI_FLOAT32, ZCI_FLOAT16, &third, 1);
    float *back = cast_run(ZCI_FLOAT16, ZCI_FLOAT32, h, 1);
    CHECK(back[0] == 0.333251953125f, "float16 round trip: %.9g", back[0]);
    free(h);
    free(back);
    const uint8_t bools[2] = {0, 1};
    double *d = cast_run(ZCI_BOOL, ZCI_FLOAT64, bools, 2);
    CHECK(d[0] == 0.0 && d[1] == 1.0, "bool -> double");
    free(d);
    const uint64_t umax = UINT64_MAX;
    float *fu = cast_run(ZCI_UINT64, ZCI_FLOAT32, &umax, 1);
    CHECK(fu[0] == 18446744073709551616.0f, "uint64 -> float: %g", fu[0]);
    free(fu);
    /* a large tensor (threads) float -> float16 -> float stays within half precision */
    const int64_t n = 100000;
    float *x = malloc(sizeof *x * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = frand(-1000, 1000);
    h = cast_run(ZCI_FLOAT32, ZCI_FLOAT16, x, n);
    back = cast_run(ZCI_FLOAT16, ZCI_FLOAT32, h, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += fabsf(back[i] - x[i]) > fabsf(x[i]) * (1.0f / 2048.0f) + 1e-7f;
    CHECK(bad == 0, "float16 round trip of %lld values: %lld off", (long long)n, (long long)bad);
    free(x);
    free(h);
    free(back);
}

/* ================================================================ Softmax */

static void test_softmax(void)
{
    static const struct { shape s; int axis, opset; } cases[] = {
        {{4, {2, 16, 4, 840}}, 1, 13},  /* inner 3360: column blocks */
        {{4, {2, 16, 4, 840}}, -1, 13}, /* contiguous rows */
        {{3, {3, 4, 5}}, 1, 11},        /* flattened to 3 x 20 */
        {{3, {3, 4, 5}}, 0, 13},
        {{4, {1, 8, 130, 130}}, 1, 13}, /* inner 16900, 135200 elements: threads */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const shape *s = &cases[c].s;
        int64_t n = numel(s->d, s->nd);
        float *x = malloc(sizeof *x * (size_t)n);
        for (int64_t i = 0; i < n; i++) x[i] = frand(-20, 20);
        x[0] = 1e4f; /* a large logit must not overflow */
        onenode t;
        on_init(&t, cases[c].opset);
        int in = on_tensor(&t, ZCI_FLOAT32, s->d, s->nd, x, 0);
        on_node(&t, "Softmax", &in, 1, cases[c].opset);
        on_attr_int(&t, "axis", cases[c].axis);
        CHECK_OK(on_infer(&t));
        int ax = cases[c].axis < 0 ? cases[c].axis + s->nd : cases[c].axis;
        int64_t outer = numel(s->d, ax), len, inner;
        if (cases[c].opset < 13) {
            len = numel(s->d + ax, s->nd - ax);
            inner = 1;
        } else {
            len = s->d[ax];
            inner = numel(s->d + ax + 1, s->nd - ax - 1);
        }
        for (int threads = 1; threads <= 4; threads += 3) {
            float *y = on_run(&t, NULL, threads);
            int64_t bad = 0;
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < inner; j++) {
                    const float *xr = x + o * len * inner + j;
                    double m = -INFINITY, sum = 0;
                    for (int64_t k = 0; k < len; k++) m = xr[k * inner] > m ? xr[k * inner] : m;
                    for (int64_t k = 0; k < len; k++) sum += exp(xr[k * inner] - m);
                    for (int64_t k = 0; k < len; k++) {
                        double want = exp(xr[k * inner] - m) / sum;
                        bad += !(fabs(y[o * len * inner + j + k * inner] - want) <= 1e-5 * want + 1e-7);
                    }
                }
            CHECK(bad == 0, "Softmax case %zu threads %d: %lld wrong", c, threads, (long long)bad);
            free(y);
        }
        on_free(&t);
        free(x);
    }
}

/* ================================================================ ReduceMean */

static void test_reduce_mean(void)
{
    static const struct { shape s; int naxes; int64_t axes[4]; int keepdims, opset; } cases[] = {
        {{4, {2, 3, 4, 5}}, 1, {1}, 1, 13},
        {{4, {2, 3, 4, 5}}, 2, {0, 2}, 0, 13},
        {{4, {2, 3, 4, 5}}, 1, {-1}, 1, 18},
        {{4, {2, 3, 4, 5}}, 3, {1, 2, 3}, 0, 18},
        {{4, {2, 3, 4, 5}}, 0, {0}, 1, 18},       /* no axes: all */
        {{4, {2, 1, 4, 5}}, 2, {1, 3}, 1, 13},    /* a size-1 reduced axis */
        {{4, {1, 64, 80, 80}}, 2, {2, 3}, 1, 13}, /* global average: points, threads */
        {{4, {1, 64, 80, 80}}, 1, {1}, 1, 13},    /* over channels: rows, threads */
        {{3, {4, 3, 5}}, 2, {0, 2}, 1, 18},       /* reduced groups around a kept one */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const shape *s = &cases[c].s;
        int64_t n = numel(s->d, s->nd);
        float *x = malloc(sizeof *x * (size_t)n);
        for (int64_t i = 0; i < n; i++) x[i] = frand(-1, 3);
        onenode t;
        on_init(&t, cases[c].opset);
        int in[2] = {on_tensor(&t, ZCI_FLOAT32, s->d, s->nd, x, 0), -1};
        int n_in = 1;
        if (cases[c].opset >= 18 && cases[c].naxes) {
            int64_t na = cases[c].naxes;
            in[1] = on_tensor(&t, ZCI_INT64, &na, 1, cases[c].axes, 1);
            n_in = 2;
        }
        on_node(&t, "ReduceMean", in, n_in, cases[c].opset);
        on_attr_int(&t, "keepdims", cases[c].keepdims);
        if (cases[c].opset < 18 && cases[c].naxes) on_attr_ints(&t, "axes", cases[c].axes, cases[c].naxes);
        CHECK_OK(on_infer(&t));
        unsigned mask = 0;
        for (int i = 0; i < cases[c].naxes; i++)
            mask |= 1u << (cases[c].axes[i] < 0 ? cases[c].axes[i] + s->nd : cases[c].axes[i]);
        if (!cases[c].naxes) mask = (1u << s->nd) - 1;
        /* reference: the output index of each input element with reduced axes at 0 */
        int64_t kd[6];
        for (int i = 0; i < s->nd; i++) kd[i] = (mask >> i) & 1 ? 1 : s->d[i];
        int64_t no = numel(kd, s->nd), cnt = n / no;
        CHECK(zci_tensor_numel(on_out(&t)) == no, "ReduceMean case %zu: output size", c);
        int nreduced = 0;
        for (int i = 0; i < s->nd; i++) nreduced += (mask >> i) & 1;
        CHECK(on_out(&t)->ndim == (cases[c].keepdims ? s->nd : s->nd - nreduced),
              "ReduceMean case %zu: rank", c);
        double *want = calloc((size_t)no, sizeof *want);
        for (int64_t i = 0; i < n; i++) {
            int64_t r = i, o = 0, stride = 1;
            for (int d = s->nd - 1; d >= 0; d--) {
                int64_t cd = r % s->d[d];
                r /= s->d[d];
                if (!((mask >> d) & 1)) o += cd * stride;
                stride *= kd[d];
            }
            want[o] += x[i];
        }
        for (int threads = 1; threads <= 4; threads += 3) {
            float *y = on_run(&t, NULL, threads);
            int64_t bad = 0;
            for (int64_t o = 0; o < no; o++) bad += !(fabs(y[o] - want[o] / (double)cnt) <= 1e-5);
            CHECK(bad == 0, "ReduceMean case %zu threads %d: %lld wrong", c, threads, (long long)bad);
            free(y);
        }
        free(want);
        on_free(&t);
        free(x);
    }
}

/* ================================================================ BatchNormalization */

static void test_batchnorm(void)
{
    const int64_t d[4] = {2, 8, 100, 100}, dc[1] = {8};
    int64_t n = numel(d, 4);
    float *x = malloc(sizeof *x * (size_t)n), sc[8], bi[8], me[8], va[8];
    for (int64_t i = 0; i < n; i++) x[i] = frand(-3, 3);
    for (int c = 0; c < 8; c++) {
        sc[c] = frand(0.5f, 2);
        bi[c] = frand(-1, 1);
        me[c] = frand(-1, 1);
        va[c] = frand(0.1f, 2);
    }
    onenode t;
    on_init(&t, 15);
    int in[5] = {on_tensor(&t, ZCI_FLOAT32, d, 4, x, 0), on_tensor(&t, ZCI_FLOAT32, dc, 1, sc, 1),
                 on_tensor(&t, ZCI_FLOAT32, dc, 1, bi, 1), on_tensor(&t, ZCI_FLOAT32, dc, 1, me, 1),
                 on_tensor(&t, ZCI_FLOAT32, dc, 1, va, 1)};
    on_node(&t, "BatchNormalization", in, 5, 15);
    on_attr_float(&t, "epsilon", 1e-3f);
    CHECK_OK(on_infer(&t));
    for (int threads = 1; threads <= 4; threads += 3) {
        float *y = on_run(&t, NULL, threads);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            int c = (int)(i / 10000 % 8);
            double want = (x[i] - me[c]) / sqrt((double)va[c] + 1e-3) * sc[c] + bi[c];
            bad += !(fabs(y[i] - want) <= 1e-5 * fabs(want) + 1e-5);
        }
        CHECK(bad == 0, "BatchNormalization threads %d: %lld wrong", threads, (long long)bad);
        free(y);
    }
    on_free(&t);
    free(x);

    /* training mode is refused */
    on_init(&t, 15);
    int in2[5];
    for (int i = 0; i < 5; i++) in2[i] = on_tensor(&t, ZCI_FLOAT32, i ? dc : (int64_t[]){1, 8, 2, 2}, i ? 1 : 4, NULL, 0);
    on_node(&t, "BatchNormalization", in2, 5, 15);
    on_attr_int(&t, "training_mode", 1);
    CHECK_FAILS(on_infer(&t), ZCI_UNSUPPORTED, "training_mode");
    on_free(&t);
}

/* ================================================================ refusals */

static void test_refusals(void)
{
    onenode t;
    const int64_t d[1] = {4};
    on_init(&t, 14);
    int in[2] = {on_tensor(&t, ZCI_UINT8, d, 1, NULL, 0), on_tensor(&t, ZCI_UINT8, d, 1, NULL, 0)};
    on_node(&t, "Add", in, 2, 14);
    CHECK_FAILS(on_infer(&t), ZCI_UNSUPPORTED, "uint8");
    on_free(&t);

    on_init(&t, 14);
    int in2[2] = {on_tensor(&t, ZCI_FLOAT32, d, 1, NULL, 0), on_tensor(&t, ZCI_INT64, d, 1, NULL, 0)};
    on_node(&t, "Mul", in2, 2, 14);
    CHECK_FAILS(on_infer(&t), ZCI_INVALID_MODEL, "same element type");
    on_free(&t);

    on_init(&t, 14);
    int in3[2] = {on_tensor(&t, ZCI_FLOAT32, (int64_t[]){3}, 1, NULL, 0), on_tensor(&t, ZCI_FLOAT32, d, 1, NULL, 0)};
    on_node(&t, "Sub", in3, 2, 14);
    CHECK_FAILS(on_infer(&t), ZCI_INVALID_MODEL, "broadcast");
    on_free(&t);

    on_init(&t, 21);
    int in4 = on_tensor(&t, ZCI_FLOAT32, d, 1, NULL, 0);
    on_node(&t, "Cast", &in4, 1, 21);
    on_attr_int(&t, "to", 16);
    CHECK_FAILS(on_infer(&t), ZCI_UNSUPPORTED, "bfloat16");
    on_free(&t);

    on_init(&t, 21);
    in4 = on_tensor(&t, ZCI_FLOAT32, d, 1, NULL, 0);
    on_node(&t, "Cast", &in4, 1, 21);
    CHECK_FAILS(on_infer(&t), ZCI_INVALID_MODEL, "'to'");
    on_free(&t);

    on_init(&t, 13);
    in4 = on_tensor(&t, ZCI_FLOAT32, (int64_t[]){2, 3}, 2, NULL, 0);
    on_node(&t, "Softmax", &in4, 1, 13);
    on_attr_int(&t, "axis", 2);
    CHECK_FAILS(on_infer(&t), ZCI_INVALID_MODEL, "axis");
    on_free(&t);

    on_init(&t, 13);
    in4 = on_tensor(&t, ZCI_FLOAT32, (int64_t[]){2, 3}, 2, NULL, 0);
    on_node(&t, "ReduceMean", &in4, 1, 13);
    on_attr_ints(&t, "axes", (int64_t[]){1, -1}, 2);
    CHECK_FAILS(on_infer(&t), ZCI_INVALID_MODEL, "twice");
    on_free(&t);

    /* axes computed at run time cannot give a planned shape */
    on_init(&t, 18);
    int in5[2] = {on_tensor(&t, ZCI_FLOAT32, (int64_t[]){2, 3}, 2, NULL, 0), on_tensor(&t, ZCI_INT64, (int64_t[]){1}, 1, NULL, 0)};
    on_node(&t, "ReduceMean", in5, 2, 18);
    CHECK_FAILS(on_infer(&t), ZCI_UNSUPPORTED, "planned");
    on_free(&t);

    on_init(&t, 17);
    int in6[3] = {on_tensor(&t, ZCI_INT64, d, 1, NULL, 0), on_tensor(&t, ZCI_FLOAT32, d, 1, NULL, 0),
                  on_tensor(&t, ZCI_FLOAT32, d, 1, NULL, 0)};
    on_node(&t, "Where", in6, 3, 17);
    CHECK_FAILS(on_infer(&t), ZCI_INVALID_MODEL, "bool");
    on_free(&t);
}

int main(void)
{
    test_binary_float();
    test_integers();
    test_where_and_max();
    test_unary();
    test_clip();
    test_cast();
    test_softmax();
    test_reduce_mean();
    test_batchnorm();
    test_refusals();
    return test_summary("ops_elementwise_kernels");
}
