/* ops_conv_kernels.c: the convolution, pooling and matrix-product kernels (src/ops/conv.c,
 * pool.c, matmul.c, src/cpu/gemm.c, dnnl_conv.c) on what the ONNX node tests leave out.
 *
 * Conv runs every random case through each CPU path and compares it with a direct reference
 * computed here in double:
 *   - unprepared: the built-in kernels with plain weights (what constant folding runs);
 *   - prepared without oneDNN (ZCI_CPU_NO_DNNL=1): packed weights, the GEMM with implicit
 *     im2col or the depthwise kernel;
 *   - prepared with oneDNN when the library has it.
 * Cases cover 1-D, 2-D and 3-D, groups (depthwise and channel multipliers included), strides,
 * dilations, asymmetric pads, auto_pad, the fused activations and residual in both orders,
 * batch > 1 and 1 or 2 threads. Then the GEMM against a reference (transposes, alpha/beta,
 * edge tiles, packed A, epilogue), MatMul broadcasting, Gemm's C broadcasting, pools on many
 * threads, and infer's refusals. */
/* setenv and unsetenv (POSIX) choose the path under test */
#define _POSIX_C_SOURCE 200112L

#include <math.h>
#include <stdlib.h>

#include "cpu/gemm.h"
#include "ops/conv.h"
#define TEST_RNG_SEED 0x9E3779B97F4A7C15ull
#include "onenode.h"

static int irand(int lo, int hi) { return lo + (int)(rng() % (uint64_t)(hi - lo + 1)); }
static void fill(float *v, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++) v[i] = frand(lo, hi);
}

static double rel_err(const float *a, const float *b, int64_t n)
{
    double e = 0.0, m = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= e)) e = d; /* NaN sticks */
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return e / (1.0 + m);
}

/* ================================================================ Conv */

typedef struct conv_case {
    int nsp;
    int64_t batch, cin, cout, group;
    int64_t in[3], k[3], s[3], d[3], pads[6];
    const char *auto_pad; /* NULL: explicit pads */
    int bias;
    int act;
    float alpha, beta;
    int sum, sum_first;
} conv_case;

static double act_ref(int act, double x, double a, double b)
{
    switch (act) {
    case ZCI_ACT_RELU: return x > 0 ? x : 0;
    case ZCI_ACT_SILU: return x / (1.0 + exp(-x));
    case ZCI_ACT_LEAKY_RELU: return x >= 0 ? x : a * x;
    case ZCI_ACT_CLIP: return x < a ? a : (x > b ? b : x);
    case ZCI_ACT_HARDSWISH: {
        double h = x / 6.0 + 0.5;
        return x * (h < 0 ? 0 : (h > 1 ? 1 : h));
    }
    case ZCI_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    default: return x;
    }
}

/* Direct convolution in double with the window the op resolved (p), then the epilogue. */
static void conv_ref(const conv_case *c, const zci_conv_params *p, const float *x, const float *w, const float *b,
                     const float *r, float *y)
{
    int shift = 3 - p->w.nsp;
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3];
    for (int i = 0; i < 3; i++) {
        int j = i - shift;
        in[i] = j >= 0 ? p->w.in[j] : 1;
        out[i] = j >= 0 ? p->w.out[j] : 1;
        k[i] = j >= 0 ? p->w.kernel[j] : 1;
        s[i] = j >= 0 ? p->w.stride[j] : 1;
        d[i] = j >= 0 ? p->w.dilation[j] : 1;
        pb[i] = j >= 0 ? p->w.pad_begin[j] : 0;
    }
    int64_t cg = c->cin / c->group, mg = c->cout / c->group;
    int64_t in_plane = in[0] * in[1] * in[2], out_plane = out[0] * out[1] * out[2], kvol = k[0] * k[1] * k[2];
    for (int64_t n = 0; n < c->batch; n++)
        for (int64_t m = 0; m < c->cout; m++)
            for (int64_t oz = 0; oz < out[0]; oz++)
                for (int64_t oy = 0; oy < out[1]; oy++)
                    for (int64_t ox = 0; ox < out[2]; ox++) {
                        double acc = b ? b[m] : 0.0;
                        int64_t gi = m / mg;
                        for (int64_t ci = 0; ci < cg; ci++)
                            for (int64_t kz = 0; kz < k[0]; kz++)
                                for (int64_t ky = 0; ky < k[1]; ky++)
                                    for (int64_t kx = 0; kx < k[2]; kx++) {
                                        int64_t iz = oz * s[0] - pb[0] + kz * d[0];
                                        int64_t iy = oy * s[1] - pb[1] + ky * d[1];
                                        int64_t ix = ox * s[2] - pb[2] + kx * d[2];
                                        if (iz < 0 || iz >= in[0] || iy < 0 || iy >= in[1] || ix < 0 || ix >= in[2])
                                            continue;
                                        acc += (double)x[(n * c->cin + gi * cg + ci) * in_plane +
                                                         (iz * in[1] + iy) * in[2] + ix] *
                                               w[(m * cg + ci) * kvol + (kz * k[1] + ky) * k[2] + kx];
                                    }
                        int64_t o = (n * c->cout + m) * out_plane + (oz * out[1] + oy) * out[2] + ox;
                        if (r && c->sum_first) acc += r[o];
                        acc = act_ref(c->act, acc, c->alpha, c->beta);
                        if (r && !c->sum_first) acc += r[o];
                        y[o] = (float)acc;
                    }
}

static void random_case(conv_case *c, int small)
{
    memset(c, 0, sizeof *c);
    int r = irand(0, 9);
    c->nsp = r < 2 ? 1 : (r < 9 ? 2 : 3);
    c->batch = irand(0, 4) == 0 ? 2 : 1;
    int kind = irand(0, 5);
    int64_t cin = irand(1, small ? 8 : 40), group = 1;
    if (kind == 0) { /* depthwise, maybe with a channel multiplier */
        group = cin;
        c->cout = cin * irand(1, 2);
    } else if (kind == 1) { /* grouped */
        group = irand(2, 3);
        cin = group * irand(1, 6);
        c->cout = group * irand(1, 6);
    } else {
        c->cout = irand(1, small ? 12 : 70);
    }
    c->cin = cin;
    c->group = group;
    for (int i = 0; i < c->nsp; i++) {
        c->k[i] = irand(1, c->nsp == 3 ? 3 : 5);
        c->s[i] = irand(1, 3);
        c->d[i] = irand(0, 3) == 0 ? 2 : 1;
        c->in[i] = irand(c->nsp == 3 ? 3 : 5, c->nsp == 3 ? 9 : (small ? 14 : 40)) + (c->k[i] - 1) * c->d[i];
        c->pads[i] = irand(0, 2);
        c->pads[c->nsp + i] = irand(0, 2);
    }
    int ap = irand(0, 7);
    c->auto_pad = ap == 0 ? "SAME_UPPER" : ap == 1 ? "SAME_LOWER" : ap == 2 ? "VALID" : NULL;
    c->bias = irand(0, 3) != 0;
    c->act = irand(0, ZCI_ACT_COUNT_ - 1);
    c->alpha = c->act == ZCI_ACT_CLIP ? -0.5f : 0.1f;
    c->beta = c->act == ZCI_ACT_CLIP ? 0.7f : 0.0f;
    c->sum = irand(0, 2) == 0;
    c->sum_first = irand(0, 1);
}

static void describe(const conv_case *c, char *buf, size_t size)
{
    snprintf(buf, size,
             "%dD N%lld C%lld M%lld g%lld in %lldx%lldx%lld k %lldx%lldx%lld s %lld,%lld,%lld d %lld,%lld,%lld "
             "auto_pad %s bias %d act %d sum %d/%d",
             c->nsp, (long long)c->batch, (long long)c->cin, (long long)c->cout, (long long)c->group,
             (long long)c->in[0], (long long)c->in[1], (long long)c->in[2], (long long)c->k[0], (long long)c->k[1],
             (long long)c->k[2], (long long)c->s[0], (long long)c->s[1], (long long)c->s[2], (long long)c->d[0],
             (long long)c->d[1], (long long)c->d[2], c->auto_pad ? c->auto_pad : "-", c->bias, c->act, c->sum,
             c->sum_first);
}

static void conv_one(const conv_case *c)
{
    char what[320];
    describe(c, what, sizeof what);
    onenode t;
    on_init(&t, 17);
    int64_t xd[5] = {c->batch, c->cin}, wd[5] = {c->cout, c->cin / c->group}, bd[1] = {c->cout};
    for (int i = 0; i < c->nsp; i++) {
        xd[2 + i] = c->in[i];
        wd[2 + i] = c->k[i];
    }
    int nd = 2 + c->nsp;
    int64_t xn = 1, wn = 1;
    for (int i = 0; i < nd; i++) {
        xn *= xd[i];
        wn *= wd[i];
    }
    float *xv = malloc(sizeof(float) * (size_t)xn), *wv = malloc(sizeof(float) * (size_t)wn);
    float *bv = malloc(sizeof(float) * (size_t)c->cout);
    fill(xv, xn, -1.0f, 1.0f);
    fill(wv, wn, -0.5f, 0.5f);
    fill(bv, c->cout, -0.5f, 0.5f);
    int in[4];
    in[0] = on_tensor(&t, ZCI_FLOAT32, xd, nd, xv, 0);
    in[1] = on_tensor(&t, ZCI_FLOAT32, wd, nd, wv, 1);
    in[2] = c->bias ? on_tensor(&t, ZCI_FLOAT32, bd, 1, bv, 1) : -1;
    zci_node *n = on_node(&t, "Conv", in, 3, 17);
    on_attr_int(&t, "group", c->group);
    on_attr_ints(&t, "strides", c->s, c->nsp);
    on_attr_ints(&t, "dilations", c->d, c->nsp);
    if (c->auto_pad)
        on_attr_string(&t, "auto_pad", c->auto_pad);
    else
        on_attr_ints(&t, "pads", c->pads, 2 * c->nsp);
    zci_status st = n->op->infer(t.g, n);
    CHECK(st == ZCI_OK, "infer %s: %s", what, zci_last_error());
    if (st != ZCI_OK) goto out;
    if (c->sum || c->act) {
        /* what the fusion pass does: append the residual as input 3, then set the epilogue */
        int sum_input = -1;
        if (c->sum) {
            const zci_tensor *y = on_out(&t);
            int64_t yd[5];
            memcpy(yd, y->dims, sizeof yd);
            float *rv = malloc(zci_tensor_bytes(y));
            fill(rv, zci_tensor_numel(y), -1.0f, 1.0f);
            int r = on_tensor(&t, ZCI_FLOAT32, yd, y->ndim, rv, 0);
            free(rv);
            n = on_n(&t);
            n->in = realloc(n->in, sizeof(int) * 4);
            n->in[3] = r;
            n->n_in = 4;
            sum_input = 3;
        }
        st = zci_conv_set_fusion(t.g, n, (zci_activation)c->act, c->alpha, c->beta, sum_input, c->sum_first);
        CHECK(st == ZCI_OK, "fusion %s: %s", what, zci_last_error());
        if (st != ZCI_OK) goto out;
        /* infer again must give the same params (the fusion lives in attributes) */
        zci_conv_params before = *(const zci_conv_params *)n->params;
        CHECK_OK(n->op->infer(t.g, n));
        CHECK(!memcmp(&before, n->params, sizeof before), "re-running infer changed the params: %s", what);
    }
    const zci_tensor *y = on_out(&t);
    int64_t yn = zci_tensor_numel(y);
    float *ref = malloc(sizeof(float) * (size_t)(yn ? yn : 1));
    conv_ref(c, n->params, xv, wv, c->bias ? bv : NULL, c->sum ? t.data[n->in[3]] : NULL, ref);
    int threads = irand(1, 2);

    float *plain = on_run(&t, NULL, threads);
    double e = rel_err(plain, ref, yn);
    CHECK(e < 2e-5, "unprepared built-in path: error %.3g for %s", e, what);
    free(plain);

    const char *paths[2] = {"1", "0"};
    for (int pi = 0; pi < 2; pi++) {
#ifndef ZCI_HAVE_DNNL
        if (pi == 1) break;
#endif
        setenv("ZCI_CPU_NO_DNNL", paths[pi], 1);
        void *state = NULL;
        st = n->op->cpu_prepare(t.g, n, threads, &state);
        CHECK(st == ZCI_OK, "prepare (%s): %s for %s", pi ? "oneDNN" : "built-in", zci_last_error(), what);
        if (st != ZCI_OK) continue;
        float *got = on_run(&t, state, threads);
        e = rel_err(got, ref, yn);
        CHECK(e < 2e-5, "prepared %s path: error %.3g for %s", pi ? "oneDNN" : "built-in", e, what);
        free(got);
        n->op->cpu_release(state);
    }
    unsetenv("ZCI_CPU_NO_DNNL");
    free(ref);
out:
    free(xv);
    free(wv);
    free(bv);
    on_free(&t);
}

static void test_conv_random(int cases)
{
    conv_case c;
    for (int i = 0; i < cases; i++) {
        random_case(&c, i % 3 != 0);
        conv_one(&c);
    }
    /* shapes where the GEMM's blocking matters: K over one block, N over several panels */
    conv_case big = {.nsp = 2, .batch = 1, .cin = 96, .cout = 40, .group = 1, .in = {1, 45, 61}, .k = {1, 3, 3},
                     .s = {1, 1, 1}, .d = {1, 1, 1}, .pads = {1, 1, 1, 1}, .bias = 1, .act = ZCI_ACT_SILU, .sum = 1};
    conv_one(&big);
    conv_case pw = {.nsp = 2, .batch = 2, .cin = 300, .cout = 33, .group = 1, .in = {1, 17, 70}, .k = {1, 1, 1},
                    .s = {1, 1, 1}, .d = {1, 1, 1}, .bias = 1, .act = ZCI_ACT_RELU};
    conv_one(&pw);
}

static void test_conv_refusals(void)
{
    onenode t;
    on_init(&t, 17);
    int64_t xd[4] = {1, 6, 8, 8}, wd[4] = {4, 4, 3, 3};
    int in[3] = {on_tensor(&t, ZCI_FLOAT32, xd, 4, NULL, 0), on_tensor(&t, ZCI_FLOAT32, wd, 4, NULL, 1), -1};
    zci_node *n = on_node(&t, "Conv", in, 2, 17);
    CHECK_FAILS(n->op->infer(t.g, n), ZCI_INVALID_MODEL, "channels");
    on_attr_int(&t, "group", 2);
    n = on_n(&t);
    CHECK_FAILS(n->op->infer(t.g, n), ZCI_INVALID_MODEL, "channels");
    on_free(&t);

    on_init(&t, 17);
    int64_t wd2[4] = {4, 6, 3, 3};
    int in2[3] = {on_tensor(&t, ZCI_FLOAT32, xd, 4, NULL, 0), on_tensor(&t, ZCI_FLOAT32, wd2, 4, NULL, 1), -1};
    n = on_node(&t, "Conv", in2, 2, 17);
    int64_t bad_pads[3] = {1, 1, 1};
    on_attr_ints(&t, "pads", bad_pads, 3);
    n = on_n(&t);
    CHECK_FAILS(n->op->infer(t.g, n), ZCI_INVALID_MODEL, "pads");
    on_free(&t);

    on_init(&t, 17);
    int64_t big_k[4] = {4, 6, 9, 9};
    int in3[3] = {on_tensor(&t, ZCI_FLOAT32, xd, 4, NULL, 0), on_tensor(&t, ZCI_FLOAT32, big_k, 4, NULL, 1), -1};
    n = on_node(&t, "Conv", in3, 2, 17);
    CHECK_FAILS(n->op->infer(t.g, n), ZCI_INVALID_MODEL, "smaller than the kernel");
    /* a residual of the wrong shape */
    on_free(&t);

    on_init(&t, 17);
    int64_t rd[4] = {1, 4, 7, 7};
    int in4[4] = {on_tensor(&t, ZCI_FLOAT32, xd, 4, NULL, 0), on_tensor(&t, ZCI_FLOAT32, wd2, 4, NULL, 1), -1, on_tensor(&t, ZCI_FLOAT32, rd, 4, NULL, 0)};
    n = on_node(&t, "Conv", in4, 4, 17);
    CHECK_FAILS(zci_conv_set_fusion(t.g, n, ZCI_ACT_SILU, 0, 0, 3, 0), ZCI_INVALID_MODEL, "residual");
    CHECK_FAILS(zci_conv_set_fusion(t.g, n, (zci_activation)42, 0, 0, -1, 0), ZCI_INVALID_MODEL, "zci_activation");
    on_free(&t);
}

/* A planned graph of convolutions whose tensors the CPU backend may keep channel-blocked (see
 * zci_conv_tensor_block):
 *
 *   x -> A (3x3, 8 -> 32) -> t1 -> B (1x1, SiLU) -> t2 -> E (3x3, SiLU, + residual t3) -> t4
 *                            t1 -> D (depthwise 3x3) -> t3 ------------^
 *   Concat(t4, t3) -> t5 -> F (1x1, 64 -> 16) -> y                       [with_reader: Relu(t5) -> z]
 *
 * Without the Relu, t1 to t5 are blocked (t3 as a residual whose reader's X is blocked, t5 made
 * by a Concat of blocked tensors) and x and y are not; a Relu reading t5 makes t5, then t4 and t3
 * (the Concat's inputs), plain. Either way the prepared run must match the unprepared built-in
 * one, with oneDNN's Winograd kernels for A and E (3x3, stride 1, blocked output; E's SiLU and
 * residual then run as a pass of their own) and without (ZCI_CPU_NO_WINOGRAD=1). */
typedef struct chain_node {
    const char *name, *type;
    int in[4], n_in, out;
    int64_t group, pad;
    int act;
} chain_node;

static void test_blocked_chain(int with_reader, int winograd)
{
    zci_graph *g = zci_graph_new();
    g->opset = 17;
    void *data[40] = {0};
    int64_t xd[4] = {1, 8, 19, 23};
    int64_t wdims[5][4] = {{32, 8, 3, 3}, {32, 32, 1, 1}, {32, 1, 3, 3}, {32, 32, 3, 3}, {16, 64, 1, 1}};
    int x = zci_graph_add_tensor(g, "x", ZCI_TENSOR_INPUT);
    zci_tensor_set_shape(&g->tensors[x], ZCI_FLOAT32, xd, 4);
    data[x] = malloc(zci_tensor_bytes(&g->tensors[x]));
    fill(data[x], zci_tensor_numel(&g->tensors[x]), -1, 1);
    int w[5], b[5];
    for (int i = 0; i < 5; i++) {
        char name[16];
        int64_t bd[1] = {wdims[i][0]};
        snprintf(name, sizeof name, "w%d", i);
        w[i] = zci_graph_add_tensor(g, name, ZCI_TENSOR_CONSTANT);
        zci_tensor_set_shape(&g->tensors[w[i]], ZCI_FLOAT32, wdims[i], 4);
        float *wv = malloc(zci_tensor_bytes(&g->tensors[w[i]]));
        fill(wv, zci_tensor_numel(&g->tensors[w[i]]), -0.4f, 0.4f);
        zci_tensor_make_const(&g->tensors[w[i]], wv);
        data[w[i]] = wv;
        snprintf(name, sizeof name, "b%d", i);
        b[i] = zci_graph_add_tensor(g, name, ZCI_TENSOR_CONSTANT);
        zci_tensor_set_shape(&g->tensors[b[i]], ZCI_FLOAT32, bd, 1);
        float *bv = malloc(sizeof(float) * (size_t)bd[0]);
        fill(bv, bd[0], -0.2f, 0.2f);
        zci_tensor_make_const(&g->tensors[b[i]], bv);
        data[b[i]] = bv;
    }
    int t[6];
    for (int i = 1; i <= 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        t[i] = zci_graph_add_tensor(g, name, ZCI_TENSOR_ACTIVATION);
    }
    int y = zci_graph_add_tensor(g, "y", ZCI_TENSOR_ACTIVATION), z = zci_graph_add_tensor(g, "z", ZCI_TENSOR_ACTIVATION);
    g->tensors[y].is_output = g->tensors[z].is_output = true;
    const chain_node nodes[7] = {
        {"A", "Conv", {x, w[0], b[0]}, 3, t[1], 1, 1, ZCI_ACT_NONE},
        {"B", "Conv", {t[1], w[1], b[1]}, 3, t[2], 1, 0, ZCI_ACT_SILU},
        {"D", "Conv", {t[1], w[2], b[2]}, 3, t[3], 32, 1, ZCI_ACT_NONE},
        {"E", "Conv", {t[2], w[3], b[3], t[3]}, 4, t[4], 1, 1, ZCI_ACT_SILU},
        {"C", "Concat", {t[4], t[3]}, 2, t[5], 0, 0, 0},
        {"F", "Conv", {t[5], w[4], b[4]}, 3, y, 1, 0, ZCI_ACT_NONE},
        {"R", "Relu", {t[5]}, 1, z, 0, 0, 0},
    };
    int count = with_reader ? 7 : 6;
    g->order = malloc(sizeof(int) * 7);
    for (int i = 0; i < count; i++) {
        const chain_node *c = &nodes[i];
        int ni = zci_graph_add_node(g, c->name, c->type, "", c->in, c->n_in, &c->out, 1);
        zci_node *n = &g->nodes[ni];
        n->op = zci_op_find("", c->type, 17);
        if (!strcmp(c->type, "Conv")) {
            n->attrs = calloc(2, sizeof *n->attrs);
            n->n_attrs = 2;
            n->attrs[0].name = zci_strdup("group");
            n->attrs[0].type = ZCI_ATTR_INT;
            n->attrs[0].i = c->group;
            n->attrs[1].name = zci_strdup("pads");
            n->attrs[1].type = ZCI_ATTR_INTS;
            n->attrs[1].n = 4;
            n->attrs[1].ints = malloc(4 * sizeof(int64_t));
            for (int j = 0; j < 4; j++) n->attrs[1].ints[j] = c->pad;
            CHECK_OK(zci_conv_set_fusion(g, n, (zci_activation)c->act, 0, 0, c->n_in == 4 ? 3 : -1, 0));
        } else {
            if (!strcmp(c->type, "Concat")) {
                n->attrs = calloc(1, sizeof *n->attrs);
                n->n_attrs = 1;
                n->attrs[0].name = zci_strdup("axis");
                n->attrs[0].type = ZCI_ATTR_INT;
                n->attrs[0].i = 1;
            }
            CHECK_OK(n->op->infer(g, n));
        }
        g->tensors[c->out].producer = ni;
        g->order[g->n_order++] = ni;
        data[c->out] = malloc(zci_tensor_bytes(&g->tensors[c->out]));
    }
    int64_t yn = zci_tensor_numel(&g->tensors[y]);
    float *want = malloc(sizeof(float) * (size_t)yn);
    /* unprepared: the built-in kernels, plain everywhere */
    for (int i = 0; i < count; i++) {
        zci_kernel_ctx k = {.g = g, .n = &g->nodes[g->order[i]], .data = data, .nthreads = 2, .state = NULL};
        CHECK_OK(k.n->op->cpu(&k));
    }
    memcpy(want, data[y], sizeof(float) * (size_t)yn);
    int expect[6] = {0, 1, 1, !with_reader, !with_reader, !with_reader};
#ifndef ZCI_HAVE_DNNL
    memset(expect, 0, sizeof expect);
#endif
    for (int i = 1; i <= 5; i++)
        CHECK((zci_conv_tensor_block(g, t[i]) > 0) == expect[i], "with_reader %d: t%d blocked is %d, expected %d",
              with_reader, i, zci_conv_tensor_block(g, t[i]), expect[i]);
    CHECK(zci_conv_tensor_block(g, x) == 0 && zci_conv_tensor_block(g, y) == 0, "x and y must stay plain");
    void *state[7] = {0};
    if (!winograd) setenv("ZCI_CPU_NO_WINOGRAD", "1", 1);
    for (int i = 0; i < count; i++) {
        zci_node *n = &g->nodes[g->order[i]];
        if (n->op->cpu_prepare) CHECK_OK(n->op->cpu_prepare(g, n, 2, &state[i]));
    }
    unsetenv("ZCI_CPU_NO_WINOGRAD");
    for (int i = 0; i < count; i++) memset(data[nodes[i].out], 0xA5, zci_tensor_bytes(&g->tensors[nodes[i].out]));
    for (int i = 0; i < count; i++) {
        CHECK_OK(zci_kernel_run_once(g, &g->nodes[g->order[i]], data, 2, state[i]));
    }
    double e = rel_err(data[y], want, yn);
    CHECK(e < 2e-5, "with_reader %d, winograd %d: the prepared graph differs from the built-in path: error %g",
          with_reader, winograd, e);
    for (int i = 0; i < count; i++)
        if (state[i]) g->nodes[g->order[i]].op->cpu_release(state[i]);
    free(data[x]);
    for (int i = 0; i < count; i++) free(data[nodes[i].out]);
    free(want);
    zci_graph_free(g);
}

/* ================================================================ GEMM */

static void gemm_ref(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                     const float *b, int64_t ldb, float beta, float *c, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0.0;
            for (int64_t p = 0; p < k; p++)
                s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * c[i * ldc + j]));
        }
}

static void add_one(const void *ctx, float *c, int64_t ldc, int64_t m0, int64_t mc, int64_t n0, int64_t nc)
{
    (void)ctx;
    (void)m0;
    (void)n0;
    for (int64_t i = 0; i < mc; i++)
        for (int64_t j = 0; j < nc; j++) c[i * ldc + j] += 1.0f;
}

static void test_gemm(int cases)
{
    for (int it = 0; it < cases; it++) {
        int64_t m = irand(1, 80), n = irand(1, 120), k = irand(0, 700);
        if (irand(0, 5) == 0) m = 1;
        if (irand(0, 5) == 0) n = 1;
        int ta = irand(0, 1), tb = irand(0, 1), packed = irand(0, 2) == 0, epi = irand(0, 3) == 0;
        float alpha = irand(0, 2) ? 1.0f : 0.75f, beta = irand(0, 2) == 0 ? 0.0f : (irand(0, 1) ? 1.0f : -0.5f);
        int64_t lda = (ta ? m : k) + irand(0, 2), ldb = (tb ? k : n) + irand(0, 2), ldc = n + irand(0, 2);
        float *a = malloc(sizeof(float) * (size_t)((ta ? k : m) * lda + 1));
        float *b = malloc(sizeof(float) * (size_t)((tb ? n : k) * ldb + 1));
        float *c = malloc(sizeof(float) * (size_t)(m * ldc)), *r = malloc(sizeof(float) * (size_t)(m * ldc));
        fill(a, (ta ? k : m) * lda, -1, 1);
        fill(b, (tb ? n : k) * ldb, -1, 1);
        fill(c, m * ldc, -1, 1);
        memcpy(r, c, sizeof(float) * (size_t)(m * ldc));
        zci_packed_a pa = {0};
        zci_gemm_args g = {0};
        g.m = m;
        g.n = n;
        g.k = k;
        g.alpha = alpha;
        g.beta = beta;
        if (packed) {
            CHECK_OK(zci_sgemm_pack_a(ta, m, k, a, lda, &pa));
            g.packed_a = &pa;
        } else {
            g.a = a;
            g.lda = lda;
            g.trans_a = ta;
        }
        g.b = b;
        g.ldb = ldb;
        g.trans_b = tb;
        g.c = c;
        g.ldc = ldc;
        g.epilogue = epi ? add_one : NULL;
        g.nthreads = irand(1, 3);
        CHECK_OK(zci_sgemm_run(&g));
        gemm_ref(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, r, ldc);
        double e = 0.0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double d = fabs((double)c[i * ldc + j] - (r[i * ldc + j] + (epi ? 1.0 : 0.0)));
                if (!(d <= e)) e = d;
            }
        CHECK(e < 1e-3, "gemm m%lld n%lld k%lld ta%d tb%d packed%d alpha %g beta %g: error %g", (long long)m,
              (long long)n, (long long)k, ta, tb, packed, alpha, beta, e);
        zci_packed_a_free(&pa);
        free(a);
        free(b);
        free(c);
        free(r);
    }
}

/* ================================================================ MatMul, Gemm ops */

static void test_matmul_broadcast(void)
{
    /* A (2, 1, 3, 40) x B (3, 40, 5): batch (2, 3), A broadcast over the 3, B over the 2; then
     * A (4, 7, 40) x B (40, 9), folded into one product; then many small products on 2 threads */
    const int64_t shapes[3][2][4] = {{{2, 1, 3, 40}, {3, 40, 5}}, {{4, 7, 40}, {40, 9}}, {{64, 8, 16}, {64, 16, 8}}};
    const int ranks[3][2] = {{4, 3}, {3, 2}, {3, 3}};
    for (int s = 0; s < 3; s++) {
        onenode t;
        on_init(&t, 17);
        int64_t an = 1, bn = 1;
        for (int i = 0; i < ranks[s][0]; i++) an *= shapes[s][0][i];
        for (int i = 0; i < ranks[s][1]; i++) bn *= shapes[s][1][i];
        float *av = malloc(sizeof(float) * (size_t)an), *bv = malloc(sizeof(float) * (size_t)bn);
        fill(av, an, -1, 1);
        fill(bv, bn, -1, 1);
        int in[2] = {on_tensor(&t, ZCI_FLOAT32, shapes[s][0], ranks[s][0], av, 0), on_tensor(&t, ZCI_FLOAT32, shapes[s][1], ranks[s][1], bv, 0)};
        zci_node *n = on_node(&t, "MatMul", in, 2, 17);
        CHECK_OK(n->op->infer(t.g, n));
        const zci_tensor *y = on_out(&t);
        int64_t yn = zci_tensor_numel(y);
        float *got = on_run(&t, NULL, 2);
        /* reference: walk output batch indices, broadcast by hand */
        int yr = y->ndim;
        int64_t m = y->dims[yr - 2], nn = y->dims[yr - 1], k = shapes[s][0][ranks[s][0] - 1];
        int64_t nb = yn / (m * nn);
        double e = 0.0;
        for (int64_t bi = 0; bi < nb; bi++) {
            int64_t ai = 0, bj = 0, rem = bi, astr = 1, bstr = 1;
            for (int d = yr - 3; d >= 0; d--) {
                int64_t cdim = rem % y->dims[d];
                rem /= y->dims[d];
                int ad = d - (yr - ranks[s][0]), bd = d - (yr - ranks[s][1]);
                if (ad >= 0) {
                    if (shapes[s][0][ad] != 1) ai += cdim * astr;
                    astr *= shapes[s][0][ad];
                }
                if (bd >= 0) {
                    if (shapes[s][1][bd] != 1) bj += cdim * bstr;
                    bstr *= shapes[s][1][bd];
                }
            }
            float ref[64 * 64];
            gemm_ref(0, 0, m, nn, k, 1.0f, av + ai * m * k, k, bv + bj * k * nn, nn, 0.0f, ref, nn);
            for (int64_t i = 0; i < m * nn; i++) {
                double d = fabs((double)got[bi * m * nn + i] - ref[i]);
                if (d > e) e = d;
            }
        }
        CHECK(e < 1e-4, "MatMul case %d: error %g", s, e);
        free(got);
        free(av);
        free(bv);
        on_free(&t);
    }
}

static void test_gemm_op(void)
{
    /* C of shape (N), (M, 1), (1, 1) and (M, N); transposes; alpha and beta */
    const int64_t m = 37, n = 29, k = 50;
    const int64_t cshapes[4][2] = {{n, 0}, {m, 1}, {1, 1}, {m, n}};
    const int cranks[4] = {1, 2, 2, 2};
    for (int ci = 0; ci < 4; ci++) {
        int ta = ci & 1, tb = (ci >> 1) & 1;
        onenode t;
        on_init(&t, 17);
        int64_t ad[2] = {ta ? k : m, ta ? m : k}, bd[2] = {tb ? n : k, tb ? k : n};
        float *av = malloc(sizeof(float) * (size_t)(m * k)), *bv = malloc(sizeof(float) * (size_t)(k * n));
        float cv[37 * 29];
        fill(av, m * k, -1, 1);
        fill(bv, k * n, -1, 1);
        fill(cv, m * n, -1, 1);
        int in[3] = {on_tensor(&t, ZCI_FLOAT32, ad, 2, av, 0), on_tensor(&t, ZCI_FLOAT32, bd, 2, bv, 1), on_tensor(&t, ZCI_FLOAT32, cshapes[ci], cranks[ci], cv, 1)};
        zci_node *nd = on_node(&t, "Gemm", in, 3, 17);
        on_attr_int(&t, "transA", ta);
        on_attr_int(&t, "transB", tb);
        on_attr_float(&t, "alpha", 0.5f);
        on_attr_float(&t, "beta", 2.0f);
        nd = on_n(&t);
        CHECK_OK(nd->op->infer(t.g, nd));
        float *got = on_run(&t, NULL, 2);
        float ref[37 * 29];
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                int64_t cr = cshapes[ci][0] == 1 || cranks[ci] == 1 ? 0 : i;
                int64_t cc = cranks[ci] == 1 ? j : (cshapes[ci][1] == 1 ? 0 : j);
                int64_t ccols = cranks[ci] == 1 ? n : cshapes[ci][1];
                ref[i * n + j] = cv[cr * ccols + cc];
            }
        gemm_ref(ta, tb, m, n, k, 0.5f, av, ta ? m : k, bv, tb ? k : n, 2.0f, ref, n);
        double e = rel_err(got, ref, m * n);
        CHECK(e < 1e-5, "Gemm C shape %d transA %d transB %d: error %g", ci, ta, tb, e);
        free(got);
        free(av);
        free(bv);
        on_free(&t);
    }
}

/* ================================================================ pools */

static void test_pools(void)
{
    /* large enough to run on several threads: max and average (with and without pads counted)
     * against a reference, 2-D with stride and ceil_mode */
    onenode t;
    for (int kind = 0; kind < 3; kind++) {
        on_init(&t, 17);
        int64_t xd[4] = {2, 16, 57, 63};
        int64_t xn = 2 * 16 * 57 * 63;
        float *xv = malloc(sizeof(float) * (size_t)xn);
        fill(xv, xn, -3, 3);
        int in[1] = {on_tensor(&t, ZCI_FLOAT32, xd, 4, xv, 0)};
        zci_node *n = on_node(&t, kind == 0 ? "MaxPool" : "AveragePool", in, 1, 17);
        int64_t ks[2] = {3, 4}, st[2] = {2, 3}, pads[4] = {1, 2, 1, 0};
        on_attr_ints(&t, "kernel_shape", ks, 2);
        on_attr_ints(&t, "strides", st, 2);
        on_attr_ints(&t, "pads", pads, 4);
        on_attr_int(&t, "ceil_mode", 1);
        if (kind == 2) on_attr_int(&t, "count_include_pad", 1);
        n = on_n(&t);
        CHECK_OK(n->op->infer(t.g, n));
        const zci_tensor *y = on_out(&t);
        float *got = on_run(&t, NULL, 2);
        int64_t oh = y->dims[2], ow = y->dims[3];
        double e = 0.0;
        for (int64_t pl = 0; pl < 32; pl++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double acc = kind == 0 ? -INFINITY : 0.0;
                    int64_t cnt = 0, cnt_pad = 0;
                    for (int64_t ky = 0; ky < 3; ky++)
                        for (int64_t kx = 0; kx < 4; kx++) {
                            int64_t iy = oy * 2 - 1 + ky, ix = ox * 3 - 2 + kx;
                            if (iy >= -1 && iy < 57 + 1 && ix >= -2 && ix < 63) cnt_pad++;
                            if (iy < 0 || iy >= 57 || ix < 0 || ix >= 63) continue;
                            double v = xv[pl * 57 * 63 + iy * 63 + ix];
                            if (kind == 0)
                                acc = v > acc ? v : acc;
                            else
                                acc += v;
                            cnt++;
                        }
                    if (kind == 1) acc /= (double)cnt;
                    if (kind == 2) acc /= (double)cnt_pad;
                    double d = fabs(acc - got[pl * oh * ow + oy * ow + ox]);
                    if (d > e) e = d;
                }
        CHECK(e < 1e-5, "pool kind %d: error %g", kind, e);
        free(got);
        free(xv);
        on_free(&t);
    }
}

int main(void)
{
    test_conv_random(300);
    test_conv_refusals();
    for (int winograd = 0; winograd < 2; winograd++) {
        test_blocked_chain(0, winograd);
        test_blocked_chain(1, winograd);
    }
    test_gemm(300);
    test_matmul_broadcast();
    test_gemm_op();
    test_pools();
    return test_summary("ops_conv_kernels");
}
