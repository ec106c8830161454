/* rowmap.c: RowMap (rowmap.h): attribute checking, shape inference and the CPU kernel.
 * Planning builds RowMap nodes itself (graph/fuse.c), but an engine file is read back through
 * this infer, so every attribute is checked as if it came from an untrusted file. */
#include <stdlib.h>

#include "ops/rowmap.h"
#include "ops/op.h"

static zci_status bad(const char *what) { return zci_error(ZCI_INVALID_MODEL, "RowMap: %s", what); }

/* K's strides over the branch shape bd (rank r; numpy broadcasting, right-aligned). */
static zci_status broadcast_strides(const zci_tensor *k, const int64_t *bd, int r, int64_t *kstride)
{
    if (k->ndim > r) return bad("a constant has a higher rank than its branch");
    int64_t s = 1;
    for (int d = r - 1; d >= 0; d--) {
        int j = d - (r - k->ndim);
        kstride[d] = 0;
        if (j < 0 || k->dims[j] == 1) continue;
        if (k->dims[j] != bd[d]) return bad("a constant does not broadcast to its branch");
        kstride[d] = s;
        s *= k->dims[j];
    }
    return ZCI_OK;
}

/* Reads one value of prog, checking that it is there and within [lo, hi]. */
static zci_status prog_next(const int64_t *prog, int n_prog, int *at, int64_t lo, int64_t hi, int64_t *v)
{
    if (*at >= n_prog) return bad("\"prog\" ends early");
    *v = prog[(*at)++];
    if (*v < lo || *v > hi) return bad("\"prog\" holds a value out of range");
    return ZCI_OK;
}

static zci_status parse_part(const zci_graph *g, const zci_node *n, int q, const int64_t *perm, int n_perm, int *pi,
                             const int64_t *prog, int n_prog, int *at, const float *sc, int n_sc, int *si,
                             zci_rowmap_params *p)
{
    zci_rm_part *pt = &p->part[q];
    if (!ZCI_HAS_IN(n, q)) return bad("a source input is omitted");
    const zci_tensor *x = ZCI_IN(g, n, q);
    if (x->dtype != ZCI_FLOAT32) return bad("sources must be float32");
    if (x->ndim < 2 || x->ndim > ZCI_RM_MAX_RANK) return bad("sources must have rank 2 to 6");
    const int r = pt->rank = x->ndim;
    if (*pi + r > n_perm) return bad("\"perm\" is too short");
    unsigned seen = 0;
    for (int d = 0; d < r; d++) {
        int64_t v = perm[(*pi)++];
        if (v < 0 || v >= r || (seen >> v & 1)) return bad("\"perm\" is not a permutation");
        seen |= 1u << v;
        pt->perm[d] = (int)v;
        pt->dims[d] = x->dims[v];
    }
    if (q == 0) {
        p->batch = pt->dims[0];
        p->cols = pt->dims[r - 1];
    } else if (pt->dims[0] != p->batch || pt->dims[r - 1] != p->cols) {
        return bad("the parts differ in their first or last dimension");
    }
    pt->rows = 1;
    for (int d = 1; d < r - 1; d++) pt->rows *= pt->dims[d];
    pt->row0 = p->rows;
    p->rows += pt->rows;

    int64_t v = 0, prev_hi = 0;
    ZCI_TRY(prog_next(prog, n_prog, at, 1, ZCI_RM_MAX_BRANCHES, &v));
    pt->n_branches = (int)v;
    for (int b = 0; b < pt->n_branches; b++) {
        zci_rm_branch *br = &pt->br[b];
        int64_t lo = 0, hi = 0, nops = 0;
        ZCI_TRY(prog_next(prog, n_prog, at, prev_hi, prev_hi, &lo));
        ZCI_TRY(prog_next(prog, n_prog, at, lo + 1, p->cols, &hi));
        ZCI_TRY(prog_next(prog, n_prog, at, 0, ZCI_RM_MAX_OPS, &nops));
        br->lo = (int)lo;
        br->hi = (int)hi;
        br->n_ops = (int)nops;
        prev_hi = hi;
        int64_t bd[ZCI_RM_MAX_RANK];
        memcpy(bd, pt->dims, sizeof bd);
        bd[r - 1] = hi - lo;
        for (int o = 0; o < br->n_ops; o++) {
            zci_rm_op *op = &br->ops[o];
            int64_t code = 0, input = -1;
            ZCI_TRY(prog_next(prog, n_prog, at, 0, ZCI_RM_CODE_COUNT_ - 1, &code));
            ZCI_TRY(prog_next(prog, n_prog, at, -1, n->n_in - 1, &input));
            op->code = (int)code;
            op->input = (int)input;
            memset(op->kstride, 0, sizeof op->kstride);
            if (input < 0) {
                if (*si >= n_sc) return bad("\"scalars\" is too short");
                op->scalar = sc[(*si)++];
                continue;
            }
            if (input < p->n_parts || !ZCI_HAS_IN(n, input)) return bad("an operand is not a constant input");
            const zci_tensor *k = ZCI_IN(g, n, (int)input);
            if (k->kind != ZCI_TENSOR_CONSTANT || !k->data || k->dtype != ZCI_FLOAT32)
                return bad("operands must be float32 constants");
            ZCI_TRY(broadcast_strides(k, bd, r, op->kstride));
        }
    }
    if (prev_hi != p->cols) return bad("the branches do not cover every column");
    return ZCI_OK;
}

static zci_status rowmap_infer(zci_graph *g, zci_node *n)
{
    zci_status st = ZCI_OK;
    int64_t parts = zci_attr_int(n, ZCI_RM_ATTR_PARTS, 0, &st), flatten = zci_attr_int(n, ZCI_RM_ATTR_FLATTEN, 0, &st);
    int n_perm = 0, n_prog = 0, n_sc = 0;
    const int64_t *perm = zci_attr_ints(n, ZCI_RM_ATTR_PERM, &n_perm, &st);
    const int64_t *prog = zci_attr_ints(n, ZCI_RM_ATTR_PROG, &n_prog, &st);
    const float *sc = zci_attr_floats(n, ZCI_RM_ATTR_SCALARS, &n_sc, &st);
    if (st != ZCI_OK) return bad("an attribute has the wrong type");
    if (parts < 1 || parts > ZCI_RM_MAX_PARTS || parts > n->n_in) return bad("\"parts\" is out of range");
    if ((flatten != 0 && flatten != 1) || (!flatten && parts > 1)) return bad("\"flatten\" must be 1 for several parts");
    if (n->n_out != 1 || n->out[0] < 0) return bad("it has one output");
    zci_rowmap_params *p = zci_calloc(1, sizeof *p, "RowMap params");
    if (!p) return ZCI_OUT_OF_MEMORY;
    p->n_parts = (int)parts;
    p->flatten = (int)flatten;
    int pi = 0, at = 0, si = 0;
    for (int q = 0; q < p->n_parts && st == ZCI_OK; q++)
        st = parse_part(g, n, q, perm, n_perm, &pi, prog, n_prog, &at, sc, n_sc, &si, p);
    if (st == ZCI_OK && (pi != n_perm || at != n_prog || si != n_sc)) st = bad("an attribute has values left over");
    if (st != ZCI_OK) {
        free(p);
        return st;
    }
    if (p->flatten) {
        int64_t dims[3] = {p->batch, p->rows, p->cols};
        zci_tensor_set_shape(ZCI_OUT(g, n, 0), ZCI_FLOAT32, dims, 3);
    } else {
        zci_tensor_set_shape(ZCI_OUT(g, n, 0), ZCI_FLOAT32, p->part[0].dims, p->part[0].rank);
    }
    free(n->params);
    n->params = p;
    return ZCI_OK;
}

/* The CPU kernel works on runs: up to RUN consecutive rows along T's innermost mid dim, whose
 * source elements lie at a fixed stride (1 for a YOLO head's NCHW conv output, where a row's
 * columns are channels H * W apart). Column by column, a run is read into a vector, each
 * operation is applied to the whole vector (loops the compiler vectorises), and the vector is
 * written back as one column of the run's rows: the rows stay in L1 while their columns fill. */
#define RUN 64

static zci_status rowmap_cpu(const zci_kernel_ctx *k)
{
    const zci_rowmap_params *p = k->n->params;
    float *y = ZCI_KOUT_DATA(k, 0);
    const int64_t cols = p->cols;
    for (int q = 0; q < p->n_parts; q++) {
        const zci_rm_part *pt = &p->part[q];
        const int r = pt->rank;
        const zci_tensor *x = ZCI_IN(k->g, k->n, q);
        int64_t xs[ZCI_RM_MAX_RANK], s = 1;
        for (int d = x->ndim - 1; d >= 0; d--) {
            xs[d] = s;
            s *= x->dims[d];
        }
        /* along the run: T's dim r - 2 (none for rank 2: runs of one row) */
        const int64_t len = r > 2 ? pt->dims[r - 2] : 1, run_xs = r > 2 ? xs[pt->perm[r - 2]] : 0;
        const int64_t col_xs = xs[pt->perm[r - 1]];
        const int64_t chunks_per_run = (len + RUN - 1) / RUN, runs = p->batch * pt->rows / len;
        const int64_t work = runs * chunks_per_run;
        const int nt = p->batch * pt->rows * cols < 65536 ? 1 : k->nthreads;
        const float *xd = k->data[k->n->in[q]];
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t w = 0; w < work; w++) {
            int64_t run = w / chunks_per_run, i0 = w % chunks_per_run * RUN;
            int64_t n_img = run / (pt->rows / len), lr = run % (pt->rows / len) * len + i0;
            int64_t m = len - i0 < RUN ? len - i0 : RUN;
            /* coordinates of the chunk's first row */
            int64_t coord[ZCI_RM_MAX_RANK] = {n_img};
            for (int d = r - 2; d >= 1; d--) {
                coord[d] = lr % pt->dims[d];
                lr /= pt->dims[d];
            }
            int64_t src = 0;
            for (int d = 0; d < r - 1; d++) src += coord[d] * xs[pt->perm[d]];
            float *yr = y + (n_img * p->rows + pt->row0 + (run % (pt->rows / len)) * len + i0) * cols;
            float v[RUN];
            for (int b = 0; b < pt->n_branches; b++) {
                const zci_rm_branch *br = &pt->br[b];
                for (int c = br->lo; c < br->hi; c++) {
                    const float *xc = xd + src + c * col_xs;
                    for (int64_t i = 0; i < m; i++) v[i] = xc[i * run_xs];
                    for (int o = 0; o < br->n_ops; o++) {
                        const zci_rm_op *op = &br->ops[o];
                        const float *kd = NULL;
                        int64_t kst = 0;
                        if (op->input >= 0) {
                            int64_t kb = (c - br->lo) * op->kstride[r - 1];
                            for (int d = 0; d < r - 1; d++) kb += coord[d] * op->kstride[d];
                            kd = (const float *)k->data[k->n->in[op->input]] + kb;
                            kst = r > 2 ? op->kstride[r - 2] : 0;
                        }
                        const float ks = op->scalar;
                        switch (op->code) {
#define RM_LOOP(expr)                                                                                                 \
    if (kd)                                                                                                           \
        for (int64_t i = 0; i < m; i++) {                                                                             \
            const float kv = kd[i * kst];                                                                             \
            v[i] = (expr);                                                                                            \
        }                                                                                                             \
    else                                                                                                              \
        for (int64_t i = 0; i < m; i++) {                                                                             \
            const float kv = ks;                                                                                      \
            v[i] = (expr);                                                                                            \
        }                                                                                                             \
    break
                        case ZCI_RM_ADD: RM_LOOP(v[i] + kv);
                        case ZCI_RM_SUB: RM_LOOP(v[i] - kv);
                        case ZCI_RM_MUL: RM_LOOP(v[i] * kv);
                        case ZCI_RM_DIV: RM_LOOP(v[i] / kv);
                        case ZCI_RM_RSUB: RM_LOOP(kv - v[i]);
                        case ZCI_RM_RDIV: RM_LOOP(kv / v[i]);
                        default: RM_LOOP(zci_rm_apply(op->code, v[i], kv));
#undef RM_LOOP
                        }
                    }
                    for (int64_t i = 0; i < m; i++) yr[i * cols + c] = v[i];
                }
            }
        }
    }
    return ZCI_OK;
}

const zci_op zci_op_RowMap = {.type = "RowMap", .domain = ZCI_RM_DOMAIN, .since = 1, .infer = rowmap_infer, .cpu = rowmap_cpu};
