/* test_api.c: the public API's contract on the CPU: versions and status texts, tensor info,
 * binding by name and by position, batch override, memory loading, and every bad input the
 * foundation issue lists (each returns a status and a useful message, never a crash).
 * usage: test_api FIXTURE_DIR   (made by tests/fixtures/make_fixtures.py) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

static const char *dir;

static char *fx(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", dir, name);
    return b;
}

static void *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return p;
}

static void test_version_and_status(void)
{
    CHECK(!strcmp(zci_version(), ZCI_VERSION_STRING), "version %s vs header %s", zci_version(), ZCI_VERSION_STRING);
    CHECK(zci_version_number() == ZCI_VERSION_NUMBER, "version number");
    CHECK(!strcmp(zci_status_name(ZCI_INVALID_MODEL), "ZCI_INVALID_MODEL"), "status name");
    CHECK(!strcmp(zci_status_string(ZCI_OK), "success"), "status text");
    CHECK(!strcmp(zci_status_name((zci_status)999), "ZCI_UNKNOWN"), "unknown status name");
    CHECK(zci_dtype_size(ZCI_FLOAT16) == 2 && zci_dtype_size(ZCI_INT64) == 8 && zci_dtype_size(ZCI_STRING) == 0, "dtype sizes");
    CHECK(!strcmp(zci_dtype_name(ZCI_FLOAT32), "float"), "dtype name");
    zci_options o;
    zci_options_init(&o);
    CHECK(o.device == ZCI_DEVICE_CPU && o.batch == 1 && o.precision == ZCI_PRECISION_FP32 && o.use_cuda_graph == 1,
          "option defaults");
    zci_options_init(NULL); /* harmless */
}

static void test_null_arguments(void)
{
    zci_session *s = (zci_session *)1;
    CHECK_FAILS(zci_session_create(NULL, NULL, &s), ZCI_INVALID_ARGUMENT, "path is NULL");
    CHECK(s == NULL, "out is cleared on failure");
    CHECK_FAILS(zci_session_create(fx("conv_block.onnx"), NULL, NULL), ZCI_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(zci_session_create_from_memory(NULL, 10, NULL, &s), ZCI_INVALID_ARGUMENT, "data is NULL");
    zci_session_destroy(NULL);
    CHECK(zci_session_input_count(NULL) == 0 && zci_session_output_count(NULL) == 0, "counts of NULL");
    zci_tensor_info info;
    CHECK_FAILS(zci_session_input_info(NULL, 0, &info), ZCI_INVALID_ARGUMENT, "session is NULL");
    CHECK_FAILS(zci_run(NULL, NULL, 0, NULL, 0), ZCI_INVALID_ARGUMENT, "session is NULL");
    CHECK_FAILS(zci_run_simple(NULL, NULL, 0, NULL, 0), ZCI_INVALID_ARGUMENT, "session is NULL");
    CHECK_FAILS(zci_session_summary(NULL, NULL), ZCI_INVALID_ARGUMENT, "NULL");
    CHECK(zci_session_input_index(NULL, "x") == -1, "index on NULL");
    int count = -1;
    CHECK_OK(zci_cuda_device_count(&count));
    CHECK(count >= 0, "device count");
    CHECK_FAILS(zci_cuda_device_count(NULL), ZCI_INVALID_ARGUMENT, "NULL");
}

static void test_bad_options(void)
{
    zci_options o;
    zci_session *s;
    zci_options_init(&o);
    o.batch = 0;
    CHECK_FAILS(zci_session_create(fx("conv_block.onnx"), &o, &s), ZCI_INVALID_ARGUMENT, "batch");
    zci_options_init(&o);
    o.num_threads = -2;
    CHECK_FAILS(zci_session_create(fx("conv_block.onnx"), &o, &s), ZCI_INVALID_ARGUMENT, "num_threads");
    zci_options_init(&o);
    o.device = (zci_device)7;
    CHECK_FAILS(zci_session_create(fx("conv_block.onnx"), &o, &s), ZCI_INVALID_ARGUMENT, "device");
}

static void test_bad_models(void)
{
    zci_session *s = NULL;
    CHECK_FAILS(zci_session_create(fx("does_not_exist.onnx"), NULL, &s), ZCI_IO, "does_not_exist.onnx");
    CHECK_FAILS(zci_session_create(dir, NULL, &s), ZCI_IO, "not a regular file");
    CHECK_FAILS(zci_session_create(fx("tensor_not_model.onnx"), NULL, &s), ZCI_INVALID_MODEL, "not an ONNX model");
    CHECK_FAILS(zci_session_create(fx("missing_initializer.onnx"), NULL, &s), ZCI_INVALID_MODEL, "'bias'");
    CHECK_FAILS(zci_session_create(fx("unsupported_op.onnx"), NULL, &s), ZCI_UNSUPPORTED, "'Det'");
    CHECK(strstr(zci_last_error(), "the_det_node") != NULL, "unsupported op names the node: %s", zci_last_error());
    CHECK_FAILS(zci_session_create(fx("cycle.onnx"), NULL, &s), ZCI_INVALID_MODEL, "cycle");
    CHECK_FAILS(zci_session_create(fx("dangling_input.onnx"), NULL, &s), ZCI_INVALID_MODEL, "'ghost'");
    CHECK_FAILS(zci_session_create(fx("missing_output.onnx"), NULL, &s), ZCI_INVALID_MODEL, "graph output 'y'");
    CHECK_FAILS(zci_session_create(fx("short_raw_data.onnx"), NULL, &s), ZCI_INVALID_MODEL, "raw_data");
    CHECK_FAILS(zci_session_create(fx("bad_broadcast.onnx"), NULL, &s), ZCI_INVALID_MODEL, "broadcast");
    CHECK(strstr(zci_last_error(), "add_bad_shapes") != NULL, "names the node: %s", zci_last_error());
    CHECK(s == NULL, "no session from bad models");

    /* random bytes and every truncation of a real model: a status each time, never a crash */
    size_t size;
    unsigned char *good = slurp(fx("conv_block.onnx"), &size);
    CHECK(good != NULL, "read conv_block.onnx");
    if (!good) return;
    int ok_count = 0, fail_count = 0;
    for (size_t cut = 0; cut < size; cut += 1 + cut / 16) {
        zci_status st = zci_session_create_from_memory(good, cut, NULL, &s);
        if (st == ZCI_OK) {
            ok_count++;
            zci_session_destroy(s);
        } else {
            fail_count++;
        }
    }
    CHECK(fail_count > 0, "truncated models are refused (%d refused, %d accepted)", fail_count, ok_count);
    CHECK_FAILS(zci_session_create_from_memory(good, size / 2, NULL, &s), ZCI_INVALID_MODEL, "");
    unsigned char *junk = malloc(4096);
    unsigned seed = 12345;
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < 4096; i++) junk[i] = (unsigned char)((seed = seed * 1103515245u + 12345u) >> 16);
        zci_status st = zci_session_create_from_memory(junk, 64 + (size_t)(trial * 19) % 4000, NULL, &s);
        CHECK(st != ZCI_OK, "random bytes accepted as a model (trial %d)", trial);
        if (st == ZCI_OK) zci_session_destroy(s);
    }
    /* single corrupted bytes all over a real model */
    unsigned char *bad = malloc(size);
    for (size_t pos = 0; pos < size; pos += 7) {
        memcpy(bad, good, size);
        bad[pos] ^= 0x5a;
        if (zci_session_create_from_memory(bad, size, NULL, &s) == ZCI_OK) zci_session_destroy(s);
    }
    CHECK(1, "corrupted bytes did not crash");
    free(bad);
    free(junk);
    free(good);
}

static void test_run_conv_block(void)
{
    zci_session *s;
    CHECK_OK(zci_session_create(fx("conv_block.onnx"), NULL, &s));
    if (!s) return;
    CHECK(zci_session_input_count(s) == 1 && zci_session_output_count(s) == 2, "io counts");
    zci_tensor_info in, out;
    CHECK_OK(zci_session_input_info(s, 0, &in));
    CHECK(!strcmp(in.name, "x") && in.ndim == 4 && in.shape[1] == 3 && in.bytes == 3 * 64 * 4, "input info");
    CHECK_OK(zci_session_output_info(s, 1, &out));
    CHECK(!strcmp(out.name, "z") && out.ndim == 2 && out.shape[0] == 1 && out.shape[1] == 256, "folded reshape output");
    CHECK_FAILS(zci_session_output_info(s, 2, &out), ZCI_INVALID_ARGUMENT, "out of range");
    CHECK_FAILS(zci_session_input_info(s, -1, &out), ZCI_INVALID_ARGUMENT, "out of range");
    zci_summary sum;
    CHECK_OK(zci_session_summary(s, &sum));
    CHECK(sum.nodes_in_model == 10 && sum.parameters == 4 * 27 + 4 + 12 + 2, "summary: %d nodes, %lld params",
          sum.nodes_in_model, (long long)sum.parameters);
    CHECK(sum.nodes_planned < sum.nodes_in_model, "planning folded the shape path (%d of %d left)", sum.nodes_planned,
          sum.nodes_in_model);
    CHECK(sum.flops == 2.0 * 256 * 27 + 2.0 * 256 * 3, "flops %.0f", sum.flops);

    size_t n;
    float *x = slurp(fx("conv_block_x.bin"), &n);
    float *ref = slurp(fx("conv_block_y.bin"), &n);
    float y[256], z[256];
    zci_binding bi = {NULL, x, in.bytes};
    zci_binding bo[2] = {{"z", z, sizeof z}, {"y", y, sizeof y}}; /* by name, out of order */
    CHECK_OK(zci_run(s, &bi, 1, bo, 2));
    double err = 0, norm = 0;
    for (int i = 0; i < 256; i++) {
        err += (y[i] - ref[i]) * (double)(y[i] - ref[i]);
        norm += ref[i] * (double)ref[i];
        if (z[i] != y[i]) err += 1;
    }
    CHECK(sqrt(err / norm) < 1e-5, "conv_block output rel. error %.3g", sqrt(err / norm));

    /* wrong bindings */
    zci_binding wrong = {NULL, x, in.bytes - 4};
    CHECK_FAILS(zci_run(s, &wrong, 1, bo, 2), ZCI_INVALID_ARGUMENT, "needs 768 bytes");
    CHECK_FAILS(zci_run(s, &bi, 1, bo, 1), ZCI_INVALID_ARGUMENT, "2 outputs, 1 were given");
    zci_binding twice[2] = {{"y", y, sizeof y}, {"y", y, sizeof y}};
    CHECK_FAILS(zci_run(s, &bi, 1, twice, 2), ZCI_INVALID_ARGUMENT, "bound twice");
    zci_binding unknown[2] = {{"nope", y, sizeof y}, {"y", y, sizeof y}};
    CHECK_FAILS(zci_run(s, &bi, 1, unknown, 2), ZCI_INVALID_ARGUMENT, "'nope'");
    zci_binding nulldata = {NULL, NULL, in.bytes};
    CHECK_FAILS(zci_run(s, &nulldata, 1, bo, 2), ZCI_INVALID_ARGUMENT, "is NULL");
    CHECK_FAILS(zci_run(s, NULL, 1, bo, 2), ZCI_INVALID_ARGUMENT, "NULL");
    CHECK_FAILS(zci_run_simple(s, x, 192, y, 256), ZCI_INVALID_ARGUMENT, "2 outputs");
    /* device calls on a CPU session */
    CHECK_FAILS(zci_run_device(s, &bi, 1, bo, 2, NULL), ZCI_UNSUPPORTED, "CUDA");
    void *p;
    CHECK_FAILS(zci_session_input_device_buffer(s, 0, &p), ZCI_UNSUPPORTED, "device buffers");
    CHECK_FAILS(zci_run_own_buffers(s, NULL), ZCI_UNSUPPORTED, "device buffers");
    CHECK_OK(zci_session_synchronize(s, NULL));
    zci_session_destroy(s);
    free(x);
    free(ref);
}

static void test_binding_and_memory(void)
{
    size_t size;
    void *bytes = slurp(fx("two_in_two_out.onnx"), &size);
    zci_session *s;
    CHECK_OK(zci_session_create_from_memory(bytes, size, NULL, &s));
    free(bytes);
    if (!s) return;
    CHECK(zci_session_input_index(s, "b") == 1 && zci_session_output_index(s, "prod") == 1 &&
          zci_session_output_index(s, "nothing") == -1, "indices by name");
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {6, 5, 4, 3, 2, 1}, sum[6], prod[6];
    zci_binding in_pos[2] = {{NULL, a, sizeof a}, {NULL, b, sizeof b}};
    zci_binding in_named[2] = {{"b", b, sizeof b}, {"a", a, sizeof a}};
    zci_binding out_named[2] = {{"prod", prod, sizeof prod}, {"sum", sum, sizeof sum}};
    CHECK_OK(zci_run(s, in_pos, 2, out_named, 2));
    CHECK(sum[0] == 7 && prod[1] == 10 && sum[5] == 7 && prod[5] == 6, "by position");
    memset(sum, 0, sizeof sum);
    CHECK_OK(zci_run(s, in_named, 2, out_named, 2));
    CHECK(sum[2] == 7 && prod[2] == 12, "by name");
    zci_session_destroy(s);

    zci_options o;
    zci_options_init(&o);
    o.batch = 5;
    CHECK_OK(zci_session_create(fx("dynbatch.onnx"), &o, &s));
    if (!s) return;
    zci_tensor_info info;
    zci_session_input_info(s, 0, &info);
    CHECK(info.shape[0] == 5 && info.bytes == 5 * 4 * 4, "symbolic batch becomes 5 (%lld)", (long long)info.shape[0]);
    float x[20], y[20];
    for (int i = 0; i < 20; i++) x[i] = (float)(i - 10);
    CHECK_OK(zci_run_simple(s, x, 20, y, 20));
    CHECK(y[0] == 0 && y[19] == 9, "relu over a batch of 5");
    CHECK_FAILS(zci_run_simple(s, x, 16, y, 20), ZCI_INVALID_ARGUMENT, "needs 80 bytes");
    zci_session_destroy(s);
}

/* Concats whose producers write in place (the CPU backend's memory plan): nested, shared by
 * two Concats, one tensor twice, a non-leading axis, and another reader of an input. */
static void test_concat_in_place(void)
{
    zci_session *s;
    CHECK_OK(zci_session_create(fx("concat_cases.onnx"), NULL, &s));
    if (!s) return;
    size_t n;
    float *x = slurp(fx("concat_cases_x.bin"), &n);
    float *ref = slurp(fx("concat_cases_ref.bin"), &n);
    float out[96 + 64 + 64 + 32 + 64];
    zci_binding in = {NULL, x, 32 * sizeof(float)};
    zci_binding bo[5] = {{NULL, out, 96 * 4},       {NULL, out + 96, 64 * 4}, {NULL, out + 160, 64 * 4},
                         {NULL, out + 224, 32 * 4}, {NULL, out + 256, 64 * 4}};
    for (int run = 0; run < 2; run++) { /* twice: the arena is reused */
        memset(out, 0xff, sizeof out);
        CHECK_OK(zci_run(s, &in, 1, bo, 5));
        int bad = 0;
        for (int i = 0; i < 320; i++) bad += fabsf(out[i] - ref[i]) > 1e-6f;
        CHECK(bad == 0, "run %d: %d of 320 elements differ from numpy", run, bad);
    }
    zci_session_destroy(s);
    free(x);
    free(ref);
}

/* Runs blocked_chain once and returns its 16x12x12 output (malloc'd), or NULL. */
static float *run_blocked_chain(const float *x)
{
    zci_session *s;
    if (zci_session_create(fx("blocked_chain.onnx"), NULL, &s) != ZCI_OK) return NULL;
    float *y = malloc(16 * 144 * sizeof *y);
    zci_binding in = {NULL, (void *)x, 16 * 144 * sizeof *x}, out = {NULL, y, 16 * 144 * sizeof *y};
    if (zci_run(s, &in, 1, &out, 1) != ZCI_OK) {
        free(y);
        y = NULL;
    }
    zci_session_destroy(s);
    return y;
}

/* MaxPool, nearest Resize and Concat between oneDNN convolutions work on channel-blocked
 * tensors; the built-in kernels (ZCI_CPU_NO_DNNL=1) keep everything plain. Both must agree. */
static void test_blocked_layout(void)
{
    float x[16 * 144];
    for (int i = 0; i < 16 * 144; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    float *blocked = run_blocked_chain(x);
    CHECK(blocked != NULL, "blocked_chain with oneDNN: %s", zci_last_error());
    setenv("ZCI_CPU_NO_DNNL", "1", 1);
    float *plain = run_blocked_chain(x);
    unsetenv("ZCI_CPU_NO_DNNL");
    CHECK(plain != NULL, "blocked_chain with the built-in kernels: %s", zci_last_error());
    if (blocked && plain) {
        double err = 0, norm = 0;
        for (int i = 0; i < 16 * 144; i++) {
            err += (blocked[i] - plain[i]) * (double)(blocked[i] - plain[i]);
            norm += plain[i] * (double)plain[i];
        }
        CHECK(norm > 0 && sqrt(err / norm) < 1e-5, "blocked vs plain layout: rel. error %.3g", sqrt(err / norm));
    }
    free(blocked);
    free(plain);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    test_version_and_status();
    test_null_arguments();
    test_bad_options();
    test_bad_models();
    test_run_conv_block();
    test_binding_and_memory();
    test_concat_in_place();
    test_blocked_layout();
    return test_summary("test_api");
}
