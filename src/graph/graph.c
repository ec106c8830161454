/* graph.c: the IR's bookkeeping, topological order and the device-independent planning
 * driver (op resolution, shape inference, constant folding, dead-node removal). */
#include "graph/graph.h"

#include <stdio.h>
#include <stdlib.h>

#include "ops/op.h"

/* ---------------------------------------------------------------- construction */

zci_graph *zci_graph_new(void)
{
    zci_graph *g = zci_calloc(1, sizeof *g, "graph");
    if (g) g->batch = 1;
    return g;
}

void zci_value_free(zci_value *v)
{
    if (!v) return;
    free(v->data);
    free(v);
}

void zci_attr_clear(zci_attr *a)
{
    free(a->name);
    free(a->s);
    free(a->floats);
    free(a->ints);
    if (a->strings)
        for (int i = 0; i < a->n; i++) free(a->strings[i]);
    free(a->strings);
    zci_value_free(a->t);
    memset(a, 0, sizeof *a);
}

/* The attribute called `name` of node n, emptied for a new value, or a new one appended. */
static zci_attr *attr_slot(zci_node *n, const char *name)
{
    for (int i = 0; i < n->n_attrs; i++) {
        zci_attr *a = &n->attrs[i];
        if (strcmp(a->name, name)) continue;
        char *keep = a->name;
        a->name = NULL;
        zci_attr_clear(a);
        a->name = keep;
        return a;
    }
    zci_attr *grown = zci_realloc(n->attrs, sizeof *grown * (size_t)(n->n_attrs + 1), "node attributes");
    if (!grown) return NULL;
    n->attrs = grown;
    zci_attr *a = &n->attrs[n->n_attrs];
    memset(a, 0, sizeof *a);
    a->name = zci_strdup(name);
    if (!a->name) return NULL;
    n->n_attrs++;
    return a;
}

zci_status zci_node_set_int(zci_node *n, const char *name, int64_t v)
{
    zci_attr *a = attr_slot(n, name);
    if (!a) return ZCI_OUT_OF_MEMORY;
    a->type = ZCI_ATTR_INT;
    a->i = v;
    return ZCI_OK;
}

zci_status zci_node_set_float(zci_node *n, const char *name, float v)
{
    zci_attr *a = attr_slot(n, name);
    if (!a) return ZCI_OUT_OF_MEMORY;
    a->type = ZCI_ATTR_FLOAT;
    a->f = v;
    return ZCI_OK;
}

zci_status zci_node_set_ints(zci_node *n, const char *name, const int64_t *v, int count)
{
    zci_attr *a = attr_slot(n, name);
    if (!a) return ZCI_OUT_OF_MEMORY;
    a->type = ZCI_ATTR_INTS;
    a->ints = zci_malloc(sizeof *a->ints * (size_t)(count > 0 ? count : 1), "node attributes");
    if (!a->ints) return ZCI_OUT_OF_MEMORY;
    if (count > 0) memcpy(a->ints, v, sizeof *a->ints * (size_t)count);
    a->n = count;
    return ZCI_OK;
}

zci_status zci_node_set_floats(zci_node *n, const char *name, const float *v, int count)
{
    zci_attr *a = attr_slot(n, name);
    if (!a) return ZCI_OUT_OF_MEMORY;
    a->type = ZCI_ATTR_FLOATS;
    a->floats = zci_malloc(sizeof *a->floats * (size_t)(count > 0 ? count : 1), "node attributes");
    if (!a->floats) return ZCI_OUT_OF_MEMORY;
    if (count > 0) memcpy(a->floats, v, sizeof *a->floats * (size_t)count);
    a->n = count;
    return ZCI_OK;
}

static void node_clear(zci_node *n)
{
    free(n->name);
    free(n->op_type);
    free(n->domain);
    free(n->in);
    free(n->out);
    for (int i = 0; i < n->n_attrs; i++) zci_attr_clear(&n->attrs[i]);
    free(n->attrs);
    if (n->params) {
        if (n->op && n->op->free_params)
            n->op->free_params(n->params);
        else
            free(n->params);
    }
    memset(n, 0, sizeof *n);
}

void zci_graph_free(zci_graph *g)
{
    if (!g) return;
    for (int i = 0; i < g->n_tensors; i++) {
        free(g->tensors[i].name);
        free(g->tensors[i].data);
    }
    for (int i = 0; i < g->n_nodes; i++) node_clear(&g->nodes[i]);
    free(g->tensors);
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g->order);
    free(g->source);
    free(g->hash);
    free(g);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static zci_status hash_rebuild(zci_graph *g, int cap)
{
    int *h = zci_malloc((size_t)cap * sizeof *h, "tensor name table");
    if (!h) return ZCI_OUT_OF_MEMORY;
    for (int i = 0; i < cap; i++) h[i] = -1;
    for (int t = 0; t < g->n_tensors; t++) {
        uint64_t k = hash_str(g->tensors[t].name) & (uint64_t)(cap - 1);
        while (h[k] >= 0) k = (k + 1) & (uint64_t)(cap - 1);
        h[k] = t;
    }
    free(g->hash);
    g->hash = h;
    g->hash_cap = cap;
    return ZCI_OK;
}

int zci_graph_find(const zci_graph *g, const char *name)
{
    if (!g->hash_cap || !name) return -1;
    uint64_t k = hash_str(name) & (uint64_t)(g->hash_cap - 1);
    while (g->hash[k] >= 0) {
        if (!strcmp(g->tensors[g->hash[k]].name, name)) return g->hash[k];
        k = (k + 1) & (uint64_t)(g->hash_cap - 1);
    }
    return -1;
}

int zci_graph_add_tensor(zci_graph *g, const char *name, zci_tensor_kind kind)
{
    char gen[64];
    if (!name || !*name) {
        snprintf(gen, sizeof gen, "zci_tensor_%d", g->n_tensors);
        name = gen;
    }
    if (zci_graph_find(g, name) >= 0) {
        zci_error(ZCI_INVALID_MODEL, "tensor name '%s' is defined twice", name);
        return -1;
    }
    if (zci_grow((void **)&g->tensors, g->n_tensors, &g->cap_tensors, sizeof *g->tensors)) return -1;
    /* keep the name table at most half full */
    if ((g->n_tensors + 1) * 2 > g->hash_cap && hash_rebuild(g, g->hash_cap ? g->hash_cap * 2 : 64)) return -1;
    zci_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = zci_strdup(name);
    if (!t->name) return -1;
    t->kind = kind;
    t->producer = -1;
    t->last_use = -1;
    int idx = g->n_tensors++;
    uint64_t k = hash_str(name) & (uint64_t)(g->hash_cap - 1);
    while (g->hash[k] >= 0) k = (k + 1) & (uint64_t)(g->hash_cap - 1);
    g->hash[k] = idx;
    return idx;
}

int zci_graph_add_node(zci_graph *g, const char *name, const char *op_type, const char *domain, const int *in,
                       int n_in, const int *out, int n_out)
{
    if (zci_grow((void **)&g->nodes, g->n_nodes, &g->cap_nodes, sizeof *g->nodes)) return -1;
    zci_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = zci_strdup(name ? name : "");
    n->op_type = zci_strdup(op_type ? op_type : "");
    n->domain = zci_strdup(domain ? domain : "");
    n->in = zci_calloc((size_t)(n_in ? n_in : 1), sizeof(int), "node inputs");
    n->out = zci_calloc((size_t)(n_out ? n_out : 1), sizeof(int), "node outputs");
    if (!n->name || !n->op_type || !n->domain || !n->in || !n->out) {
        node_clear(n);
        return -1;
    }
    if (n_in) memcpy(n->in, in, (size_t)n_in * sizeof(int));
    if (n_out) memcpy(n->out, out, (size_t)n_out * sizeof(int));
    n->n_in = n_in;
    n->n_out = n_out;
    n->opset = g->opset;
    return g->n_nodes++;
}

void zci_tensor_set_shape(zci_tensor *t, zci_dtype dtype, const int64_t *dims, int ndim)
{
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->dims[i] = dims[i];
    t->has_shape = true;
}

int64_t zci_tensor_numel(const zci_tensor *t) { return zci_shape_numel(t->dims, t->ndim); }

size_t zci_tensor_bytes(const zci_tensor *t)
{
    int64_t n = zci_tensor_numel(t);
    return n < 0 ? 0 : (size_t)n * zci_dtype_size(t->dtype);
}

void zci_tensor_make_const(zci_tensor *t, void *data)
{
    if (t->data != data) free(t->data);
    t->data = data;
    t->kind = ZCI_TENSOR_CONSTANT;
    t->producer = -1;
}

/* ---------------------------------------------------------------- attributes */

const zci_attr *zci_attr_find(const zci_node *n, const char *name)
{
    for (int i = 0; i < n->n_attrs; i++)
        if (!strcmp(n->attrs[i].name, name)) return &n->attrs[i];
    return NULL;
}

static const zci_attr *attr_typed(const zci_node *n, const char *name, zci_attr_type type, zci_status *st)
{
    const zci_attr *a = zci_attr_find(n, name);
    if (!a) return NULL;
    if (a->type != type) {
        zci_error(ZCI_INVALID_MODEL, "attribute '%s' has type %d, expected %d", name, a->type, type);
        if (st) *st = ZCI_INVALID_MODEL;
        return NULL;
    }
    return a;
}

int64_t zci_attr_int(const zci_node *n, const char *name, int64_t def, zci_status *st)
{
    const zci_attr *a = attr_typed(n, name, ZCI_ATTR_INT, st);
    return a ? a->i : def;
}

float zci_attr_float(const zci_node *n, const char *name, float def, zci_status *st)
{
    const zci_attr *a = attr_typed(n, name, ZCI_ATTR_FLOAT, st);
    return a ? a->f : def;
}

const char *zci_attr_string(const zci_node *n, const char *name, const char *def, zci_status *st)
{
    const zci_attr *a = attr_typed(n, name, ZCI_ATTR_STRING, st);
    return a ? a->s : def;
}

const int64_t *zci_attr_ints(const zci_node *n, const char *name, int *count, zci_status *st)
{
    const zci_attr *a = attr_typed(n, name, ZCI_ATTR_INTS, st);
    *count = a ? a->n : 0;
    return a ? a->ints : NULL;
}

const float *zci_attr_floats(const zci_node *n, const char *name, int *count, zci_status *st)
{
    const zci_attr *a = attr_typed(n, name, ZCI_ATTR_FLOATS, st);
    *count = a ? a->n : 0;
    return a ? a->floats : NULL;
}

/* ---------------------------------------------------------------- order and uses */

const char *zci_node_desc(const zci_graph *g, const zci_node *n)
{
    static _Thread_local char buf[4][512];
    static _Thread_local int next;
    char *b = buf[next++ & 3];
    snprintf(b, sizeof buf[0], "node '%s' (%s%s%s, opset %d)", n->name && *n->name ? n->name : "<unnamed>",
             n->domain && *n->domain ? n->domain : "", n->domain && *n->domain ? "." : "", n->op_type, n->opset);
    (void)g;
    return b;
}

double zci_node_flops(const zci_graph *g, const zci_node *n)
{
    if (n->n_out < 1 || n->out[0] < 0 || n->n_in < 2 || n->in[0] < 0 || n->in[1] < 0) return 0;
    const double outs = (double)zci_tensor_numel(&g->tensors[n->out[0]]);
    if (!strcmp(n->op_type, "Conv")) {
        const zci_tensor *w = &g->tensors[n->in[1]];
        double per = 1;
        for (int d = 1; d < w->ndim; d++) per *= (double)w->dims[d]; /* Cin/group x kernel */
        return 2 * outs * per;
    }
    if (!strcmp(n->op_type, "MatMul") || !strcmp(n->op_type, "Gemm")) {
        const zci_tensor *a = &g->tensors[n->in[0]];
        int64_t k = a->ndim ? a->dims[a->ndim - 1] : 1;
        if (!strcmp(n->op_type, "Gemm") && zci_attr_int(n, "transA", 0, NULL) && a->ndim == 2) k = a->dims[0];
        return 2 * outs * (double)k;
    }
    return 0;
}

zci_status zci_graph_toposort(zci_graph *g)
{
    int nn = g->n_nodes;
    int *pending = zci_calloc((size_t)nn + 1, sizeof(int), "toposort");
    int *queue = zci_calloc((size_t)nn + 1, sizeof(int), "toposort");
    int *order = zci_calloc((size_t)nn + 1, sizeof(int), "toposort");
    if (!pending || !queue || !order) {
        free(pending), free(queue), free(order);
        return ZCI_OUT_OF_MEMORY;
    }
    zci_status st = ZCI_OK;
    /* producers first: a tensor's producer must be a live node */
    for (int t = 0; t < g->n_tensors; t++) g->tensors[t].producer = -1;
    for (int i = 0; i < nn; i++) {
        zci_node *n = &g->nodes[i];
        if (n->dead) continue;
        for (int o = 0; o < n->n_out; o++) {
            if (n->out[o] < 0) continue;
            zci_tensor *t = &g->tensors[n->out[o]];
            if (t->kind != ZCI_TENSOR_ACTIVATION || t->producer >= 0) {
                st = zci_error(ZCI_INVALID_MODEL, "%s: output '%s' is already defined by %s", zci_node_desc(g, n),
                               t->name,
                               t->producer >= 0 ? zci_node_desc(g, &g->nodes[t->producer])
                                                : (t->kind == ZCI_TENSOR_INPUT ? "a graph input" : "an initializer"));
                goto done;
            }
            t->producer = i;
        }
    }
    int head = 0, tail = 0;
    for (int i = 0; i < nn; i++) {
        zci_node *n = &g->nodes[i];
        if (n->dead) continue;
        for (int k = 0; k < n->n_in; k++) {
            if (n->in[k] < 0) continue;
            const zci_tensor *t = &g->tensors[n->in[k]];
            if (t->kind == ZCI_TENSOR_ACTIVATION && t->producer < 0) {
                st = zci_error(ZCI_INVALID_MODEL,
                               "%s: input '%s' is not a graph input, an initializer or the output of any node",
                               zci_node_desc(g, n), t->name);
                goto done;
            }
            if (t->producer >= 0) pending[i]++;
        }
        if (!pending[i]) queue[tail++] = i;
    }
    /* consumers of each tensor as one CSR index (start[t] .. start[t + 1]), so releasing the
     * readers of a finished node's outputs is linear in the edges */
    int nt = g->n_tensors, total = 0;
    for (int i = 0; i < nn; i++)
        if (!g->nodes[i].dead) total += g->nodes[i].n_in;
    int *start = zci_calloc((size_t)nt + 1, sizeof(int), "toposort");
    int *fill = zci_calloc((size_t)nt + 1, sizeof(int), "toposort");
    int *readers = zci_calloc((size_t)total + 1, sizeof(int), "toposort");
    if (!start || !fill || !readers) {
        free(start), free(fill), free(readers);
        st = ZCI_OUT_OF_MEMORY;
        goto done;
    }
    for (int i = 0; i < nn; i++)
        for (int k = 0; !g->nodes[i].dead && k < g->nodes[i].n_in; k++)
            if (g->nodes[i].in[k] >= 0) start[g->nodes[i].in[k] + 1]++;
    for (int t = 0; t < nt; t++) start[t + 1] += start[t];
    for (int i = 0; i < nn; i++)
        for (int k = 0; !g->nodes[i].dead && k < g->nodes[i].n_in; k++) {
            int t = g->nodes[i].in[k];
            if (t >= 0) readers[start[t] + fill[t]++] = i;
        }
    int n_order = 0;
    while (head < tail) {
        int i = queue[head++];
        order[n_order++] = i;
        const zci_node *n = &g->nodes[i];
        for (int o = 0; o < n->n_out; o++) {
            int t = n->out[o];
            if (t < 0) continue;
            /* a node reading this output twice holds two pending counts and is released once */
            for (int c = start[t]; c < start[t + 1]; c++)
                if (--pending[readers[c]] == 0) queue[tail++] = readers[c];
        }
    }
    free(start);
    free(fill);
    free(readers);
    int live = 0;
    for (int i = 0; i < nn; i++) live += !g->nodes[i].dead;
    if (n_order != live) {
        for (int i = 0; i < nn; i++)
            if (!g->nodes[i].dead && pending[i] > 0) {
                st = zci_error(ZCI_INVALID_MODEL, "the graph has a cycle through %s", zci_node_desc(g, &g->nodes[i]));
                break;
            }
        goto done;
    }
    free(g->order);
    g->order = order;
    g->n_order = n_order;
    order = NULL;
done:
    free(pending);
    free(queue);
    free(order);
    return st;
}

void zci_graph_update_uses(zci_graph *g)
{
    for (int t = 0; t < g->n_tensors; t++) {
        g->tensors[t].n_consumers = 0;
        g->tensors[t].last_use = -1;
    }
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        for (int k = 0; k < n->n_in; k++) {
            if (n->in[k] < 0) continue;
            zci_tensor *t = &g->tensors[n->in[k]];
            t->n_consumers++;
            t->last_use = p;
        }
    }
}

/* ---------------------------------------------------------------- planning */

static zci_status resolve_ops(zci_graph *g)
{
    for (int i = 0; i < g->n_nodes; i++) {
        zci_node *n = &g->nodes[i];
        if (n->dead) continue;
        n->op = zci_op_find(n->domain, n->op_type, n->opset);
        if (!n->op) {
            if (zci_op_known(n->domain, n->op_type))
                return zci_error(ZCI_UNSUPPORTED, "%s: opset %d of %s is older than zcinfer supports",
                                 zci_node_desc(g, n), n->opset, n->op_type);
            return zci_error(ZCI_UNSUPPORTED, "%s: operator '%s%s%s' is not supported by zcinfer", zci_node_desc(g, n),
                             *n->domain ? n->domain : "", *n->domain ? "." : "", n->op_type);
        }
    }
    return ZCI_OK;
}

/* Runs a node whose inputs are all constant on the CPU, at planning, and makes its outputs
 * constants. This folds shape subgraphs (Shape -> Gather -> Unsqueeze -> Concat -> Reshape)
 * and precomputable arithmetic (anchor grids, weight transforms). */
static zci_status fold_node(zci_graph *g, zci_node *n)
{
    int nt = g->n_tensors;
    void **data = zci_calloc((size_t)nt, sizeof(void *), "fold buffers");
    if (!data) return ZCI_OUT_OF_MEMORY;
    zci_status st = ZCI_OK;
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0) data[n->in[k]] = g->tensors[n->in[k]].data;
    for (int o = 0; o < n->n_out && st == ZCI_OK; o++) {
        if (n->out[o] < 0) continue;
        size_t bytes = zci_tensor_bytes(&g->tensors[n->out[o]]);
        data[n->out[o]] = zci_calloc(1, bytes ? bytes : 1, "folded constant");
        if (!data[n->out[o]]) st = ZCI_OUT_OF_MEMORY;
    }
    void *state = NULL;
    if (st == ZCI_OK && n->op->cpu_prepare) st = n->op->cpu_prepare(g, n, 1, &state);
    if (st == ZCI_OK) st = zci_kernel_run_once(g, n, data, 1, state);
    if (state && n->op->cpu_release) n->op->cpu_release(state);
    for (int o = 0; o < n->n_out; o++) {
        if (n->out[o] < 0) continue;
        if (st == ZCI_OK)
            zci_tensor_make_const(&g->tensors[n->out[o]], data[n->out[o]]);
        else
            free(data[n->out[o]]);
    }
    free(data);
    if (st == ZCI_OK) n->dead = true;
    return st;
}

static bool all_inputs_const(const zci_graph *g, const zci_node *n)
{
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && g->tensors[n->in[k]].kind != ZCI_TENSOR_CONSTANT) return false;
    return true;
}

static bool all_outputs_const(const zci_graph *g, const zci_node *n)
{
    for (int o = 0; o < n->n_out; o++)
        if (n->out[o] >= 0 && g->tensors[n->out[o]].kind != ZCI_TENSOR_CONSTANT) return false;
    return true;
}

static zci_status infer_and_fold(zci_graph *g)
{
    for (int p = 0; p < g->n_order; p++) {
        zci_node *n = &g->nodes[g->order[p]];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && !g->tensors[n->in[k]].has_shape)
                return zci_error(ZCI_INVALID_MODEL, "%s: the shape of input '%s' is unknown", zci_node_desc(g, n),
                                 g->tensors[n->in[k]].name);
        zci_status st = n->op->infer(g, n);
        if (st != ZCI_OK) return zci_error_prefix(st, "%s", zci_node_desc(g, n));
        for (int o = 0; o < n->n_out; o++) {
            if (n->out[o] < 0) continue;
            const zci_tensor *t = &g->tensors[n->out[o]];
            if (!t->has_shape || zci_tensor_numel(t) < 0)
                return zci_error(ZCI_INTERNAL, "%s: shape inference left output '%s' without a valid shape",
                                 zci_node_desc(g, n), t->name);
        }
        if (all_outputs_const(g, n)) { /* infer computed the value itself (Shape, Constant) */
            n->dead = true;
            continue;
        }
        if (all_inputs_const(g, n) && n->n_in > 0) {
            st = fold_node(g, n);
            if (st != ZCI_OK) return zci_error_prefix(st, "%s (while folding constants)", zci_node_desc(g, n));
        }
    }
    return ZCI_OK;
}

/* Drops nodes whose outputs nobody needs and constants nobody reads. */
static void remove_dead(zci_graph *g)
{
    bool changed = true;
    while (changed) {
        changed = false;
        zci_graph_update_uses(g);
        for (int p = 0; p < g->n_order; p++) {
            zci_node *n = &g->nodes[g->order[p]];
            if (n->dead) continue;
            bool used = false;
            for (int o = 0; o < n->n_out; o++) {
                if (n->out[o] < 0) continue;
                const zci_tensor *t = &g->tensors[n->out[o]];
                if (t->is_output || t->n_consumers) used = true;
            }
            if (!used) {
                n->dead = true;
                changed = true;
            }
        }
        if (changed) {
            int w = 0;
            for (int p = 0; p < g->n_order; p++)
                if (!g->nodes[g->order[p]].dead) g->order[w++] = g->order[p];
            g->n_order = w;
        }
    }
    for (int t = 0; t < g->n_tensors; t++) {
        zci_tensor *x = &g->tensors[t];
        if (x->kind == ZCI_TENSOR_CONSTANT && !x->n_consumers && !x->is_output) {
            free(x->data);
            x->data = NULL;
        }
    }
}

zci_status zci_graph_plan(zci_graph *g)
{
    ZCI_TRY(resolve_ops(g));
    ZCI_TRY(zci_graph_toposort(g));
    ZCI_TRY(infer_and_fold(g));
    /* folding killed nodes: order again over the live ones */
    ZCI_TRY(zci_graph_toposort(g));
    remove_dead(g);
    if (!getenv("ZCI_NO_FUSION")) ZCI_TRY(zci_graph_fuse(g));
    int live = g->n_order;
    zci_log(g->verbose, "planned %s: %d nodes left to run of %d", g->source ? g->source : "model", live, g->n_nodes);
    return ZCI_OK;
}
