/* bench_nocuda.c: bench_cuda for builds without CUDA (a CUDA session cannot exist there). */
#include <stdio.h>

#include "bench.h"

#ifndef ZCI_TOOLS_HAVE_CUDA
int bench_cuda(zci_session *s, const cli_opts *o, const zci_binding *host_in, int n_in, const zci_binding *host_out,
               int n_out, int iters, int warmup, bench_stats regular)
{
    fprintf(stderr, "zcinfer bench: this build has no CUDA support\n");
    return 1;
}
#endif
