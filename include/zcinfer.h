/*
 * zcinfer.h: the public API of zcinfer, a GPU inference runtime for ONNX models.
 *
 * This header is the contract: anything not declared here is not API.
 *
 * Conventions
 *   - Every function that can fail returns a zci_status. ZCI_OK is 0.
 *     On failure, zci_last_error() returns a message for the calling thread that says what
 *     failed and where (file, node, op type and opset, tensor, expected and found values).
 *   - Constructors hand their object back through an out-parameter and set it to NULL on
 *     failure. Destructors accept NULL.
 *   - Strings returned by the library are owned by it; their lifetime is stated per function.
 *   - Threading: a session may be used by one thread at a time (calls on one session must be
 *     serialised by the caller). Different sessions may be used concurrently from different
 *     threads. Functions that take no session are thread-safe.
 *   - CUDA types never appear here: a CUDA stream is passed as `void *` (a cudaStream_t),
 *     device memory as `void *`. NULL as a stream means the session's own stream.
 */
#ifndef ZCINFER_H
#define ZCINFER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(ZCI_BUILD_SHARED)
#define ZCI_API __declspec(dllexport)
#elif defined(__GNUC__)
#define ZCI_API __attribute__((visibility("default")))
#else
#define ZCI_API
#endif

/* ---------------------------------------------------------------- version */

#define ZCI_VERSION_MAJOR 0
#define ZCI_VERSION_MINOR 1
#define ZCI_VERSION_PATCH 0
#define ZCI_VERSION_STRING "0.1.0"
/* One integer, comparable: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define ZCI_VERSION_NUMBER (ZCI_VERSION_MAJOR * 10000 + ZCI_VERSION_MINOR * 100 + ZCI_VERSION_PATCH)

/* The library's version as "MAJOR.MINOR.PATCH". Compare with ZCI_VERSION_STRING to check
 * that header and library match. Static storage; thread-safe. */
ZCI_API const char *zci_version(void);

/* The library's version as ZCI_VERSION_NUMBER computes it. Thread-safe. */
ZCI_API int zci_version_number(void);

/* ---------------------------------------------------------------- status */

/* X(name, value, text): the one table of status codes. */
#define ZCI_STATUS_MAP(X)                                                                          \
    X(OK, 0, "success")                                                                            \
    X(INVALID_ARGUMENT, 1, "invalid argument")       /* NULL pointer, wrong size, bad index */     \
    X(IO, 2, "I/O error")                            /* file missing or unreadable */              \
    X(INVALID_MODEL, 3, "invalid model")             /* corrupt, truncated or inconsistent model */ \
    X(UNSUPPORTED, 4, "unsupported")                 /* op, opset, dtype or feature not supported */ \
    X(OUT_OF_MEMORY, 5, "out of memory")             /* host or device allocation failed */        \
    X(NO_DEVICE, 6, "no device")                     /* no usable GPU, driver, cuDNN or cuBLAS */  \
    X(DEVICE_ERROR, 7, "device error")               /* a CUDA, cuDNN or cuBLAS call failed */     \
    X(INTERNAL, 8, "internal error")                 /* a bug in zcinfer: please report it */

typedef enum zci_status {
#define ZCI_STATUS_ENUM_(name, value, text) ZCI_##name = value,
    ZCI_STATUS_MAP(ZCI_STATUS_ENUM_)
#undef ZCI_STATUS_ENUM_
} zci_status;

/* The code's name, e.g. "ZCI_INVALID_ARGUMENT"; "ZCI_UNKNOWN" for a value not in the table.
 * Static storage; thread-safe. */
ZCI_API const char *zci_status_name(zci_status status);

/* A short description of the code, e.g. "invalid argument". Static storage; thread-safe. */
ZCI_API const char *zci_status_string(zci_status status);

/* The detailed message of the last failure in the calling thread, or "" if the thread has
 * seen none. Valid until the next zcinfer call from the same thread. Successful calls do not
 * clear it. Thread-safe (the message is per thread). */
ZCI_API const char *zci_last_error(void);

/* ---------------------------------------------------------------- types */

/* Element types; the values are ONNX's TensorProto.DataType values. */
typedef enum zci_dtype {
    ZCI_DTYPE_UNDEFINED = 0,
    ZCI_FLOAT32 = 1,
    ZCI_UINT8 = 2,
    ZCI_INT8 = 3,
    ZCI_UINT16 = 4,
    ZCI_INT16 = 5,
    ZCI_INT32 = 6,
    ZCI_INT64 = 7,
    ZCI_STRING = 8, /* not supported as a tensor type */
    ZCI_BOOL = 9,   /* one byte per element, 0 or 1 */
    ZCI_FLOAT16 = 10,
    ZCI_FLOAT64 = 11,
    ZCI_UINT32 = 12,
    ZCI_UINT64 = 13,
} zci_dtype;

/* Bytes per element of `dtype`; 0 for ZCI_DTYPE_UNDEFINED, ZCI_STRING or an unknown value.
 * Thread-safe. */
ZCI_API size_t zci_dtype_size(zci_dtype dtype);

/* The type's name as ONNX spells it ("float", "float16", "int64" …); "undefined" for an
 * unknown value. Static storage; thread-safe. */
ZCI_API const char *zci_dtype_name(zci_dtype dtype);

#define ZCI_MAX_DIMS 8

/* What a session says of one of its inputs or outputs. `name` belongs to the session and
 * lives as long as it. */
typedef struct zci_tensor_info {
    const char *name;
    zci_dtype dtype;
    int ndim;
    int64_t shape[ZCI_MAX_DIMS];
    size_t bytes; /* product of shape times zci_dtype_size(dtype) */
} zci_tensor_info;

/* ---------------------------------------------------------------- options */

typedef enum zci_device {
    ZCI_DEVICE_CPU = 0,
    ZCI_DEVICE_CUDA = 1,
} zci_device;

typedef enum zci_precision {
    ZCI_PRECISION_FP32 = 0, /* IEEE FP32 math; no TF32 unless allow_tf32 is set */
    ZCI_PRECISION_FP16 = 1, /* weights converted to FP16 at planning, FP16 tensor-core math */
} zci_precision;

/* Session options. Always start from zci_options_init(), then set the fields you need: new
 * fields may be added at the end in later versions, and init gives them their defaults. */
typedef struct zci_options {
    zci_device device;       /* default ZCI_DEVICE_CPU */
    int device_id;           /* CUDA device ordinal; default 0 */
    zci_precision precision; /* default ZCI_PRECISION_FP32 */
    int64_t batch;           /* value for a symbolic leading (batch) dimension; default 1 */
    int num_threads;         /* CPU threads; 0 (default) = one per available core */
    int allow_tf32;          /* CUDA FP32: allow TF32 tensor-core math; default 0 */
    int fp16_io;             /* CUDA FP16: float inputs/outputs are FP16 too; default 0 (FP32 I/O) */
    void *cuda_stream;       /* default stream for CUDA work (a cudaStream_t); NULL = the session
                                creates and owns one */
    int use_cuda_graph;      /* CUDA: capture a run once and replay it; default 1 */
    const char *model_dir;   /* base folder for external data when creating from memory; NULL =
                                the current directory (from a file: the file's folder is used) */
    int verbose;             /* 1 = progress and planning details on stderr; default 0 */
} zci_options;

/* Fills `opts` with the defaults listed above. Thread-safe. */
ZCI_API void zci_options_init(zci_options *opts);

/* ---------------------------------------------------------------- sessions */

typedef struct zci_session zci_session;

/* Loads an ONNX model or an engine file (zci_build_engine) from `path`, plans it for the device
 * in `opts` (NULL = defaults) and hands the ready session back in *out (NULL on failure). All
 * planning happens here: shapes, constant folding, fusion, memory, algorithm choice; a run
 * then only computes. External data files named by the model are read relative to the
 * model's folder.
 * Engine files are recognised by their content (their first bytes), whatever their name.
 * Loading one skips ONNX parsing and planning. The file fixes what was planned: device,
 * precision, batch, fp16_io and allow_tf32 are taken from it and those fields of `opts` are
 * ignored; the others (device_id, num_threads, cuda_stream, use_cuda_graph, verbose) apply.
 * Returns ZCI_IO (file unreadable), ZCI_INVALID_MODEL (also: a truncated, altered or
 * inconsistent engine file), ZCI_UNSUPPORTED (names the node, op and opset; or an engine file
 * planned for another device, GPU architecture, CUDA or cuDNN version, or zcinfer version: the
 * message says what differs and the `zcinfer build` command that makes a fitting one),
 * ZCI_OUT_OF_MEMORY, ZCI_NO_DEVICE, ZCI_DEVICE_ERROR or ZCI_INVALID_ARGUMENT.
 * Thread-safe (sessions are independent). */
ZCI_API zci_status zci_session_create(const char *path, const zci_options *opts, zci_session **out);

/* As zci_session_create, from `size` bytes of a serialized ONNX model or engine file at `data`.
 * The bytes are not referenced after the call returns. External data is read relative to
 * opts->model_dir. */
ZCI_API zci_status zci_session_create_from_memory(const void *data, size_t size,
                                                  const zci_options *opts, zci_session **out);

/* Frees everything the session allocated, host and device. NULL is a no-op. Waits for the
 * session's queued device work to finish first. */
ZCI_API void zci_session_destroy(zci_session *session);

/* Number of model inputs; 0 for a NULL session. */
ZCI_API int zci_session_input_count(const zci_session *session);
/* Number of model outputs; 0 for a NULL session. */
ZCI_API int zci_session_output_count(const zci_session *session);

/* Describes input (output) `index` in *info. The shape is the planned one: symbolic batch
 * dimensions are replaced by opts->batch. For a CUDA session with fp16_io, float tensors are
 * reported as ZCI_FLOAT16. Returns ZCI_INVALID_ARGUMENT for a NULL argument or a bad index. */
ZCI_API zci_status zci_session_input_info(const zci_session *session, int index, zci_tensor_info *info);
/* Describes output `index` in *info, as zci_session_input_info does for inputs. */
ZCI_API zci_status zci_session_output_info(const zci_session *session, int index, zci_tensor_info *info);

/* Index of the input called `name`, or -1 if there is none (or an argument is NULL). */
ZCI_API int zci_session_input_index(const zci_session *session, const char *name);
/* Index of the output called `name`, or -1 if there is none (or an argument is NULL). */
ZCI_API int zci_session_output_index(const zci_session *session, const char *name);

/* The device the session runs on. */
ZCI_API zci_device zci_session_device(const zci_session *session);

/* What a session knows of its model, for tools such as `zcinfer info`. */
typedef struct zci_summary {
    int64_t parameters;           /* elements in the model's initializers */
    double flops;                 /* floating-point operations of one run (2 per multiply-add of Conv,
                                     MatMul and Gemm; other ops are not counted) */
    int nodes_in_model;           /* nodes as loaded from the file */
    int nodes_planned;            /* nodes left to run after constant folding and fusion */
    int opset;                    /* opset of the default ONNX domain */
    int n_op_types;               /* entries in op_types / op_counts */
    const char *const *op_types;  /* op types of the loaded model, most frequent first */
    const int *op_counts;         /* how many nodes of each */
    size_t activation_bytes;      /* the session's planned activation arena, in bytes */
} zci_summary;

/* Fills *summary. Its pointers belong to the session and live as long as it.
 * Returns ZCI_INVALID_ARGUMENT for a NULL argument. */
ZCI_API zci_status zci_session_summary(const zci_session *session, zci_summary *summary);

/* ---------------------------------------------------------------- engine files */

/* Plans the ONNX model at `onnx_path` as zci_session_create does with `opts` (NULL = defaults:
 * CPU, FP32, batch 1) and writes the planned model to `engine_path`: an engine file, which
 * zci_session_create loads without parsing or planning (on CUDA also without algorithm
 * tuning). It holds the optimised graph with its weights, the shapes for opts->batch, what
 * the backend keeps of its planning, and a header naming the format version, the zcinfer
 * version, the device, precision and batch, and on CUDA the GPU (name, compute capability)
 * and the CUDA and cuDNN versions; a checksum covers every byte.
 * The file is complete or absent: it is written under a temporary name ("<engine_path>.partial")
 * and renamed into place.
 * Returns what zci_session_create returns for the model, ZCI_IO when engine_path cannot be
 * written, ZCI_INVALID_ARGUMENT for a NULL path. Thread-safe. */
ZCI_API zci_status zci_build_engine(const char *onnx_path, const char *engine_path, const zci_options *opts);

/* Writes `session`'s planned model to an engine file at `path`, as zci_build_engine does (a
 * session loaded from an engine file can be written again). Returns ZCI_INVALID_ARGUMENT for a
 * NULL argument, ZCI_IO when the file cannot be written, ZCI_OUT_OF_MEMORY. Uses the session:
 * not concurrently with other calls on it. */
ZCI_API zci_status zci_session_save_engine(zci_session *session, const char *path);

/* ---------------------------------------------------------------- running with host memory */

/* One buffer bound to a model input or output.
 * name: the tensor's name, or NULL to bind by position (the i-th binding to the i-th tensor).
 * data: host memory for zci_run; device memory for zci_run_device.
 * bytes: the buffer's size; must equal the tensor's byte size. */
typedef struct zci_binding {
    const char *name;
    void *data;
    size_t bytes;
} zci_binding;

/* Runs the model on host buffers: n_inputs must equal the input count and n_outputs the output
 * count; each tensor must be bound exactly once. Returns when the outputs are in the caller's
 * buffers. On a CUDA session the data crosses PCIe through pinned staging memory the session
 * owns (pinned caller buffers are used directly).
 * Returns ZCI_INVALID_ARGUMENT (NULL pointer, wrong count, unknown or repeated name, wrong byte
 * size: the message names the tensor, expected and given sizes) or a device error. */
ZCI_API zci_status zci_run(zci_session *session, const zci_binding *inputs, int n_inputs,
                           const zci_binding *outputs, int n_outputs);

/* The common case: a model with one float input and one float output, host buffers, sizes in
 * floats (elements), as the TensorRT wrapper zcinfer replaces took them. */
ZCI_API zci_status zci_run_simple(zci_session *session, const float *input, size_t input_count,
                                  float *output, size_t output_count);

/* ---------------------------------------------------------------- zero-copy (CUDA sessions) */

/* Runs the model on device buffers (CUDA device pointers) and queues all work on `stream`
 * (a cudaStream_t; NULL = opts->cuda_stream, else the session's own). Work queued on that
 * stream before the call is seen by the inference; work queued after sees its results.
 * Host memory is never touched and the device is never synchronised as a whole.
 * zci_run_device_async returns once the work is queued; zci_run_device also waits for
 * `stream` (that stream only). Host pointers are refused with ZCI_INVALID_ARGUMENT.
 * On a CPU session both return ZCI_UNSUPPORTED. */
ZCI_API zci_status zci_run_device(zci_session *session, const zci_binding *inputs, int n_inputs,
                                  const zci_binding *outputs, int n_outputs, void *stream);
/* As zci_run_device, but returns as soon as the work is queued on the stream (see above). */
ZCI_API zci_status zci_run_device_async(zci_session *session, const zci_binding *inputs, int n_inputs,
                                        const zci_binding *outputs, int n_outputs, void *stream);

/* The session's own device buffer for input `index`: a CUDA device pointer valid for
 * the session's life, holding `info` (zci_session_input_info) worth of bytes. A caller's
 * kernel may write the input buffer and read the output buffer in place around
 * zci_run_own_buffers. ZCI_UNSUPPORTED on a CPU session. */
ZCI_API zci_status zci_session_input_device_buffer(zci_session *session, int index, void **device_ptr);
/* The session's own device buffer for output `index`, as zci_session_input_device_buffer
 * describes; read it after the run's work on the stream is done. */
ZCI_API zci_status zci_session_output_device_buffer(zci_session *session, int index, void **device_ptr);

/* Runs the model from the session's own input buffers into its own output buffers, on
 * `stream` (as zci_run_device_async: returns once queued). ZCI_UNSUPPORTED on a CPU session. */
ZCI_API zci_status zci_run_own_buffers(zci_session *session, void *stream);

/* Copies `bytes` bytes of host memory at `src` into the session's own device buffer of input
 * `index` (zci_session_input_device_buffer), queued on `stream` (NULL = the session's default
 * stream), and returns when the copy is done. `bytes` must equal the input's byte size
 * (ZCI_INVALID_ARGUMENT otherwise, naming both). ZCI_UNSUPPORTED on a CPU session. */
ZCI_API zci_status zci_session_write_input_buffer(zci_session *session, int index, const void *src, size_t bytes,
                                                  void *stream);

/* Copies the session's own device buffer of output `index` into `bytes` bytes of host memory at
 * `dst`, as zci_session_write_input_buffer does the other way. The buffer holds the outputs of
 * zci_run_own_buffers and of zci_run_device calls that were given it as their output. */
ZCI_API zci_status zci_session_read_output_buffer(zci_session *session, int index, void *dst, size_t bytes,
                                                  void *stream);

/* Waits until the work queued on `stream` (NULL = the session's default stream) is done. */
ZCI_API zci_status zci_session_synchronize(zci_session *session, void *stream);

/* ---------------------------------------------------------------- devices */

/* Number of usable CUDA devices in *count (0 when the library was built without CUDA, or no
 * driver or GPU is present: that is not an error). Thread-safe. */
ZCI_API zci_status zci_cuda_device_count(int *count);

#ifdef __cplusplus
}
#endif

#endif /* ZCINFER_H */
