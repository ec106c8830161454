/* backend.c: the CPU backend: one arena from the memory planner, per-node prepared state,
 * and a run that binds the caller's buffers and calls each node's kernel in order. */
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/session.h"
#include "ops/op.h"

typedef struct cpu_ctx {
    void *arena;
    void **data;   /* per tensor: its buffer (constants, arena slots; bound per run for I/O) */
    int *alias;    /* per tensor: the tensor whose storage a view output shares, or -1 */
    void **state;  /* per node: cpu_prepare's state */
    bool *in_place; /* per node: a Concat whose producers write straight into its output */
    void *workspace; /* the largest cpu_workspace of all nodes, shared: they run one at a time */
    double *node_s;  /* per node: seconds summed over runs, when ZCI_PROFILE is set; else NULL */
    int runs;
    int nthreads;
} cpu_ctx;

enum { CPU_ALIGN = 64 };

/* ZCI_PROFILE=1: time per op type (and the 8 slowest nodes) over all runs, printed to stderr
 * when the session is destroyed; ZCI_PROFILE=N lists the N slowest nodes (N > 8). */
static void print_profile(const zci_session *s)
{
    const cpu_ctx *c = s->be_ctx;
    const zci_graph *g = s->g;
    if (!c->runs) return;
    double total = 0;
    for (int p = 0; p < g->n_order; p++) total += c->node_s[g->order[p]];
    fprintf(stderr, "zcinfer profile (CPU, %d runs, %.3f ms per run in kernels):\n", c->runs, 1e3 * total / c->runs);
    bool *done = zci_calloc((size_t)g->n_order + 1, sizeof *done, "profile");
    for (int p = 0; done && p < g->n_order; p++) {
        if (done[p]) continue;
        const char *type = g->nodes[g->order[p]].op_type;
        double t = 0;
        int count = 0;
        for (int q = p; q < g->n_order; q++)
            if (!done[q] && !strcmp(g->nodes[g->order[q]].op_type, type)) {
                t += c->node_s[g->order[q]];
                count++;
                done[q] = true;
            }
        fprintf(stderr, "  %-20s %4d nodes %9.3f ms %5.1f%%\n", type, count, 1e3 * t / c->runs, 100 * t / total);
    }
    /* the slowest nodes, by selection: `done` marks those printed */
    for (int p = 0; done && p < g->n_order; p++) done[p] = false;
    fprintf(stderr, "  slowest nodes:\n");
    const char *prof = getenv("ZCI_PROFILE");
    int shown = prof && atoi(prof) > 8 ? atoi(prof) : 8;
    for (int rank = 0; done && rank < shown && rank < g->n_order; rank++) {
        int best = -1;
        for (int p = 0; p < g->n_order; p++)
            if (!done[p] && (best < 0 || c->node_s[g->order[p]] > c->node_s[g->order[best]])) best = p;
        done[best] = true;
        fprintf(stderr, "    %9.3f ms  %s\n", 1e3 * c->node_s[g->order[best]] / c->runs,
                zci_node_desc(g, &g->nodes[g->order[best]]));
    }
    free(done);
}

static void cpu_release(zci_session *s)
{
    cpu_ctx *c = s->be_ctx;
    if (!c) return;
    const zci_graph *g = s->g;
    if (c->state)
        for (int i = 0; i < g->n_nodes; i++)
            if (c->state[i] && g->nodes[i].op && g->nodes[i].op->cpu_release) g->nodes[i].op->cpu_release(c->state[i]);
    if (c->node_s) print_profile(s);
    free(c->node_s);
    free(c->arena);
    free(c->workspace);
    free(c->data);
    free(c->alias);
    free(c->in_place);
    free(c->state);
    free(c);
    s->be_ctx = NULL;
}

/* A view's output may share its input's storage unless the caller owns the output's buffer. */
static bool can_alias(const zci_graph *g, const zci_node *n)
{
    return n->op->is_view && n->in[0] >= 0 && !g->tensors[n->out[0]].is_output;
}

/* A Concat whose inputs are each one contiguous byte range of its output (nothing but ones
 * before the axis, as for batch-1 channel concats; oneDNN's 16-channel blocks keep that too),
 * and whose inputs are plain activations produced by other nodes for this Concat alone to
 * place, can have its producers write in place: each input then lives inside the output at
 * its offset (alias/alias_off), and the Concat has nothing left to do. */
static bool concat_in_place(const zci_graph *g, const zci_node *n, int *alias, size_t *alias_off)
{
    if (strcmp(n->op_type, "Concat") || *n->domain) return false;
    const zci_tensor *y = ZCI_OUT(g, n, 0);
    /* y may itself be a slice of a later Concat placed before: offsets add up along the chain */
    if (y->is_output || y->kind != ZCI_TENSOR_ACTIVATION) return false;
    int64_t axis = zci_attr_int(n, "axis", 0, NULL);
    if (axis < 0) axis += y->ndim;
    if (axis < 0 || axis >= y->ndim) return false;
    for (int d = 0; d < axis; d++)
        if (y->dims[d] != 1) return false;
    for (int k = 0; k < n->n_in; k++) {
        int t = n->in[k];
        if (t < 0) return false;
        const zci_tensor *x = &g->tensors[t];
        if (x->kind != ZCI_TENSOR_ACTIVATION || x->is_output || x->producer < 0 || alias[t] >= 0) return false;
        if (g->nodes[x->producer].op->is_view) return false;
        for (int j = 0; j < k; j++)
            if (n->in[j] == t) return false; /* the same tensor twice cannot sit in two places */
    }
    size_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
        alias[n->in[k]] = n->out[0];
        alias_off[n->in[k]] = off;
        off += zci_tensor_bytes(&g->tensors[n->in[k]]);
    }
    return true;
}

static zci_status cpu_prepare(zci_session *s)
{
    zci_graph *g = s->g;
    cpu_ctx *c = zci_calloc(1, sizeof *c, "CPU backend");
    if (!c) return ZCI_OUT_OF_MEMORY;
    s->be_ctx = c;
    c->nthreads = s->opts.num_threads;
#ifdef _OPENMP
    if (c->nthreads <= 0) c->nthreads = omp_get_num_procs();
#endif
    if (c->nthreads <= 0) c->nthreads = 1;
    int nt = g->n_tensors;
    size_t *size = zci_calloc((size_t)nt + 1, sizeof *size, "memory plan");
    size_t *offset = zci_calloc((size_t)nt + 1, sizeof *offset, "memory plan");
    c->data = zci_calloc((size_t)nt + 1, sizeof *c->data, "tensor table");
    c->alias = zci_malloc(((size_t)nt + 1) * sizeof *c->alias, "tensor table");
    c->state = zci_calloc((size_t)g->n_nodes + 1, sizeof *c->state, "node state");
    c->in_place = zci_calloc((size_t)g->n_nodes + 1, sizeof *c->in_place, "node flags");
    size_t *alias_off = zci_calloc((size_t)nt + 1, sizeof *alias_off, "memory plan");
    zci_status st = size && offset && c->data && c->alias && c->state && c->in_place && alias_off ? ZCI_OK
                                                                                                   : ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK) {
        for (int t = 0; t < nt; t++) c->alias[t] = -1;
        for (int p = 0; p < g->n_order; p++) {
            const zci_node *n = &g->nodes[g->order[p]];
            if (can_alias(g, n)) c->alias[n->out[0]] = n->in[0];
        }
        /* later Concats first, so that a Concat feeding another is placed inside it as a whole */
        const char *no_inplace = getenv("ZCI_NO_CONCAT_IN_PLACE");
        for (int p = g->n_order - 1; p >= 0 && !(no_inplace && *no_inplace && strcmp(no_inplace, "0")); p--)
            c->in_place[g->order[p]] = concat_in_place(g, &g->nodes[g->order[p]], c->alias, alias_off);
        for (int t = 0; t < nt; t++) {
            const zci_tensor *x = &g->tensors[t];
            /* inputs are bound per run and may not be aliased into the arena */
            if (x->kind == ZCI_TENSOR_ACTIVATION && !x->is_output && c->alias[t] < 0 && x->producer >= 0)
                size[t] = zci_tensor_bytes(x);
        }
        size_t arena_size = 0;
        st = zci_memplan(g, size, c->alias, alias_off, CPU_ALIGN, offset, &arena_size);
        if (st == ZCI_OK) {
            c->arena = aligned_alloc(CPU_ALIGN, zci_align(arena_size ? arena_size : CPU_ALIGN, CPU_ALIGN));
            if (!c->arena) st = zci_error(ZCI_OUT_OF_MEMORY, "cannot allocate the %zu-byte activation arena", arena_size);
            s->summary.activation_bytes = arena_size;
            int n_in_place = 0;
            for (int i = 0; i < g->n_nodes; i++) n_in_place += c->in_place[i];
            if (c->arena)
                zci_log(s->opts.verbose, "CPU activation arena: %.2f MB, %d threads; %d Concats written in place",
                        arena_size / 1048576.0, c->nthreads, n_in_place);
        }
        for (int t = 0; st == ZCI_OK && t < nt; t++) {
            const zci_tensor *x = &g->tensors[t];
            if (x->kind == ZCI_TENSOR_CONSTANT) c->data[t] = x->data;
            else if (size[t] || (c->alias[t] >= 0 && x->producer >= 0 && !g->nodes[x->producer].op->is_view))
                c->data[t] = (char *)c->arena + offset[t]; /* planned, or a slice of a Concat (views
                                                              are bound at run time) */
        }
    }
    for (int p = 0; st == ZCI_OK && p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        if (n->op->cpu_prepare) {
            st = n->op->cpu_prepare(g, n, c->nthreads, &c->state[g->order[p]]);
            if (st != ZCI_OK) st = zci_error_prefix(st, "%s", zci_node_desc(g, n));
        }
    }
    size_t ws_bytes = 0;
    for (int p = 0; st == ZCI_OK && p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        size_t b = n->op->cpu_workspace ? n->op->cpu_workspace(c->state[g->order[p]]) : 0;
        if (b > ws_bytes) ws_bytes = b;
    }
    if (st == ZCI_OK && ws_bytes) {
        c->workspace = aligned_alloc(CPU_ALIGN, zci_align(ws_bytes, CPU_ALIGN));
        if (!c->workspace) st = zci_error(ZCI_OUT_OF_MEMORY, "cannot allocate the %zu-byte kernel workspace", ws_bytes);
        zci_log(s->opts.verbose, "CPU kernel workspace (shared by all nodes): %.2f MB", ws_bytes / 1048576.0);
    }
    const char *prof = getenv("ZCI_PROFILE");
    if (st == ZCI_OK && prof && *prof && strcmp(prof, "0") &&
        !(c->node_s = zci_calloc((size_t)g->n_nodes + 1, sizeof *c->node_s, "profile")))
        st = ZCI_OUT_OF_MEMORY;
    free(size);
    free(offset);
    free(alias_off);
    if (st != ZCI_OK) cpu_release(s);
    return st;
}

static zci_status cpu_run(zci_session *s, const zci_run_args *a)
{
    if (a->mem != ZCI_MEM_HOST) return zci_error(ZCI_UNSUPPORTED, "the CPU backend runs on host buffers only");
    zci_graph *g = s->g;
    cpu_ctx *c = s->be_ctx;
    for (int i = 0; i < s->n_in; i++) c->data[g->inputs[i]] = a->inputs[i];
    /* outputs produced by nodes are written in place; outputs that are constants or inputs are
     * copied at the end (bound after the inputs so that those copies read the right source) */
    for (int i = 0; i < s->n_out; i++) {
        const zci_tensor *t = &g->tensors[g->outputs[i]];
        if (t->producer >= 0) c->data[g->outputs[i]] = a->outputs[i];
    }
    for (int p = 0; p < g->n_order; p++) {
        int ni = g->order[p];
        const zci_node *n = &g->nodes[ni];
        if (can_alias(g, n)) {
            c->data[n->out[0]] = c->data[n->in[0]];
            continue;
        }
        if (c->in_place[ni]) continue; /* its inputs were written in place */
        zci_kernel_ctx k = {.g = g, .n = n, .data = c->data, .nthreads = c->nthreads, .state = c->state[ni],
                            .workspace = c->workspace};
        double t0 = c->node_s ? zci_now() : 0;
        zci_status st = n->op->cpu(&k);
        if (st != ZCI_OK) return zci_error_prefix(st, "%s", zci_node_desc(g, n));
        if (c->node_s) c->node_s[ni] += zci_now() - t0;
    }
    c->runs++;
    for (int i = 0; i < s->n_out; i++) {
        const zci_tensor *t = &g->tensors[g->outputs[i]];
        if (t->producer < 0) {
            const void *src = t->kind == ZCI_TENSOR_CONSTANT ? t->data : c->data[g->outputs[i]];
            if (src != a->outputs[i]) memmove(a->outputs[i], src, s->out_info[i].bytes);
        }
    }
    return ZCI_OK;
}

const zci_backend_iface zci_cpu_backend = {
    /* .name = */ "cpu",
    /* .prepare = */ cpu_prepare,
    /* .run = */ cpu_run,
    /* .own_buffer = */ NULL,
    /* .synchronize = */ NULL,
    /* .release = */ cpu_release,
    /* .describe_device = */ NULL,
    /* .export_blob = */ NULL,
    /* .prepare_with_blob = */ NULL,
    /* .copy_own_buffer = */ NULL,
};
