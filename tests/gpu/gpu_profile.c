/* gpu_profile.c: where a CUDA session's GPU time goes, node by node (a tool for the performance
 * notes, not a test).
 *
 *   gpu_profile MODEL.onnx [--fp16] [--batch N] [--iters N] [--top N]
 *
 * Prints the replay time of the session's CUDA graph, then the nodes' GPU times (the body replayed
 * with timing events between the nodes): totals per op type and the slowest nodes. */
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "core/session.h"
#include "cuda/cuda_debug.h"
#include "gpu_test.h"

typedef struct row {
    int node;
    double ms;
} row;

static int by_ms(const void *a, const void *b)
{
    double x = ((const row *)a)->ms, y = ((const row *)b)->ms;
    return (x < y) - (x > y);
}

int main(int argc, char **argv)
{
    if (gt_device_count() == 0) {
        printf("skipped: no GPU\n");
        return 0;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: gpu_profile MODEL.onnx [--fp16] [--batch N] [--iters N] [--top N]\n");
        return 2;
    }
    zci_options o;
    zci_options_init(&o);
    o.device = ZCI_DEVICE_CUDA;
    int iters = 50, top = 25;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--fp16")) o.precision = ZCI_PRECISION_FP16;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) o.batch = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--top") && i + 1 < argc) top = atoi(argv[++i]);
    }
    zci_session *s = NULL;
    if (!GT_OK(zci_session_create(argv[1], &o, &s))) return 1;
    /* the session's own graph, replayed on its own buffers */
    cudaStream_t st;
    cudaEvent_t e0, e1;
    cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double *t = calloc((size_t)iters, sizeof *t);
    for (int i = 0; i < 10; i++) zci_run_own_buffers(s, st);
    for (int i = 0; i < iters; i++) {
        cudaEventRecord(e0, st);
        zci_run_own_buffers(s, st);
        cudaEventRecord(e1, st);
        cudaEventSynchronize(e1);
        float ms = 0;
        cudaEventElapsedTime(&ms, e0, e1);
        t[i] = ms;
    }
    for (int i = 1; i < iters; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1];
            t[j - 1] = x;
        }
    const zci_graph *g = s->g;
    double *node_ms = calloc((size_t)g->n_nodes + 1, sizeof *node_ms);
    if (!GT_OK(zci_cuda_profile(s, iters, node_ms))) return 1;
    row *rows = calloc((size_t)g->n_order + 1, sizeof *rows);
    double total = 0;
    for (int p = 0; p < g->n_order; p++) {
        rows[p] = (row){g->order[p], node_ms[g->order[p]]};
        total += rows[p].ms;
    }
    printf("%s %s batch %lld: graph replay %.3f ms (median of %d), nodes %d, sum of node times %.3f ms, "
           "device memory %.1f MB\n",
           argv[1], o.precision == ZCI_PRECISION_FP16 ? "fp16" : "fp32", (long long)o.batch, t[iters / 2], iters,
           g->n_order, total, zci_cuda_device_bytes(s) / 1048576.0);
    /* per op type */
    const char *types[64];
    double tms[64];
    int tcount[64], nt = 0;
    for (int p = 0; p < g->n_order; p++) {
        const char *ty = g->nodes[rows[p].node].op_type;
        int k = 0;
        while (k < nt && strcmp(types[k], ty)) k++;
        if (k == nt && nt < 64) {
            types[nt] = ty;
            tms[nt] = 0;
            tcount[nt++] = 0;
        }
        if (k < nt) {
            tms[k] += rows[p].ms;
            tcount[k]++;
        }
    }
    printf("%-20s %6s %10s %6s\n", "op", "nodes", "ms", "%");
    for (int k = 0; k < nt; k++) printf("%-20s %6d %10.4f %6.1f\n", types[k], tcount[k], tms[k], 100 * tms[k] / total);
    qsort(rows, (size_t)g->n_order, sizeof *rows, by_ms);
    printf("slowest nodes:\n");
    for (int p = 0; p < top && p < g->n_order; p++) {
        const zci_node *n = &g->nodes[rows[p].node];
        const zci_tensor *y = &g->tensors[n->out[0]];
        char sh[64];
        printf("  %8.4f ms  %-60s -> %s\n", rows[p].ms, zci_node_desc(g, n), zci_shape_str(y->dims, y->ndim, sh, sizeof sh));
    }
    zci_session_destroy(s);
    free(rows);
    free(node_ms);
    free(t);
    return gt_failures ? 1 : 0;
}
