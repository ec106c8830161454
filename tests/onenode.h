/* onenode.h: a graph of one node, built by hand, for the kernel tests (ops_*_kernels.c): its
 * inputs and constants, attributes, shape inference and one run of its CPU kernel. Also the
 * tests' xorshift random numbers; a test sets its seed with TEST_RNG_SEED before including this.
 * Everything is static inline, so a test pays nothing for what it does not use. */
#ifndef ZCI_TEST_ONENODE_H
#define ZCI_TEST_ONENODE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/op.h"
#include "test_util.h"

typedef struct onenode {
    zci_graph *g;
    int node;
    void *data[16]; /* by tensor index */
} onenode;

static inline void on_init(onenode *t, int opset)
{
    memset(t, 0, sizeof *t);
    t->g = zci_graph_new();
    t->g->opset = opset;
}

/* A run-time input (or, with is_const, a constant the graph owns) holding a copy of `values`
 * (uninitialised when NULL). */
static inline int on_tensor(onenode *t, zci_dtype dt, const int64_t *dims, int nd, const void *values, int is_const)
{
    char name[16];
    snprintf(name, sizeof name, "t%d", t->g->n_tensors);
    int i = zci_graph_add_tensor(t->g, name, is_const ? ZCI_TENSOR_CONSTANT : ZCI_TENSOR_INPUT);
    zci_tensor *x = &t->g->tensors[i];
    const int64_t scalar[1] = {1};
    zci_tensor_set_shape(x, dt, nd ? dims : scalar, nd);
    size_t bytes = zci_tensor_bytes(x);
    void *buf = malloc(bytes ? bytes : 1);
    if (values) memcpy(buf, values, bytes);
    if (is_const) zci_tensor_make_const(x, buf);
    t->data[i] = buf;
    return i;
}

static inline zci_node *on_node(onenode *t, const char *type, const int *in, int n_in, int opset)
{
    int out = zci_graph_add_tensor(t->g, "y", ZCI_TENSOR_ACTIVATION);
    t->node = zci_graph_add_node(t->g, "n", type, "", in, n_in, &out, 1);
    zci_node *n = &t->g->nodes[t->node];
    n->opset = opset;
    n->op = zci_op_find("", type, opset);
    return n;
}

static inline zci_attr *on_attr(onenode *t, const char *name, zci_attr_type type)
{
    zci_node *n = &t->g->nodes[t->node];
    n->attrs = realloc(n->attrs, sizeof *n->attrs * (size_t)(n->n_attrs + 1));
    zci_attr *a = &n->attrs[n->n_attrs++];
    memset(a, 0, sizeof *a);
    a->name = zci_strdup(name);
    a->type = type;
    return a;
}

static inline void on_attr_int(onenode *t, const char *name, int64_t v) { on_attr(t, name, ZCI_ATTR_INT)->i = v; }
static inline void on_attr_float(onenode *t, const char *name, float v) { on_attr(t, name, ZCI_ATTR_FLOAT)->f = v; }
static inline void on_attr_string(onenode *t, const char *name, const char *v)
{
    on_attr(t, name, ZCI_ATTR_STRING)->s = zci_strdup(v);
}
static inline void on_attr_ints(onenode *t, const char *name, const int64_t *v, int count)
{
    zci_attr *a = on_attr(t, name, ZCI_ATTR_INTS);
    a->ints = malloc(sizeof *a->ints * (size_t)(count ? count : 1));
    memcpy(a->ints, v, sizeof *a->ints * (size_t)count);
    a->n = count;
}

static inline zci_node *on_n(const onenode *t) { return &t->g->nodes[t->node]; }
static inline const zci_tensor *on_out(const onenode *t) { return &t->g->tensors[on_n(t)->out[0]]; }

static inline zci_status on_infer(onenode *t)
{
    zci_node *n = on_n(t);
    if (!n->op) return zci_error(ZCI_UNSUPPORTED, "no op");
    return n->op->infer(t->g, n);
}

/* Runs the kernel (with prepared `state`, or NULL) on `threads` threads into a fresh output
 * buffer, poisoned first; returns it (the caller frees). */
static inline void *on_run(onenode *t, void *state, int threads)
{
    zci_node *n = on_n(t);
    size_t bytes = zci_tensor_bytes(on_out(t));
    void *out = malloc(bytes ? bytes : 1);
    memset(out, 0xA5, bytes ? bytes : 1);
    t->data[n->out[0]] = out;
    zci_status st = zci_kernel_run_once(t->g, n, t->data, threads, state);
    CHECK(st == ZCI_OK, "%s kernel: %s", n->op_type, zci_last_error());
    t->data[n->out[0]] = NULL;
    return out;
}

static inline void on_free(onenode *t)
{
    for (int i = 0; i < t->g->n_tensors; i++)
        if (t->g->tensors[i].kind != ZCI_TENSOR_CONSTANT) free(t->data[i]);
    zci_graph_free(t->g);
}

/* ---------------------------------------------------------------- random numbers (xorshift) */

static uint64_t rng_state = TEST_RNG_SEED;
static inline uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static inline float frand(float lo, float hi) { return lo + (hi - lo) * (float)((rng() >> 11) * 0x1.0p-53); }

#endif
