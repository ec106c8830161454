/* gpu_test.c: helpers of the GPU tests (see gpu_test.h). */
#define _POSIX_C_SOURCE 200809L
#include "gpu_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

int gt_failures = 0;

int gt_ok_(zci_status st, const char *what, const char *file, int line)
{
    if (st == ZCI_OK) return 1;
    fprintf(stderr, "FAIL %s:%d: %s -> %s: %s\n", file, line, what, zci_status_name(st), zci_last_error());
    gt_failures++;
    return 0;
}

int gt_cuda_(int err, const char *what, const char *file, int line)
{
    if (err == 0) return 1;
    fprintf(stderr, "FAIL %s:%d: %s -> %s\n", file, line, what, cudaGetErrorString((cudaError_t)err));
    gt_failures++;
    return 0;
}

int gt_device_count(void)
{
    int n = 0;
    if (zci_cuda_device_count(&n) != ZCI_OK) return 0;
    return n;
}

void *gt_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) *size = (size_t)n;
    return p;
}

double gt_rel_error(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) && isfinite(ref[i])) return INFINITY;
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

void gt_fill_random(float *x, size_t n, uint32_t seed)
{
    uint64_t s = 0x9E3779B97F4A7C15ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((s >> 40) & 0xFFFFFF) / 16777216.0f;
    }
}

double gt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ---------------------------------------------------------------- a protobuf writer */

typedef struct pb {
    uint8_t *p;
    size_t n, cap;
} pb;

static void pb_raw(pb *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) abort();
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void pb_varint(pb *b, uint64_t v)
{
    uint8_t tmp[10];
    int k = 0;
    do {
        tmp[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) tmp[k] |= 0x80;
        k++;
    } while (v);
    pb_raw(b, tmp, (size_t)k);
}

static void pb_int(pb *b, int field, int64_t v)
{
    pb_varint(b, (uint64_t)field << 3);
    pb_varint(b, (uint64_t)v);
}

static void pb_bytes(pb *b, int field, const void *data, size_t n)
{
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_raw(b, data, n);
}

static void pb_str(pb *b, int field, const char *s) { pb_bytes(b, field, s, strlen(s)); }

/* Appends message m as field `field` of b and frees m. */
static void pb_msg(pb *b, int field, pb *m)
{
    pb_bytes(b, field, m->p, m->n);
    free(m->p);
    memset(m, 0, sizeof *m);
}

static void value_info(pb *graph, int field, const char *name, const int64_t *dims, int nd)
{
    pb shape = {0}, tensor = {0}, type = {0}, vi = {0};
    for (int d = 0; d < nd; d++) {
        pb dim = {0};
        pb_int(&dim, 1, dims[d]);
        pb_msg(&shape, 1, &dim);
    }
    pb_int(&tensor, 1, 1); /* float */
    pb_msg(&tensor, 2, &shape);
    pb_msg(&type, 1, &tensor);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &type);
    pb_msg(graph, field, &vi);
}

static void initializer(pb *graph, const char *name, int dtype, const int64_t *dims, int nd, const void *data,
                        size_t bytes)
{
    pb t = {0};
    for (int d = 0; d < nd; d++) pb_int(&t, 1, dims[d]);
    pb_int(&t, 2, dtype);
    pb_str(&t, 8, name);
    pb_bytes(&t, 9, data, bytes);
    pb_msg(graph, 5, &t);
}

typedef struct attr {
    const char *name;
    int type; /* 2 INT, 3 STRING, 7 INTS */
    int64_t i;
    const char *s;
    int n;
    const int64_t *ints;
} attr;

static void node(pb *graph, const char *op, const char *const *in, int n_in, const char *out, const attr *attrs,
                 int n_attrs)
{
    pb nd = {0};
    for (int i = 0; i < n_in; i++) pb_str(&nd, 1, in[i]);
    pb_str(&nd, 2, out);
    pb_str(&nd, 3, out);
    pb_str(&nd, 4, op);
    for (int a = 0; a < n_attrs; a++) {
        pb at = {0};
        pb_str(&at, 1, attrs[a].name);
        if (attrs[a].type == 2) pb_int(&at, 3, attrs[a].i);
        if (attrs[a].type == 3) pb_str(&at, 4, attrs[a].s);
        for (int k = 0; attrs[a].type == 7 && k < attrs[a].n; k++) pb_int(&at, 8, attrs[a].ints[k]);
        pb_int(&at, 20, attrs[a].type);
        pb_msg(&nd, 5, &at);
    }
    pb_msg(graph, 1, &nd);
}

uint8_t *gt_tiny_model(int64_t batch, size_t *size)
{
    pb graph = {0}, model = {0};
    float w1[8 * 4 * 9], b1[8], w2[8 * 8], b2[8];
    gt_fill_random(w1, sizeof w1 / 4, 11);
    gt_fill_random(b1, 8, 12);
    gt_fill_random(w2, sizeof w2 / 4, 13);
    gt_fill_random(b2, 8, 14);
    for (size_t i = 0; i < sizeof w1 / 4; i++) w1[i] = (w1[i] - 0.5f) * 0.4f;
    for (size_t i = 0; i < sizeof w2 / 4; i++) w2[i] = (w2[i] - 0.5f) * 0.6f;
    for (int i = 0; i < 8; i++) {
        b1[i] -= 0.5f;
        b2[i] -= 0.5f;
    }
    const float scales[4] = {1, 1, 2, 2};
    const int64_t shape[3] = {-1, 256, 16};
    const int64_t dw1[4] = {8, 4, 3, 3}, dw2[4] = {8, 8, 1, 1}, db[1] = {8}, ds[1] = {4}, dsh[1] = {3};
    initializer(&graph, "w1", 1, dw1, 4, w1, sizeof w1);
    initializer(&graph, "b1", 1, db, 1, b1, sizeof b1);
    initializer(&graph, "w2", 1, dw2, 4, w2, sizeof w2);
    initializer(&graph, "b2", 1, db, 1, b2, sizeof b2);
    initializer(&graph, "scales", 1, ds, 1, scales, sizeof scales);
    initializer(&graph, "shape", 7, dsh, 1, shape, sizeof shape);
    const int64_t k3[2] = {3, 3}, k1[2] = {1, 1}, k2[2] = {2, 2}, p1[4] = {1, 1, 1, 1}, p0[4] = {0, 0, 0, 0};
    const int64_t perm[4] = {0, 2, 3, 1};
    attr conv1[] = {{"kernel_shape", 7, 0, NULL, 2, k3}, {"pads", 7, 0, NULL, 4, p1}};
    attr conv2[] = {{"kernel_shape", 7, 0, NULL, 2, k1}, {"pads", 7, 0, NULL, 4, p0}};
    attr pool[] = {{"kernel_shape", 7, 0, NULL, 2, k2}, {"strides", 7, 0, NULL, 2, k2}};
    attr resize[] = {{"mode", 3, 0, "nearest", 0, NULL},
                     {"coordinate_transformation_mode", 3, 0, "asymmetric", 0, NULL},
                     {"nearest_mode", 3, 0, "floor", 0, NULL}};
    attr cat[] = {{"axis", 2, 1, NULL, 0, NULL}};
    attr tr[] = {{"perm", 7, 0, NULL, 4, perm}};
    attr sm[] = {{"axis", 2, -1, NULL, 0, NULL}};
    node(&graph, "Conv", (const char *[]){"x", "w1", "b1"}, 3, "a", conv1, 2);
    node(&graph, "Sigmoid", (const char *[]){"a"}, 1, "s", NULL, 0);
    node(&graph, "Mul", (const char *[]){"a", "s"}, 2, "m", NULL, 0);
    node(&graph, "Conv", (const char *[]){"m", "w2", "b2"}, 3, "b", conv2, 2);
    node(&graph, "Add", (const char *[]){"b", "m"}, 2, "r", NULL, 0);
    node(&graph, "MaxPool", (const char *[]){"r"}, 1, "p", pool, 2);
    node(&graph, "Resize", (const char *[]){"p", "", "scales"}, 3, "u", resize, 3);
    node(&graph, "Concat", (const char *[]){"u", "r"}, 2, "c", cat, 1);
    node(&graph, "Transpose", (const char *[]){"c"}, 1, "t", tr, 1);
    node(&graph, "Reshape", (const char *[]){"t", "shape"}, 2, "h", NULL, 0);
    node(&graph, "Softmax", (const char *[]){"h"}, 1, "y", sm, 1);
    pb_str(&graph, 2, "tiny");
    const int64_t xin[4] = {batch, 4, 16, 16}, yout[3] = {batch, 256, 16};
    value_info(&graph, 11, "x", xin, 4);
    value_info(&graph, 12, "y", yout, 3);
    pb_int(&model, 1, 8); /* IR version */
    pb_str(&model, 2, "zcinfer-gpu-tests");
    pb opset = {0};
    pb_str(&opset, 1, "");
    pb_int(&opset, 2, 17);
    pb_msg(&model, 8, &opset);
    pb_msg(&model, 7, &graph);
    *size = model.n;
    return model.p;
}
