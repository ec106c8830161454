/* fuse.c: folds the activation and residual Add that follow a Conv into the Conv node
 * (see ops/conv.h for the fused epilogue's semantics). Patterns, as exporters write them:
 *   Conv -> Sigmoid -> Mul(conv, sigmoid)        SiLU (YOLOv5/v8 write nn.SiLU this way)
 *   Conv -> Relu | LeakyRelu | Clip | HardSwish | Sigmoid
 *   Conv[+act] -> Add(conv, r)                   residual (YOLOv5 Bottleneck, ResNet)
 *   Conv + Add -> Relu                           ResNet's relu(x + conv(..)): sum_first = 1
 *   Conv -> Reshape/Transpose/... -> Sigmoid     YOLO heads: an activation commutes with pure
 *                                                data movement, so it moves into the Conv
 * and then replaces the tail of a detection head with RowMap nodes (ops/rowmap.h):
 *   [Transpose ->] Slice.../Split -> Mul/Add/Sub/Div/Pow with constants -> Concat(last axis)
 *   Concat(axis 1) of Reshape(N, -1, C) of such RowMaps                  (the levels' outputs)
 * A tensor is only fused away when nothing else reads it and it is not a graph output. */
#include <stdio.h>
#include <stdlib.h>

#include "graph/graph.h"
#include "ops/conv.h"
#include "ops/op.h"
#include "ops/rowmap.h"

/* The one live node reading tensor t, or -1 if there are none or several readers (or t is a
 * graph output). */
static int sole_reader(const zci_graph *g, int t)
{
    if (g->tensors[t].is_output || g->tensors[t].n_consumers != 1) return -1;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        if (n->dead) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] == t) return g->order[p];
    }
    return -1;
}

static int position(const zci_graph *g, int node)
{
    for (int p = 0; p < g->n_order; p++)
        if (g->order[p] == node) return p;
    return -1;
}

static bool is_op(const zci_node *n, const char *type) { return !strcmp(n->op_type, type) && !*n->domain; }

/* Reads a constant scalar float input (Clip's min/max), or returns def when absent. */
static bool const_scalar(const zci_graph *g, const zci_node *n, int k, float def, float *v)
{
    if (!ZCI_HAS_IN(n, k)) {
        *v = def;
        return true;
    }
    const zci_tensor *t = ZCI_IN(g, n, k);
    if (t->kind != ZCI_TENSOR_CONSTANT || t->dtype != ZCI_FLOAT32 || zci_tensor_numel(t) != 1) return false;
    *v = *(const float *)t->data;
    return true;
}

/* Which activation node n applies to its input 0, if it is one a Conv can absorb. */
static bool activation_of(const zci_graph *g, const zci_node *n, zci_activation *act, float *alpha, float *beta)
{
    *alpha = 0;
    *beta = 0;
    if (is_op(n, "Relu")) *act = ZCI_ACT_RELU;
    else if (is_op(n, "Sigmoid")) *act = ZCI_ACT_SIGMOID;
    else if (is_op(n, "HardSwish")) *act = ZCI_ACT_HARDSWISH;
    else if (is_op(n, "LeakyRelu")) {
        *act = ZCI_ACT_LEAKY_RELU;
        *alpha = zci_attr_float(n, "alpha", 0.01f, NULL);
    } else if (is_op(n, "Clip")) {
        *act = ZCI_ACT_CLIP;
        if (n->opset < 11) {
            *alpha = zci_attr_float(n, "min", -3.402823466e38f, NULL);
            *beta = zci_attr_float(n, "max", 3.402823466e38f, NULL);
        } else if (!const_scalar(g, n, 1, -3.402823466e38f, alpha) || !const_scalar(g, n, 2, 3.402823466e38f, beta)) {
            return false;
        }
    } else {
        return false;
    }
    return true;
}

/* Makes node n produce `from`'s output and kills `from` (whose input was n's old output). */
static void take_output(zci_graph *g, zci_node *n, zci_node *from)
{
    int old = n->out[0];
    n->out[0] = from->out[0];
    g->tensors[n->out[0]].producer = (int)(n - g->nodes);
    g->tensors[old].producer = -1;
    from->dead = true;
}

static zci_status fuse_conv(zci_graph *g, int ci, bool *changed)
{
    zci_node *conv = &g->nodes[ci];
    zci_conv_params *cp = conv->params;
    if (!cp || g->tensors[conv->out[0]].dtype != ZCI_FLOAT32) return ZCI_OK;
    int x = conv->out[0];
    int r = sole_reader(g, x);
    /* SiLU: x is read by a Sigmoid and by the Mul that takes that Sigmoid's output */
    if (cp->activation == ZCI_ACT_NONE && cp->sum_input < 0 && g->tensors[x].n_consumers == 2 &&
        !g->tensors[x].is_output) {
        for (int p = 0; p < g->n_order; p++) {
            zci_node *sg = &g->nodes[g->order[p]];
            if (sg->dead || !is_op(sg, "Sigmoid") || sg->in[0] != x) continue;
            int mi = sole_reader(g, sg->out[0]);
            if (mi < 0) break;
            zci_node *mul = &g->nodes[mi];
            if (!is_op(mul, "Mul") || mul->n_in != 2) break;
            if (!((mul->in[0] == x && mul->in[1] == sg->out[0]) || (mul->in[1] == x && mul->in[0] == sg->out[0])))
                break;
            ZCI_TRY(zci_conv_set_fusion(g, conv, ZCI_ACT_SILU, 0, 0, -1, 0));
            sg->dead = true;
            take_output(g, conv, mul);
            *changed = true;
            return ZCI_OK;
        }
    }
    if (r < 0) return ZCI_OK;
    zci_node *next = &g->nodes[r];
    zci_activation act;
    float alpha, beta;
    /* an activation after a plain Conv, or after Conv + residual added first (ResNet) */
    if ((cp->activation == ZCI_ACT_NONE) && activation_of(g, next, &act, &alpha, &beta) && next->in[0] == x) {
        ZCI_TRY(zci_conv_set_fusion(g, conv, act, alpha, beta, cp->sum_input, cp->sum_input >= 0));
        take_output(g, conv, next);
        *changed = true;
        return ZCI_OK;
    }
    /* residual: Add(x, s) or Add(s, x) with s of the output's exact shape, computed before the
     * Conv runs (earlier in the order, so no cycle can form) */
    if (cp->sum_input < 0 && is_op(next, "Add") && next->n_in == 2) {
        int s = next->in[0] == x ? next->in[1] : next->in[1] == x ? next->in[0] : -1;
        if (s < 0 || s == x) return ZCI_OK;
        const zci_tensor *ts = &g->tensors[s], *tx = &g->tensors[x];
        if (ts->dtype != tx->dtype || ts->ndim != tx->ndim || memcmp(ts->dims, tx->dims, sizeof(int64_t) * (size_t)tx->ndim))
            return ZCI_OK;
        if (ts->producer >= 0 && position(g, ts->producer) > position(g, ci)) return ZCI_OK;
        int *in = zci_realloc(conv->in, sizeof(int) * (size_t)(conv->n_in < 3 ? 4 : conv->n_in + 1), "node inputs");
        if (!in) return ZCI_OUT_OF_MEMORY;
        conv->in = in;
        while (conv->n_in < 3) conv->in[conv->n_in++] = -1; /* keep X, W, B at their ONNX slots */
        conv->in[conv->n_in++] = s;
        ZCI_TRY(zci_conv_set_fusion(g, conv, cp->activation, cp->act_alpha, cp->act_beta, conv->n_in - 1,
                                    cp->activation == ZCI_ACT_NONE));
        take_output(g, conv, next);
        *changed = true;
    }
    return ZCI_OK;
}

static bool is_data_movement(const zci_node *n)
{
    return is_op(n, "Reshape") || is_op(n, "Transpose") || is_op(n, "Flatten") || is_op(n, "Squeeze") ||
           is_op(n, "Unsqueeze") || is_op(n, "Identity");
}

/* Sigmoid(Move(...Move(Conv(x)))) -> Move(...Move(Conv_sigmoid(x))): walks up from an
 * activation through single-reader data-movement nodes to a Conv without an epilogue, moves the
 * activation into it and lets the last movement node produce the activation's output. */
static zci_status hoist_activation(zci_graph *g, int ai, bool *changed)
{
    zci_node *act_node = &g->nodes[ai];
    zci_activation act;
    float alpha, beta;
    if (!activation_of(g, act_node, &act, &alpha, &beta)) return ZCI_OK;
    int t = act_node->in[0], last_move = -1;
    for (int depth = 0; depth < 8; depth++) {
        const zci_tensor *x = &g->tensors[t];
        if (x->producer < 0 || x->is_output || x->n_consumers != 1 || x->dtype != ZCI_FLOAT32) return ZCI_OK;
        zci_node *p = &g->nodes[x->producer];
        if (is_data_movement(p)) {
            if (last_move < 0) last_move = x->producer;
            t = p->in[0];
            continue;
        }
        if (last_move < 0 || !is_op(p, "Conv")) return ZCI_OK; /* a direct Conv -> act is fuse_conv's */
        const zci_conv_params *cp = p->params;
        if (!cp || cp->activation != ZCI_ACT_NONE || cp->sum_input >= 0) return ZCI_OK;
        ZCI_TRY(zci_conv_set_fusion(g, p, act, alpha, beta, -1, 0));
        take_output(g, &g->nodes[last_move], act_node);
        *changed = true;
        return ZCI_OK;
    }
    return ZCI_OK;
}

/* ---------------------------------------------------------------- RowMap */

/* A RowMap under construction: its sources, constants and attributes (ops/rowmap.h). */
typedef struct rm_build {
    int n_parts, n_consts, n_perm, n_prog, n_sc;
    int src[ZCI_RM_MAX_PARTS];
    int consts[ZCI_RM_MAX_PARTS * ZCI_RM_MAX_BRANCHES * ZCI_RM_MAX_OPS];
    int64_t perm[ZCI_RM_MAX_PARTS * ZCI_RM_MAX_RANK];
    int64_t prog[ZCI_RM_MAX_PARTS * (1 + ZCI_RM_MAX_BRANCHES * (3 + 2 * ZCI_RM_MAX_OPS))];
    float sc[ZCI_RM_MAX_PARTS * ZCI_RM_MAX_BRANCHES * ZCI_RM_MAX_OPS];
} rm_build;

static bool same_dims(const zci_tensor *a, const zci_tensor *b)
{
    return a->ndim == b->ndim && !memcmp(a->dims, b->dims, sizeof(int64_t) * (size_t)a->ndim);
}

/* Node p computes `out` = chain (op) K with K a float32 constant that does not widen the chain's
 * shape: gives the operation, K's tensor and the chain's input. */
static bool const_operation(const zci_graph *g, const zci_node *p, int *code, int *k, int *chain)
{
    if (p->n_in != 2 || p->n_out != 1 || p->in[0] < 0 || p->in[1] < 0) return false;
    const zci_tensor *a = &g->tensors[p->in[0]], *b = &g->tensors[p->in[1]], *y = &g->tensors[p->out[0]];
    bool ka = a->kind == ZCI_TENSOR_CONSTANT && a->data, kb = b->kind == ZCI_TENSOR_CONSTANT && b->data;
    if (ka == kb) return false;
    const zci_tensor *kt = ka ? a : b, *ct = ka ? b : a;
    if (kt->dtype != ZCI_FLOAT32 || ct->dtype != ZCI_FLOAT32 || !same_dims(ct, y) || kt->ndim > y->ndim) return false;
    if (is_op(p, "Add")) *code = ZCI_RM_ADD;
    else if (is_op(p, "Mul")) *code = ZCI_RM_MUL;
    else if (is_op(p, "Sub")) *code = ka ? ZCI_RM_RSUB : ZCI_RM_SUB;
    else if (is_op(p, "Div")) *code = ka ? ZCI_RM_RDIV : ZCI_RM_DIV;
    else if (is_op(p, "Pow") && kb) *code = ZCI_RM_POW;
    else return false;
    *k = ka ? p->in[0] : p->in[1];
    *chain = ka ? p->in[1] : p->in[0];
    return true;
}

/* A tensor the fusion may remove: one reader, not a graph output, made by a live node. */
static bool private_tensor(const zci_graph *g, int t)
{
    const zci_tensor *x = &g->tensors[t];
    return !x->is_output && x->n_consumers == 1 && x->producer >= 0 && !g->nodes[x->producer].dead;
}

/* Adds the RowMap node b describes, producing `out`, named after `like`; kills the nodes in
 * kill[] and checks that the op infers the shape `out` had. */
static zci_status add_row_map(zci_graph *g, const rm_build *b, int flatten, int out, const char *like,
                              const int *kill, int n_kill)
{
    int in[ZCI_RM_MAX_PARTS + sizeof b->consts / sizeof b->consts[0]];
    for (int i = 0; i < b->n_parts; i++) in[i] = b->src[i];
    for (int i = 0; i < b->n_consts; i++) in[b->n_parts + i] = b->consts[i];
    char name[256];
    snprintf(name, sizeof name, "%s/RowMap", like);
    const zci_tensor before = g->tensors[out];
    int idx = zci_graph_add_node(g, name, "RowMap", ZCI_RM_DOMAIN, in, b->n_parts + b->n_consts, &out, 1);
    if (idx < 0) return ZCI_OUT_OF_MEMORY;
    zci_node *n = &g->nodes[idx];
    n->opset = 1;
    n->op = zci_op_find(ZCI_RM_DOMAIN, "RowMap", 1);
    ZCI_TRY(zci_node_set_int(n, ZCI_RM_ATTR_PARTS, b->n_parts));
    ZCI_TRY(zci_node_set_int(n, ZCI_RM_ATTR_FLATTEN, flatten));
    ZCI_TRY(zci_node_set_ints(n, ZCI_RM_ATTR_PERM, b->perm, b->n_perm));
    ZCI_TRY(zci_node_set_ints(n, ZCI_RM_ATTR_PROG, b->prog, b->n_prog));
    ZCI_TRY(zci_node_set_floats(n, ZCI_RM_ATTR_SCALARS, b->sc, b->n_sc));
    for (int i = 0; i < n_kill; i++) {
        zci_node *d = &g->nodes[kill[i]];
        d->dead = true;
        for (int o = 0; o < d->n_out; o++)
            if (d->out[o] >= 0) g->tensors[d->out[o]].producer = -1;
    }
    g->tensors[out].producer = idx;
    zci_status st = n->op ? n->op->infer(g, n) : ZCI_INTERNAL;
    if (st != ZCI_OK || !same_dims(&before, &g->tensors[out]) || g->tensors[out].dtype != before.dtype) {
        char why[512]; /* the message is copied: zci_error writes the buffer zci_last_error reads */
        snprintf(why, sizeof why, "%s", st != ZCI_OK ? zci_last_error() : "the shape changed");
        return zci_error(ZCI_INTERNAL, "fusing %s into RowMap: %s", like, why);
    }
    return ZCI_OK;
}

/* Concat(last axis) of branches, each [Transpose ->] Slice/Split -> constant operations: one
 * RowMap of one part. */
static zci_status fuse_row_map(zci_graph *g, int li, bool *changed)
{
    const zci_node *cat = &g->nodes[li];
    const zci_tensor *y = &g->tensors[cat->out[0]];
    zci_status st = ZCI_OK;
    int64_t axis = zci_attr_int(cat, "axis", 0, &st);
    if (st != ZCI_OK || y->dtype != ZCI_FLOAT32 || y->ndim < 2 || y->ndim > ZCI_RM_MAX_RANK) return ZCI_OK;
    if (axis != -1 && axis != y->ndim - 1) return ZCI_OK;
    if (cat->n_in < 1 || cat->n_in > ZCI_RM_MAX_BRANCHES) return ZCI_OK;
    rm_build b = {.n_parts = 1};
    int kill[1 + ZCI_RM_MAX_BRANCHES * (ZCI_RM_MAX_OPS + 1) + 1], n_kill = 0;
    kill[n_kill++] = li;
    int src = -1, split = -1;
    int64_t next_lo = 0;
    b.prog[b.n_prog++] = cat->n_in;
    for (int br = 0; br < cat->n_in; br++) {
        int t = cat->in[br], ops[ZCI_RM_MAX_OPS][2], n_ops = 0;
        const zci_node *p = NULL;
        for (;;) {
            if (t < 0 || !private_tensor(g, t)) return ZCI_OK;
            p = &g->nodes[g->tensors[t].producer];
            if (is_op(p, "Slice") || is_op(p, "Split")) break;
            int code, k, chain;
            if (n_ops == ZCI_RM_MAX_OPS || !const_operation(g, p, &code, &k, &chain)) return ZCI_OK;
            ops[n_ops][0] = code;
            ops[n_ops++][1] = k;
            kill[n_kill++] = g->tensors[t].producer;
            t = chain;
        }
        int64_t lo = 0, hi;
        const zci_tensor *bt = &g->tensors[t];
        if (is_op(p, "Slice")) {
            if (!zci_slice_last_axis(g, p, &lo)) return ZCI_OK;
            kill[n_kill++] = g->tensors[t].producer;
        } else {
            int64_t sa = zci_attr_int(p, "axis", 0, &st);
            const zci_tensor *sx = &g->tensors[p->in[0]];
            if (st != ZCI_OK || (sa != -1 && sa != sx->ndim - 1) || p->n_out != cat->n_in) return ZCI_OK;
            if (split < 0) kill[n_kill++] = g->tensors[t].producer;
            else if (split != g->tensors[t].producer) return ZCI_OK;
            split = g->tensors[t].producer;
            for (int o = 0; o < p->n_out && p->out[o] != t; o++) lo += g->tensors[p->out[o]].dims[sx->ndim - 1];
        }
        hi = lo + bt->dims[bt->ndim - 1];
        if (src >= 0 && p->in[0] != src) return ZCI_OK;
        src = p->in[0];
        if (lo != next_lo || hi <= lo) return ZCI_OK;
        next_lo = hi;
        b.prog[b.n_prog++] = lo;
        b.prog[b.n_prog++] = hi;
        b.prog[b.n_prog++] = n_ops;
        for (int o = n_ops - 1; o >= 0; o--) { /* collected from the Concat backwards */
            const zci_tensor *kt = &g->tensors[ops[o][1]];
            b.prog[b.n_prog++] = ops[o][0];
            if (zci_tensor_numel(kt) == 1) {
                b.prog[b.n_prog++] = -1;
                b.sc[b.n_sc++] = *(const float *)kt->data;
            } else {
                b.prog[b.n_prog++] = b.n_parts + b.n_consts;
                b.consts[b.n_consts++] = ops[o][1];
            }
        }
    }
    /* the source: every column used; a Transpose making it is absorbed when these branches
     * are all that read it */
    const zci_tensor *s = &g->tensors[src];
    if (!same_dims(s, y) || next_lo != s->dims[s->ndim - 1]) return ZCI_OK;
    bool ours = !s->is_output && s->n_consumers == (split >= 0 ? 1 : cat->n_in);
    b.src[0] = src;
    b.n_perm = s->ndim;
    for (int d = 0; d < s->ndim; d++) b.perm[d] = d;
    const zci_node *tr = ours && s->producer >= 0 ? &g->nodes[s->producer] : NULL;
    if (tr && !tr->dead && is_op(tr, "Transpose") && tr->in[0] >= 0) {
        const zci_tensor *x = &g->tensors[tr->in[0]];
        int cnt = 0;
        const int64_t *perm = zci_attr_ints(tr, "perm", &cnt, &st);
        if (st != ZCI_OK || (perm && cnt != x->ndim)) return ZCI_OK;
        for (int d = 0; d < x->ndim; d++) b.perm[d] = perm ? perm[d] : x->ndim - 1 - d;
        b.src[0] = tr->in[0];
        kill[n_kill++] = s->producer;
    }
    ZCI_TRY(add_row_map(g, &b, 0, cat->out[0], cat->name, kill, n_kill));
    *changed = true;
    return ZCI_OK;
}

/* Appends RowMap node m (one part) to b as its next part, its constants renumbered. */
static void append_part(const zci_node *m, rm_build *b)
{
    int cnt = 0;
    zci_status st = ZCI_OK;
    const int64_t *perm = zci_attr_ints(m, ZCI_RM_ATTR_PERM, &cnt, &st);
    for (int i = 0; i < cnt; i++) b->perm[b->n_perm++] = perm[i];
    const float *sc = zci_attr_floats(m, ZCI_RM_ATTR_SCALARS, &cnt, &st);
    for (int i = 0; i < cnt; i++) b->sc[b->n_sc++] = sc[i];
    /* the consts of the merged node follow all its sources: renumbered at the end (fix_consts) */
    const int64_t *prog = zci_attr_ints(m, ZCI_RM_ATTR_PROG, &cnt, &st);
    int at = 0;
    int64_t nb = prog[at++];
    b->prog[b->n_prog++] = nb;
    for (int64_t br = 0; br < nb; br++) {
        int64_t nops = prog[at + 2];
        for (int i = 0; i < 3; i++) b->prog[b->n_prog++] = prog[at++];
        for (int64_t o = 0; o < nops; o++) {
            b->prog[b->n_prog++] = prog[at++];
            int64_t k = prog[at++];
            if (k >= 0) {
                b->consts[b->n_consts] = m->in[k];
                k = ZCI_RM_MAX_PARTS + b->n_consts++; /* placeholder, see fix_consts */
            }
            b->prog[b->n_prog++] = k;
        }
    }
    b->src[b->n_parts++] = m->in[0];
}

/* Turns append_part's placeholders into input indices once the part count is known. */
static void fix_consts(rm_build *b)
{
    int at = 0;
    for (int q = 0; q < b->n_parts; q++) {
        int64_t nb = b->prog[at++];
        for (int64_t br = 0; br < nb; br++) {
            int64_t nops = b->prog[at + 2];
            at += 3;
            for (int64_t o = 0; o < nops; o++, at += 2)
                if (b->prog[at + 1] >= 0) b->prog[at + 1] += b->n_parts - ZCI_RM_MAX_PARTS;
        }
    }
}

/* Concat(axis 1) of Reshape(N, rows, C) of one-part RowMaps: one RowMap writing every part's rows
 * straight into the concatenated output. */
static zci_status merge_row_maps(zci_graph *g, int fi, bool *changed)
{
    const zci_node *cat = &g->nodes[fi];
    const zci_tensor *y = &g->tensors[cat->out[0]];
    zci_status st = ZCI_OK;
    int64_t axis = zci_attr_int(cat, "axis", 0, &st);
    if (st != ZCI_OK || y->dtype != ZCI_FLOAT32 || y->ndim != 3 || (axis != 1 && axis != -2)) return ZCI_OK;
    if (cat->n_in < 1 || cat->n_in > ZCI_RM_MAX_PARTS) return ZCI_OK;
    rm_build b = {0};
    int kill[1 + 2 * ZCI_RM_MAX_PARTS], n_kill = 0;
    kill[n_kill++] = fi;
    for (int k = 0; k < cat->n_in; k++) {
        int t = cat->in[k];
        if (t < 0 || !private_tensor(g, t)) return ZCI_OK;
        const zci_node *rs = &g->nodes[g->tensors[t].producer];
        if (!is_op(rs, "Reshape") || rs->in[0] < 0 || !private_tensor(g, rs->in[0])) return ZCI_OK;
        const zci_node *m = &g->nodes[g->tensors[rs->in[0]].producer];
        if (strcmp(m->op_type, "RowMap") || strcmp(m->domain, ZCI_RM_DOMAIN) || !m->params) return ZCI_OK;
        const zci_rowmap_params *mp = m->params;
        const zci_tensor *rt = &g->tensors[t];
        if (mp->n_parts != 1 || rt->dims[0] != mp->batch || rt->dims[1] != mp->rows || rt->dims[2] != mp->cols)
            return ZCI_OK;
        kill[n_kill++] = g->tensors[t].producer;
        kill[n_kill++] = g->tensors[rs->in[0]].producer;
        append_part(m, &b);
    }
    fix_consts(&b);
    ZCI_TRY(add_row_map(g, &b, 1, cat->out[0], cat->name, kill, n_kill));
    *changed = true;
    return ZCI_OK;
}

/* Runs one rewrite over every live node of type op_type (NULL: of any type) until none applies,
 * ordering the graph again after each change. */
static zci_status each_node(zci_graph *g, const char *op_type, zci_status (*rewrite)(zci_graph *, int, bool *))
{
    bool changed = true;
    while (changed) {
        changed = false;
        zci_graph_update_uses(g);
        for (int p = 0; p < g->n_order && !changed; p++) {
            zci_node *n = &g->nodes[g->order[p]];
            if (!n->dead && (!op_type || is_op(n, op_type))) ZCI_TRY(rewrite(g, g->order[p], &changed));
        }
        if (changed) ZCI_TRY(zci_graph_toposort(g));
    }
    return ZCI_OK;
}

/* A Conv takes its epilogue; any other node, if it is an activation, may move into a Conv before it. */
static zci_status fuse_node(zci_graph *g, int i, bool *changed)
{
    return is_op(&g->nodes[i], "Conv") ? fuse_conv(g, i, changed) : hoist_activation(g, i, changed);
}

zci_status zci_graph_fuse(zci_graph *g)
{
    ZCI_TRY(each_node(g, NULL, fuse_node));
    if (!getenv("ZCI_NO_ROWMAP")) {
        ZCI_TRY(each_node(g, "Concat", fuse_row_map));
        ZCI_TRY(each_node(g, "Concat", merge_row_maps));
    }
    zci_graph_update_uses(g);
    return ZCI_OK;
}
