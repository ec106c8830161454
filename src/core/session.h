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

/* The device a session was planned for, as engine files record it (backend describe_device).
 * Zero and "" where a backend has nothing to say. */
typedef struct zci_device_desc {
    int compute_capability; /* major * 10 + minor: 90 for an H100 (sm_90) */
    int cuda_version;       /* CUDA runtime the backend was built with (CUDART_VERSION: 12040) */
    int cudnn_version;      /* cuDNN it runs with (CUDNN_VERSION: 90100) */
    char name[96];          /* the GPU's name (cudaDeviceProp.name) */
} zci_device_desc;

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
    /* Optional (NULL = nothing to record): describes the device `opts` select (device_id) for
     * engine files. Written when one is saved; compared when one is loaded, which is refused
     * when the compute capability, CUDA or cuDNN version differs. ZCI_NO_DEVICE when there is
     * no such device. */
    zci_status (*describe_device)(const zci_options *opts, zci_device_desc *desc);
    /* Optional (NULL = nothing to save): after prepare, hands back the backend state worth
     * keeping in an engine file, such as the algorithms tuning chose, as a malloc'd buffer in
     * *data (the caller frees it) of *size bytes; *data = NULL when there is none. The engine
     * writer saves s->g as prepare left it, so a backend keeps the graph's constants (their
     * host data, dtype FP32) in place and puts converted weights, if it wants them saved, in
     * the blob. */
    zci_status (*export_blob)(zci_session *s, void **data, size_t *size);
    /* Optional (NULL = a saved blob is ignored and prepare runs): prepare for a session loaded
     * from an engine file holding a blob from export_blob (`size` bytes at `blob`, valid during
     * the call only): uses the saved state instead of tuning. A blob it cannot use is refused
     * with ZCI_INVALID_MODEL and a message. Same contract as prepare otherwise. */
    zci_status (*prepare_with_blob)(zci_session *s, const void *blob, size_t size);
    /* Optional (NULL = ZCI_UNSUPPORTED: no device buffers): copies `bytes` bytes of host
     * memory at `host` into the session's own device buffer of input `index` (is_output = 0),
     * or its own buffer of output `index` into `host`, queued on `stream` (NULL = the
     * session's), and returns when the copy is done. Index and size were checked by the
     * caller. */
    zci_status (*copy_own_buffer)(zci_session *s, int is_output, int index, void *host, size_t bytes, void *stream);
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
