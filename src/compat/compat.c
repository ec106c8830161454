/* compat.c: the TensorRT wrapper's C API (zcinfer_compat.h) over the public API. Every
 * function records its status for zci_compat_last_status(), since they return nothing. The
 * only thing taken from below the public API is core/common.h's zci_error: the checks made
 * here (a NULL session, a model of the wrong form) need to set the last-error message that
 * zci_last_error() reads, and the public API has no call for that. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/common.h"
#include "zcinfer_compat.h"

/* The one piece of state the header documents: per thread, so threads do not see each
 * other's outcomes. */
static _Thread_local int last_status;

int zci_compat_last_status(void) { return last_status; }

static void record(zci_status st) { last_status = (int)st; }

/* CUDA's legacy default stream (cudaStreamLegacy), named without CUDA's headers. The wrapper's
 * callers fill d_input and clear d_output with plain cudaMemcpy/cudaMemset/kernel launches on
 * the default stream and take no stream of ours, so device runs are queued on that stream: they
 * start after the caller's earlier work and finish before the caller's later work. (On the
 * session's own non-blocking stream a cudaMemset(d_output) queued just before the call could
 * land after the run's output: seen on the H100 as a partly zeroed output.) */
#define LEGACY_STREAM ((void *)0x1)

/* A failed call of the public API, with the compat function's name put in front of its
 * message. */
static zci_status in_fn(const char *fn, zci_status st) { return st == ZCI_OK ? st : zci_error_prefix(st, "%s", fn); }

/* The wrapper's default plan for an ONNX model: CUDA FP16 when a GPU is there, else CPU FP32.
 * For an engine file these fields are ignored (the file fixes them). */
static void wrapper_options(zci_options *o)
{
    zci_options_init(o);
    int gpus = 0;
    if (zci_cuda_device_count(&gpus) == ZCI_OK && gpus > 0) {
        o->device = ZCI_DEVICE_CUDA;
        o->precision = ZCI_PRECISION_FP16;
    }
}

enum { CHECK_INPUT = 1, CHECK_OUTPUT = 2 };

/* Refuses a float count other than the tensor's, in floats as the caller gave it. */
static zci_status check_count(const char *fn, const char *what, const zci_tensor_info *t, int count)
{
    if (count >= 0 && (size_t)count * sizeof(float) == t->bytes) return ZCI_OK;
    char shape[128] = "";
    for (int d = 0, pos = 0; d < t->ndim && pos < (int)sizeof shape - 24; d++)
        pos += snprintf(shape + pos, sizeof shape - (size_t)pos, d ? "x%lld" : "%lld", (long long)t->shape[d]);
    return zci_error(ZCI_INVALID_ARGUMENT, "%s: %s '%s' (%s) holds %zu floats, %s was %d", fn, what, t->name, shape,
                     t->bytes / sizeof(float), what[0] == 'i' ? "input_size" : "output_size", count);
}

/* The wrapper's model: one float input and one float output; the float counts named by
 * `check` must be the tensors' (they become byte counts in *in_bytes and *out_bytes). */
static zci_status check_model(zci_session *s, const char *fn, int check, int input_size, int output_size,
                              size_t *in_bytes, size_t *out_bytes)
{
    if (!s) return zci_error(ZCI_INVALID_ARGUMENT, "%s: the session is NULL (did create_session fail?)", fn);
    int n_in = zci_session_input_count(s), n_out = zci_session_output_count(s);
    if (n_in != 1 || n_out != 1)
        return zci_error(ZCI_INVALID_ARGUMENT,
                         "%s: the model has %d inputs and %d outputs; this API takes one of each (use zci_run from "
                         "zcinfer.h)",
                         fn, n_in, n_out);
    zci_tensor_info in, out;
    zci_session_input_info(s, 0, &in);
    zci_session_output_info(s, 0, &out);
    if (in.dtype != ZCI_FLOAT32 || out.dtype != ZCI_FLOAT32)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: input '%s' is %s and output '%s' is %s; this API takes float only",
                         fn, in.name, zci_dtype_name(in.dtype), out.name, zci_dtype_name(out.dtype));
    if (check & CHECK_INPUT) ZCI_TRY(check_count(fn, "input", &in, input_size));
    if (check & CHECK_OUTPUT) ZCI_TRY(check_count(fn, "output", &out, output_size));
    *in_bytes = in.bytes;
    *out_bytes = out.bytes;
    return ZCI_OK;
}

void build_engine(const char *onnx_path, const char *engine_path)
{
    zci_options o;
    wrapper_options(&o);
    record(in_fn("build_engine", zci_build_engine(onnx_path, engine_path, &o)));
}

InferenceSession create_session(const char *engine_path)
{
    zci_options o;
    wrapper_options(&o);
    zci_session *s;
    record(in_fn("create_session", zci_session_create(engine_path, &o, &s)));
    return s;
}

void destroy_session(InferenceSession session)
{
    zci_session_destroy(session);
    record(ZCI_OK);
}

void run_inference(InferenceSession session, const float *input_data, float *output_data, int input_size,
                   int output_size)
{
    size_t in_bytes = 0, out_bytes = 0;
    zci_status st = check_model(session, "run_inference", CHECK_INPUT | CHECK_OUTPUT, input_size, output_size,
                                &in_bytes, &out_bytes);
    if (st == ZCI_OK) {
        zci_binding in = {NULL, (void *)input_data, in_bytes}, out = {NULL, output_data, out_bytes};
        st = in_fn("run_inference", zci_run(session, &in, 1, &out, 1));
    }
    record(st);
}

void infer(const char *engine_path, const float *input_data, float *output_data, int input_size, int output_size)
{
    InferenceSession s = create_session(engine_path);
    if (!s) return; /* create_session recorded why */
    run_inference(s, input_data, output_data, input_size, output_size);
    zci_status st = (zci_status)last_status;
    zci_session_destroy(s);
    record(st);
}

void run_inference_device(InferenceSession session, const float *d_input, float *d_output, int input_size,
                          int output_size)
{
    zci_session *s = session;
    size_t in_bytes = 0, out_bytes = 0;
    zci_status st = check_model(s, "run_inference_device", CHECK_INPUT | CHECK_OUTPUT, input_size, output_size,
                                &in_bytes, &out_bytes);
    if (st == ZCI_OK) {
        /* the session's own buffers (the wrapper's usual pattern, after get_device_buffers and
         * copy_input_to_gpu) run in place; any other pointers are bound as given */
        void *own_in = NULL, *own_out = NULL;
        if (zci_session_device(s) == ZCI_DEVICE_CUDA && zci_session_input_device_buffer(s, 0, &own_in) == ZCI_OK &&
            zci_session_output_device_buffer(s, 0, &own_out) == ZCI_OK && own_in == d_input && own_out == d_output) {
            st = in_fn("run_inference_device", zci_run_own_buffers(s, LEGACY_STREAM));
            if (st == ZCI_OK) st = in_fn("run_inference_device", zci_session_synchronize(s, LEGACY_STREAM));
        } else {
            zci_binding bin = {NULL, (void *)d_input, in_bytes}, bout = {NULL, d_output, out_bytes};
            st = in_fn("run_inference_device", zci_run_device(s, &bin, 1, &bout, 1, LEGACY_STREAM));
        }
    }
    record(st);
}

DeviceBuffers *get_device_buffers(InferenceSession session)
{
    zci_session *s = session;
    size_t unused_in = 0, unused_out = 0;
    zci_status st = check_model(s, "get_device_buffers", 0, 0, 0, &unused_in, &unused_out);
    void *d_in = NULL, *d_out = NULL;
    if (st == ZCI_OK) st = in_fn("get_device_buffers", zci_session_input_device_buffer(s, 0, &d_in));
    if (st == ZCI_OK) st = in_fn("get_device_buffers", zci_session_output_device_buffer(s, 0, &d_out));
    DeviceBuffers *b = NULL;
    if (st == ZCI_OK) {
        zci_tensor_info in, out;
        zci_session_input_info(s, 0, &in);
        zci_session_output_info(s, 0, &out);
        if (in.bytes / sizeof(float) > INT_MAX || out.bytes / sizeof(float) > INT_MAX)
            st = zci_error(ZCI_UNSUPPORTED, "get_device_buffers: the buffers hold more floats than an int counts");
        else if (!(b = malloc(sizeof *b)))
            st = zci_error(ZCI_OUT_OF_MEMORY, "get_device_buffers: out of memory");
        else
            *b = (DeviceBuffers){d_in, d_out, (int)(in.bytes / sizeof(float)), (int)(out.bytes / sizeof(float))};
    }
    record(st);
    return b;
}

void free_device_buffers(DeviceBuffers *buffers)
{
    free(buffers);
    record(ZCI_OK);
}

void copy_input_to_gpu(InferenceSession session, const float *input_cpu, int input_size)
{
    size_t bytes = 0, unused = 0;
    zci_status st = check_model(session, "copy_input_to_gpu", CHECK_INPUT, input_size, 0, &bytes, &unused);
    if (st == ZCI_OK)
        st = in_fn("copy_input_to_gpu", zci_session_write_input_buffer(session, 0, input_cpu, bytes, NULL));
    record(st);
}

void copy_output_to_cpu(InferenceSession session, float *output_cpu, int output_size)
{
    size_t unused = 0, bytes = 0;
    zci_status st = check_model(session, "copy_output_to_cpu", CHECK_OUTPUT, 0, output_size, &unused, &bytes);
    if (st == ZCI_OK)
        st = in_fn("copy_output_to_cpu", zci_session_read_output_buffer(session, 0, output_cpu, bytes, NULL));
    record(st);
}
