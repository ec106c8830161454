/* test_compat.c: the TensorRT wrapper's C API (zcinfer_compat.h), written against that header
 * alone (zcinfer.h, which it includes, only for the reference outputs of the native API and
 * zci_cuda_device_count). Creates sessions from an engine file and from ONNX; regular runs;
 * every bad call (NULL session, wrong sizes) gives a status and a message, never a crash.
 * With a GPU (a CUDA build and a device present): device runs on cudaMalloc'd buffers and
 * through get_device_buffers with copy_input_to_gpu / copy_output_to_cpu, compared with the
 * native API. Without one, the same program runs the CPU path where the call allows it and
 * checks that the device-only calls fail cleanly.
 * usage: test_compat MODELS_DIR   (classifier.onnx from tests/models/make_models.py) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zcinfer_compat.h"
#ifdef ZCI_TEST_CUDA
#include <cuda_runtime.h>
#endif

static int passed, failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* The last compat call succeeded. */
#define CHECK_STATUS_OK(what)                                                                      \
    CHECK(zci_compat_last_status() == ZCI_OK, "%s: status %s: %s", what,                          \
          zci_status_name((zci_status)zci_compat_last_status()), zci_last_error())

/* The last compat call failed with `code` and a message containing `needle`. */
#define CHECK_STATUS(code, needle, what)                                                           \
    do {                                                                                           \
        CHECK(zci_compat_last_status() == (code), "%s: status %s, expected %s (%s)", what,        \
              zci_status_name((zci_status)zci_compat_last_status()), zci_status_name(code),       \
              zci_last_error());                                                                   \
        CHECK(strstr(zci_last_error(), needle) != NULL, "%s: message lacks '%s': %s", what,       \
              needle, zci_last_error());                                                           \
    } while (0)

/* ||a - b|| / ||b|| */
static double rel_error(const float *a, const float *b, int n)
{
    double err = 0, norm = 0;
    for (int i = 0; i < n; i++) {
        err += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        norm += (double)b[i] * b[i];
    }
    return sqrt(err) / (norm > 0 ? sqrt(norm) : 1);
}

static float *filled(int n, float value)
{
    float *p = malloc((size_t)n * sizeof *p);
    for (int i = 0; i < n; i++) p[i] = value;
    return p;
}

/* The native API's output for `model` on the CPU in FP32: the reference. */
static float *native_reference(const char *model, const float *input, int n_in, int n_out)
{
    zci_session *s;
    float *out = filled(n_out, 0);
    zci_status st = zci_session_create(model, NULL, &s);
    if (st == ZCI_OK) st = zci_run_simple(s, input, (size_t)n_in, out, (size_t)n_out);
    CHECK(st == ZCI_OK, "native reference: %s", zci_last_error());
    zci_session_destroy(s);
    return out;
}

static void test_null_and_missing(const char *tmp_engine)
{
    CHECK(zci_compat_last_status() == ZCI_OK, "no call yet: status %d", zci_compat_last_status());
    float x[4] = {0}, y[4] = {0};
    run_inference(NULL, x, y, 4, 4);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "session is NULL", "run_inference(NULL)");
    run_inference_device(NULL, x, y, 4, 4);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "session is NULL", "run_inference_device(NULL)");
    CHECK(get_device_buffers(NULL) == NULL, "get_device_buffers(NULL)");
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "session is NULL", "get_device_buffers(NULL)");
    copy_input_to_gpu(NULL, x, 4);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "session is NULL", "copy_input_to_gpu(NULL)");
    copy_output_to_cpu(NULL, y, 4);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "session is NULL", "copy_output_to_cpu(NULL)");
    destroy_session(NULL);
    CHECK_STATUS_OK("destroy_session(NULL)");
    free_device_buffers(NULL);
    CHECK_STATUS_OK("free_device_buffers(NULL)");

    CHECK(create_session("/nonexistent/model.zce") == NULL, "create_session of a missing file");
    CHECK_STATUS(ZCI_IO, "model.zce", "create_session of a missing file");
    CHECK(create_session(NULL) == NULL, "create_session(NULL)");
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "NULL", "create_session(NULL)");
    build_engine("/nonexistent/model.onnx", tmp_engine);
    CHECK_STATUS(ZCI_IO, "model.onnx", "build_engine of a missing model");
    infer("/nonexistent/model.zce", x, y, 4, 4);
    CHECK_STATUS(ZCI_IO, "model.zce", "infer of a missing file");
}

/* Sizes are checked against the model (in floats); a refused call writes nothing. */
static void test_wrong_sizes(InferenceSession s, const float *input, int n_in, int n_out)
{
    float *out = filled(n_out, -7.0f);
    run_inference(s, input, out, n_in - 1, n_out);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "input_size", "run_inference with a short input");
    run_inference(s, input, out, n_in, n_out + 1);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "output_size", "run_inference with a long output");
    run_inference(s, input, out, -3, n_out);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "input_size", "run_inference with a negative size");
    int untouched = 1;
    for (int i = 0; i < n_out; i++) untouched &= out[i] == -7.0f;
    CHECK(untouched, "a refused run wrote the output");
    copy_input_to_gpu(s, input, n_in + 5);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "input_size", "copy_input_to_gpu with a wrong size");
    copy_output_to_cpu(s, out, 1);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "output_size", "copy_output_to_cpu with a wrong size");
    free(out);
}

/* On a CPU session the device-only calls fail cleanly. */
static void test_device_calls_on_cpu(InferenceSession s, const float *input, int n_in, int n_out)
{
    float *out = filled(n_out, 0);
    CHECK(get_device_buffers(s) == NULL, "device buffers of a CPU session");
    CHECK_STATUS(ZCI_UNSUPPORTED, "no device buffers", "get_device_buffers on the CPU");
    run_inference_device(s, input, out, n_in, n_out);
    CHECK_STATUS(ZCI_UNSUPPORTED, "CUDA session", "run_inference_device on the CPU");
    copy_input_to_gpu(s, input, n_in);
    CHECK_STATUS(ZCI_UNSUPPORTED, "no device buffers", "copy_input_to_gpu on the CPU");
    copy_output_to_cpu(s, out, n_out);
    CHECK_STATUS(ZCI_UNSUPPORTED, "no device buffers", "copy_output_to_cpu on the CPU");
    free(out);
}

#ifdef ZCI_TEST_CUDA
/* The wrapper's two zero-copy patterns on the GPU, each compared with the regular run. */
static void test_device_calls_on_gpu(InferenceSession s, const float *input, const float *expected, int n_in, int n_out)
{
    float *out = filled(n_out, 0);
    /* 1. the session's own buffers: copy in, run in place, copy out */
    DeviceBuffers *b = get_device_buffers(s);
    CHECK_STATUS_OK("get_device_buffers");
    CHECK(b && b->d_input && b->d_output && b->input_size == n_in && b->output_size == n_out,
          "device buffers: %d and %d floats, expected %d and %d", b ? b->input_size : -1, b ? b->output_size : -1, n_in,
          n_out);
    if (b) {
        copy_input_to_gpu(s, input, n_in);
        CHECK_STATUS_OK("copy_input_to_gpu");
        run_inference_device(s, b->d_input, b->d_output, n_in, n_out);
        CHECK_STATUS_OK("run_inference_device on the session's buffers");
        copy_output_to_cpu(s, out, n_out);
        CHECK_STATUS_OK("copy_output_to_cpu");
        double e = rel_error(out, expected, n_out);
        CHECK(e <= 1e-6, "own buffers vs regular run: rel. error %.3g", e);
    }
    free_device_buffers(b);
    CHECK_STATUS_OK("free_device_buffers");

    /* 2. the caller's cudaMalloc'd buffers: the output lands in the caller's d_output */
    float *d_in = NULL, *d_out = NULL;
    CHECK(cudaMalloc((void **)&d_in, (size_t)n_in * sizeof(float)) == cudaSuccess, "cudaMalloc");
    CHECK(cudaMalloc((void **)&d_out, (size_t)n_out * sizeof(float)) == cudaSuccess, "cudaMalloc");
    cudaMemcpy(d_in, input, (size_t)n_in * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemset(d_out, 0, (size_t)n_out * sizeof(float));
    run_inference_device(s, d_in, d_out, n_in, n_out);
    CHECK_STATUS_OK("run_inference_device on cudaMalloc'd buffers");
    memset(out, 0, (size_t)n_out * sizeof(float));
    cudaMemcpy(out, d_out, (size_t)n_out * sizeof(float), cudaMemcpyDeviceToHost);
    double e = rel_error(out, expected, n_out);
    CHECK(e <= 1e-6, "caller's device buffers vs regular run: rel. error %.3g", e);
    run_inference_device(s, d_in, d_out, n_in + 1, n_out);
    CHECK_STATUS(ZCI_INVALID_ARGUMENT, "input_size", "run_inference_device with a wrong size");
    run_inference_device(s, input, out, n_in, n_out); /* host pointers */
    CHECK(zci_compat_last_status() == ZCI_INVALID_ARGUMENT, "host pointers given as device pointers: status %s (%s)",
          zci_status_name((zci_status)zci_compat_last_status()), zci_last_error());
    cudaFree(d_in);
    cudaFree(d_out);
    free(out);
}
#endif

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODELS_DIR\n", argv[0]);
        return 2;
    }
    char onnx[1024], engine[1024];
    snprintf(onnx, sizeof onnx, "%s/classifier.onnx", argv[1]);
    snprintf(engine, sizeof engine, "%s/compat_test_classifier.zce", argv[1]);
    int gpus = 0;
    zci_cuda_device_count(&gpus);
    printf("test_compat: %s path\n", gpus > 0 ? "GPU" : "CPU");

    test_null_and_missing(engine);

    build_engine(onnx, engine);
    CHECK_STATUS_OK("build_engine");
    InferenceSession from_engine = create_session(engine);
    CHECK_STATUS_OK("create_session from the engine file");
    InferenceSession from_onnx = create_session(onnx);
    CHECK_STATUS_OK("create_session from ONNX");
    if (!from_engine || !from_onnx) {
        destroy_session(from_engine);
        destroy_session(from_onnx);
        printf("test_compat: %d passed, %d failed\n", passed, failed);
        return 1;
    }

    const int n_in = 3 * 224 * 224, n_out = 1000;
    float *input = filled(n_in, 0);
    for (int i = 0; i < n_in; i++) input[i] = (float)((i * 7919) % 1000) / 1000.0f;
    float *a = filled(n_out, 0), *b = filled(n_out, 0), *c = filled(n_out, 0);
    run_inference(from_engine, input, a, n_in, n_out);
    CHECK_STATUS_OK("run_inference (engine)");
    run_inference(from_onnx, input, b, n_in, n_out);
    CHECK_STATUS_OK("run_inference (ONNX)");
    infer(engine, input, c, n_in, n_out);
    CHECK_STATUS_OK("infer");
    float *ref = native_reference(onnx, input, n_in, n_out);

    if (gpus > 0) {
        /* FP16 on the GPU: against the native FP32 CPU run, and against a native session of
         * the same engine file (the same plan: the same numbers) */
        double e = rel_error(a, ref, n_out);
        CHECK(e <= 2e-2, "GPU FP16 engine vs native CPU FP32: rel. error %.3g", e);
        e = rel_error(b, ref, n_out);
        CHECK(e <= 2e-2, "GPU FP16 from ONNX vs native CPU FP32: rel. error %.3g", e);
        zci_session *native;
        float *n = filled(n_out, 0);
        zci_status st = zci_session_create(engine, NULL, &native);
        if (st == ZCI_OK) st = zci_run_simple(native, input, (size_t)n_in, n, (size_t)n_out);
        CHECK(st == ZCI_OK, "native session of the engine: %s", zci_last_error());
        CHECK(zci_session_device(native) == ZCI_DEVICE_CUDA, "the engine was built for CUDA");
        e = rel_error(a, n, n_out);
        CHECK(e <= 1e-6, "compat vs native on the same engine: rel. error %.3g", e);
        e = rel_error(c, n, n_out);
        CHECK(e <= 1e-6, "infer vs native on the same engine: rel. error %.3g", e);
        zci_session_destroy(native);
        free(n);
    } else {
        CHECK(!memcmp(a, ref, n_out * sizeof(float)), "engine session vs native API: not bit-identical");
        CHECK(!memcmp(b, ref, n_out * sizeof(float)), "ONNX session vs native API: not bit-identical");
        CHECK(!memcmp(c, ref, n_out * sizeof(float)), "infer vs native API: not bit-identical");
    }

    test_wrong_sizes(from_engine, input, n_in, n_out);
    if (gpus > 0) {
#ifdef ZCI_TEST_CUDA
        test_device_calls_on_gpu(from_engine, input, a, n_in, n_out);
        test_device_calls_on_gpu(from_onnx, input, b, n_in, n_out);
#else
        CHECK(0, "a GPU is present but this test was built without CUDA");
#endif
    } else {
        test_device_calls_on_cpu(from_engine, input, n_in, n_out);
        test_device_calls_on_cpu(from_onnx, input, n_in, n_out);
    }

    destroy_session(from_engine);
    CHECK_STATUS_OK("destroy_session");
    destroy_session(from_onnx);
    remove(engine);
    free(input);
    free(a);
    free(b);
    free(c);
    free(ref);
    printf("test_compat: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
