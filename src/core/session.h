/* session.h: the session object and the backend interface behind the public API. */
#ifndef ZCI_SESSION_H
#define ZCI_SESSION_H

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the buffers handed to a backend's run live. */
typedef enum zci_mem_kind {
    ZCI_MEM_HOST = 0,   /* host memory (the regular API) */
    ZCI_MEM_DEVICE = 1, /* CUDA device memory (the zero-copy API) */
    ZCI_MEM_OWN = 2,    /* the session's own device buffers (no pointers given) */
} zci_mem_kind;

typedef struct zci_run_args {
    zci_mem_kind mem;
    void *const *inputs;  /* per model input, in input order (NULL for ZCI_MEM_OWN) */
    void *const *outputs; /* per model output, in output order (NULL for ZCI_MEM_OWN) */
    void *stream;         /* CUDA stream, NULL = the session's default */
    int wait;             /* 1 = return when the results are in place */
} zci_run_args;

typedef struct zci_session zci_session;

/* A backend: a table of functions (ggml-style) plus its context in session->be_ctx. */
typedef struct zci_backend_iface {
    const char *name;
    /* Plans the (device-independent, already planned) graph for the device: kernels, weights,
     * memory arena, algorithms. Sets session->be_ctx. On failure releases what it took. */
    zci_status (*prepare)(zci_session *s);
    /* Runs once; byte sizes were already checked by the caller. */
    zci_status (*run)(zci_session *s, const zci_run_args *args);
    /* Optional (NULL = ZCI_UNSUPPORTED): the session's own device buffer of an input
     * (is_output = 0) or output. */
    zci_status (*own_buffer)(zci_session *s, int is_output, int index, void **ptr);
    /* Optional (NULL = nothing to wait for): waits for `stream`. */
    zci_status (*synchronize)(zci_session *s, void *stream);
    /* Frees everything in be_ctx. Accepts a session whose prepare failed or never ran. */
    void (*release)(zci_session *s);
} zci_backend_iface;

struct zci_session {
    zci_options opts;
    zci_graph *g;
    const zci_backend_iface *be;
    void *be_ctx;
    int n_in, n_out;
    zci_tensor_info *in_info, *out_info; /* names point into g's tensors */
    zci_summary summary;                  /* op_types / op_counts below; activation_bytes set by
                                             the backend's prepare */
    char **op_types;
    int *op_counts;
};

extern const zci_backend_iface zci_cpu_backend;

/* Creates a session from a loaded graph, which it takes over (freed on failure too): plans it
 * and prepares the backend. zci_session_create and the test runners use it. */
zci_status zci_session_create_from_graph(zci_graph *g, const zci_options *opts, zci_session **out);
/* Returns the CUDA backend, or NULL when the library was built without CUDA. */
const zci_backend_iface *zci_cuda_backend(void);

#ifdef __cplusplus
}
#endif

#endif
