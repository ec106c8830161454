/* memplan.c: one arena for all intermediate tensors. Walks the execution order, gives each
 * tensor a best-fit free block when it is produced and returns the block after its last
 * reader, merging neighbours (the scheme of ggml-alloc). */
#include <stdlib.h>

#include "graph/graph.h"

typedef struct block {
    size_t off, size;
} block;

typedef struct freelist {
    block *b;
    int n, cap;
    size_t end; /* arena high-water mark */
} freelist;

static zci_status fl_alloc(freelist *fl, size_t size, size_t *off)
{
    int best = -1;
    for (int i = 0; i < fl->n; i++)
        if (fl->b[i].size >= size && (best < 0 || fl->b[i].size < fl->b[best].size)) best = i;
    if (best >= 0) {
        *off = fl->b[best].off;
        fl->b[best].off += size;
        fl->b[best].size -= size;
        if (!fl->b[best].size) {
            memmove(&fl->b[best], &fl->b[best + 1], (size_t)(fl->n - best - 1) * sizeof(block));
            fl->n--;
        }
        return ZCI_OK;
    }
    /* grow the arena; a free block touching its end is extended instead of left behind */
    if (fl->n && fl->b[fl->n - 1].off + fl->b[fl->n - 1].size == fl->end) {
        *off = fl->b[fl->n - 1].off;
        fl->end = *off + size;
        fl->n--;
        return ZCI_OK;
    }
    *off = fl->end;
    fl->end += size;
    return ZCI_OK;
}

static zci_status fl_free(freelist *fl, size_t off, size_t size)
{
    int i = 0;
    while (i < fl->n && fl->b[i].off < off) i++;
    ZCI_TRY(zci_grow((void **)&fl->b, fl->n, &fl->cap, sizeof(block)));
    memmove(&fl->b[i + 1], &fl->b[i], (size_t)(fl->n - i) * sizeof(block));
    fl->b[i] = (block){off, size};
    fl->n++;
    if (i + 1 < fl->n && fl->b[i].off + fl->b[i].size == fl->b[i + 1].off) { /* merge right */
        fl->b[i].size += fl->b[i + 1].size;
        memmove(&fl->b[i + 1], &fl->b[i + 2], (size_t)(fl->n - i - 2) * sizeof(block));
        fl->n--;
    }
    if (i > 0 && fl->b[i - 1].off + fl->b[i - 1].size == fl->b[i].off) { /* merge left */
        fl->b[i - 1].size += fl->b[i].size;
        memmove(&fl->b[i], &fl->b[i + 1], (size_t)(fl->n - i - 1) * sizeof(block));
        fl->n--;
    }
    return ZCI_OK;
}

static int root_of(const int *alias, int t)
{
    int guard = 0;
    while (alias && alias[t] >= 0 && guard++ < 1 << 20) t = alias[t];
    return t;
}

/* Bytes from the root's start to tensor t's, summed along its alias chain. */
static size_t offset_in_root(const int *alias, const size_t *alias_offset, int t)
{
    size_t off = 0;
    int guard = 0;
    while (alias && alias[t] >= 0 && guard++ < 1 << 20) {
        if (alias_offset) off += alias_offset[t];
        t = alias[t];
    }
    return off;
}

zci_status zci_memplan(const zci_graph *g, const size_t *size, const int *alias, const size_t *alias_offset,
                       size_t align, size_t *offset, size_t *arena_size)
{
    return zci_memplan_spans(g, size, alias, alias_offset, NULL, NULL, align, offset, arena_size);
}

zci_status zci_memplan_spans(const zci_graph *g, const size_t *size, const int *alias, const size_t *alias_offset,
                             const int *lo, const int *hi, size_t align, size_t *offset, size_t *arena_size)
{
    int nt = g->n_tensors;
    int *first = zci_malloc((size_t)(nt ? nt : 1) * sizeof(int), "memory plan");
    int *last = zci_malloc((size_t)(nt ? nt : 1) * sizeof(int), "memory plan");
    if (!first || !last) {
        free(first);
        free(last);
        return ZCI_OUT_OF_MEMORY;
    }
    for (int t = 0; t < nt; t++) {
        first[t] = -1;
        last[t] = -1;
        offset[t] = 0;
    }
    /* a root lives from the first write to it or any tensor sharing its storage (a view, or a
     * slice that a producer writes in place) until the last reader of any of them; a node with a
     * span holds what it reads and writes over all of the span */
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        const int a = lo ? lo[p] : p, b = hi ? hi[p] : p;
        for (int o = 0; o < n->n_out; o++)
            if (n->out[o] >= 0) {
                int r = root_of(alias, n->out[o]);
                if (first[r] < 0 || first[r] > a) first[r] = a;
                if (last[r] < b) last[r] = b;
            }
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) {
                int r = root_of(alias, n->in[k]);
                if (last[r] < b) last[r] = b;
            }
    }
    freelist fl = {0};
    zci_status st = ZCI_OK;
    for (int p = 0; p < g->n_order && st == ZCI_OK; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        for (int o = 0; o < n->n_out && st == ZCI_OK; o++) {
            int t = n->out[o];
            if (t < 0) continue;
            int r = root_of(alias, t);
            if (!size[r] || first[r] != p) continue;
            first[r] = -2; /* allocated once even if this node writes several of its members */
            st = fl_alloc(&fl, zci_align(size[r], align), &offset[r]);
        }
        /* spans: what a later node writes, taken here */
        for (int r = 0; lo && r < nt && st == ZCI_OK; r++)
            if (size[r] && first[r] == p && (!alias || alias[r] < 0)) {
                first[r] = -2;
                st = fl_alloc(&fl, zci_align(size[r], align), &offset[r]);
            }
        /* free what dies here: planned roots read or produced by this node for the last time */
        for (int k = 0; k < n->n_in + n->n_out && st == ZCI_OK; k++) {
            int t = k < n->n_in ? n->in[k] : n->out[k - n->n_in];
            if (t < 0) continue;
            int r = root_of(alias, t);
            if (!size[r] || last[r] != p) continue;
            last[r] = -2; /* freed once even if read twice by this node */
            st = fl_free(&fl, offset[r], zci_align(size[r], align));
        }
        /* spans: what an earlier node touched, held until here */
        for (int r = 0; hi && r < nt && st == ZCI_OK; r++)
            if (size[r] && last[r] == p && (!alias || alias[r] < 0)) {
                last[r] = -2;
                st = fl_free(&fl, offset[r], zci_align(size[r], align));
            }
    }
    for (int t = 0; t < nt; t++)
        if (alias && alias[t] >= 0) offset[t] = offset[root_of(alias, t)] + offset_in_root(alias, alias_offset, t);
    *arena_size = fl.end;
    free(fl.b);
    free(first);
    free(last);
    return st;
}
