/* onnx_node_tests.c: runs the ONNX backend node tests (a model.onnx and test_data_set_N folders
 * of .pb tensors each, as the onnx package ships them) through zcinfer's CPU backend, one line per case.
 *
 * zcinfer plans shapes once, so integer graph inputs (shapes, axes, indices, scales given as
 * inputs) are bound as constants before planning, with the test's values; float inputs stay
 * real run-time inputs. A case whose model uses an op zcinfer lacks, or a feature it refuses
 * with ZCI_UNSUPPORTED, is skipped with the reason; any other failure fails the suite. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/session.h"
#include "onnx/onnx.h"
#include "ops/op.h"

typedef struct counts {
    int total, passed, failed, skipped_op, skipped_feature;
} counts;

static int verbose;

static int cmpstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int load_pb(const char *path, zci_value *v)
{
    void *data;
    size_t size;
    if (zci_read_file(path, &data, &size)) return -1;
    zci_status st = zci_onnx_load_tensor(data, size, v, NULL);
    free(data);
    return st == ZCI_OK ? 0 : -1;
}

static double as_double(const void *p, zci_dtype dt, int64_t i)
{
    switch (dt) {
    case ZCI_FLOAT32: return ((const float *)p)[i];
    case ZCI_FLOAT64: return ((const double *)p)[i];
    case ZCI_FLOAT16: return zci_f16_to_f32(((const uint16_t *)p)[i]);
    case ZCI_INT64: return (double)((const int64_t *)p)[i];
    case ZCI_INT32: return ((const int32_t *)p)[i];
    case ZCI_INT16: return ((const int16_t *)p)[i];
    case ZCI_UINT16: return ((const uint16_t *)p)[i];
    case ZCI_INT8: return ((const int8_t *)p)[i];
    case ZCI_UINT8: case ZCI_BOOL: return ((const uint8_t *)p)[i];
    case ZCI_UINT32: return ((const uint32_t *)p)[i];
    case ZCI_UINT64: return (double)((const uint64_t *)p)[i];
    default: return 0;
    }
}

/* ONNX's backend tests compare with rtol 1e-3, atol 1e-7; integer types exactly. */
static int compare(const zci_value *want, const void *got, const zci_tensor_info *info, char *why, size_t whylen)
{
    if (want->dtype != info->dtype) {
        snprintf(why, whylen, "dtype %s, expected %s", zci_dtype_name(info->dtype), zci_dtype_name(want->dtype));
        return -1;
    }
    if (want->ndim != info->ndim || memcmp(want->dims, info->shape, (size_t)want->ndim * sizeof(int64_t))) {
        char a[128], b[128];
        snprintf(why, whylen, "shape %s, expected %s", zci_shape_str(info->shape, info->ndim, a, sizeof a),
                 zci_shape_str(want->dims, want->ndim, b, sizeof b));
        return -1;
    }
    int64_t n = zci_shape_numel(want->dims, want->ndim);
    int is_float = want->dtype == ZCI_FLOAT32 || want->dtype == ZCI_FLOAT64 || want->dtype == ZCI_FLOAT16;
    for (int64_t i = 0; i < n; i++) {
        double w = as_double(want->data, want->dtype, i), g = as_double(got, want->dtype, i);
        if (isnan(w) && isnan(g)) continue;
        if (isinf(w) && w == g) continue;
        double tol = is_float ? 1e-7 + 1e-3 * fabs(w) : 0;
        if (!(fabs(w - g) <= tol)) {
            snprintf(why, whylen, "element %lld: got %.9g, expected %.9g", (long long)i, g, w);
            return -1;
        }
    }
    return 0;
}

/* Float operands that zcinfer needs at planning, as it plans shapes once: Resize's and
 * Upsample's roi/scales, Range's bounds. The node tests feed some of them as graph inputs. */
static int feeds_plan_time_operand(const zci_graph *g, int t)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const zci_node *n = &g->nodes[i];
        int resize = !strcmp(n->op_type, "Resize") || !strcmp(n->op_type, "Upsample");
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] == t && ((resize && k >= 1) || !strcmp(n->op_type, "Range"))) return 1;
    }
    return 0;
}

/* 1 pass, 0 fail, -1 skipped (op), -2 skipped (feature); reason in why. */
static int run_case(const char *dir, char *why, size_t whylen)
{
    char path[4352]; /* dir is at most 4096 bytes with its NUL (see main) */
    snprintf(path, sizeof path, "%.4095s/model.onnx", dir);
    void *data;
    size_t size;
    if (zci_read_file(path, &data, &size)) {
        snprintf(why, whylen, "%s", zci_last_error());
        return 0;
    }
    zci_graph *g = NULL;
    zci_status st = zci_onnx_load(data, size, dir, path, 1, &g);
    free(data);
    if (st != ZCI_OK) {
        snprintf(why, whylen, "load: %s", zci_last_error());
        return st == ZCI_UNSUPPORTED ? -2 : 0;
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (!zci_op_known(g->nodes[i].domain, g->nodes[i].op_type)) {
            snprintf(why, whylen, "op %s%s%s not supported", g->nodes[i].domain, *g->nodes[i].domain ? "." : "",
                     g->nodes[i].op_type);
            zci_graph_free(g);
            return -1;
        }
    /* inputs from test_data_set_0: integer ones become constants, the rest get the test's shape */
    int n_in = g->n_inputs, result = 1;
    zci_value *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    int keep = 0;
    for (int i = 0; i < n_in; i++) {
        snprintf(path, sizeof path, "%.4095s/test_data_set_0/input_%d.pb", dir, i);
        if (load_pb(path, &inputs[i])) {
            snprintf(why, whylen, "cannot read %.500s: %.1000s", path, zci_last_error());
            result = 0;
            goto out_graph;
        }
    }
    for (int i = 0; i < n_in; i++) {
        zci_tensor *t = &g->tensors[g->inputs[i]];
        zci_tensor_set_shape(t, inputs[i].dtype, inputs[i].dims, inputs[i].ndim);
        if (inputs[i].dtype == ZCI_INT64 || inputs[i].dtype == ZCI_INT32 || feeds_plan_time_operand(g, g->inputs[i])) {
            zci_tensor_make_const(t, inputs[i].data);
            inputs[i].data = NULL;
        } else {
            g->inputs[keep] = g->inputs[i];
            inputs[keep++] = inputs[i];
        }
    }
    g->n_inputs = keep;
    zci_session *s = NULL;
    zci_graph *owned = g;
    g = NULL;
    st = zci_session_create_from_graph(owned, NULL, &s);
    if (st != ZCI_OK) {
        snprintf(why, whylen, "%s", zci_last_error());
        result = st == ZCI_UNSUPPORTED ? -2 : 0;
        goto out_inputs;
    }
    int n_out = zci_session_output_count(s);
    zci_binding *bi = calloc((size_t)keep + 1, sizeof *bi), *bo = calloc((size_t)n_out + 1, sizeof *bo);
    zci_value *want = calloc((size_t)n_out + 1, sizeof *want);
    for (int i = 0; i < keep; i++) {
        zci_tensor_info info;
        zci_session_input_info(s, i, &info);
        bi[i] = (zci_binding){NULL, inputs[i].data, info.bytes};
    }
    for (int i = 0; i < n_out && result == 1; i++) {
        zci_tensor_info info;
        zci_session_output_info(s, i, &info);
        bo[i] = (zci_binding){NULL, malloc(info.bytes ? info.bytes : 1), info.bytes};
        snprintf(path, sizeof path, "%.4095s/test_data_set_0/output_%d.pb", dir, i);
        if (load_pb(path, &want[i])) {
            snprintf(why, whylen, "cannot read %.500s", path);
            result = 0;
        }
    }
    if (result == 1) {
        st = zci_run(s, bi, keep, bo, n_out);
        if (st != ZCI_OK) {
            snprintf(why, whylen, "run: %s", zci_last_error());
            result = st == ZCI_UNSUPPORTED ? -2 : 0;
        }
    }
    for (int i = 0; i < n_out && result == 1; i++) {
        zci_tensor_info info;
        zci_session_output_info(s, i, &info);
        char w2[512];
        if (compare(&want[i], bo[i].data, &info, w2, sizeof w2)) {
            snprintf(why, whylen, "output %d ('%s'): %s", i, info.name, w2);
            result = 0;
        }
    }
    for (int i = 0; i < n_out; i++) {
        free(bo[i].data);
        free(want[i].data);
    }
    free(bi);
    free(bo);
    free(want);
    zci_session_destroy(s);
out_inputs:
    for (int i = 0; i < keep; i++) free(inputs[i].data);
    free(inputs);
    return result;
out_graph:
    for (int i = 0; i < n_in; i++) free(inputs[i].data);
    free(inputs);
    zci_graph_free(g);
    return result;
}

static const char *default_root(void)
{
    const char *env = getenv("ZCI_ONNX_NODE_TESTS");
    return env && *env ? env : ZCI_ONNX_NODE_TESTS_DEFAULT;
}

int main(int argc, char **argv)
{
    const char *root = default_root(), *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--filter") && i + 1 < argc)
            filter = argv[++i];
        else if (!strcmp(argv[i], "--root") && i + 1 < argc)
            root = argv[++i];
        else if (!strcmp(argv[i], "-v"))
            verbose = 1;
        else {
            printf("usage: %s [--root DIR] [--filter SUBSTRING] [-v]\n"
                   "Runs the ONNX backend node tests in DIR (default: $ZCI_ONNX_NODE_TESTS or %s).\n"
                   "Prints one line per case that fails or is skipped (all with -v) and a summary;\n"
                   "exits 1 if a case of a supported op fails.\n",
                   argv[0], ZCI_ONNX_NODE_TESTS_DEFAULT);
            return strcmp(argv[i], "--help") ? 2 : 0;
        }
    }
    DIR *d = opendir(root);
    if (!d) {
        fprintf(stderr, "cannot open the node test folder '%s' (install the onnx Python package or set --root)\n", root);
        return 2;
    }
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "test_", 5) || (filter && !strstr(e->d_name, filter))) continue;
        if (n == cap) names = realloc(names, (size_t)(cap = cap ? cap * 2 : 256) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n) qsort(names, (size_t)n, sizeof *names, cmpstr);
    counts c = {0};
    char (*skipped_ops)[64] = calloc((size_t)n + 1, 64);
    int n_skipped_ops = 0;
    for (int i = 0; i < n; i++) {
        char dir[4096], why[2048] = "";
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        int r = run_case(dir, why, sizeof why);
        c.total++;
        if (r == 1) {
            c.passed++;
            if (verbose) printf("PASS %s\n", names[i]);
        } else if (r == 0) {
            c.failed++;
            printf("FAIL %s: %s\n", names[i], why);
        } else if (r == -1) {
            c.skipped_op++;
            const char *op = why + 3; /* "op X not supported" */
            char opname[64];
            snprintf(opname, sizeof opname, "%.*s", (int)strcspn(op, " "), op);
            int seen = 0;
            for (int k = 0; k < n_skipped_ops; k++) seen |= !strcmp(skipped_ops[k], opname);
            if (!seen) strcpy(skipped_ops[n_skipped_ops++], opname);
            if (verbose) printf("SKIP %s: %s\n", names[i], why);
        } else {
            c.skipped_feature++;
            printf("SKIP %s: %s\n", names[i], why);
        }
        free(names[i]);
    }
    free(names);
    printf("\nONNX node tests: %d cases found; ran %d, %d passed, %d failed\n", c.total,
           c.total - c.skipped_op - c.skipped_feature, c.passed, c.failed);
    printf("skipped: %d cases using a feature zcinfer refuses (listed above), %d cases of %d ops zcinfer does not "
           "implement%s\n", c.skipped_feature, c.skipped_op, n_skipped_ops, n_skipped_ops ? ":" : "");
    for (int k = 0; k < n_skipped_ops; k++) printf("%s%s", k ? ", " : "  ", skipped_ops[k]);
    if (n_skipped_ops) printf("\n");
    free(skipped_ops);
    printf("%d passed, %d failed, %d skipped\n", c.passed, c.failed, c.skipped_op + c.skipped_feature);
    return c.failed ? 1 : 0;
}
