/* ops_rowmap.c: RowMap (ops/rowmap.h), the op the fusion pass makes of detection-head tails.
 * Models exercise the pass end to end against onnxruntime (rowmap_cases, yolov5n_split and the
 * YOLOv5s models in check_models.py); this test covers what a model cannot reach: an engine file
 * is read back through RowMap's infer, so every malformed attribute must come back as a status
 * (never a crash or an out-of-range read), and a hand-made node's values are checked against a
 * direct evaluation. */
#define TEST_RNG_SEED 0x5DEECE66Dull
#include "onenode.h"
#include "ops/rowmap.h"

/* x (2, 3, 4) transposed by (0, 2, 1) -> T (2, 4, 3); columns [0, 1): v * k + 0.5 with k a
 * (4, 1) tensor; [1, 3): 2 / v. */
typedef struct rm_case {
    int64_t parts, flatten;
    int64_t perm[6];
    int n_perm;
    int64_t prog[32];
    int n_prog;
    float sc[4];
    int n_sc;
    int k_dims; /* 0: k is (4, 1); else k's first dim (does not broadcast unless 4 or 1) */
    int k_runtime; /* k is a run-time input, not a constant */
} rm_case;

static onenode make(const rm_case *c, float *xv, float *kv)
{
    onenode t;
    on_init(&t, 17);
    int64_t xd[3] = {2, 3, 4}, kd[2] = {c->k_dims ? c->k_dims : 4, 1};
    int in[2];
    in[0] = on_tensor(&t, ZCI_FLOAT32, xd, 3, xv, 0);
    in[1] = on_tensor(&t, ZCI_FLOAT32, kd, 2, kv, !c->k_runtime);
    int out = zci_graph_add_tensor(t.g, "y", ZCI_TENSOR_ACTIVATION);
    t.node = zci_graph_add_node(t.g, "rm", "RowMap", ZCI_RM_DOMAIN, in, 2, &out, 1);
    zci_node *n = on_n(&t);
    n->opset = 1;
    n->op = zci_op_find(ZCI_RM_DOMAIN, "RowMap", 1);
    CHECK(n->op != NULL, "RowMap is registered in domain %s", ZCI_RM_DOMAIN);
    zci_node_set_int(n, ZCI_RM_ATTR_PARTS, c->parts);
    zci_node_set_int(n, ZCI_RM_ATTR_FLATTEN, c->flatten);
    zci_node_set_ints(n, ZCI_RM_ATTR_PERM, c->perm, c->n_perm);
    zci_node_set_ints(n, ZCI_RM_ATTR_PROG, c->prog, c->n_prog);
    zci_node_set_floats(n, ZCI_RM_ATTR_SCALARS, c->sc, c->n_sc);
    return t;
}

static const rm_case good = {
    .parts = 1,
    .perm = {0, 2, 1},
    .n_perm = 3,
    /* 2 branches: [0,1) 2 ops: MUL by input 1, ADD scalar; [1,3) 1 op: RDIV scalar */
    .prog = {2, 0, 1, 2, ZCI_RM_MUL, 1, ZCI_RM_ADD, -1, 1, 3, 1, ZCI_RM_RDIV, -1},
    .n_prog = 13,
    .sc = {0.5f, 2.0f},
    .n_sc = 2,
};

static void values(void)
{
    float xv[24], kv[4];
    for (int i = 0; i < 24; i++) xv[i] = frand(0.5f, 2.0f);
    for (int i = 0; i < 4; i++) kv[i] = frand(-1.0f, 1.0f);
    onenode t = make(&good, xv, kv);
    CHECK(on_infer(&t) == ZCI_OK, "infer: %s", zci_last_error());
    const zci_tensor *y = on_out(&t);
    CHECK(y->ndim == 3 && y->dims[0] == 2 && y->dims[1] == 4 && y->dims[2] == 3, "output shape (2, 4, 3)");
    float *out = on_run(&t, NULL, 2);
    int bad = 0;
    for (int n = 0; n < 2; n++)
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 3; c++) {
                float v = xv[(n * 3 + c) * 4 + r];
                float want = c == 0 ? v * kv[r] + 0.5f : 2.0f / v;
                bad += out[(n * 4 + r) * 3 + c] != want;
            }
    CHECK(bad == 0, "RowMap values: %d of 24 differ from the direct evaluation", bad);
    free(out);
    on_free(&t);
}

static void refused(const char *what, rm_case c)
{
    float xv[24] = {0}, kv[8] = {0};
    onenode t = make(&c, xv, kv);
    zci_status st = on_infer(&t);
    CHECK(st == ZCI_INVALID_MODEL, "%s: refused with ZCI_INVALID_MODEL (got %s: %s)", what, zci_status_name(st),
          zci_last_error());
    on_free(&t);
}

int main(void)
{
    values();
    rm_case c;
    c = good, c.parts = 0;
    refused("no parts", c);
    c = good, c.parts = 5;
    refused("more parts than inputs", c);
    c = good, c.flatten = 2;
    refused("flatten 2", c);
    c = good, c.perm[1] = 1;
    refused("perm repeats an axis", c);
    c = good, c.perm[2] = 7;
    refused("perm out of range", c);
    c = good, c.n_perm = 2;
    refused("perm too short", c);
    c = good, c.n_prog = 12;
    refused("prog ends early", c);
    c = good, c.prog[13] = 0, c.n_prog = 14;
    refused("prog has values left over", c);
    c = good, c.prog[0] = 9;
    refused("too many branches", c);
    c = good, c.prog[8] = 2;
    refused("a gap between branches", c);
    c = good, c.prog[9] = 4;
    refused("a branch past the last column", c);
    c = good, c.prog[9] = 2;
    refused("the branches leave a column out", c);
    c = good, c.prog[4] = 99;
    refused("an unknown operation", c);
    c = good, c.prog[5] = 0;
    refused("the source as an operand", c);
    c = good, c.prog[5] = 7;
    refused("an operand input out of range", c);
    c = good, c.n_sc = 1;
    refused("scalars too short", c);
    c = good, c.k_dims = 3;
    refused("an operand that does not broadcast", c);
    c = good, c.k_runtime = 1;
    refused("a run-time operand", c);
    return test_summary("ops_rowmap");
}
