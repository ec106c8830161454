/* streams.c: a second stream inside the captured CUDA graph, for the convolutions off the
 * model's critical path.
 *
 * At batch 1 most convolutions of a detector are small grids that leave most SMs idle for a few
 * microseconds each, one after the other. Some of them do not feed the next node: a C3 block's
 * cv2 (read only by the block's Concat, after the whole bottleneck chain), the detection head's
 * convolutions of the finer levels (read only by the head's tail, after the coarser levels). On
 * a side stream they run beside the chain instead of in it.
 *
 * Plan (cu_plan_streams, before the memory plan): a node's cost is estimated from its FLOPs; the
 * earliest start E and the longest path to the end L of every launching node give its slack,
 * crit - (E + L). A convolution whose slack covers its own cost goes to the side stream. Nodes
 * that launch nothing (views, Concats done in place) are looked through: a node waits for the
 * launching nodes that produce what it reads, through any number of them.
 *
 * Run (cu_run_nodes_streams, captured only): the side stream forks from the main one after the
 * prologue and joins it at the end; a node waits (cudaStreamWaitEvent) on the events of its
 * producers that ran on the other stream. Side nodes use a workspace and split-K counters of
 * their own.
 *
 * Memory: a side node may be executing at any point between the position after its producers
 * and the position before its first waiter on the main stream (or a later side node's waiter);
 * the memory plan keeps what it reads and writes over that span (zci_memplan_spans). */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"
#include "ops/rowmap.h"

/* 1 if the node at graph index i queues any work (a kernel or a layout conversion). */
static int launches(const cu_ctx *c, int i)
{
    const zci_node *n = &c->g->nodes[i];
    if (c->nodes[i].op) return 1;
    for (int o = 0; o < n->n_out; o++)
        if (n->out[o] >= 0 && c->alt[n->out[o]]) return 1;
    return 0;
}

/* Estimated microseconds of node i: a launch, plus its arithmetic at a rate a small convolution
 * reaches (used only to rank paths). */
static double cost_us(const cu_ctx *c, int i)
{
    const zci_graph *g = c->g;
    const zci_node *n = &g->nodes[i];
    if (!launches(c, i)) return 0.0;
    if (!strcmp(n->op_type, "Conv") && n->n_in > 1 && n->in[1] >= 0 && n->out[0] >= 0)
        return 4.0 + zci_node_flops(g, n) / 40e12 * 1e6;
    return 3.0;
}

/* The launching producers of what node i reads, looking through nodes that launch nothing:
 * appended to out (deduplicated), returns the new count; `cap` when the list would be longer or
 * the walk longer than *budget steps (the caller then keeps one stream). */
static int launching_producers(const cu_ctx *c, int i, int *out, int n_out, int cap, int *budget)
{
    const zci_graph *g = c->g;
    const zci_node *n = &g->nodes[i];
    if (--*budget < 0) return cap;
    for (int k = 0; k < n->n_in && n_out < cap; k++) {
        if (n->in[k] < 0) continue;
        const int p = g->tensors[n->in[k]].producer;
        if (p < 0) continue;
        if (!launches(c, p)) {
            n_out = launching_producers(c, p, out, n_out, cap, budget);
            continue;
        }
        int seen = 0;
        for (int j = 0; j < n_out; j++) seen |= out[j] == p;
        if (!seen) {
            if (n_out == cap - 1) return cap; /* one more than fits: the list is not whole */
            out[n_out++] = p;
        }
    }
    return n_out;
}

static int side_allowed(const cu_ctx *c, int i)
{
    const zci_node *n = &c->g->nodes[i];
    /* convolutions only: their libraries' scratch (workspace, split-K counters) is swapped for
     * the side stream's; cuBLAS (MatMul, Gemm) keeps one workspace */
    return c->nodes[i].op && !strcmp(n->op_type, "Conv") && !*n->domain;
}

void cu_streams_release(cu_ctx *c)
{
    if (c->node_ev)
        for (int i = 0; i < c->g->n_nodes; i++)
            if (c->node_ev[i]) cudaEventDestroy(c->node_ev[i]);
    if (c->fork_ev) cudaEventDestroy(c->fork_ev);
    if (c->join_ev) cudaEventDestroy(c->join_ev);
    if (c->side_stream) cudaStreamDestroy(c->side_stream);
    if (c->early_ev) cudaEventDestroy(c->early_ev);
    if (c->copy_ev) cudaEventDestroy(c->copy_ev);
    if (c->copy_stream) cudaStreamDestroy(c->copy_stream);
    free(c->node_ev);
    free(c->side);
    free(c->record);
    free(c->wait_start);
    free(c->wait_list);
    free(c->span_lo);
    free(c->span_hi);
}

zci_status cu_plan_streams(cu_ctx *c)
{
    const zci_graph *g = c->g;
    const int nn = g->n_nodes, np = g->n_order;
    const char *env = getenv("ZCI_CUDA_STREAMS");
    if ((env && *env == '1') || !c->s->opts.use_cuda_graph || np < 3) return ZCI_OK;
    enum { MAXDEP = 64 };
    int *pos = zci_malloc(((size_t)nn + 1) * sizeof *pos, "stream plan");
    double *E = zci_calloc((size_t)nn + 1, sizeof *E, "stream plan");
    double *L = zci_calloc((size_t)nn + 1, sizeof *L, "stream plan");
    int *deps = zci_malloc(((size_t)np * MAXDEP + 1) * sizeof *deps, "stream plan");
    int *ndeps = zci_calloc((size_t)np + 1, sizeof *ndeps, "stream plan");
    c->side = zci_calloc((size_t)nn + 1, 1, "stream plan");
    zci_status st = pos && E && L && deps && ndeps && c->side ? ZCI_OK : ZCI_OUT_OF_MEMORY;
    if (st != ZCI_OK) goto done;
    for (int i = 0; i < nn; i++) pos[i] = -1;
    for (int p = 0; p < np; p++) pos[g->order[p]] = p;
    /* earliest starts, forwards; longest paths to the end, backwards */
    double crit = 0.0;
    for (int p = 0; p < np; p++) {
        const int i = g->order[p];
        int budget = 4096;
        ndeps[p] = launching_producers(c, i, deps + (size_t)p * MAXDEP, 0, MAXDEP, &budget);
        if (ndeps[p] >= MAXDEP) goto done; /* a list may be cut short: its waits would be too; one stream */
        for (int k = 0; k < ndeps[p]; k++) {
            const int d = deps[(size_t)p * MAXDEP + k];
            const double e = E[d] + cost_us(c, d);
            if (e > E[i]) E[i] = e;
        }
    }
    for (int p = np - 1; p >= 0; p--) {
        const int i = g->order[p];
        L[i] += cost_us(c, i);
        if (E[i] + L[i] > crit) crit = E[i] + L[i];
        for (int k = 0; k < ndeps[p]; k++) {
            const int d = deps[(size_t)p * MAXDEP + k];
            if (L[i] > L[d]) L[d] = L[i]; /* L[d] gets its own cost added when p reaches d */
        }
    }
    for (int p = 0; p < np; p++) {
        const int i = g->order[p];
        if (!side_allowed(c, i)) continue;
        const double cost = cost_us(c, i), slack = crit - (E[i] + L[i]);
        if (slack >= cost) {
            c->side[i] = 1;
            c->n_side++;
        }
    }
    if (!c->n_side) goto done;
    /* waits: a launching node waits for its launching producers on the other stream; those
     * record an event */
    c->record = zci_calloc((size_t)nn + 1, 1, "stream plan");
    c->wait_start = zci_calloc((size_t)np + 1, sizeof *c->wait_start, "stream plan");
    c->wait_list = zci_malloc(((size_t)np * MAXDEP + 1) * sizeof *c->wait_list, "stream plan");
    c->span_lo = zci_malloc(((size_t)np + 1) * sizeof *c->span_lo, "stream plan");
    c->span_hi = zci_malloc(((size_t)np + 1) * sizeof *c->span_hi, "stream plan");
    if (!c->record || !c->wait_start || !c->wait_list || !c->span_lo || !c->span_hi) {
        st = ZCI_OUT_OF_MEMORY;
        goto done;
    }
    int nw = 0;
    for (int p = 0; p < np; p++) {
        const int i = g->order[p];
        c->wait_start[p] = nw;
        if (launches(c, i))
            for (int k = 0; k < ndeps[p]; k++) {
                const int d = deps[(size_t)p * MAXDEP + k];
                if (c->side[d] != c->side[i]) {
                    c->wait_list[nw++] = d;
                    c->record[d] = 1;
                }
            }
    }
    c->wait_start[np] = nw;
    /* spans for the memory plan: a side node runs after its producers (after the position of a
     * main-stream producer, no earlier than its side-stream predecessors) and is done before the
     * first main-stream node that waits for it or for a later side node */
    int lo_prev = 0;
    for (int p = 0; p < np; p++) {
        const int i = g->order[p];
        c->span_lo[p] = c->span_hi[p] = p;
        if (!c->side[i]) continue;
        int lo = lo_prev;
        for (int k = 0; k < ndeps[p]; k++) {
            const int d = deps[(size_t)p * MAXDEP + k], q = pos[d];
            const int l = c->side[d] ? c->span_lo[q] : q + 1;
            if (l > lo) lo = l;
        }
        c->span_lo[p] = lo < p ? lo : p;
        lo_prev = c->span_lo[p];
    }
    int hi_next = np - 1; /* the join at the end */
    for (int p = np - 1; p >= 0; p--) {
        const int i = g->order[p];
        if (!c->side[i]) continue;
        int hi = hi_next;
        for (int q = p + 1; q < hi + 1; q++) { /* its first waiter on the main stream */
            if (c->side[g->order[q]]) continue;
            int waits = 0;
            for (int w = c->wait_start[q]; w < c->wait_start[q + 1] && !waits; w++) waits = c->wait_list[w] == i;
            if (waits) {
                hi = q - 1;
                break;
            }
        }
        c->span_hi[p] = hi > p ? hi : p;
        hi_next = c->span_hi[p];
    }
    zci_log(c->verbose, "CUDA: %d convolutions planned on a second stream (off the critical path: %.0f us estimated)",
            c->n_side, crit);
done:
    free(pos);
    free(E);
    free(L);
    free(deps);
    free(ndeps);
    if (st != ZCI_OK || !c->n_side) {
        free(c->side);
        c->side = NULL;
        c->n_side = 0;
    }
    return st;
}

zci_status cu_streams_create(cu_ctx *c)
{
    if (!c->n_side) return ZCI_OK;
    CU_TRY(cudaStreamCreateWithFlags(&c->side_stream, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&c->fork_ev, cudaEventDisableTiming));
    CU_TRY(cudaEventCreateWithFlags(&c->join_ev, cudaEventDisableTiming));
    c->node_ev = zci_calloc((size_t)c->g->n_nodes + 1, sizeof *c->node_ev, "stream events");
    if (!c->node_ev) return ZCI_OUT_OF_MEMORY;
    for (int i = 0; i < c->g->n_nodes; i++)
        if (c->record[i]) CU_TRY(cudaEventCreateWithFlags(&c->node_ev[i], cudaEventDisableTiming));
    if (c->workspace_size)
        ZCI_TRY(cu_malloc(c, c->workspace_size, "the side stream's convolution workspace", &c->workspace2));
    if (c->igemm_counters) {
        ZCI_TRY(cu_malloc(c, CU_IGEMM_MAX_TILES * sizeof(int), "the side stream's tile counters",
                          (void **)&c->igemm_counters2));
        CU_TRY(cudaMemset(c->igemm_counters2, 0, CU_IGEMM_MAX_TILES * sizeof(int)));
    }
    return ZCI_OK;
}

/* Points the libraries at stream s and the node's scratch at the stream's own. */
static zci_status switch_to(cu_ctx *c, cudaStream_t s, int side, void *ws, int *counters)
{
    if (c->cudnn) CUDNN_TRY(cudnnSetStream(c->cudnn, s));
    c->workspace = side ? c->workspace2 : ws;
    c->igemm_counters = side ? c->igemm_counters2 : counters;
    return ZCI_OK;
}

zci_status cu_run_nodes_streams(cu_ctx *c, cudaStream_t stream)
{
    const zci_graph *g = c->g;
    if (c->cudnn) CUDNN_TRY(cudnnSetStream(c->cudnn, stream));
    if (c->cublas) CUBLAS_TRY(cublasSetStream(c->cublas, stream));
    ZCI_TRY(cu_launch_prologue(c, stream));
    CU_TRY(cudaEventRecord(c->fork_ev, stream));
    CU_TRY(cudaStreamWaitEvent(c->side_stream, c->fork_ev, 0));
    void *ws = c->workspace;
    int *counters = c->igemm_counters, cur = 0;
    zci_status st = ZCI_OK;
    for (int p = 0; p < g->n_order && st == ZCI_OK; p++) {
        const int i = g->order[p], side = c->side[i];
        cudaStream_t s = side ? c->side_stream : stream;
        for (int w = c->wait_start[p]; w < c->wait_start[p + 1] && st == ZCI_OK; w++) {
            cudaError_t e = cudaStreamWaitEvent(s, c->node_ev[c->wait_list[w]], 0);
            if (e != cudaSuccess) st = cu_cuda_error(e, "cudaStreamWaitEvent (between the streams)");
        }
        if (st == ZCI_OK && side != cur) {
            st = switch_to(c, s, side, ws, counters);
            cur = side;
        }
        if (st == ZCI_OK) st = cu_launch_node(c, p, s);
        if (st == ZCI_OK && c->record[i]) {
            cudaError_t e = cudaEventRecord(c->node_ev[i], s);
            if (e != cudaSuccess) st = cu_cuda_error(e, "cudaEventRecord (between the streams)");
        }
    }
    /* joined even after a failure, so that the capture can end */
    c->workspace = ws;
    c->igemm_counters = counters;
    cudaError_t e1 = cudaEventRecord(c->join_ev, c->side_stream);
    cudaError_t e2 = e1 == cudaSuccess ? cudaStreamWaitEvent(stream, c->join_ev, 0) : e1;
    if (c->cudnn) cudnnSetStream(c->cudnn, stream);
    ZCI_TRY(st);
    if (e2 != cudaSuccess) return cu_cuda_error(e2, "joining the side stream");
    return ZCI_OK;
}

/* The launching node whose work tensor t's bytes come from, looking through views; -1 if none
 * (a graph input, a constant) or if it is not one node. */
static int source_node(const cu_ctx *c, int t)
{
    const zci_graph *g = c->g;
    for (int depth = 0; t >= 0 && depth < 64; depth++) {
        const int p = g->tensors[t].producer;
        if (p < 0) return -1;
        if (launches(c, p)) return p;
        const zci_node *n = &g->nodes[p];
        if (n->n_in < 1 || c->alias[n->out[0]] != n->in[0]) return -1; /* not a view */
        t = n->in[0];
    }
    return -1;
}

zci_status cu_plan_early_output(cu_ctx *c)
{
    const zci_graph *g = c->g;
    c->early_rm = c->early_after = c->early_out = -1;
    const char *env = getenv("ZCI_CUDA_NO_EARLY_OUTPUT");
    if (env && *env == '1') return ZCI_OK;
    int *pos = zci_malloc(((size_t)g->n_nodes + 1) * sizeof *pos, "early output");
    if (!pos) return ZCI_OUT_OF_MEMORY;
    for (int p = 0; p < g->n_order; p++) pos[g->order[p]] = p;
    for (int i = 0; i < c->s->n_out && c->early_rm < 0; i++) {
        const int t = g->outputs[i], r = g->tensors[t].producer;
        if (r < 0) continue;
        const zci_node *n = &g->nodes[r];
        if (strcmp(n->op_type, "RowMap") || !c->nodes[r].op || !c->nodes[r].state || !n->params) continue;
        const zci_rowmap_params *rp = (const zci_rowmap_params *)n->params;
        if (rp->batch != 1 || rp->n_parts < 2 || !rp->flatten || rp->part[0].row0 != 0 || rp->part[0].rows >= rp->rows) continue;
        int first = source_node(c, n->in[0]), later = 1;
        for (int q = 1; q < rp->n_parts && first >= 0; q++) {
            const int o = source_node(c, n->in[q]);
            later &= o < 0 || pos[o] > pos[first];
        }
        /* worth it where the part's rows are a good share of the output and come first (batch 1:
         * at larger batches each image's rows are a separate range) */
        if (first < 0 || !later || rp->part[0].rows * 4 < rp->rows) continue;
        c->early_rm = r;
        c->early_after = first;
        c->early_out = i;
        c->early_rows = rp->part[0].rows;
    }
    free(pos);
    if (c->early_rm < 0) return ZCI_OK;
    CU_TRY(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&c->early_ev, cudaEventDisableTiming));
    CU_TRY(cudaEventCreateWithFlags(&c->copy_ev, cudaEventDisableTiming));
    zci_log(c->verbose, "CUDA: output '%s': rows 0-%lld of each image are written after %s and copied to the host "
            "while the rest runs", g->tensors[g->outputs[c->early_out]].name, (long long)c->early_rows - 1,
            zci_node_desc(g, &g->nodes[c->early_after]));
    return ZCI_OK;
}

void cu_plan_tail(cu_ctx *c)
{
    const zci_graph *g = c->g;
    c->tail_node = c->tail_out = -1;
    const char *env = getenv("ZCI_CUDA_NO_TAIL");
    if ((env && *env == '1') || !c->s->opts.use_cuda_graph) return;
    for (int i = 0; i < c->s->n_out; i++) {
        const int t = g->outputs[i], r = g->tensors[t].producer;
        if (r < 0 || g->tensors[t].n_consumers) continue;
        const zci_node *n = &g->nodes[r];
        if (strcmp(n->op_type, "RowMap") || !c->nodes[r].op || !c->nodes[r].state || n->n_out != 1) continue;
        int once = 1;
        for (int j = 0; j < c->s->n_out; j++) once &= j == i || g->outputs[j] != t;
        if (!once) continue;
        c->tail_node = r;
        c->tail_out = i;
        zci_log(c->verbose, "CUDA output tail: %s writes '%s' after the graph, into the caller's buffer and type",
                zci_node_desc(g, n), g->tensors[t].name);
        return;
    }
}

/* After node i: the early output rows when i is the node they wait for (cu_launch_node). */
zci_status cu_launch_early_rows(cu_ctx *c, int i, cudaStream_t s)
{
    if (c->early_rm < 0 || i != c->early_after || c->capture_no_early) return ZCI_OK;
    const zci_node *n = &c->g->nodes[c->early_rm];
    ZCI_TRY(cu_rowmap_launch_rows(c, n, c->nodes[c->early_rm].state, s, 0, c->early_rows));
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    CU_TRY(cudaStreamIsCapturing(s, &cs));
    /* captured: an event node the regular path's copy stream can wait for outside the graph */
    CU_TRY(cudaEventRecordWithFlags(c->early_ev, s,
                                    cs == cudaStreamCaptureStatusActive ? cudaEventRecordExternal : cudaEventRecordDefault));
    return ZCI_OK;
}
