/* bench_conv.c: times Conv on its CPU paths (oneDNN when the library has it, and the built-in
 * GEMM / depthwise kernels) and prints GFLOP/s.
 *
 *   bench_conv [--threads N] [--iters N] [--yolo] [--layer I] [--path builtin|onednn]
 *
 * Default: two YOLOv5s-like layers, 1x64x160x160 -> 128 3x3 stride 2 and 1x128x80x80 -> 128 1x1,
 * with bias and SiLU fused. --yolo: the 60 convolutions of YOLOv5s at 640x640 in order, each
 * with SiLU fused, and their total time (compare with a whole-model run of onnxruntime, whose
 * time is mostly these); --layer I: only YOLOv5s's layer I (from 0); --path: one path only.
 * Times are the minimum and the median over the iterations, after one warm-up run.
 *
 * Results, 2026-11-25, 2-core AMD EPYC VM (Zen 4, AVX-512), oneDNN 2.6.3, Release build
 * (-O3 -march=x86-64-v3), idle machine, minimum of the iterations:
 *   bench_conv --iters 30
 *     1x64x160x160 -> 128 3x3 s2   built-in 6.64 ms (142 GFLOP/s)   oneDNN 5.50 ms (172 GFLOP/s)
 *     1x128x80x80 -> 128 1x1       built-in 1.65 ms (127 GFLOP/s)   oneDNN 1.46 ms (143 GFLOP/s)
 *   bench_conv --yolo --iters 10 (each layer alone, NCHW in and out)
 *     built-in 119.5 ms (138 GFLOP/s)   oneDNN 97.9 ms (168 GFLOP/s)
 *   in the whole model, where tensors between convolutions stay blocked, the 60 convolutions
 *   take about 82 ms; zcinfer bench yolov5s.onnx: 89.2 ms against onnxruntime 1.32's CPU provider
 *   at 82.8 ms (2 threads), 176 against 161 ms (1 thread). */
/* setenv and unsetenv (POSIX) choose the path under test */
#define _POSIX_C_SOURCE 200112L

#include <math.h>
#include <stdlib.h>

#include "ops/conv.h"
#include "ops/op.h"
#include <stdio.h>
#include <string.h>

typedef struct layer {
    int64_t c, h, w, m, k, s, p;
} layer;

/* YOLOv5s v6 at 640x640: input channels, height, width, output channels, kernel, stride, pad */
static const layer yolov5s[] = {
    {3, 640, 640, 32, 6, 2, 2},    {32, 320, 320, 64, 3, 2, 1},  {64, 160, 160, 32, 1, 1, 0},
    {32, 160, 160, 32, 1, 1, 0},   {32, 160, 160, 32, 3, 1, 1},  {64, 160, 160, 32, 1, 1, 0},
    {64, 160, 160, 64, 1, 1, 0},   {64, 160, 160, 128, 3, 2, 1}, {128, 80, 80, 64, 1, 1, 0},
    {64, 80, 80, 64, 1, 1, 0},     {64, 80, 80, 64, 3, 1, 1},    {64, 80, 80, 64, 1, 1, 0},
    {64, 80, 80, 64, 3, 1, 1},     {128, 80, 80, 64, 1, 1, 0},   {128, 80, 80, 128, 1, 1, 0},
    {128, 80, 80, 256, 3, 2, 1},   {256, 40, 40, 128, 1, 1, 0},  {128, 40, 40, 128, 1, 1, 0},
    {128, 40, 40, 128, 3, 1, 1},   {128, 40, 40, 128, 1, 1, 0},  {128, 40, 40, 128, 3, 1, 1},
    {128, 40, 40, 128, 1, 1, 0},   {128, 40, 40, 128, 3, 1, 1},  {256, 40, 40, 128, 1, 1, 0},
    {256, 40, 40, 256, 1, 1, 0},   {256, 40, 40, 512, 3, 2, 1},  {512, 20, 20, 256, 1, 1, 0},
    {256, 20, 20, 256, 1, 1, 0},   {256, 20, 20, 256, 3, 1, 1},  {512, 20, 20, 256, 1, 1, 0},
    {512, 20, 20, 512, 1, 1, 0},   {512, 20, 20, 256, 1, 1, 0},  {1024, 20, 20, 512, 1, 1, 0},
    {512, 20, 20, 256, 1, 1, 0},   {512, 40, 40, 128, 1, 1, 0},  {128, 40, 40, 128, 1, 1, 0},
    {128, 40, 40, 128, 3, 1, 1},   {512, 40, 40, 128, 1, 1, 0},  {256, 40, 40, 256, 1, 1, 0},
    {256, 40, 40, 128, 1, 1, 0},   {256, 80, 80, 64, 1, 1, 0},   {64, 80, 80, 64, 1, 1, 0},
    {64, 80, 80, 64, 3, 1, 1},     {256, 80, 80, 64, 1, 1, 0},   {128, 80, 80, 128, 1, 1, 0},
    {128, 80, 80, 128, 3, 2, 1},   {256, 40, 40, 128, 1, 1, 0},  {128, 40, 40, 128, 1, 1, 0},
    {128, 40, 40, 128, 3, 1, 1},   {256, 40, 40, 128, 1, 1, 0},  {256, 40, 40, 256, 1, 1, 0},
    {256, 40, 40, 256, 3, 2, 1},   {512, 20, 20, 256, 1, 1, 0},  {256, 20, 20, 256, 1, 1, 0},
    {256, 20, 20, 256, 3, 1, 1},   {512, 20, 20, 256, 1, 1, 0},  {512, 20, 20, 512, 1, 1, 0},
    {128, 80, 80, 255, 1, 1, 0},   {256, 40, 40, 255, 1, 1, 0},  {512, 20, 20, 255, 1, 1, 0},
};

static const layer samples[] = {
    {64, 160, 160, 128, 3, 2, 1},
    {128, 80, 80, 128, 1, 1, 0},
};

typedef struct bench_conv {
    zci_graph *g;
    zci_node *n;
    void *data[4];
    double flops;
} bench_conv;

static int add_tensor(zci_graph *g, const char *name, const int64_t *dims, int nd, int is_const)
{
    int i = zci_graph_add_tensor(g, name, is_const ? ZCI_TENSOR_CONSTANT : ZCI_TENSOR_INPUT);
    zci_tensor *t = &g->tensors[i];
    zci_tensor_set_shape(t, ZCI_FLOAT32, dims, nd);
    size_t n = (size_t)zci_tensor_numel(t);
    float *v = malloc(n * sizeof *v);
    for (size_t j = 0; j < n; j++) v[j] = (float)((j * 2654435761u) % 1000) / 1000.0f - 0.5f;
    if (is_const) zci_tensor_make_const(t, v);
    else t->data = NULL;
    return i;
}

static int bench_make(bench_conv *b, const layer *l)
{
    memset(b, 0, sizeof *b);
    b->g = zci_graph_new();
    int64_t xd[4] = {1, l->c, l->h, l->w}, wd[4] = {l->m, l->c, l->k, l->k}, bd[1] = {l->m};
    int in[3] = {add_tensor(b->g, "x", xd, 4, 0), add_tensor(b->g, "w", wd, 4, 1), add_tensor(b->g, "b", bd, 1, 1)};
    int out = zci_graph_add_tensor(b->g, "y", ZCI_TENSOR_ACTIVATION);
    int ni = zci_graph_add_node(b->g, "conv", "Conv", "", in, 3, &out, 1);
    b->n = &b->g->nodes[ni];
    b->n->op = zci_op_find("", "Conv", 17);
    zci_attr *a = b->n->attrs = calloc(2, sizeof *a);
    b->n->n_attrs = 2;
    a[0].name = zci_strdup("strides");
    a[0].type = ZCI_ATTR_INTS;
    a[0].n = 2;
    a[0].ints = malloc(2 * sizeof(int64_t));
    a[0].ints[0] = a[0].ints[1] = l->s;
    a[1].name = zci_strdup("pads");
    a[1].type = ZCI_ATTR_INTS;
    a[1].n = 4;
    a[1].ints = malloc(4 * sizeof(int64_t));
    for (int i = 0; i < 4; i++) a[1].ints[i] = l->p;
    if (b->n->op->infer(b->g, b->n) != ZCI_OK ||
        zci_conv_set_fusion(b->g, b->n, ZCI_ACT_SILU, 0.0f, 0.0f, -1, 0) != ZCI_OK) {
        fprintf(stderr, "bench_conv: %s\n", zci_last_error());
        return 0;
    }
    b->data[in[0]] = malloc(zci_tensor_bytes(&b->g->tensors[in[0]]));
    memset(b->data[in[0]], 0, zci_tensor_bytes(&b->g->tensors[in[0]]));
    for (int64_t i = 0; i < zci_tensor_numel(&b->g->tensors[in[0]]); i++)
        ((float *)b->data[in[0]])[i] = (float)(i % 17) / 17.0f;
    b->data[in[1]] = b->g->tensors[in[1]].data;
    b->data[in[2]] = b->g->tensors[in[2]].data;
    const zci_tensor *y = &b->g->tensors[out];
    b->data[out] = malloc(zci_tensor_bytes(y));
    b->flops = 2.0 * (double)zci_tensor_numel(y) * (double)(l->c * l->k * l->k);
    return 1;
}

static void bench_free(bench_conv *b)
{
    free(b->data[0]);
    free(b->data[3]);
    zci_graph_free(b->g);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Times one prepared path; returns the median, *best the minimum (seconds). */
static double time_path(bench_conv *b, int threads, int iters, double *best, const char **fail)
{
    void *state = NULL;
    *fail = NULL;
    if (b->n->op->cpu_prepare(b->g, b->n, threads, &state) != ZCI_OK) {
        *fail = zci_last_error();
        return 0.0;
    }
    size_t ws_bytes = b->n->op->cpu_workspace ? b->n->op->cpu_workspace(state) : 0;
    void *ws = ws_bytes ? aligned_alloc(64, zci_align(ws_bytes, 64)) : NULL;
    zci_kernel_ctx k = {.g = b->g, .n = b->n, .data = b->data, .nthreads = threads, .state = state, .workspace = ws};
    double *t = malloc(sizeof(double) * (size_t)iters);
    b->n->op->cpu(&k);
    for (int i = 0; i < iters; i++) {
        double t0 = zci_now();
        b->n->op->cpu(&k);
        t[i] = zci_now() - t0;
    }
    qsort(t, (size_t)iters, sizeof *t, cmp_double);
    *best = t[0];
    double med = t[iters / 2];
    free(t);
    free(ws);
    b->n->op->cpu_release(state);
    return med;
}

int main(int argc, char **argv)
{
    int threads = 2, iters = 20, yolo = 0, only_layer = -1, only_path = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--yolo"))
            yolo = 1;
        else if (!strcmp(argv[i], "--layer") && i + 1 < argc)
            yolo = 1, only_layer = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--path") && i + 1 < argc)
            only_path = !strcmp(argv[++i], "onednn");
        else {
            printf("usage: %s [--threads N] [--iters N] [--yolo] [--layer I] [--path builtin|onednn]\n", argv[0]);
            return 2;
        }
    }
    if (iters < 1) iters = 1;
    const layer *ls = yolo ? yolov5s : samples;
    int nl = yolo ? (int)(sizeof yolov5s / sizeof yolov5s[0]) : (int)(sizeof samples / sizeof samples[0]);
#ifdef ZCI_HAVE_DNNL
    const int npaths = 2;
#else
    const int npaths = 1;
#endif
    const char *path_names[2] = {"built-in", "oneDNN"};
    double total_med[2] = {0}, total_best[2] = {0}, total_flops = 0.0;
    printf("Conv + bias + SiLU, %d threads, %d iterations (min / median)\n", threads, iters);
    for (int li = 0; li < nl; li++) {
        if (only_layer >= 0 && li != only_layer) continue;
        const layer *l = &ls[li];
        bench_conv b;
        if (!bench_make(&b, l)) return 1;
        total_flops += b.flops;
        printf("1x%lldx%lldx%lld -> %lld k%lld s%lld p%lld (%.0f MFLOP):", (long long)l->c, (long long)l->h,
               (long long)l->w, (long long)l->m, (long long)l->k, (long long)l->s, (long long)l->p, b.flops * 1e-6);
        for (int pi = 0; pi < npaths; pi++) {
            if (only_path >= 0 && pi != only_path) continue;
            setenv("ZCI_CPU_NO_DNNL", pi == 0 ? "1" : "0", 1);
            double best = 0.0;
            const char *fail;
            double med = time_path(&b, threads, iters, &best, &fail);
            if (fail) {
                printf("  %s: failed (%s)", path_names[pi], fail);
                continue;
            }
            total_med[pi] += med;
            total_best[pi] += best;
            printf("  %s %.3f / %.3f ms = %.1f GFLOP/s", path_names[pi], best * 1e3, med * 1e3, b.flops / best * 1e-9);
        }
        printf("\n");
        bench_free(&b);
    }
    unsetenv("ZCI_CPU_NO_DNNL");
    if (nl > 1 && only_layer < 0)
        for (int pi = 0; pi < npaths; pi++)
            printf("total %s: %.2f ms (min) / %.2f ms (median), %.1f GFLOP/s over %.2f GFLOP\n", path_names[pi],
                   total_best[pi] * 1e3, total_med[pi] * 1e3, total_flops / total_best[pi] * 1e-9, total_flops * 1e-9);
    return 0;
}
