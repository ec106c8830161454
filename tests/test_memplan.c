/* test_memplan.c: the memory planner (graph/memplan.c) on random graphs, with and without spans
 * (zci_memplan_spans: a node that may run concurrently with its neighbours, as on the CUDA
 * backend's second stream). The check is independent of the planner's bookkeeping: two planned
 * tensors whose lifetimes overlap must not share a byte, where a tensor lives from the earliest
 * span start of the nodes writing it to the latest span end of the nodes reading or writing it. */
#include <stdint.h>
#include <stdlib.h>

#include "graph/graph.h"
#include "test_util.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static unsigned rnd(unsigned n)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (unsigned)(rng % n);
}

/* A chain of `nodes` nodes, each reading 1-3 earlier tensors (or the graph input) and writing
 * one; the last tensor is the output. */
static zci_graph *random_graph(int nodes)
{
    zci_graph *g = zci_graph_new();
    int x = zci_graph_add_tensor(g, "x", ZCI_TENSOR_INPUT);
    int *t = calloc((size_t)nodes + 1, sizeof *t);
    t[0] = x;
    for (int i = 0; i < nodes; i++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", i + 1);
        t[i + 1] = zci_graph_add_tensor(g, name, ZCI_TENSOR_ACTIVATION);
        int in[3], n_in = 1 + (int)rnd(3);
        for (int k = 0; k < n_in; k++) in[k] = t[rnd((unsigned)i + 1)]; /* any earlier tensor */
        in[0] = t[i]; /* a chain, so that the order is the index order */
        snprintf(name, sizeof name, "n%d", i);
        zci_graph_add_node(g, name, "Relu", "", in, n_in, &t[i + 1], 1);
    }
    g->tensors[t[nodes]].is_output = 1;
    free(t);
    return g;
}

static void check_plan(const zci_graph *g, const size_t *size, const int *lo, const int *hi, const char *what)
{
    int nt = g->n_tensors;
    size_t *off = calloc((size_t)nt, sizeof *off), arena = 0;
    int *first = malloc((size_t)nt * sizeof *first), *last = malloc((size_t)nt * sizeof *last);
    CHECK_OK(zci_memplan_spans(g, size, NULL, NULL, lo, hi, 64, off, &arena));
    for (int t = 0; t < nt; t++) first[t] = 1 << 30, last[t] = -1;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        int a = lo ? lo[p] : p, b = hi ? hi[p] : p;
        for (int o = 0; o < n->n_out; o++) {
            if (first[n->out[o]] > a) first[n->out[o]] = a;
            if (last[n->out[o]] < b) last[n->out[o]] = b;
        }
        for (int k = 0; k < n->n_in; k++)
            if (last[n->in[k]] < b) last[n->in[k]] = b;
    }
    int bad = 0;
    for (int u = 0; u < nt; u++)
        for (int v = u + 1; v < nt && size[u]; v++) {
            if (!size[v] || last[u] < first[v] || last[v] < first[u]) continue;
            if (off[u] < off[v] + size[v] && off[v] < off[u] + size[u]) bad++;
        }
    for (int t = 0; t < nt; t++)
        if (size[t] && off[t] + size[t] > arena) bad++;
    CHECK(bad == 0, "%s: %d overlaps of live tensors or blocks past the arena's end", what, bad);
    free(off);
    free(first);
    free(last);
}

int main(void)
{
    for (int round = 0; round < 300; round++) {
        int nodes = 3 + (int)rnd(40);
        zci_graph *g = random_graph(nodes);
        CHECK_OK(zci_graph_toposort(g));
        size_t *size = calloc((size_t)g->n_tensors, sizeof *size);
        for (int t = 0; t < g->n_tensors; t++)
            if (g->tensors[t].kind == ZCI_TENSOR_ACTIVATION && !g->tensors[t].is_output) size[t] = 64 * (1 + rnd(32));
        check_plan(g, size, NULL, NULL, "no spans");
        int np = g->n_order, *lo = malloc((size_t)np * sizeof *lo), *hi = malloc((size_t)np * sizeof *hi);
        for (int p = 0; p < np; p++) {
            lo[p] = hi[p] = p;
            if (rnd(3) == 0) { /* a node that may run anywhere in a window around its position */
                lo[p] = p - (int)rnd((unsigned)p + 1);
                hi[p] = p + (int)rnd((unsigned)(np - p));
            }
        }
        check_plan(g, size, lo, hi, "spans");
        free(lo);
        free(hi);
        free(size);
        zci_graph_free(g);
    }
    return test_summary("test_memplan");
}
