/* bench.h: timing helpers shared by bench.c and bench_cuda.c. */
#ifndef ZCI_TOOLS_BENCH_H
#define ZCI_TOOLS_BENCH_H

#include "cli.h"

typedef struct bench_stats {
    double median, p90, p99, min, mean; /* milliseconds */
} bench_stats;

double bench_now_ms(void);
/* Sorts ms[0..n) and returns its percentiles. */
bench_stats bench_summarize(double *ms, int n);
void bench_print(const char *label, bench_stats s, int64_t batch);

/* The CUDA part of `zcinfer bench` for a CUDA session: the zero-copy path timed with CUDA
 * events, the H2D / compute / D2H split and the comparison with the regular path (`regular`).
 * Returns 0, or 1 after printing an error. A build without CUDA prints that it has none. */
int bench_cuda(zci_session *s, const cli_opts *o, const zci_binding *host_in, int n_in, const zci_binding *host_out,
               int n_out, int iters, int warmup, bench_stats regular);

/* CUDA builds: for a detector (input 0 one [1, 3, H, W] float image, output 0 a YOLO output),
 * the GPU preprocessing of a 1080p NV12 frame in device memory, decoding + NMS, and the whole
 * frame -> detections in host memory, beside the H100 targets; `inference_ms` is the
 * zero-copy GPU time, printed beside the end-to-end time. Other models print why they are
 * skipped. Returns 0, or 1 after printing an error. */
int bench_vision(zci_session *s, int iters, int warmup, double inference_ms);
/* float -> IEEE half, rounded to nearest even (bench_cuda.c). */
uint16_t bench_to_half(float f);

#endif
