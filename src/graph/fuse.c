/* fuse.c: folds the activation and residual Add that follow a Conv into the Conv node
 * (see ops/conv.h for the fused epilogue's semantics). Patterns, as exporters write them:
 *   Conv -> Sigmoid -> Mul(conv, sigmoid)        SiLU (YOLOv5/v8 write nn.SiLU this way)
 *   Conv -> Relu | LeakyRelu | Clip | HardSwish | Sigmoid
 *   Conv[+act] -> Add(conv, r)                   residual (YOLOv5 Bottleneck, ResNet)
 *   Conv + Add -> Relu                           ResNet's relu(x + conv(..)): sum_first = 1
 *   Conv -> Reshape/Transpose/... -> Sigmoid     YOLO heads: an activation commutes with pure
 *                                                data movement, so it moves into the Conv
 * A tensor is only fused away when nothing else reads it and it is not a graph output. */
#include "graph/graph.h"
#include "ops/conv.h"
#include "ops/op.h"

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

zci_status zci_graph_fuse(zci_graph *g)
{
    bool changed = true;
    while (changed) {
        changed = false;
        zci_graph_update_uses(g);
        for (int p = 0; p < g->n_order && !changed; p++) {
            zci_node *n = &g->nodes[g->order[p]];
            if (!n->dead && is_op(n, "Conv")) ZCI_TRY(fuse_conv(g, g->order[p], &changed));
            else if (!n->dead) ZCI_TRY(hoist_activation(g, g->order[p], &changed));
        }
        if (changed) ZCI_TRY(zci_graph_toposort(g));
    }
    zci_graph_update_uses(g);
    return ZCI_OK;
}
