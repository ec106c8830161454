/* op_util.c: checks and shape helpers shared by the operator files. */
#include <stdio.h>
#include <stdlib.h>

#include "ops/op.h"

zci_status zci_check_arity(const zci_node *n, int min_in, int max_in, int max_out)
{
    int n_in = n->n_in;
    while (n_in > 0 && n->in[n_in - 1] < 0) n_in--; /* trailing omitted optionals */
    if (n_in < min_in || n_in > max_in)
        return zci_error(ZCI_INVALID_MODEL, "expected %d to %d inputs, found %d", min_in, max_in, n_in);
    for (int i = 0; i < min_in; i++)
        if (n->in[i] < 0) return zci_error(ZCI_INVALID_MODEL, "required input %d is missing", i);
    if (n->n_out < 1 || n->n_out > max_out)
        return zci_error(ZCI_INVALID_MODEL, "expected 1 to %d outputs, found %d", max_out, n->n_out);
    if (n->out[0] < 0) return zci_error(ZCI_INVALID_MODEL, "output 0 is missing");
    return ZCI_OK;
}

zci_status zci_broadcast_shape(const int64_t *a, int na, const int64_t *b, int nb, int64_t *out, int *nout)
{
    int n = na > nb ? na : nb;
    if (n > ZCI_MAX_DIMS) return zci_error(ZCI_UNSUPPORTED, "rank %d exceeds %d", n, ZCI_MAX_DIMS);
    for (int i = 0; i < n; i++) {
        int64_t da = i < n - na ? 1 : a[i - (n - na)];
        int64_t db = i < n - nb ? 1 : b[i - (n - nb)];
        if (da != db && da != 1 && db != 1) {
            char sa[128], sb[128];
            return zci_error(ZCI_INVALID_MODEL, "shapes %s and %s do not broadcast (dimension %d: %lld vs %lld)",
                             zci_shape_str(a, na, sa, sizeof sa), zci_shape_str(b, nb, sb, sizeof sb), i,
                             (long long)da, (long long)db);
        }
        out[i] = da == 1 ? db : da;
    }
    *nout = n;
    return ZCI_OK;
}

zci_status zci_const_ints(const zci_graph *g, const zci_node *n, int input, int64_t **values, int64_t *count)
{
    *values = NULL;
    *count = 0;
    if (!ZCI_HAS_IN(n, input)) return zci_error(ZCI_INVALID_MODEL, "input %d is missing", input);
    const zci_tensor *t = ZCI_IN(g, n, input);
    if (t->kind != ZCI_TENSOR_CONSTANT || !t->data)
        return zci_error(ZCI_UNSUPPORTED,
                         "input %d ('%s') must be known when the model is planned (a constant or computable "
                         "from shapes), but it is computed at run time",
                         input, t->name);
    if (t->dtype != ZCI_INT64 && t->dtype != ZCI_INT32)
        return zci_error(ZCI_INVALID_MODEL, "input %d ('%s') must be int64 or int32, found %s", input, t->name,
                         zci_dtype_name(t->dtype));
    int64_t cnt = zci_tensor_numel(t);
    int64_t *v = zci_malloc((size_t)(cnt ? cnt : 1) * sizeof *v, "constant ints");
    if (!v) return ZCI_OUT_OF_MEMORY;
    for (int64_t i = 0; i < cnt; i++)
        v[i] = t->dtype == ZCI_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    *values = v;
    *count = cnt;
    return ZCI_OK;
}

zci_status zci_norm_axis(int64_t axis, int rank, int *out)
{
    if (axis < -rank || axis >= (rank ? rank : 1))
        return zci_error(ZCI_INVALID_MODEL, "axis %lld is out of range for rank %d", (long long)axis, rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return ZCI_OK;
}

void zci_copy_dims_simplify(int *nd, int64_t *dims, int64_t *stride)
{
    int n = 0;
    for (int i = 0; i < *nd; i++) {
        if (dims[i] == 1) continue;
        dims[n] = dims[i];
        stride[n] = stride[i];
        n++;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && stride[m - 1] == stride[i] * dims[i]) {
            dims[m - 1] *= dims[i];
            stride[m - 1] = stride[i];
            continue;
        }
        dims[m] = dims[i];
        stride[m] = stride[i];
        m++;
    }
    *nd = m;
}

zci_status zci_kernel_run_once(const zci_graph *g, const zci_node *n, void *const *data, int nthreads, void *state)
{
    size_t bytes = n->op->cpu_workspace ? n->op->cpu_workspace(state) : 0;
    void *ws = bytes ? aligned_alloc(64, zci_align(bytes, 64)) : NULL;
    if (bytes && !ws) return zci_error(ZCI_OUT_OF_MEMORY, "cannot allocate a %zu-byte kernel workspace", bytes);
    zci_kernel_ctx k = {.g = g, .n = n, .data = data, .nthreads = nthreads, .state = state, .workspace = ws};
    zci_status st = n->op->cpu(&k);
    free(ws);
    return st;
}
