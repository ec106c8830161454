/* bench.c: `zcinfer bench`: latency percentiles and throughput of the regular (host buffers)
 * path, measured over many runs after warm-up. CUDA sessions add the zero-copy path
 * (bench_cuda.c) and, for detectors, the stages around the inference (bench_vision.c). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "cli.h"

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

bench_stats bench_summarize(double *ms, int n)
{
    bench_stats s = {0};
    if (n <= 0) return s;
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    s.median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    s.p90 = ms[(int)(0.90 * (n - 1) + 0.5)];
    s.p99 = ms[(int)(0.99 * (n - 1) + 0.5)];
    s.min = ms[0];
    double sum = 0;
    for (int i = 0; i < n; i++) sum += ms[i];
    s.mean = sum / n;
    return s;
}

void bench_print(const char *label, bench_stats s, int64_t batch)
{
    printf("%-34s median %8.3f ms   p90 %8.3f   p99 %8.3f   min %8.3f   %9.1f images/s\n", label, s.median, s.p90,
           s.p99, s.min, s.median > 0 ? 1e3 * (double)batch / s.median : 0.0);
}

/* Writes an engine file of `s` to a new temporary file, whose name goes to path[0..len);
 * returns 0, or -1 when it cannot (the reason is printed and no file is left behind). */
static int save_engine_tmp(zci_session *s, char *path, size_t len)
{
    snprintf(path, len, "/tmp/zcinfer-bench-XXXXXX");
    int fd = mkstemp(path);
    if (fd >= 0) {
        close(fd);
        if (zci_session_save_engine(s, path) == ZCI_OK) return 0;
        unlink(path);
    }
    fprintf(stderr, "zcinfer bench: engine-file creation not measured: %s\n",
            fd < 0 ? "no temporary file" : zci_last_error());
    return -1;
}

/* Session creation from the engine file at `path`, in ms; -1 when it fails (the reason is
 * printed). Called only once the benchmarked session is destroyed: while it lives, this second
 * session adds its own weights, file bytes and oneDNN copies (~86 MB for yolov5s), which glibc
 * keeps resident after the destroy, so the peak RSS that bench/cpu_vs_ort.py compares with
 * onnxruntime's would be that of two sessions (187 MB instead of 110 MB). */
static double engine_creation_ms(const char *path, const cli_opts *o)
{
    zci_session *e;
    double ms = -1, t0 = bench_now_ms();
    if (zci_session_create(path, &o->zopts, &e) == ZCI_OK) {
        ms = bench_now_ms() - t0;
        zci_session_destroy(e);
    } else {
        fprintf(stderr, "zcinfer bench: engine-file creation not measured: %s\n", zci_last_error());
    }
    return ms;
}

int cmd_bench(int argc, char **argv)
{
    cli_opts o;
    zci_options_init(&o.zopts);
    const char *model = NULL;
    int iters = 100, warmup = 10;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: zcinfer bench MODEL [--iters N] [--warmup N] [options]\n"
                   "Measures session creation, the first run, then the median, p90 and p99 latency of\n"
                   "N runs after warm-up. On CUDA also the zero-copy path, timed with CUDA events,\n"
                   "with the H2D / compute / D2H split, and for a detector (YOLOv5 / YOLOv8 output) the\n"
                   "GPU preprocessing of a 1080p NV12 frame, decoding + NMS, and frame -> detections.\n"
                   "  --iters N           timed runs (default 100)\n"
                   "  --warmup N          untimed runs first (default 10)\n");
            return 0;
        }
        int used = cli_common_option(argc, argv, i, &o);
        if (used < 0) return 2;
        if (used) {
            i += used - 1;
        } else if ((!strcmp(argv[i], "--iters") || !strcmp(argv[i], "--warmup")) && i + 1 < argc) {
            int v = atoi(argv[i + 1]);
            if (v < (strcmp(argv[i], "--iters") ? 0 : 1)) {
                fprintf(stderr, "zcinfer bench: %s needs a positive count\n", argv[i]);
                return 2;
            }
            if (!strcmp(argv[i], "--iters")) iters = v;
            else warmup = v;
            i++;
        } else if (argv[i][0] == '-' || model) {
            fprintf(stderr, "zcinfer bench: unexpected argument '%s' (see --help)\n", argv[i]);
            return 2;
        } else {
            model = argv[i];
        }
    }
    if (!model) {
        fprintf(stderr, "zcinfer bench: a MODEL is needed (see --help)\n");
        return 2;
    }
    double t0 = bench_now_ms();
    zci_session *s;
    if (zci_session_create(model, &o.zopts, &s)) return cli_fail("cannot load the model");
    double create_ms = bench_now_ms() - t0;
    /* the engine file is written now and timed after the benchmark (see engine_creation_ms) */
    char engine_path[64];
    int have_engine = save_engine_tmp(s, engine_path, sizeof engine_path) == 0;
    int n_in = zci_session_input_count(s), n_out = zci_session_output_count(s), rc = 1;
    zci_binding *in = calloc((size_t)n_in + 1, sizeof *in), *out = calloc((size_t)n_out + 1, sizeof *out);
    double *ms = calloc((size_t)iters, sizeof *ms);
    size_t in_bytes = 0, out_bytes = 0;
    uint64_t seed = 88172645463325252ull;
    for (int i = 0; i < n_in; i++) {
        zci_tensor_info t;
        zci_session_input_info(s, i, &t);
        in[i] = (zci_binding){NULL, calloc(1, t.bytes ? t.bytes : 1), t.bytes};
        cli_fill_random(in[i].data, t.dtype, t.bytes, &seed); /* zeros could run faster than data */
        in_bytes += t.bytes;
    }
    for (int i = 0; i < n_out; i++) {
        zci_tensor_info t;
        zci_session_output_info(s, i, &t);
        out[i] = (zci_binding){NULL, calloc(1, t.bytes ? t.bytes : 1), t.bytes};
        out_bytes += t.bytes;
    }
    const char *dev = o.zopts.device == ZCI_DEVICE_CUDA ? "cuda" : "cpu";
    printf("zcinfer %s bench: %s on %s, %s, batch %lld, %d iterations after %d warm-up\n", zci_version(), model, dev,
           o.zopts.precision == ZCI_PRECISION_FP16 ? "fp16" : "fp32", (long long)o.zopts.batch, iters, warmup);
    printf("session creation: %.1f ms from %s\n", create_ms, model);
    t0 = bench_now_ms();
    if (zci_run(s, in, n_in, out, n_out)) {
        cli_fail("run failed");
        goto done;
    }
    printf("first run: %.3f ms\n", bench_now_ms() - t0);
    for (int i = 0; i < warmup; i++)
        if (zci_run(s, in, n_in, out, n_out)) {
            cli_fail("run failed");
            goto done;
        }
    for (int i = 0; i < iters; i++) {
        t0 = bench_now_ms();
        if (zci_run(s, in, n_in, out, n_out)) {
            cli_fail("run failed");
            goto done;
        }
        ms[i] = bench_now_ms() - t0;
    }
    bench_stats st = bench_summarize(ms, iters);
    printf("regular API (host buffers, %.2f MB in, %.2f MB out):\n", in_bytes / 1e6, out_bytes / 1e6);
    bench_print("  wall time per call", st, o.zopts.batch);
    if (o.zopts.device == ZCI_DEVICE_CUDA && bench_cuda(s, &o, in, n_in, out, n_out, iters, warmup, st)) goto done;
    rc = 0;
done:
    for (int i = 0; i < n_in; i++) free(in[i].data);
    for (int i = 0; i < n_out; i++) free(out[i].data);
    free(in);
    free(out);
    free(ms);
    zci_session_destroy(s);
    if (have_engine) {
        double engine_ms = rc == 0 ? engine_creation_ms(engine_path, &o) : -1;
        if (engine_ms >= 0) printf("session creation from an engine file of it: %.1f ms\n", engine_ms);
        unlink(engine_path);
    }
    return rc;
}
