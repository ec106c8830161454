/* test_stream_plan.c: the CUDA backend's second stream (src/cuda/streams.c) checked on the host,
 * without a GPU: cu_plan_streams reads only the graph. On a real detector's planned graph (the
 * shapes detector: heads at three levels, residual blocks) an execution of both streams is
 * simulated many times with random kernel durations, the way the captured graph runs them: each
 * stream in order, a node waiting for the events the plan lists. Two properties must hold every
 * time, checked independently of the plan's own bookkeeping:
 *   - every node starts after all the nodes whose outputs it reads (through views) have ended;
 *   - two tensors alive at the same time (from their first writer's start to their last
 *     reader's end) get disjoint bytes from the memory plan with the plan's spans.
 * And a node whose producers cannot all be listed makes the planner keep one stream. */
#include <stdint.h>
#include <stdlib.h>

#include "core/session.h"
#include "cuda/cuda_internal.h"
#include "test_util.h"

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* A context as the backend's planning leaves it before cu_plan_streams: views launch nothing and
 * share their input's storage; everything else launches. */
static void fake_ctx(cu_ctx *c, zci_session *s, zci_graph *g)
{
    memset(c, 0, sizeof *c);
    s->g = g;
    s->opts.use_cuda_graph = 1;
    c->g = g;
    c->s = s;
    c->early_rm = c->early_after = c->early_out = -1;
    c->nodes = calloc((size_t)g->n_nodes + 1, sizeof *c->nodes);
    c->alt = calloc((size_t)g->n_tensors + 1, sizeof *c->alt);
    c->alias = malloc(((size_t)g->n_tensors + 1) * sizeof *c->alias);
    for (int t = 0; t < g->n_tensors; t++) c->alias[t] = -1;
    for (int p = 0; p < g->n_order; p++) {
        const int i = g->order[p];
        const zci_node *n = &g->nodes[i];
        if (n->op && n->op->is_view && n->in[0] >= 0 && !g->tensors[n->out[0]].is_output) {
            c->alias[n->out[0]] = n->in[0];
            continue;
        }
        c->nodes[i].op = cu_op_find(n->op_type);
        if (!c->nodes[i].op) c->nodes[i].op = cu_op_find("Relu"); /* any row: it launches */
    }
}

static void free_ctx(cu_ctx *c)
{
    cu_streams_release(c);
    free(c->nodes);
    free(c->alt);
    free(c->alias);
}

static int root(const cu_ctx *c, int t)
{
    while (c->alias[t] >= 0) t = c->alias[t];
    return t;
}

/* Adds to `deps` (a flag per node) the launching producers of node i's inputs, through views. */
static void true_producers(const cu_ctx *c, int i, unsigned char *deps)
{
    const zci_node *n = &c->g->nodes[i];
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0) continue;
        int p = c->g->tensors[n->in[k]].producer;
        if (p < 0) continue;
        if (c->nodes[p].op) deps[p] = 1;
        else true_producers(c, p, deps);
    }
}

static void simulate(cu_ctx *c, int rounds)
{
    const zci_graph *g = c->g;
    const int nn = g->n_nodes, np = g->n_order, nt = g->n_tensors;
    size_t *size = calloc((size_t)nt + 1, sizeof *size), *off = calloc((size_t)nt + 1, sizeof *off), arena = 0;
    for (int t = 0; t < nt; t++) {
        const zci_tensor *x = &g->tensors[t];
        if (x->kind == ZCI_TENSOR_ACTIVATION && !x->is_output && c->alias[t] < 0 && x->producer >= 0)
            size[t] = (size_t)zci_tensor_numel(x) * 2;
    }
    CHECK_OK(zci_memplan_spans(g, size, c->alias, NULL, c->span_lo, c->span_hi, 256, off, &arena));
    double *start = calloc((size_t)nn + 1, sizeof *start), *end = calloc((size_t)nn + 1, sizeof *end);
    double *born = malloc(((size_t)nt + 1) * sizeof *born), *dies = malloc(((size_t)nt + 1) * sizeof *dies);
    unsigned char *deps = calloc((size_t)nn + 1, 1);
    int late = 0, clash = 0;
    for (int round = 0; round < rounds; round++) {
        double t_main = 0, t_side = 0;
        for (int p = 0; p < np; p++) {
            const int i = g->order[p];
            if (!c->nodes[i].op) continue;
            const int side = c->side && c->side[i];
            double s0 = side ? t_side : t_main;
            for (int w = c->wait_start ? c->wait_start[p] : 0; c->wait_start && w < c->wait_start[p + 1]; w++)
                if (end[c->wait_list[w]] > s0) s0 = end[c->wait_list[w]];
            start[i] = s0;
            end[i] = s0 + 1 + rnd(10);
            if (side) t_side = end[i];
            else t_main = end[i];
        }
        for (int t = 0; t < nt; t++) born[t] = 1e30, dies[t] = -1;
        for (int p = 0; p < np; p++) {
            const int i = g->order[p];
            if (!c->nodes[i].op) continue;
            memset(deps, 0, (size_t)nn);
            true_producers(c, i, deps);
            for (int d = 0; d < nn; d++) late += deps[d] && start[i] < end[d];
            const zci_node *n = &g->nodes[i];
            for (int k = 0; k < n->n_in + n->n_out; k++) {
                const int t = k < n->n_in ? n->in[k] : n->out[k - n->n_in];
                if (t < 0) continue;
                const int r = root(c, t);
                if (k >= n->n_in && start[i] < born[r]) born[r] = start[i];
                if (end[i] > dies[r]) dies[r] = end[i];
            }
        }
        for (int a = 0; a < nt; a++)
            for (int b = a + 1; b < nt && size[a]; b++) {
                if (!size[b] || dies[a] <= born[b] || dies[b] <= born[a]) continue;
                clash += off[a] < off[b] + size[b] && off[b] < off[a] + size[a];
            }
    }
    CHECK(late == 0, "%d nodes started before a producer ended", late);
    CHECK(clash == 0, "%d pairs of tensors alive at the same time share bytes", clash);
    free(size);
    free(off);
    free(start);
    free(end);
    free(born);
    free(dies);
    free(deps);
}

static void detector(const char *path)
{
    zci_options o;
    zci_options_init(&o);
    zci_session *s;
    if (zci_session_create(path, &o, &s) != ZCI_OK) {
        CHECK(0, "cannot load %s: %s", path, zci_last_error());
        return;
    }
    cu_ctx c;
    zci_session fs;
    memset(&fs, 0, sizeof fs);
    fake_ctx(&c, &fs, s->g);
    CHECK_OK(cu_plan_streams(&c));
    CHECK(c.n_side > 0, "the detector's finer heads and off-path convolutions should go to the side stream (%d)", c.n_side);
    for (int p = 0; c.side && p < s->g->n_order; p++)
        if (c.side[s->g->order[p]]) printf("side stream: %s\n", zci_node_desc(s->g, &s->g->nodes[s->g->order[p]]));
    simulate(&c, 200);
    free_ctx(&c);
    /* one stream: the same simulation must hold trivially */
    fake_ctx(&c, &fs, s->g);
    simulate(&c, 5);
    free_ctx(&c);
    zci_session_destroy(s);
}

/* x -> `parts` Relus -> Concat -> a chain of 5 Relus -> Add <- Conv(x). The Conv has slack, so
 * it goes to the side stream, unless a node's producers are more than a list holds (70: through
 * the Concat, launching or done in place), when the planner must keep one stream. */
static void beside_a_chain(int parts, int concat_launches, int want_side)
{
    zci_graph *g = zci_graph_new();
    g->opset = 17;
    const int64_t d4[4] = {1, 8, 4, 4}, w4[4] = {8, 8, 1, 1};
    int x = zci_graph_add_tensor(g, "x", ZCI_TENSOR_INPUT);
    zci_tensor_set_shape(&g->tensors[x], ZCI_FLOAT32, d4, 4);
    int part[70];
    for (int k = 0; k < parts; k++) {
        char name[32];
        snprintf(name, sizeof name, "r%d", k);
        part[k] = zci_graph_add_tensor(g, name, ZCI_TENSOR_ACTIVATION);
        zci_tensor_set_shape(&g->tensors[part[k]], ZCI_FLOAT32, d4, 4);
        zci_graph_add_node(g, name, "Relu", "", &x, 1, &part[k], 1);
    }
    int cat = zci_graph_add_tensor(g, "cat", ZCI_TENSOR_ACTIVATION);
    zci_tensor_set_shape(&g->tensors[cat], ZCI_FLOAT32, d4, 4);
    const int cat_node = zci_graph_add_node(g, "cat", "Concat", "", part, parts, &cat, 1);
    int prev = cat;
    for (int k = 0; k < 5; k++) {
        char name[32];
        snprintf(name, sizeof name, "z%d", k);
        int t = zci_graph_add_tensor(g, name, ZCI_TENSOR_ACTIVATION);
        zci_tensor_set_shape(&g->tensors[t], ZCI_FLOAT32, d4, 4);
        zci_graph_add_node(g, name, "Relu", "", &prev, 1, &t, 1);
        prev = t;
    }
    int w = zci_graph_add_tensor(g, "w", ZCI_TENSOR_CONSTANT), cv = zci_graph_add_tensor(g, "cv", ZCI_TENSOR_ACTIVATION);
    zci_tensor_set_shape(&g->tensors[w], ZCI_FLOAT32, w4, 4);
    zci_tensor_set_shape(&g->tensors[cv], ZCI_FLOAT32, d4, 4);
    int conv_in[2] = {x, w};
    zci_graph_add_node(g, "conv", "Conv", "", conv_in, 2, &cv, 1);
    int y = zci_graph_add_tensor(g, "y", ZCI_TENSOR_ACTIVATION), add_in[2] = {prev, cv};
    zci_tensor_set_shape(&g->tensors[y], ZCI_FLOAT32, d4, 4);
    g->tensors[y].is_output = 1;
    zci_graph_add_node(g, "add", "Add", "", add_in, 2, &y, 1);
    CHECK_OK(zci_graph_toposort(g));
    cu_ctx c;
    zci_session fs;
    memset(&fs, 0, sizeof fs);
    fake_ctx(&c, &fs, g);
    if (!concat_launches) c.nodes[cat_node].op = NULL; /* as a Concat done in place */
    CHECK_OK(cu_plan_streams(&c));
    CHECK(c.n_side == want_side, "%d producers of a Concat that %s: %d nodes on the side stream, expected %d", parts,
          concat_launches ? "launches" : "launches nothing", c.n_side, want_side);
    simulate(&c, 50);
    free_ctx(&c);
    zci_graph_free(g);
}

int main(int argc, char **argv)
{
    detector(argc > 1 ? argv[1] : "models/shapes_detector.onnx");
    for (int launches = 0; launches < 2; launches++) {
        beside_a_chain(10, launches, 1);
        beside_a_chain(70, launches, 0);
    }
    return test_summary("test_stream_plan");
}
