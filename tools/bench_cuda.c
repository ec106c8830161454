/* bench_cuda.c: the CUDA half of `zcinfer bench` (compiled in CUDA builds, where
 * ZCI_TOOLS_HAVE_CUDA is defined): the regular path again on random data with pageable and pinned
 * host buffers; the zero-copy path timed with CUDA events (GPU time), its host enqueue time and
 * blocking wall time; the H2D / compute / D2H split of a pinned round trip done by hand around
 * the zero-copy call; pipelined throughput; the copies across PCIe per inference; and the
 * speedup of zero-copy over the regular path; then, for a detector, the stages around the
 * inference (bench_vision.c). Inputs are random (never zeros: they can run faster than real
 * data). */
#include "bench.h"

#ifdef ZCI_TOOLS_HAVE_CUDA
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#define BENCH_MAX_IO 16

typedef struct io_set {
    int n_in, n_out;
    zci_tensor_info in_info[BENCH_MAX_IO], out_info[BENCH_MAX_IO];
    void *h_in[BENCH_MAX_IO], *h_out[BENCH_MAX_IO]; /* pageable */
    void *p_in[BENCH_MAX_IO], *p_out[BENCH_MAX_IO]; /* pinned */
    void *d_in[BENCH_MAX_IO], *d_out[BENCH_MAX_IO]; /* device */
} io_set;

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 1;
    fprintf(stderr, "zcinfer bench: %s: %s\n", what, cudaGetErrorString(e));
    return 0;
}

uint16_t bench_to_half(float f)
{
    /* round to nearest even; no subnormals (they become signed zeros) */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, mant = x & 0x7fffff;
    int exp = (int)((x >> 23) & 0xff) - 127 + 15;
    if (exp <= 0) return (uint16_t)sign;
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    uint32_t h = sign | (uint32_t)exp << 10 | mant >> 13, rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

static void fill_random(void *p, const zci_tensor_info *t, uint64_t seed)
{
    size_t n = t->bytes / (t->dtype == ZCI_FLOAT16 ? 2 : t->dtype == ZCI_FLOAT32 ? 4 : 1);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float v = (float)((s >> 40) & 0xFFFFFF) / 16777216.0f;
        if (t->dtype == ZCI_FLOAT32) ((float *)p)[i] = v;
        else if (t->dtype == ZCI_FLOAT16) ((uint16_t *)p)[i] = bench_to_half(v);
        else ((uint8_t *)p)[i] = 0; /* integer inputs: zeros are valid indices */
    }
}

static void free_set(io_set *b)
{
    for (int i = 0; i < b->n_in; i++) {
        free(b->h_in[i]);
        cudaFreeHost(b->p_in[i]);
        cudaFree(b->d_in[i]);
    }
    for (int i = 0; i < b->n_out; i++) {
        free(b->h_out[i]);
        cudaFreeHost(b->p_out[i]);
        cudaFree(b->d_out[i]);
    }
}

static int alloc_set(zci_session *s, io_set *b)
{
    memset(b, 0, sizeof *b);
    b->n_in = zci_session_input_count(s);
    b->n_out = zci_session_output_count(s);
    if (b->n_in > BENCH_MAX_IO || b->n_out > BENCH_MAX_IO) {
        fprintf(stderr, "zcinfer bench: more than %d inputs or outputs\n", BENCH_MAX_IO);
        return 0;
    }
    for (int io = 0; io < 2; io++)
        for (int i = 0; i < (io ? b->n_out : b->n_in); i++) {
            zci_tensor_info *t = io ? &b->out_info[i] : &b->in_info[i];
            if (io) zci_session_output_info(s, i, t);
            else zci_session_input_info(s, i, t);
            size_t n = t->bytes ? t->bytes : 1;
            void **h = io ? &b->h_out[i] : &b->h_in[i], **p = io ? &b->p_out[i] : &b->p_in[i];
            void **d = io ? &b->d_out[i] : &b->d_in[i];
            *h = malloc(n);
            if (!*h || !cuda_ok(cudaMallocHost(p, n), "cudaMallocHost") || !cuda_ok(cudaMalloc(d, n), "cudaMalloc"))
                return 0;
            if (!io) {
                fill_random(*h, t, (uint64_t)i + 1);
                memcpy(*p, *h, t->bytes);
                if (!cuda_ok(cudaMemcpy(*d, *h, t->bytes, cudaMemcpyHostToDevice), "cudaMemcpy")) return 0;
            } else {
                memset(*h, 0, n);
                memset(*p, 0, n);
            }
        }
    return 1;
}

static void bindings(const io_set *b, int kind, zci_binding *in, zci_binding *out)
{
    for (int i = 0; i < b->n_in; i++)
        in[i] = (zci_binding){NULL, kind == 0 ? b->h_in[i] : kind == 1 ? b->p_in[i] : b->d_in[i], b->in_info[i].bytes};
    for (int i = 0; i < b->n_out; i++)
        out[i] = (zci_binding){NULL, kind == 0 ? b->h_out[i] : kind == 1 ? b->p_out[i] : b->d_out[i], b->out_info[i].bytes};
}

/* Wall time per zci_run call over host buffers (kind 0 pageable, 1 pinned). */
static int time_regular(zci_session *s, const io_set *b, int kind, int iters, int warmup, double *ms)
{
    zci_binding in[BENCH_MAX_IO], out[BENCH_MAX_IO];
    bindings(b, kind, in, out);
    for (int i = 0; i < warmup + iters; i++) {
        double t0 = bench_now_ms();
        if (zci_run(s, in, b->n_in, out, b->n_out)) return cli_fail("run failed");
        if (i >= warmup) ms[i - warmup] = bench_now_ms() - t0;
    }
    return 0;
}

int bench_cuda(zci_session *s, const cli_opts *o, const zci_binding *host_in, int n_in, const zci_binding *host_out,
               int n_out, int iters, int warmup, bench_stats regular)
{
    (void)host_in;
    (void)host_out;
    (void)n_in;
    (void)n_out;
    (void)regular;
    const int64_t batch = o->zopts.batch;
    io_set b;
    memset(&b, 0, sizeof b);
    int rc = 1;
    double *ms = calloc((size_t)iters, sizeof *ms), *gpu = calloc((size_t)iters, sizeof *gpu);
    double *enq = calloc((size_t)iters, sizeof *enq), *h2d = calloc((size_t)iters, sizeof *h2d);
    double *d2h = calloc((size_t)iters, sizeof *d2h), *cmp = calloc((size_t)iters, sizeof *cmp);
    cudaStream_t st = NULL;
    cudaEvent_t ev[4] = {NULL, NULL, NULL, NULL};
    if (!ms || !gpu || !enq || !h2d || !d2h || !cmp || !alloc_set(s, &b)) goto done;
    if (!cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate")) goto done;
    for (int k = 0; k < 4; k++)
        if (!cuda_ok(cudaEventCreate(&ev[k]), "cudaEventCreate")) goto done;
    size_t in_bytes = 0, out_bytes = 0, pcie_in = 0, pcie_out = 0;
    const int halves = o->zopts.precision == ZCI_PRECISION_FP16 && !o->zopts.fp16_io;
    for (int i = 0; i < b.n_in; i++) {
        in_bytes += b.in_info[i].bytes;
        pcie_in += halves && b.in_info[i].dtype == ZCI_FLOAT32 ? b.in_info[i].bytes / 2 : b.in_info[i].bytes;
    }
    for (int i = 0; i < b.n_out; i++) {
        out_bytes += b.out_info[i].bytes;
        pcie_out += halves && b.out_info[i].dtype == ZCI_FLOAT32 ? b.out_info[i].bytes / 2 : b.out_info[i].bytes;
    }

    printf("regular API on random data:\n");
    if (time_regular(s, &b, 0, iters, warmup, ms)) goto done;
    bench_stats reg_pageable = bench_summarize(ms, iters);
    bench_print("  pageable host buffers, wall", reg_pageable, batch);
    if (time_regular(s, &b, 1, iters, warmup, ms)) goto done;
    bench_stats reg_pinned = bench_summarize(ms, iters);
    bench_print("  pinned host buffers, wall", reg_pinned, batch);

    /* zero-copy: GPU time (events) and host enqueue time of the async call */
    zci_binding din[BENCH_MAX_IO], dout[BENCH_MAX_IO];
    bindings(&b, 2, din, dout);
    for (int i = 0; i < warmup; i++)
        if (zci_run_device(s, din, b.n_in, dout, b.n_out, st)) {
            cli_fail("zero-copy run failed");
            goto done;
        }
    for (int i = 0; i < iters; i++) {
        cudaEventRecord(ev[0], st);
        double t0 = bench_now_ms();
        if (zci_run_device_async(s, din, b.n_in, dout, b.n_out, st)) {
            cli_fail("zero-copy run failed");
            goto done;
        }
        enq[i] = bench_now_ms() - t0;
        cudaEventRecord(ev[1], st);
        if (!cuda_ok(cudaEventSynchronize(ev[1]), "cudaEventSynchronize")) goto done;
        float t = 0;
        cudaEventElapsedTime(&t, ev[0], ev[1]);
        gpu[i] = t;
    }
    bench_stats zc_gpu = bench_summarize(gpu, iters), zc_enq = bench_summarize(enq, iters);
    /* blocking call, wall */
    for (int i = 0; i < iters; i++) {
        double t0 = bench_now_ms();
        if (zci_run_device(s, din, b.n_in, dout, b.n_out, st)) {
            cli_fail("zero-copy run failed");
            goto done;
        }
        ms[i] = bench_now_ms() - t0;
    }
    bench_stats zc_wall = bench_summarize(ms, iters);
    /* pipelined: enqueue everything, wait once */
    double t0 = bench_now_ms();
    for (int i = 0; i < iters; i++)
        if (zci_run_device_async(s, din, b.n_in, dout, b.n_out, st)) {
            cli_fail("zero-copy run failed");
            goto done;
        }
    if (!cuda_ok(cudaStreamSynchronize(st), "cudaStreamSynchronize")) goto done;
    double pipelined = (bench_now_ms() - t0) / iters;
    printf("zero-copy API (device buffers, caller's stream):\n");
    bench_print("  GPU time (CUDA events)", zc_gpu, batch);
    bench_print("  blocking call, wall", zc_wall, batch);
    printf("  host enqueue time (async call)      median %8.3f ms   p90 %8.3f   p99 %8.3f\n", zc_enq.median, zc_enq.p90,
           zc_enq.p99);
    printf("  pipelined throughput                %8.3f ms per inference   %9.1f images/s\n", pipelined,
           pipelined > 0 ? 1e3 * (double)batch / pipelined : 0.0);

    /* a pinned round trip by hand around the zero-copy call: H2D / compute / D2H */
    for (int i = 0; i < iters; i++) {
        cudaEventRecord(ev[0], st);
        for (int k = 0; k < b.n_in; k++) cudaMemcpyAsync(b.d_in[k], b.p_in[k], b.in_info[k].bytes, cudaMemcpyHostToDevice, st);
        cudaEventRecord(ev[1], st);
        if (zci_run_device_async(s, din, b.n_in, dout, b.n_out, st)) {
            cli_fail("zero-copy run failed");
            goto done;
        }
        cudaEventRecord(ev[2], st);
        for (int k = 0; k < b.n_out; k++)
            cudaMemcpyAsync(b.p_out[k], b.d_out[k], b.out_info[k].bytes, cudaMemcpyDeviceToHost, st);
        cudaEventRecord(ev[3], st);
        if (!cuda_ok(cudaEventSynchronize(ev[3]), "cudaEventSynchronize")) goto done;
        float a = 0, c = 0, d = 0;
        cudaEventElapsedTime(&a, ev[0], ev[1]);
        cudaEventElapsedTime(&c, ev[1], ev[2]);
        cudaEventElapsedTime(&d, ev[2], ev[3]);
        h2d[i] = a;
        cmp[i] = c;
        d2h[i] = d;
    }
    bench_stats sh = bench_summarize(h2d, iters), sc = bench_summarize(cmp, iters), sd = bench_summarize(d2h, iters);
    printf("round trip split (pinned, CUDA events, medians): H2D %.3f ms (%.2f MB, %.1f GB/s)  compute %.3f ms  "
           "D2H %.3f ms (%.2f MB, %.1f GB/s)\n",
           sh.median, in_bytes / 1e6, sh.median > 0 ? in_bytes / sh.median / 1e6 : 0.0, sc.median, sd.median,
           out_bytes / 1e6, sd.median > 0 ? out_bytes / sd.median / 1e6 : 0.0);
    printf("copies across PCIe per inference: regular %d (%.2f MB in, %.2f MB out with pageable buffers%s; "
           "%.2f + %.2f MB pinned), zero-copy 0\n",
           b.n_in + b.n_out, pcie_in / 1e6, pcie_out / 1e6, halves ? ", converted to FP16 on the host" : "",
           in_bytes / 1e6, out_bytes / 1e6);
    printf("speedup of zero-copy over regular (median wall): %.2fx vs pageable, %.2fx vs pinned; "
           "GPU time alone %.3f ms\n",
           zc_wall.median > 0 ? reg_pageable.median / zc_wall.median : 0.0,
           zc_wall.median > 0 ? reg_pinned.median / zc_wall.median : 0.0, zc_gpu.median);
    if (bench_vision(s, iters, warmup, zc_gpu.median)) goto done;
    rc = 0;
done:
    for (int k = 0; k < 4; k++)
        if (ev[k]) cudaEventDestroy(ev[k]);
    if (st) cudaStreamDestroy(st);
    free_set(&b);
    free(ms);
    free(gpu);
    free(enq);
    free(h2d);
    free(d2h);
    free(cmp);
    return rc;
}
#else
/* Builds without CUDA use bench_nocuda.c's bench_cuda. */
typedef int bench_cuda_unused;
#endif
