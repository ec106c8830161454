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

#endif
