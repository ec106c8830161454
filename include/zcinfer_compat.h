/*
 * zcinfer_compat.h: the C API of the TensorRT wrapper that zcinfer replaces, function for
 * function, so that its users switch by relinking. A thin layer over zcinfer.h, exported from
 * the same library (libzcinfer).
 *
 * The declarations are the wrapper's own. Their behaviour is the wrapper's, with its defects
 * fixed:
 *   - Sizes are element counts of float (not bytes), as there, and are checked against the
 *     model: a wrong size is refused (nothing is read or written), never trusted.
 *   - Every failure is readable: zci_compat_last_status() gives the status of the calling
 *     thread's last call of this header's functions (ZCI_OK = 0 when it succeeded) and
 *     zci_last_error() the message of the last failure. Nothing is printed.
 *   - A NULL session (as a failed create_session returns) is harmless everywhere: the call
 *     fails with ZCI_INVALID_ARGUMENT. A destroyed session must not be used again.
 *   - run_inference_device writes the caller's d_output (the wrapper wrote its own buffer).
 *   - create_session (and infer) accept an ONNX model as well as an engine file, recognised by
 *     content. An ONNX model is planned there and then: on the GPU in FP16, as the wrapper's
 *     engines were, or, when there is no usable GPU (or the library was built without CUDA),
 *     on the CPU in FP32. An engine file runs where it was planned for (build_engine).
 * The model must have one float input and one float output (the wrapper's assumption); other
 * models are refused with a message naming their inputs and outputs: use zcinfer.h.
 * Threading: as zcinfer.h: one session is used by one thread at a time; different sessions
 * may be used concurrently.
 */
#ifndef ZCINFER_COMPAT_H
#define ZCINFER_COMPAT_H

#include "zcinfer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Plans the ONNX model at onnx_path and writes an engine file to engine_path (zci_build_engine):
 * for CUDA in FP16 when a usable GPU is present, else for the CPU in FP32. Batch 1. */
ZCI_API void build_engine(const char* onnx_path, const char* engine_path);

/* Creates a session from engine_path (an engine file or an ONNX model), runs it once on
 * input_data (input_size floats) into output_data (output_size floats) and destroys it. */
ZCI_API void infer(const char* engine_path, const float* input_data, float* output_data, int input_size, int output_size);

/* A session: a zci_session * (see zcinfer.h), NULL when creation failed. */
typedef void* InferenceSession;

/* A session for engine_path (an engine file or an ONNX model, see above); NULL on failure. */
ZCI_API InferenceSession create_session(const char* engine_path);

/* Runs the session on host memory: input_size floats at input_data in, output_size floats
 * written to output_data. Returns when the output is there. */
ZCI_API void run_inference(InferenceSession session, const float* input_data, float* output_data, int input_size, int output_size);

/* Frees the session and everything it allocated, host and device. NULL is a no-op. */
ZCI_API void destroy_session(InferenceSession session);

/* Runs the session on CUDA device memory: input_size floats at d_input in, output_size floats
 * written to d_output, on CUDA's legacy default stream (so it is ordered with the caller's
 * cudaMemcpy/cudaMemset/kernels on the default stream); returns when the output is written. The
 * session's own buffers (get_device_buffers) may be passed. A CPU session refuses
 * (ZCI_UNSUPPORTED), as do host pointers (ZCI_INVALID_ARGUMENT). */
ZCI_API void run_inference_device(InferenceSession session, const float* d_input, float* d_output, int input_size, int output_size);

/* The session's own device buffers and their sizes in floats. */
typedef struct {
    void* d_input;
    void* d_output;
    int input_size;
    int output_size;
} DeviceBuffers;

/* The session's own device input and output buffers (valid as long as the session), in a
 * struct the caller frees with free_device_buffers. NULL on failure: on a CPU session
 * (ZCI_UNSUPPORTED, "no device buffers"), a NULL session, or out of memory. */
ZCI_API DeviceBuffers* get_device_buffers(InferenceSession session);

/* Frees the struct get_device_buffers returned; the buffers belong to the session and stay.
 * NULL is a no-op. */
ZCI_API void free_device_buffers(DeviceBuffers* buffers);

/* Copies the session's own output buffer (output_size floats) to output_cpu. It holds the
 * output of a run_inference_device call that was given that buffer as d_output. */
ZCI_API void copy_output_to_cpu(InferenceSession session, float* output_cpu, int output_size);

/* Copies input_size floats from input_cpu into the session's own input buffer. */
ZCI_API void copy_input_to_gpu(InferenceSession session, const float* input_cpu, int input_size);

/* The status of the calling thread's last call of a function of this header: ZCI_OK (0) when
 * it succeeded, else the zci_status that zcinfer.h documents, with zci_last_error() saying
 * what failed. ZCI_OK before any call. Per thread; thread-safe. */
ZCI_API int zci_compat_last_status(void);

#ifdef __cplusplus
}
#endif

#endif /* ZCINFER_COMPAT_H */
