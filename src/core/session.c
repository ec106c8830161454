/* session.c: the public API: options, session creation (load -> plan -> backend prepare),
 * tensor info, argument checking and dispatch to the backend. */
#define _POSIX_C_SOURCE 200809L
#include "core/session.h"

#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "onnx/onnx.h"

void zci_options_init(zci_options *opts)
{
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->device = ZCI_DEVICE_CPU;
    opts->precision = ZCI_PRECISION_FP32;
    opts->batch = 1;
    opts->use_cuda_graph = 1;
}

static zci_status check_options(const zci_options *o)
{
    if (o->device != ZCI_DEVICE_CPU && o->device != ZCI_DEVICE_CUDA)
        return zci_error(ZCI_INVALID_ARGUMENT, "options: unknown device %d", (int)o->device);
    if (o->precision != ZCI_PRECISION_FP32 && o->precision != ZCI_PRECISION_FP16)
        return zci_error(ZCI_INVALID_ARGUMENT, "options: unknown precision %d", (int)o->precision);
    if (o->batch < 1 || o->batch > 1 << 20)
        return zci_error(ZCI_INVALID_ARGUMENT, "options: batch must be between 1 and %d, got %lld", 1 << 20,
                         (long long)o->batch);
    if (o->num_threads < 0 || o->num_threads > 1024)
        return zci_error(ZCI_INVALID_ARGUMENT, "options: num_threads must be 0 (all cores) to 1024, got %d",
                         o->num_threads);
    if (o->device_id < 0) return zci_error(ZCI_INVALID_ARGUMENT, "options: device_id must be >= 0");
    return ZCI_OK;
}

static int io_is_half(const zci_session *s, zci_dtype dt)
{
    return dt == ZCI_FLOAT32 && s->opts.device == ZCI_DEVICE_CUDA && s->opts.precision == ZCI_PRECISION_FP16 &&
           s->opts.fp16_io;
}

static zci_status fill_info(zci_session *s)
{
    const zci_graph *g = s->g;
    s->n_in = g->n_inputs;
    s->n_out = g->n_outputs;
    s->in_info = zci_calloc((size_t)s->n_in + 1, sizeof *s->in_info, "input info");
    s->out_info = zci_calloc((size_t)s->n_out + 1, sizeof *s->out_info, "output info");
    if (!s->in_info || !s->out_info) return ZCI_OUT_OF_MEMORY;
    for (int io = 0; io < 2; io++) {
        int n = io ? s->n_out : s->n_in;
        for (int i = 0; i < n; i++) {
            const zci_tensor *t = &g->tensors[io ? g->outputs[i] : g->inputs[i]];
            zci_tensor_info *info = io ? &s->out_info[i] : &s->in_info[i];
            info->name = t->name;
            info->dtype = io_is_half(s, t->dtype) ? ZCI_FLOAT16 : t->dtype;
            info->ndim = t->ndim;
            memcpy(info->shape, t->dims, sizeof t->dims);
            info->bytes = (size_t)zci_tensor_numel(t) * zci_dtype_size(info->dtype);
        }
    }
    return ZCI_OK;
}

/* Op histogram and parameter count of the model as loaded (before planning changes it). */
static zci_status summarize_loaded(zci_session *s)
{
    const zci_graph *g = s->g;
    zci_summary *sum = &s->summary;
    sum->nodes_in_model = g->n_nodes;
    sum->opset = g->opset;
    for (int t = 0; t < g->n_tensors; t++)
        if (g->tensors[t].kind == ZCI_TENSOR_CONSTANT && g->tensors[t].producer < 0)
            sum->parameters += zci_tensor_numel(&g->tensors[t]);
    s->op_types = zci_calloc((size_t)g->n_nodes + 1, sizeof *s->op_types, "summary");
    s->op_counts = zci_calloc((size_t)g->n_nodes + 1, sizeof *s->op_counts, "summary");
    if (!s->op_types || !s->op_counts) return ZCI_OUT_OF_MEMORY;
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        int k = 0;
        while (k < n && strcmp(s->op_types[k], g->nodes[i].op_type)) k++;
        if (k == n && !(s->op_types[n++] = zci_strdup(g->nodes[i].op_type))) return ZCI_OUT_OF_MEMORY;
        sum->n_op_types = n; /* kept current so that destroy frees what exists */
        s->op_counts[k]++;
    }
    /* most frequent first (insertion sort: a model has few op types) */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && s->op_counts[j] > s->op_counts[j - 1]; j--) {
            int c = s->op_counts[j];
            s->op_counts[j] = s->op_counts[j - 1];
            s->op_counts[j - 1] = c;
            char *t = s->op_types[j];
            s->op_types[j] = s->op_types[j - 1];
            s->op_types[j - 1] = t;
        }
    sum->n_op_types = n;
    sum->op_types = (const char *const *)s->op_types;
    sum->op_counts = s->op_counts;
    return ZCI_OK;
}

/* FLOPs of the planned graph: 2 per multiply-add of Conv, MatMul and Gemm. */
static double planned_flops(const zci_graph *g)
{
    double flops = 0;
    for (int p = 0; p < g->n_order; p++) flops += zci_node_flops(g, &g->nodes[g->order[p]]);
    return flops;
}

zci_status zci_session_summary(const zci_session *s, zci_summary *summary)
{
    if (!s || !summary)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_summary: %s is NULL", !s ? "session" : "summary");
    *summary = s->summary;
    return ZCI_OK;
}

/* Allocates a session for graph g (taken over: freed on failure too) with the backend that
 * the options select. */
static zci_status session_new(zci_graph *g, const zci_options *user_opts, zci_session **out)
{
    *out = NULL;
    zci_options defaults;
    zci_options_init(&defaults);
    const zci_options *opts = user_opts ? user_opts : &defaults;
    zci_status st = check_options(opts);
    const zci_backend_iface *be = &zci_cpu_backend;
    if (st == ZCI_OK && opts->device == ZCI_DEVICE_CUDA) {
        be = zci_cuda_backend();
        if (!be) st = zci_error(ZCI_NO_DEVICE, "this build of zcinfer has no CUDA support (rebuild with CUDA)");
    }
    zci_session *s = st == ZCI_OK ? zci_calloc(1, sizeof *s, "session") : NULL;
    if (!s) {
        zci_graph_free(g);
        return st == ZCI_OK ? ZCI_OUT_OF_MEMORY : st;
    }
    s->opts = *opts;
    s->be = be;
    s->g = g;
    g->verbose = opts->verbose;
    *out = s;
    return ZCI_OK;
}

/* Prepares the backend for s's planned graph (with the engine file's backend blob when there
 * is one) and hands s back in *out; destroys it on failure. */
static zci_status session_ready(zci_session *s, const void *blob, size_t blob_size, double t0, zci_session **out)
{
    s->summary.flops = planned_flops(s->g);
    s->summary.nodes_planned = s->g->n_order;
    zci_status st = fill_info(s);
    if (st == ZCI_OK)
        st = blob && s->be->prepare_with_blob ? s->be->prepare_with_blob(s, blob, blob_size) : s->be->prepare(s);
    if (st != ZCI_OK) {
        zci_session_destroy(s);
        return st;
    }
    zci_log(s->opts.verbose, "session ready on %s in %.1f ms", s->be->name, (zci_now() - t0) * 1e3);
    *out = s;
    return ZCI_OK;
}

zci_status zci_session_create_from_graph(zci_graph *g, const zci_options *user_opts, zci_session **out)
{
    double t0 = zci_now();
    zci_session *s;
    ZCI_TRY(session_new(g, user_opts, &s));
    zci_status st = summarize_loaded(s);
    if (st == ZCI_OK) st = zci_graph_plan(s->g);
    if (st != ZCI_OK) {
        zci_session_destroy(s);
        return st;
    }
    return session_ready(s, NULL, 0, t0, out);
}

/* An engine file: the planned graph and the summary of the model it came from are in it;
 * nothing is parsed or planned. */
static zci_status create_from_engine(const void *data, size_t size, const char *source, const zci_options *opts,
                                     zci_session **out)
{
    double t0 = zci_now();
    zci_engine_loaded e;
    ZCI_TRY(zci_engine_decode(data, size, source, opts, &e));
    zci_log(e.opts.verbose, "loaded engine %s: %d nodes, %d tensors (%.1f ms)", source, e.g->n_nodes, e.g->n_tensors,
            (zci_now() - t0) * 1e3);
    zci_session *s;
    zci_status st = session_new(e.g, &e.opts, &s);
    e.g = NULL; /* the session has it (or freed it) */
    if (st == ZCI_OK) {
        s->summary = e.summary;
        s->summary.op_types = (const char *const *)e.op_types;
        s->summary.op_counts = e.op_counts;
        s->op_types = e.op_types;
        s->op_counts = e.op_counts;
        e.op_types = NULL;
        e.op_counts = NULL;
        st = session_ready(s, e.blob, e.blob_size, t0, out);
    }
    zci_engine_loaded_free(&e);
    return st;
}

static zci_status create(const void *data, size_t size, const char *base_dir, const char *source,
                         const zci_options *opts, zci_session **out)
{
    if (zci_engine_detect(data, size)) return create_from_engine(data, size, source, opts, out);
    double t0 = zci_now();
    zci_graph *g;
    ZCI_TRY(zci_onnx_load(data, size, base_dir, source, opts ? opts->batch : 1, &g));
    zci_log(opts && opts->verbose, "loaded %s: %d nodes, %d tensors (%.1f ms)", source, g->n_nodes, g->n_tensors,
            (zci_now() - t0) * 1e3);
    return zci_session_create_from_graph(g, opts, out);
}

zci_status zci_session_create(const char *path, const zci_options *opts, zci_session **out)
{
    if (!out) return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_create: out is NULL");
    *out = NULL;
    if (!path) return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_create: path is NULL");
    void *data;
    size_t size;
    ZCI_TRY(zci_read_file(path, &data, &size));
    char *dir = zci_strdup(path);
    if (!dir) {
        free(data);
        return ZCI_OUT_OF_MEMORY;
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    zci_status st = create(data, size, *dir ? dir : "/", path, opts, out);
    free(dir);
    free(data);
    return st;
}

zci_status zci_session_create_from_memory(const void *data, size_t size, const zci_options *opts, zci_session **out)
{
    if (!out) return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_create_from_memory: out is NULL");
    *out = NULL;
    if (!data) return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_create_from_memory: data is NULL");
    return create(data, size, opts && opts->model_dir ? opts->model_dir : ".", "<memory>", opts, out);
}

void zci_session_destroy(zci_session *s)
{
    if (!s) return;
    if (s->be && s->be->release) s->be->release(s);
    zci_graph_free(s->g);
    if (s->op_types)
        for (int i = 0; i < s->summary.n_op_types; i++) free(s->op_types[i]);
    free(s->op_types);
    free(s->op_counts);
    free(s->in_info);
    free(s->out_info);
    free(s);
}

int zci_session_input_count(const zci_session *s) { return s ? s->n_in : 0; }
int zci_session_output_count(const zci_session *s) { return s ? s->n_out : 0; }
zci_device zci_session_device(const zci_session *s) { return s ? s->opts.device : ZCI_DEVICE_CPU; }

static zci_status get_info(const zci_session *s, int output, int index, zci_tensor_info *info)
{
    const char *fn = output ? "zci_session_output_info" : "zci_session_input_info";
    if (!s || !info) return zci_error(ZCI_INVALID_ARGUMENT, "%s: %s is NULL", fn, !s ? "session" : "info");
    int n = output ? s->n_out : s->n_in;
    if (index < 0 || index >= n)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: index %d is out of range (the model has %d %s)", fn, index, n,
                         output ? "outputs" : "inputs");
    *info = output ? s->out_info[index] : s->in_info[index];
    return ZCI_OK;
}

zci_status zci_session_input_info(const zci_session *s, int index, zci_tensor_info *info)
{
    return get_info(s, 0, index, info);
}

zci_status zci_session_output_info(const zci_session *s, int index, zci_tensor_info *info)
{
    return get_info(s, 1, index, info);
}

static int find_index(const zci_tensor_info *infos, int n, const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < n; i++)
        if (!strcmp(infos[i].name, name)) return i;
    return -1;
}

int zci_session_input_index(const zci_session *s, const char *name) { return s ? find_index(s->in_info, s->n_in, name) : -1; }
int zci_session_output_index(const zci_session *s, const char *name) { return s ? find_index(s->out_info, s->n_out, name) : -1; }

/* Maps bindings (by name or position) onto one pointer per tensor, checking count, names,
 * duplicates, NULL data and byte sizes. */
static zci_status bind(const char *fn, const char *what, const zci_tensor_info *infos, int n, const zci_binding *b,
                       int nb, void **ptrs)
{
    if (nb != n)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: the model has %d %s, %d were given", fn, n, what, nb);
    if (n && !b) return zci_error(ZCI_INVALID_ARGUMENT, "%s: the %s array is NULL", fn, what);
    for (int i = 0; i < n; i++) ptrs[i] = NULL;
    for (int i = 0; i < nb; i++) {
        int idx = i;
        if (b[i].name) {
            idx = find_index(infos, n, b[i].name);
            if (idx < 0) return zci_error(ZCI_INVALID_ARGUMENT, "%s: the model has no %.*s called '%s'", fn,
                                          (int)strlen(what) - 1, what, b[i].name);
        }
        if (ptrs[idx]) return zci_error(ZCI_INVALID_ARGUMENT, "%s: '%s' is bound twice", fn, infos[idx].name);
        if (!b[i].data) return zci_error(ZCI_INVALID_ARGUMENT, "%s: the buffer for '%s' is NULL", fn, infos[idx].name);
        if (b[i].bytes != infos[idx].bytes) {
            char sh[128];
            return zci_error(ZCI_INVALID_ARGUMENT, "%s: '%s' (%s %s) needs %zu bytes, the buffer given has %zu", fn,
                             infos[idx].name, zci_dtype_name(infos[idx].dtype),
                             zci_shape_str(infos[idx].shape, infos[idx].ndim, sh, sizeof sh), infos[idx].bytes,
                             b[i].bytes);
        }
        ptrs[idx] = b[i].data;
    }
    return ZCI_OK;
}

static zci_status run_bound(zci_session *s, const char *fn, zci_mem_kind mem, const zci_binding *inputs, int n_inputs,
                            const zci_binding *outputs, int n_outputs, void *stream, int wait)
{
    if (!s) return zci_error(ZCI_INVALID_ARGUMENT, "%s: session is NULL", fn);
    if (mem == ZCI_MEM_DEVICE && s->opts.device != ZCI_DEVICE_CUDA)
        return zci_error(ZCI_UNSUPPORTED, "%s: device buffers need a CUDA session; this session runs on the CPU", fn);
    void *stack_in[16], *stack_out[16];
    void **in = s->n_in <= 16 ? stack_in : zci_calloc((size_t)s->n_in, sizeof(void *), "bindings");
    void **out = s->n_out <= 16 ? stack_out : zci_calloc((size_t)s->n_out, sizeof(void *), "bindings");
    zci_status st = in && out ? ZCI_OK : ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK) st = bind(fn, "inputs", s->in_info, s->n_in, inputs, n_inputs, in);
    if (st == ZCI_OK) st = bind(fn, "outputs", s->out_info, s->n_out, outputs, n_outputs, out);
    if (st == ZCI_OK) {
        zci_run_args a = {.mem = mem, .inputs = in, .outputs = out, .stream = stream, .wait = wait};
        st = s->be->run(s, &a);
    }
    if (in != stack_in) free(in);
    if (out != stack_out) free(out);
    return st;
}

zci_status zci_run(zci_session *s, const zci_binding *inputs, int n_inputs, const zci_binding *outputs, int n_outputs)
{
    return run_bound(s, "zci_run", ZCI_MEM_HOST, inputs, n_inputs, outputs, n_outputs, NULL, 1);
}

zci_status zci_run_simple(zci_session *s, const float *input, size_t input_count, float *output, size_t output_count)
{
    if (!s) return zci_error(ZCI_INVALID_ARGUMENT, "zci_run_simple: session is NULL");
    if (s->n_in != 1 || s->n_out != 1)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_run_simple: the model has %d inputs and %d outputs; use zci_run",
                         s->n_in, s->n_out);
    if (s->in_info[0].dtype != ZCI_FLOAT32 || s->out_info[0].dtype != ZCI_FLOAT32)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_run_simple: needs float input and output; the model has %s and %s",
                         zci_dtype_name(s->in_info[0].dtype), zci_dtype_name(s->out_info[0].dtype));
    if (input_count > SIZE_MAX / 4 || output_count > SIZE_MAX / 4)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_run_simple: element count overflows");
    zci_binding in = {NULL, (void *)input, input_count * sizeof(float)};
    zci_binding out = {NULL, output, output_count * sizeof(float)};
    return zci_run(s, &in, 1, &out, 1);
}

zci_status zci_run_device(zci_session *s, const zci_binding *inputs, int n_inputs, const zci_binding *outputs,
                          int n_outputs, void *stream)
{
    return run_bound(s, "zci_run_device", ZCI_MEM_DEVICE, inputs, n_inputs, outputs, n_outputs, stream, 1);
}

zci_status zci_run_device_async(zci_session *s, const zci_binding *inputs, int n_inputs, const zci_binding *outputs,
                                int n_outputs, void *stream)
{
    return run_bound(s, "zci_run_device_async", ZCI_MEM_DEVICE, inputs, n_inputs, outputs, n_outputs, stream, 0);
}

static zci_status own_buffer(zci_session *s, int is_output, int index, void **ptr, const char *fn)
{
    if (!s || !ptr) return zci_error(ZCI_INVALID_ARGUMENT, "%s: %s is NULL", fn, !s ? "session" : "device_ptr");
    *ptr = NULL;
    int n = is_output ? s->n_out : s->n_in;
    if (index < 0 || index >= n)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: index %d is out of range (%d %s)", fn, index, n,
                         is_output ? "outputs" : "inputs");
    if (!s->be->own_buffer)
        return zci_error(ZCI_UNSUPPORTED, "%s: the %s backend has no device buffers", fn, s->be->name);
    return s->be->own_buffer(s, is_output, index, ptr);
}

zci_status zci_session_input_device_buffer(zci_session *s, int index, void **ptr)
{
    return own_buffer(s, 0, index, ptr, "zci_session_input_device_buffer");
}

zci_status zci_session_output_device_buffer(zci_session *s, int index, void **ptr)
{
    return own_buffer(s, 1, index, ptr, "zci_session_output_device_buffer");
}

zci_status zci_run_own_buffers(zci_session *s, void *stream)
{
    if (!s) return zci_error(ZCI_INVALID_ARGUMENT, "zci_run_own_buffers: session is NULL");
    if (!s->be->own_buffer)
        return zci_error(ZCI_UNSUPPORTED, "zci_run_own_buffers: the %s backend has no device buffers", s->be->name);
    zci_run_args a = {.mem = ZCI_MEM_OWN, .stream = stream, .wait = 0};
    return s->be->run(s, &a);
}

static zci_status copy_own(zci_session *s, int is_output, int index, void *host, size_t bytes, void *stream,
                           const char *fn)
{
    void *ptr;
    ZCI_TRY(own_buffer(s, is_output, index, &ptr, fn)); /* checks session, index, device */
    if (!host) return zci_error(ZCI_INVALID_ARGUMENT, "%s: the host buffer is NULL", fn);
    const zci_tensor_info *info = is_output ? &s->out_info[index] : &s->in_info[index];
    if (bytes != info->bytes)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: '%s' holds %zu bytes, %zu were given", fn, info->name, info->bytes,
                         bytes);
    if (!s->be->copy_own_buffer)
        return zci_error(ZCI_UNSUPPORTED, "%s: the %s backend cannot copy its device buffers", fn, s->be->name);
    return s->be->copy_own_buffer(s, is_output, index, host, bytes, stream);
}

zci_status zci_session_write_input_buffer(zci_session *s, int index, const void *src, size_t bytes, void *stream)
{
    return copy_own(s, 0, index, (void *)src, bytes, stream, "zci_session_write_input_buffer");
}

zci_status zci_session_read_output_buffer(zci_session *s, int index, void *dst, size_t bytes, void *stream)
{
    return copy_own(s, 1, index, dst, bytes, stream, "zci_session_read_output_buffer");
}

zci_status zci_session_synchronize(zci_session *s, void *stream)
{
    if (!s) return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_synchronize: session is NULL");
    return s->be->synchronize ? s->be->synchronize(s, stream) : ZCI_OK;
}
