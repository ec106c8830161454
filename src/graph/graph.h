/* graph.h: zcinfer's model IR. Tensors and nodes live in arrays and refer to each other by
 * index (never by pointer: the arrays grow while a model is loaded and rewritten). */
#ifndef ZCI_GRAPH_H
#define ZCI_GRAPH_H

#include "core/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ONNX AttributeProto.AttributeType values. */
typedef enum zci_attr_type {
    ZCI_ATTR_UNDEFINED = 0,
    ZCI_ATTR_FLOAT = 1,
    ZCI_ATTR_INT = 2,
    ZCI_ATTR_STRING = 3,
    ZCI_ATTR_TENSOR = 4,
    ZCI_ATTR_GRAPH = 5,
    ZCI_ATTR_FLOATS = 6,
    ZCI_ATTR_INTS = 7,
    ZCI_ATTR_STRINGS = 8,
    ZCI_ATTR_TENSORS = 9,
    ZCI_ATTR_GRAPHS = 10,
    ZCI_ATTR_SPARSE_TENSOR = 11,
    ZCI_ATTR_SPARSE_TENSORS = 12,
    ZCI_ATTR_TYPE_PROTO = 13,
    ZCI_ATTR_TYPE_PROTOS = 14,
} zci_attr_type;

/* A constant tensor value outside the graph's tensor table (a Constant node's `value`). */
typedef struct zci_value {
    zci_dtype dtype;
    int ndim;
    int64_t dims[ZCI_MAX_DIMS];
    void *data; /* owned; numel * dtype size bytes */
} zci_value;

typedef struct zci_attr {
    char *name;
    zci_attr_type type;
    float f;
    int64_t i;
    char *s;          /* STRING: NUL-terminated copy */
    int n;            /* element count of floats / ints / strings */
    float *floats;
    int64_t *ints;
    char **strings;
    zci_value *t;     /* TENSOR */
} zci_attr;

typedef enum zci_tensor_kind {
    ZCI_TENSOR_ACTIVATION = 0, /* produced by a node at run time */
    ZCI_TENSOR_INPUT = 1,      /* a graph input bound by the caller */
    ZCI_TENSOR_CONSTANT = 2,   /* an initializer or a value folded at planning */
} zci_tensor_kind;

typedef struct zci_tensor {
    char *name;
    zci_tensor_kind kind;
    bool is_output;  /* a graph output (also possible for an input or a constant) */
    bool has_shape;  /* dtype and dims are known (set by the loader or shape inference) */
    zci_dtype dtype;
    int ndim;
    int64_t dims[ZCI_MAX_DIMS];
    void *data;      /* CONSTANT: host data, owned by the graph (malloc'd). Otherwise NULL. */
    int producer;    /* node index, -1 for inputs and constants */
    int n_consumers; /* live nodes reading it (set by zci_graph_update_uses) */
    int last_use;    /* position in the execution order of its last reader, -1 if none */
} zci_tensor;

struct zci_op;

typedef struct zci_node {
    char *name;
    char *op_type;
    char *domain;    /* "" for the default ONNX domain */
    int opset;       /* opset version of the node's domain in the model */
    int n_in, n_out;
    int *in;         /* tensor indices; -1 for an omitted optional input */
    int *out;        /* tensor indices; -1 for an omitted optional output */
    int n_attrs;
    zci_attr *attrs;
    const struct zci_op *op; /* resolved at planning */
    void *params;    /* op-specific, parsed by the op's infer; freed with free() unless the op
                        gives free_params */
    bool dead;       /* removed by a pass; skipped everywhere */
} zci_node;

typedef struct zci_graph {
    zci_tensor *tensors;
    int n_tensors, cap_tensors;
    zci_node *nodes;
    int n_nodes, cap_nodes;
    int *inputs;     /* graph inputs that are not initializers, in model order */
    int n_inputs, cap_inputs;
    int *outputs;
    int n_outputs, cap_outputs;
    int *order;      /* execution order: indices of live nodes (zci_graph_toposort) */
    int n_order;
    int opset;       /* opset of the default domain */
    char *source;    /* model path (or "<memory>") for error messages */
    int64_t batch;   /* value given to a symbolic leading dimension */
    int verbose;
    /* name -> tensor index, open addressing */
    int *hash;
    int hash_cap;
} zci_graph;

zci_graph *zci_graph_new(void);
void zci_graph_free(zci_graph *g);

/* Index of the tensor called `name`, or -1. */
int zci_graph_find(const zci_graph *g, const char *name);

/* Adds a tensor (name must be new; NULL or "" gives a generated unique name). Returns its
 * index, or -1 with ZCI_OUT_OF_MEMORY / ZCI_INVALID_MODEL (duplicate name) in the last error. */
int zci_graph_add_tensor(zci_graph *g, const char *name, zci_tensor_kind kind);

/* Adds a node; copies name/op_type/domain and the index arrays. Returns its index or -1. */
int zci_graph_add_node(zci_graph *g, const char *name, const char *op_type, const char *domain,
                       const int *in, int n_in, const int *out, int n_out);

/* Sets a tensor's dtype and shape. */
void zci_tensor_set_shape(zci_tensor *t, zci_dtype dtype, const int64_t *dims, int ndim);

/* Element count and byte size of a tensor with a known shape. */
int64_t zci_tensor_numel(const zci_tensor *t);
size_t zci_tensor_bytes(const zci_tensor *t);

/* Turns tensor `t` into a constant owning `data` (malloc'd, taken over). */
void zci_tensor_make_const(zci_tensor *t, void *data);

/* Attribute lookup on a node; NULL if absent. */
const zci_attr *zci_attr_find(const zci_node *n, const char *name);
/* Readers that take the default when the attribute is absent; a present attribute of the wrong
 * type is an error reported through *st (set to ZCI_INVALID_MODEL) and the default returned. */
int64_t zci_attr_int(const zci_node *n, const char *name, int64_t def, zci_status *st);
float zci_attr_float(const zci_node *n, const char *name, float def, zci_status *st);
const char *zci_attr_string(const zci_node *n, const char *name, const char *def, zci_status *st);
/* INTS attribute: *count elements at the returned pointer (owned by the node); NULL and 0 when
 * absent. */
const int64_t *zci_attr_ints(const zci_node *n, const char *name, int *count, zci_status *st);
const float *zci_attr_floats(const zci_node *n, const char *name, int *count, zci_status *st);

/* Set node n's attribute `name` (replacing a value of any type, or appending it); arrays are
 * copied. ZCI_OUT_OF_MEMORY on failure. Used by passes that record what they fused. */
zci_status zci_node_set_int(zci_node *n, const char *name, int64_t v);
zci_status zci_node_set_float(zci_node *n, const char *name, float v);
zci_status zci_node_set_ints(zci_node *n, const char *name, const int64_t *v, int count);
zci_status zci_node_set_floats(zci_node *n, const char *name, const float *v, int count);

void zci_attr_clear(zci_attr *a);
void zci_value_free(zci_value *v);

/* Orders live nodes so that each runs after the producers of its inputs (Kahn's algorithm);
 * fills g->order. ZCI_INVALID_MODEL naming a node on a cycle, or a node input that nothing
 * produces (not an input, initializer or node output). */
zci_status zci_graph_toposort(zci_graph *g);

/* Recounts consumers and last uses over live nodes in g->order. */
void zci_graph_update_uses(zci_graph *g);

/* Names a node for messages: "node '/model.0/conv/Conv' (Conv, opset 17)". Uses a small
 * rotating static buffer per thread: valid until a few more calls. */
const char *zci_node_desc(const zci_graph *g, const zci_node *n);
/* FLOPs of node n as planned: 2 per multiply-add of a Conv, MatMul or Gemm; 0 for other ops. */
double zci_node_flops(const zci_graph *g, const zci_node *n);

/* Plans the graph for execution, independent of the device:
 * resolves ops (ZCI_UNSUPPORTED naming node, op and opset), sorts, infers shapes, folds
 * constant subgraphs (shape computations included) and removes dead nodes.
 * Each step's failure is reported with the node it concerns. */
zci_status zci_graph_plan(zci_graph *g);

/* Folds activations and residual Adds that follow a Conv into it (graph/fuse.c); part of
 * zci_graph_plan. Leaves g->order current. */
zci_status zci_graph_fuse(zci_graph *g);

/* ---- memory planning (graph/memplan.c) ---- */

/* Assigns offsets in one arena to tensors, in execution order, reusing memory after a tensor's
 * last use (best fit). size[t] is the bytes tensor t needs (0 = not planned: constants, inputs,
 * outputs, and tensors that share another's storage); alias[t] >= 0 means t lives inside the
 * storage of tensor alias[t], alias_offset[t] bytes from its start (alias_offset NULL = all 0:
 * views). A root's block is taken at the first write to it or to any tensor living in it and
 * returned after the last reader of any of them. offset[t] receives each offset (aliases
 * included); *arena_size the total. `align` is a power of two. */
zci_status zci_memplan(const zci_graph *g, const size_t *size, const int *alias, const size_t *alias_offset,
                       size_t align, size_t *offset, size_t *arena_size);
/* The same for nodes that may run concurrently with others (the CUDA backend's second stream):
 * the node at position p may be executing at any time between positions lo[p] and hi[p] of the
 * order (lo[p] <= p <= hi[p]), so everything it reads or writes stays allocated over that span.
 * lo, hi NULL: each node at its own position (zci_memplan). */
zci_status zci_memplan_spans(const zci_graph *g, const size_t *size, const int *alias, const size_t *alias_offset,
                             const int *lo, const int *hi, size_t align, size_t *offset, size_t *arena_size);

#ifdef __cplusplus
}
#endif

#endif
