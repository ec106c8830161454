/* test_gpu_api.c: the CUDA backend's API behaviour, on a small model made in memory (the CPU
 * backend gives the reference), and optionally on a real model (argument: its path).
 *
 *   test_gpu_api [MODEL.onnx]
 *
 * Without a GPU it checks that a CUDA session fails cleanly with ZCI_NO_DEVICE and exits 0 with
 * "skipped: no GPU". With one: every way in (regular with pageable and pinned buffers, zero-copy
 * with and without a CUDA graph, own buffers) in FP32 and FP16; the output pointer really
 * written; pointers that change every call; work the caller queues on its stream before and
 * after; host pointers where device pointers are required and the reverse; the CPU session's
 * refusals; 100 create/destroy cycles with cudaMemGetInfo unchanged. With MODEL: session
 * creation time, first-inference time and the device memory the session holds (FP16). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda/cuda_debug.h"
#include "gpu_test.h"

#define BATCH 2
#define IN_N ((size_t)BATCH * 4 * 16 * 16)
#define OUT_N ((size_t)BATCH * 256 * 16)

static uint8_t *g_model;
static size_t g_model_size;

static zci_session *open_session(zci_device dev, zci_precision prec, int graph, int fp16_io)
{
    zci_options o;
    zci_options_init(&o);
    o.device = dev;
    o.precision = prec;
    o.use_cuda_graph = graph;
    o.fp16_io = fp16_io;
    o.batch = BATCH;
    zci_session *s = NULL;
    if (!GT_OK(zci_session_create_from_memory(g_model, g_model_size, &o, &s))) return NULL;
    return s;
}

static void check_no_gpu(void)
{
    zci_options o;
    zci_options_init(&o);
    o.device = ZCI_DEVICE_CUDA;
    zci_session *s = NULL;
    zci_status st = zci_session_create_from_memory(g_model, g_model_size, &o, &s);
    GT_CHECK(st == ZCI_NO_DEVICE, "a CUDA session without a GPU gave %s, expected ZCI_NO_DEVICE", zci_status_name(st));
    GT_CHECK(s == NULL, "the session pointer was not cleared");
    GT_CHECK(strlen(zci_last_error()) > 0, "no error message");
    printf("no-GPU path: %s: %s\n", zci_status_name(st), zci_last_error());
}

/* Every way in on one session, against the CPU reference `ref` for input `x`. */
static void check_paths(const char *label, zci_session *s, const float *x, const float *ref, double tol)
{
    float *out = malloc(OUT_N * sizeof(float));
    float *hin = NULL, *hout = NULL, *din = NULL, *dout = NULL;
    zci_binding bi = {NULL, (void *)x, IN_N * 4}, bo = {NULL, out, OUT_N * 4};
    double e;
    /* regular, pageable */
    memset(out, 0xff, OUT_N * 4);
    if (GT_OK(zci_run(s, &bi, 1, &bo, 1))) {
        e = gt_rel_error(out, ref, OUT_N);
        GT_CHECK(e <= tol, "%s regular pageable: rel. error %.3g > %.1g", label, e, tol);
    }
    /* regular, pinned */
    if (GT_CUDA(cudaMallocHost((void **)&hin, IN_N * 4)) && GT_CUDA(cudaMallocHost((void **)&hout, OUT_N * 4))) {
        memcpy(hin, x, IN_N * 4);
        memset(hout, 0xff, OUT_N * 4);
        zci_binding pi = {"x", hin, IN_N * 4}, po = {"y", hout, OUT_N * 4};
        if (GT_OK(zci_run(s, &pi, 1, &po, 1))) {
            e = gt_rel_error(hout, ref, OUT_N);
            GT_CHECK(e <= tol, "%s regular pinned: rel. error %.3g > %.1g", label, e, tol);
        }
        /* a pinned host pointer is not a device pointer */
        zci_status st = zci_run_device(s, &pi, 1, &po, 1, NULL);
        GT_CHECK(st == ZCI_INVALID_ARGUMENT && strstr(zci_last_error(), "'x'"),
                 "%s pinned host pointer to zci_run_device: %s (%s)", label, zci_status_name(st), zci_last_error());
    }
    /* zero-copy, blocking, default stream */
    if (GT_CUDA(cudaMalloc((void **)&din, IN_N * 4)) && GT_CUDA(cudaMalloc((void **)&dout, OUT_N * 4))) {
        GT_CUDA(cudaMemcpy(din, x, IN_N * 4, cudaMemcpyHostToDevice));
        GT_CUDA(gt_fill_nan(dout, OUT_N, NULL));
        GT_CUDA(cudaDeviceSynchronize());
        zci_binding di = {NULL, din, IN_N * 4}, dq = {NULL, dout, OUT_N * 4};
        if (GT_OK(zci_run_device(s, &di, 1, &dq, 1, NULL))) {
            GT_CUDA(cudaMemcpy(out, dout, OUT_N * 4, cudaMemcpyDeviceToHost));
            e = gt_rel_error(out, ref, OUT_N);
            GT_CHECK(e <= tol, "%s zero-copy: rel. error %.3g > %.1g (output pointer not written?)", label, e, tol);
        }
        /* host pointers where device pointers are required, and the reverse */
        zci_binding hi = {NULL, (void *)x, IN_N * 4}, ho = {NULL, out, OUT_N * 4};
        zci_status st = zci_run_device(s, &hi, 1, &dq, 1, NULL);
        GT_CHECK(st == ZCI_INVALID_ARGUMENT && strstr(zci_last_error(), "input 'x'"),
                 "%s host input to zci_run_device: %s (%s)", label, zci_status_name(st), zci_last_error());
        st = zci_run_device(s, &di, 1, &ho, 1, NULL);
        GT_CHECK(st == ZCI_INVALID_ARGUMENT && strstr(zci_last_error(), "output 'y'"),
                 "%s host output to zci_run_device: %s (%s)", label, zci_status_name(st), zci_last_error());
        st = zci_run(s, &di, 1, &ho, 1);
        GT_CHECK(st == ZCI_INVALID_ARGUMENT && strstr(zci_last_error(), "device memory"),
                 "%s device input to zci_run: %s (%s)", label, zci_status_name(st), zci_last_error());
        st = zci_run(s, &hi, 1, &dq, 1);
        GT_CHECK(st == ZCI_INVALID_ARGUMENT, "%s device output to zci_run: %s", label, zci_status_name(st));
        printf("  %s: refused as expected: %s\n", label, zci_last_error());
    }
    /* own buffers */
    void *own_in = NULL, *own_out = NULL;
    if (GT_OK(zci_session_input_device_buffer(s, 0, &own_in)) && GT_OK(zci_session_output_device_buffer(s, 0, &own_out))) {
        GT_OK(zci_session_write_input_buffer(s, 0, x, IN_N * 4, NULL));
        GT_CUDA(gt_fill_nan(own_out, OUT_N, NULL));
        GT_CUDA(cudaDeviceSynchronize());
        if (GT_OK(zci_run_own_buffers(s, NULL)) && GT_OK(zci_session_synchronize(s, NULL)) &&
            GT_OK(zci_session_read_output_buffer(s, 0, out, OUT_N * 4, NULL))) {
            e = gt_rel_error(out, ref, OUT_N);
            GT_CHECK(e <= tol, "%s own buffers: rel. error %.3g > %.1g", label, e, tol);
        }
    }
    cudaFreeHost(hin);
    cudaFreeHost(hout);
    cudaFree(din);
    cudaFree(dout);
    free(out);
}

/* Three input/output pairs with different inputs, used in turn: each call must read its own
 * input pointer and write its own output pointer (also when a CUDA graph is replayed). */
static void check_changing_pointers(const char *label, zci_session *cpu, zci_session *s, double tol)
{
    enum { K = 3 };
    float *x[K], *ref[K], *din[K], *dout[K];
    float *out = malloc(OUT_N * 4);
    for (int k = 0; k < K; k++) {
        x[k] = malloc(IN_N * 4);
        ref[k] = malloc(OUT_N * 4);
        gt_fill_random(x[k], IN_N, 100 + k);
        zci_binding bi = {NULL, x[k], IN_N * 4}, bo = {NULL, ref[k], OUT_N * 4};
        GT_OK(zci_run(cpu, &bi, 1, &bo, 1));
        GT_CUDA(cudaMalloc((void **)&din[k], IN_N * 4));
        GT_CUDA(cudaMalloc((void **)&dout[k], OUT_N * 4));
        GT_CUDA(cudaMemcpy(din[k], x[k], IN_N * 4, cudaMemcpyHostToDevice));
    }
    cudaStream_t st;
    GT_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (int it = 0; it < 3 * K; it++) {
        int k = it % K;
        GT_CUDA(gt_fill_nan(dout[k], OUT_N, st));
        zci_binding di = {NULL, din[k], IN_N * 4}, dq = {NULL, dout[k], OUT_N * 4};
        if (!GT_OK(zci_run_device_async(s, &di, 1, &dq, 1, st))) break;
        GT_CUDA(cudaStreamSynchronize(st));
        GT_CUDA(cudaMemcpy(out, dout[k], OUT_N * 4, cudaMemcpyDeviceToHost));
        double e = gt_rel_error(out, ref[k], OUT_N);
        GT_CHECK(e <= tol, "%s changing pointers, call %d (pair %d): rel. error %.3g > %.1g", label, it, k, e, tol);
    }
    cudaStreamDestroy(st);
    for (int k = 0; k < K; k++) {
        free(x[k]);
        free(ref[k]);
        cudaFree(din[k]);
        cudaFree(dout[k]);
    }
    free(out);
}

/* The caller's stream: a slow kernel writes the input, the inference follows, a copy reads the
 * output; all queued without waiting in between. */
static void check_stream_order(const char *label, zci_session *s, const float *x, const float *ref, double tol)
{
    float *src, *din, *dout, *dcheck;
    float *out = malloc(OUT_N * 4), *garbage = malloc(IN_N * 4);
    gt_fill_random(garbage, IN_N, 999);
    cudaStream_t st;
    GT_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    GT_CUDA(cudaMalloc((void **)&src, IN_N * 4));
    GT_CUDA(cudaMalloc((void **)&din, IN_N * 4));
    GT_CUDA(cudaMalloc((void **)&dout, OUT_N * 4));
    GT_CUDA(cudaMalloc((void **)&dcheck, OUT_N * 4));
    GT_CUDA(cudaMemcpy(src, x, IN_N * 4, cudaMemcpyHostToDevice));
    GT_CUDA(cudaMemcpy(din, garbage, IN_N * 4, cudaMemcpyHostToDevice)); /* stale input */
    GT_CUDA(cudaMemset(dcheck, 0xff, OUT_N * 4));
    GT_CUDA(cudaDeviceSynchronize());
    for (int rep = 0; rep < 2; rep++) {
        GT_CUDA(gt_fill_nan(dout, OUT_N, st));
        GT_CUDA(gt_delayed_copy(src, din, IN_N, 20000, st)); /* ~20 ms, then the real input */
        zci_binding di = {NULL, din, IN_N * 4}, dq = {NULL, dout, OUT_N * 4};
        GT_OK(zci_run_device_async(s, &di, 1, &dq, 1, st));
        GT_CUDA(cudaMemcpyAsync(dcheck, dout, OUT_N * 4, cudaMemcpyDeviceToDevice, st));
        GT_CUDA(cudaStreamSynchronize(st));
        GT_CUDA(cudaMemcpy(out, dcheck, OUT_N * 4, cudaMemcpyDeviceToHost));
        double e = gt_rel_error(out, ref, OUT_N);
        GT_CHECK(e <= tol, "%s stream order (rep %d): rel. error %.3g > %.1g", label, rep, e, tol);
        GT_CUDA(cudaMemcpy(din, garbage, IN_N * 4, cudaMemcpyHostToDevice));
    }
    cudaStreamDestroy(st);
    cudaFree(src);
    cudaFree(din);
    cudaFree(dout);
    cudaFree(dcheck);
    free(out);
    free(garbage);
}

static void check_cpu_refusals(zci_session *cpu)
{
    float x = 0;
    zci_binding b = {NULL, &x, IN_N * 4}, o = {NULL, &x, OUT_N * 4};
    zci_status st = zci_run_device(cpu, &b, 1, &o, 1, NULL);
    GT_CHECK(st == ZCI_UNSUPPORTED, "zci_run_device on a CPU session: %s", zci_status_name(st));
    void *p = NULL;
    st = zci_session_input_device_buffer(cpu, 0, &p);
    GT_CHECK(st == ZCI_UNSUPPORTED, "input device buffer on a CPU session: %s", zci_status_name(st));
    st = zci_run_own_buffers(cpu, NULL);
    GT_CHECK(st == ZCI_UNSUPPORTED, "zci_run_own_buffers on a CPU session: %s", zci_status_name(st));
}

static size_t free_memory(void)
{
    size_t f = 0, t = 0;
    cudaDeviceSynchronize();
    cudaMemGetInfo(&f, &t);
    return f;
}

static void check_create_destroy(int cycles)
{
    zci_session *s = open_session(ZCI_DEVICE_CUDA, ZCI_PRECISION_FP16, 1, 0);
    zci_session_destroy(s);
    size_t before = free_memory();
    double t0 = gt_now_ms();
    for (int i = 0; i < cycles; i++) {
        s = open_session(ZCI_DEVICE_CUDA, i & 1 ? ZCI_PRECISION_FP16 : ZCI_PRECISION_FP32,
                         i % 3 != 0, 0);
        if (!s) break;
        zci_session_destroy(s);
    }
    size_t after = free_memory();
    double diff = ((double)before - (double)after) / 1048576.0;
    printf("create/destroy x%d: %.1f ms each, free device memory %.1f MB -> %.1f MB (%+.2f MB held)\n", cycles,
           (gt_now_ms() - t0) / cycles, before / 1048576.0, after / 1048576.0, diff);
    GT_CHECK(fabs(diff) <= 2.0, "%d create/destroy cycles changed free device memory by %.2f MB", cycles, diff);
}

/* Creation and first-inference time, and device memory, of a real model in FP16. The memory a
 * session holds is measured on a second session: the first one in a process also loads the
 * libraries' kernels (cuDNN, cuBLAS), which stay with the CUDA context, not with the session. */
static void check_model(const char *path)
{
    zci_options o;
    zci_options_init(&o);
    o.device = ZCI_DEVICE_CUDA;
    o.precision = ZCI_PRECISION_FP16;
    size_t free0 = free_memory();
    zci_session *s = NULL;
    double t0 = gt_now_ms();
    if (!GT_OK(zci_session_create(path, &o, &s))) return;
    double create_ms = gt_now_ms() - t0;
    size_t free1 = free_memory();
    zci_tensor_info ii, oi;
    zci_session_input_info(s, 0, &ii);
    zci_session_output_info(s, 0, &oi);
    float *x = malloc(ii.bytes), *y = malloc(oi.bytes);
    gt_fill_random(x, ii.bytes / 4, 5);
    memset(y, 0, oi.bytes);
    zci_binding bi = {NULL, x, ii.bytes}, bo = {NULL, y, oi.bytes};
    t0 = gt_now_ms();
    GT_OK(zci_run(s, &bi, 1, &bo, 1));
    double first_ms = gt_now_ms() - t0;
    t0 = gt_now_ms();
    GT_OK(zci_run(s, &bi, 1, &bo, 1));
    double second_ms = gt_now_ms() - t0;
    size_t own = zci_cuda_device_bytes(s);
    zci_session_destroy(s);
    size_t free2 = free_memory();
    s = NULL;
    GT_OK(zci_session_create(path, &o, &s));
    size_t free3 = free_memory();
    zci_session_destroy(s);
    double first_mb = ((double)free0 - (double)free1) / 1048576.0, held_mb = ((double)free2 - (double)free3) / 1048576.0;
    printf("%s FP16: creation %.0f ms, first inference %.2f ms (second %.2f ms); device memory held by a session "
           "%.1f MB (cudaMemGetInfo; %.1f MB of it allocated by the session itself; the first session of the "
           "process also loaded %.1f MB of library kernels)\n",
           path, create_ms, first_ms, second_ms, held_mb, own / 1048576.0, first_mb - held_mb);
    GT_CHECK(create_ms <= 10000, "creation took %.0f ms (target 10 s)", create_ms);
    GT_CHECK(first_ms <= 5, "first inference took %.2f ms (target 5 ms)", first_ms);
    GT_CHECK(held_mb <= 100, "the session holds %.1f MB of device memory (target 100 MB)", held_mb);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    g_model = gt_tiny_model(BATCH, &g_model_size);
    if (gt_device_count() == 0) {
        check_no_gpu();
        free(g_model);
        if (gt_failures) return 1;
        printf("skipped: no GPU\n");
        return 0;
    }
    float *x = malloc(IN_N * 4), *ref = malloc(OUT_N * 4);
    gt_fill_random(x, IN_N, 1);
    zci_session *cpu = open_session(ZCI_DEVICE_CPU, ZCI_PRECISION_FP32, 0, 0);
    if (!cpu) return 1;
    zci_binding bi = {NULL, x, IN_N * 4}, bo = {NULL, ref, OUT_N * 4};
    GT_OK(zci_run(cpu, &bi, 1, &bo, 1));
    check_cpu_refusals(cpu);
    static const struct {
        const char *label;
        zci_precision prec;
        int graph;
        double tol;
    } cfg[] = {
        {"fp32 graph", ZCI_PRECISION_FP32, 1, 1e-4},
        {"fp32 eager", ZCI_PRECISION_FP32, 0, 1e-4},
        {"fp16 graph", ZCI_PRECISION_FP16, 1, 1e-2},
        {"fp16 eager", ZCI_PRECISION_FP16, 0, 1e-2},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        zci_session *s = open_session(ZCI_DEVICE_CUDA, cfg[i].prec, cfg[i].graph, 0);
        if (!s) continue;
        GT_CHECK(zci_cuda_uses_graph(s) == cfg[i].graph, "%s: CUDA graph use %d", cfg[i].label, zci_cuda_uses_graph(s));
        check_paths(cfg[i].label, s, x, ref, cfg[i].tol);
        check_changing_pointers(cfg[i].label, cpu, s, cfg[i].tol);
        check_stream_order(cfg[i].label, s, x, ref, cfg[i].tol);
        zci_session_destroy(s);
        printf("%s: checked\n", cfg[i].label);
    }
    /* under compute-sanitizer (ZCI_GPU_TEST_QUICK) the cycles would take minutes */
    const char *quick = getenv("ZCI_GPU_TEST_QUICK");
    check_create_destroy(quick && *quick == '1' ? 3 : 100);
    if (argc > 1) check_model(argv[1]);
    zci_session_destroy(cpu);
    free(x);
    free(ref);
    free(g_model);
    if (gt_failures) {
        printf("test_gpu_api: %d failure(s)\n", gt_failures);
        return 1;
    }
    printf("test_gpu_api: all passed\n");
    return 0;
}
