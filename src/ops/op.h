/* op.h: what an operator is. One file per operator family in src/ops/ defines its ops:
 * attribute parsing and shape inference (shared by every backend) and the CPU kernel.
 * Adding an op = one row in ops/registry.c plus its definition. */
#ifndef ZCI_OP_H
#define ZCI_OP_H

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a CPU kernel sees. data[t] is the buffer of tensor t (inputs, constants, activations,
 * outputs alike), valid for the duration of the call. */
typedef struct zci_kernel_ctx {
    const zci_graph *g;
    const zci_node *n;
    void *const *data;
    int nthreads;  /* threads the kernel may use (OpenMP) */
    void *state;   /* from the op's cpu_prepare, else NULL */
    void *workspace; /* scratch shared by all nodes of a session: at least the op's
                        cpu_workspace(state) bytes, 64-byte aligned, contents undefined; NULL
                        when the op asks for none */
} zci_kernel_ctx;

typedef struct zci_op {
    const char *type;  /* ONNX op_type */
    const char *domain; /* "" for ai.onnx */
    int since;         /* oldest opset version supported */
    /* Checks the node (input count, dtypes, attributes), parses n->params, and sets dtype and
     * shape of every output. Input shapes are known when it is called; a constant input's data
     * is in g->tensors[i].data. It may also make an output constant (Shape does). Errors are
     * reported with zci_error; the caller adds the node's name. */
    zci_status (*infer)(zci_graph *g, zci_node *n);
    /* Runs on the CPU. */
    zci_status (*cpu)(const zci_kernel_ctx *k);
    /* Optional: prepares per-node CPU state once at planning (weights reordered, primitives
     * built); freed by cpu_release. NULL = none. */
    zci_status (*cpu_prepare)(const zci_graph *g, const zci_node *n, int nthreads, void **state);
    void (*cpu_release)(void *state);
    /* Optional: frees n->params when they hold pointers. NULL = free(). */
    void (*free_params)(void *params);
    /* 1 if output 0 is input 0's bytes reinterpreted (Reshape, Flatten, Squeeze, Unsqueeze,
     * Identity): the executor aliases instead of copying. */
    int is_view;
    /* Optional: bytes of run-time scratch the kernel needs, given its prepared state. The
     * backend allocates the largest over all nodes once and hands it to every kernel as
     * k->workspace: nodes run one after another, so one buffer serves all. NULL = none. */
    size_t (*cpu_workspace)(const void *state);
} zci_op;

/* Runs node n's CPU kernel once with a workspace of its own (allocated for this call when the op
 * asks for one): for constant folding and tests, where no session-wide workspace exists. */
zci_status zci_kernel_run_once(const zci_graph *g, const zci_node *n, void *const *data, int nthreads, void *state);

/* The op for (domain, op_type, opset), or NULL. */
const zci_op *zci_op_find(const char *domain, const char *type, int opset);
/* 1 if the registry knows op_type in any opset (for messages). */
int zci_op_known(const char *domain, const char *type);

/* Shorthands for kernels and infer functions. */
#define ZCI_IN(g, n, i) (&(g)->tensors[(n)->in[i]])
#define ZCI_OUT(g, n, i) (&(g)->tensors[(n)->out[i]])
#define ZCI_HAS_IN(n, i) ((i) < (n)->n_in && (n)->in[i] >= 0)
#define ZCI_KIN(k, i) ZCI_IN((k)->g, (k)->n, i)
#define ZCI_KOUT(k, i) ZCI_OUT((k)->g, (k)->n, i)
#define ZCI_KIN_DATA(k, i) ((k)->data[(k)->n->in[i]])
#define ZCI_KOUT_DATA(k, i) ((k)->data[(k)->n->out[i]])

/* Checks n_in within [min, max] and n_out within [1, max_out]. */
zci_status zci_check_arity(const zci_node *n, int min_in, int max_in, int max_out);

/* Multidirectional (numpy) broadcasting of two shapes into out; ZCI_INVALID_MODEL when they
 * do not broadcast (message with both shapes). */
zci_status zci_broadcast_shape(const int64_t *a, int na, const int64_t *b, int nb, int64_t *out,
                               int *nout);

/* Reads a constant int64 or int32 input as int64 values into a malloc'd array. *count gets
 * the element count. ZCI_UNSUPPORTED if the input is not constant at planning (its message
 * says zcinfer needs it constant), ZCI_INVALID_MODEL for a bad dtype. */
zci_status zci_const_ints(const zci_graph *g, const zci_node *n, int input, int64_t **values,
                          int64_t *count);

/* Normalises a possibly negative axis against rank; ZCI_INVALID_MODEL when out of range. */
zci_status zci_norm_axis(int64_t axis, int rank, int *out);

/* A strided copy's plan made minimal: drops size-1 dims and merges neighbours whose input
 * strides are contiguous too (dims[i], stride[i] for i < *nd, outermost first), so that e.g.
 * 1x3x85x80x80 -> 1x3x80x80x85 becomes 3 transposes of 85x6400. The CPU copy kernels and the
 * CUDA gathers share it. */
void zci_copy_dims_simplify(int *nd, int64_t *dims, int64_t *stride);

/* 1 if Slice node n (planned) takes, with step 1, a range of its input's last axis and all of
 * every other axis; *lo is the range's first index (the output's last dim gives its length). */
int zci_slice_last_axis(const zci_graph *g, const zci_node *n, int64_t *lo);

#ifdef __cplusplus
}
#endif

#endif
