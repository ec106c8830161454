/* engine_write.c: writes engine files (the format is described in engine.h):
 * zci_session_save_engine, zci_build_engine and the encoder behind them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"

/* A growing byte buffer. The first allocation failure is sticky: later writes do nothing and
 * the encoder checks once at the end. */
typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} wbuf;

static void put(wbuf *w, const void *src, size_t n)
{
    if (w->oom || !n) return;
    if (n > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->oom = true;
                return;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(w->p, cap);
        if (!p) {
            w->oom = true;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u8(wbuf *w, unsigned v)
{
    uint8_t b = (uint8_t)v;
    put(w, &b, 1);
}

static void put_u32(wbuf *w, uint32_t v) { put(w, &v, 4); }
static void put_i32(wbuf *w, int32_t v) { put(w, &v, 4); }
static void put_u64(wbuf *w, uint64_t v) { put(w, &v, 8); }
static void put_i64(wbuf *w, int64_t v) { put(w, &v, 8); }
static void put_f32(wbuf *w, float v) { put(w, &v, 4); }

static void put_str(wbuf *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    put_u32(w, (uint32_t)n);
    put(w, s, n);
}

/* dtype, ndim, dims, byte count and bytes of a tensor value */
static void put_value(wbuf *w, zci_dtype dtype, int ndim, const int64_t *dims, const void *data, size_t bytes)
{
    put_u32(w, (uint32_t)dtype);
    put_u8(w, (unsigned)ndim);
    for (int d = 0; d < ndim; d++) put_i64(w, dims[d]);
    put_u64(w, bytes);
    put(w, data, bytes);
}

static zci_status put_attr(wbuf *w, const zci_attr *a)
{
    put_str(w, a->name);
    put_u32(w, (uint32_t)a->type);
    switch (a->type) {
    case ZCI_ATTR_FLOAT: put_f32(w, a->f); break;
    case ZCI_ATTR_INT: put_i64(w, a->i); break;
    case ZCI_ATTR_STRING: put_str(w, a->s); break;
    case ZCI_ATTR_FLOATS:
        put_u32(w, (uint32_t)a->n);
        put(w, a->floats, (size_t)a->n * sizeof(float));
        break;
    case ZCI_ATTR_INTS:
        put_u32(w, (uint32_t)a->n);
        put(w, a->ints, (size_t)a->n * sizeof(int64_t));
        break;
    case ZCI_ATTR_STRINGS:
        put_u32(w, (uint32_t)a->n);
        for (int i = 0; i < a->n; i++) put_str(w, a->strings[i]);
        break;
    case ZCI_ATTR_TENSOR: {
        const zci_value *v = a->t;
        put_u8(w, v != NULL);
        if (!v) break;
        int64_t numel = zci_shape_numel(v->dims, v->ndim);
        size_t es = zci_dtype_size(v->dtype);
        if (numel < 0 || !es || (!v->data && numel))
            return zci_error(ZCI_INTERNAL, "attribute '%s' holds a tensor that cannot be saved", a->name);
        put_value(w, v->dtype, v->ndim, v->dims, v->data, (size_t)numel * es);
        break;
    }
    default: break; /* kept as the type alone, as the ONNX loader keeps them */
    }
    return ZCI_OK;
}

/* The tensors an engine keeps: graph inputs and outputs and what live nodes read and write,
 * numbered in that order of first appearance. map[t] is tensor t's number in the file or -1. */
static int number_tensors(const zci_graph *g, int *map, int *list)
{
    int n = 0;
    for (int t = 0; t < g->n_tensors; t++) map[t] = -1;
#define ZCI_KEEP_(t)                                                                               \
    do {                                                                                           \
        int t_ = (t);                                                                              \
        if (t_ >= 0 && map[t_] < 0) {                                                              \
            map[t_] = n;                                                                           \
            list[n++] = t_;                                                                        \
        }                                                                                          \
    } while (0)
    for (int i = 0; i < g->n_inputs; i++) ZCI_KEEP_(g->inputs[i]);
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *nd = &g->nodes[g->order[p]];
        for (int k = 0; k < nd->n_in; k++) ZCI_KEEP_(nd->in[k]);
        for (int k = 0; k < nd->n_out; k++) ZCI_KEEP_(nd->out[k]);
    }
    for (int i = 0; i < g->n_outputs; i++) ZCI_KEEP_(g->outputs[i]);
#undef ZCI_KEEP_
    return n;
}

static zci_status put_tensors(wbuf *w, const zci_graph *g, const int *list, int n)
{
    put_u32(w, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        const zci_tensor *t = &g->tensors[list[i]];
        if (!t->has_shape || zci_tensor_numel(t) < 0 || !zci_dtype_size(t->dtype))
            return zci_error(ZCI_INTERNAL, "tensor '%s' has no valid shape after planning", t->name);
        size_t bytes = zci_tensor_bytes(t);
        bool has_data = t->kind == ZCI_TENSOR_CONSTANT;
        if (has_data && !t->data && bytes)
            return zci_error(ZCI_INTERNAL,
                             "constant '%s' has no host data after the backend's prepare; engine files need it",
                             t->name);
        put_str(w, t->name);
        put_u8(w, (unsigned)t->kind);
        put_u8(w, t->is_output);
        put_u32(w, (uint32_t)t->dtype);
        put_u8(w, (unsigned)t->ndim);
        for (int d = 0; d < t->ndim; d++) put_i64(w, t->dims[d]);
        put_u8(w, has_data);
        if (has_data) {
            put_u64(w, bytes);
            put(w, t->data, bytes);
        }
    }
    return ZCI_OK;
}

static zci_status put_nodes(wbuf *w, const zci_graph *g, const int *map)
{
    put_u32(w, (uint32_t)g->n_order);
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        put_str(w, n->name);
        put_str(w, n->op_type);
        put_str(w, n->domain);
        put_i32(w, n->opset);
        put_u32(w, (uint32_t)n->n_in);
        for (int k = 0; k < n->n_in; k++) put_i32(w, n->in[k] >= 0 ? map[n->in[k]] : -1);
        put_u32(w, (uint32_t)n->n_out);
        for (int k = 0; k < n->n_out; k++) put_i32(w, n->out[k] >= 0 ? map[n->out[k]] : -1);
        put_u32(w, (uint32_t)n->n_attrs);
        for (int a = 0; a < n->n_attrs; a++) ZCI_TRY(put_attr(w, &n->attrs[a]));
    }
    return ZCI_OK;
}

static zci_status put_header(wbuf *w, zci_session *s, const char *source)
{
    zci_device_desc dev;
    memset(&dev, 0, sizeof dev);
    if (s->be->describe_device) ZCI_TRY(s->be->describe_device(&s->opts, &dev));
    dev.name[sizeof dev.name - 1] = 0;
    put(w, ZCI_ENGINE_MAGIC, ZCI_ENGINE_MAGIC_SIZE);
    put_u32(w, ZCI_ENGINE_FORMAT);
    put_u32(w, ZCI_VERSION_NUMBER);
    put_u64(w, 0); /* file size, patched when known */
    put_u32(w, (uint32_t)s->opts.device);
    put_u32(w, (uint32_t)s->opts.precision);
    put_i64(w, s->opts.batch);
    put_u8(w, s->opts.fp16_io != 0);
    put_u8(w, s->opts.allow_tf32 != 0);
    put_u32(w, (uint32_t)dev.compute_capability);
    put_u32(w, (uint32_t)dev.cuda_version);
    put_u32(w, (uint32_t)dev.cudnn_version);
    put_str(w, dev.name);
    put_str(w, source);
    return ZCI_OK;
}

static void put_summary(wbuf *w, const zci_session *s)
{
    const zci_summary *sum = &s->summary;
    put_i32(w, sum->opset);
    put_i64(w, sum->parameters);
    put_i32(w, sum->nodes_in_model);
    put_u32(w, (uint32_t)sum->n_op_types);
    for (int i = 0; i < sum->n_op_types; i++) {
        put_str(w, sum->op_types[i]);
        put_i32(w, sum->op_counts[i]);
    }
}

zci_status zci_engine_encode(zci_session *s, const char *source, void **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    const zci_graph *g = s->g;
    wbuf w = {0};
    void *blob = NULL;
    size_t blob_size = 0;
    int *map = zci_malloc(((size_t)g->n_tensors + 1) * sizeof *map, "engine tensor map");
    int *list = zci_malloc(((size_t)g->n_tensors + 1) * sizeof *list, "engine tensor map");
    zci_status st = map && list ? ZCI_OK : ZCI_OUT_OF_MEMORY;
    /* reserve the weights' bytes up front: one allocation instead of a chain of doublings */
    size_t reserve = 1 << 16;
    for (int t = 0; t < g->n_tensors; t++)
        if (g->tensors[t].kind == ZCI_TENSOR_CONSTANT) reserve += zci_tensor_bytes(&g->tensors[t]);
    if (st == ZCI_OK && !(w.p = malloc(reserve)))
        st = zci_error(ZCI_OUT_OF_MEMORY, "cannot allocate %zu bytes for the engine", reserve);
    w.cap = w.p ? reserve : 0;
    if (st == ZCI_OK) st = put_header(&w, s, source ? source : g->source);
    if (st == ZCI_OK) {
        put_summary(&w, s);
        int n = number_tensors(g, map, list);
        st = put_tensors(&w, g, list, n);
    }
    if (st == ZCI_OK) {
        put_u32(&w, (uint32_t)g->n_inputs);
        for (int i = 0; i < g->n_inputs; i++) put_u32(&w, (uint32_t)map[g->inputs[i]]);
        put_u32(&w, (uint32_t)g->n_outputs);
        for (int i = 0; i < g->n_outputs; i++) put_u32(&w, (uint32_t)map[g->outputs[i]]);
        st = put_nodes(&w, g, map);
    }
    if (st == ZCI_OK && s->be->export_blob) {
        st = s->be->export_blob(s, &blob, &blob_size);
        if (st != ZCI_OK) st = zci_error_prefix(st, "saving the %s backend's state", s->be->name);
    }
    if (st == ZCI_OK) {
        put_u64(&w, blob ? blob_size : 0);
        if (blob) put(&w, blob, blob_size);
        uint64_t total = (uint64_t)w.len + 8;
        if (!w.oom) memcpy(w.p + ZCI_ENGINE_MAGIC_SIZE + 8, &total, 8);
        put_u64(&w, w.oom ? 0 : zci_xxh64(w.p, w.len, 0));
        if (w.oom) st = zci_error(ZCI_OUT_OF_MEMORY, "out of memory while encoding the engine (%zu bytes)", w.len);
    }
    free(blob);
    free(map);
    free(list);
    if (st != ZCI_OK) {
        free(w.p);
        return st;
    }
    *data = w.p;
    *size = w.len;
    return ZCI_OK;
}

/* Writes `size` bytes to `path` whole or not at all: into "<path>.partial", renamed over
 * `path` once complete, so that a failed write never leaves a truncated engine behind. */
static zci_status write_file_atomic(const char *path, const void *data, size_t size)
{
    size_t n = strlen(path);
    char *tmp = zci_malloc(n + sizeof ".partial", "file name");
    if (!tmp) return ZCI_OUT_OF_MEMORY;
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".partial", sizeof ".partial");
    zci_status st = ZCI_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = zci_error(ZCI_IO, "cannot create '%s': %s", tmp, strerror(errno));
    } else {
        bool ok = fwrite(data, 1, size, f) == size;
        ok = fclose(f) == 0 && ok;
        if (!ok)
            st = zci_error(ZCI_IO, "cannot write %zu bytes to '%s': %s", size, tmp, strerror(errno));
        else if (rename(tmp, path))
            st = zci_error(ZCI_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
        if (st != ZCI_OK) remove(tmp);
    }
    free(tmp);
    return st;
}

zci_status zci_session_save_engine(zci_session *s, const char *path)
{
    if (!s || !path)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_session_save_engine: %s is NULL", !s ? "session" : "path");
    void *data;
    size_t size;
    ZCI_TRY(zci_engine_encode(s, NULL, &data, &size));
    zci_status st = write_file_atomic(path, data, size);
    free(data);
    return st;
}

zci_status zci_build_engine(const char *onnx_path, const char *engine_path, const zci_options *opts)
{
    if (!onnx_path || !engine_path)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_build_engine: %s is NULL",
                         !onnx_path ? "onnx_path" : "engine_path");
    zci_session *s;
    ZCI_TRY(zci_session_create(onnx_path, opts, &s));
    zci_status st = zci_session_save_engine(s, engine_path);
    zci_session_destroy(s);
    return st;
}
