/* engine_read.c: checks and decodes engine files (the format is described in engine.h).
 * Order of the checks: size and magic, checksum (damage), format and library versions,
 * the device planned for, then the contents, every read bounds-checked: a file that passed
 * the checksum but was built wrong (or on purpose) is still refused with a status, never
 * trusted. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "ops/op.h"

/* magic, format version, library version, file size */
enum { FIXED_HEADER = ZCI_ENGINE_MAGIC_SIZE + 4 + 4 + 8, CHECKSUM = 8 };

int zci_engine_detect(const void *data, size_t size)
{
    return data && size >= ZCI_ENGINE_MAGIC_SIZE && !memcmp(data, ZCI_ENGINE_MAGIC, ZCI_ENGINE_MAGIC_SIZE);
}

/* ---------------------------------------------------------------- bounds-checked reads */

typedef struct rbuf {
    const uint8_t *base, *p, *end;
    bool bad; /* a read ran past the end: sticky; reads then give 0 */
    const char *source;
} rbuf;

static const uint8_t *take(rbuf *r, uint64_t n)
{
    if (r->bad || n > (uint64_t)(r->end - r->p)) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *q = r->p;
    r->p += n;
    return q;
}

static uint8_t get_u8(rbuf *r)
{
    const uint8_t *q = take(r, 1);
    return q ? *q : 0;
}

static uint32_t get_u32(rbuf *r)
{
    uint32_t v = 0;
    const uint8_t *q = take(r, 4);
    if (q) memcpy(&v, q, 4);
    return v;
}

static uint64_t get_u64(rbuf *r)
{
    uint64_t v = 0;
    const uint8_t *q = take(r, 8);
    if (q) memcpy(&v, q, 8);
    return v;
}

static int32_t get_i32(rbuf *r) { return (int32_t)get_u32(r); }
static int64_t get_i64(rbuf *r) { return (int64_t)get_u64(r); }

static float get_f32(rbuf *r)
{
    uint32_t bits = get_u32(r);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static size_t remaining(const rbuf *r) { return r->bad ? 0 : (size_t)(r->end - r->p); }

/* A count of items at least `min_item` bytes each: more than the rest of the file can hold
 * is damage (and would be a huge allocation). */
static uint32_t get_count(rbuf *r, size_t min_item)
{
    uint32_t n = get_u32(r);
    if (n > remaining(r) / min_item || n > INT32_MAX / 2) {
        r->bad = true;
        return 0;
    }
    return n;
}

/* The engine's name for rebuild commands: its path, or a placeholder for one loaded from
 * memory. */
static const char *engine_name(const char *source) { return *source == '<' ? "MODEL.zce" : source; }

static zci_status corrupt(const rbuf *r, const char *what)
{
    return zci_error(ZCI_INVALID_MODEL,
                     "engine file '%s' is inconsistent (%s, near byte %zu); rebuild it with "
                     "`zcinfer build MODEL.onnx -o %s`",
                     r->source, what, (size_t)(r->p - r->base), engine_name(r->source));
}

#define CHECK_READ(r, what)                                                                        \
    do {                                                                                           \
        if ((r)->bad) return corrupt((r), (what));                                                 \
    } while (0)

/* A string into *s (malloc'd). */
static zci_status get_str(rbuf *r, char **s, const char *what)
{
    *s = NULL;
    uint32_t n = get_u32(r);
    const uint8_t *q = take(r, n);
    if (!q || memchr(q, 0, n)) {
        r->bad = true;
        return corrupt(r, what);
    }
    *s = zci_strndup((const char *)q, n);
    return *s ? ZCI_OK : ZCI_OUT_OF_MEMORY;
}

/* n elements of `es` bytes into a malloc'd copy (at least one byte, so that a present empty
 * array is not NULL). */
static zci_status get_array(rbuf *r, uint64_t n, size_t es, void **out, const char *what)
{
    *out = NULL;
    if (n > remaining(r) / es) {
        r->bad = true;
        return corrupt(r, what);
    }
    size_t bytes = (size_t)n * es;
    const uint8_t *q = take(r, bytes);
    void *p = zci_malloc(bytes ? bytes : 1, what);
    if (!p) return ZCI_OUT_OF_MEMORY;
    if (bytes) memcpy(p, q, bytes);
    *out = p;
    return ZCI_OK;
}

/* dtype, ndim, dims as a tensor or a tensor attribute stores them; checks that the shape is
 * valid and gives its byte size. */
static zci_status get_shape(rbuf *r, zci_dtype *dtype, int *ndim, int64_t *dims, size_t *bytes, const char *what)
{
    *dtype = (zci_dtype)get_u32(r);
    *ndim = get_u8(r);
    CHECK_READ(r, what);
    size_t es = zci_dtype_size(*dtype);
    if (!es || *ndim > ZCI_MAX_DIMS) return corrupt(r, what);
    for (int d = 0; d < *ndim; d++) dims[d] = get_i64(r);
    CHECK_READ(r, what);
    int64_t numel = zci_shape_numel(dims, *ndim);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / es) return corrupt(r, what);
    *bytes = (size_t)numel * es;
    return ZCI_OK;
}

/* ---------------------------------------------------------------- header */

typedef struct header {
    uint32_t format, version;
    uint64_t file_size;
    uint32_t device, precision;
    int64_t batch;
    uint8_t fp16_io, allow_tf32;
    zci_device_desc dev;
    char *built_from;
} header;

static void version_str(uint32_t v, char *buf, size_t n)
{
    snprintf(buf, n, "%u.%u.%u", v / 10000, v / 100 % 100, v % 100);
}

/* CUDA (12040 -> "12.4") and cuDNN (90100 -> "9.1.0", 8906 -> "8.9.6") version numbers. */
static void cuda_version_str(int v, char *buf, size_t n) { snprintf(buf, n, "%d.%d", v / 1000, v % 1000 / 10); }

static void cudnn_version_str(int v, char *buf, size_t n)
{
    if (v >= 10000)
        snprintf(buf, n, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    else
        snprintf(buf, n, "%d.%d.%d", v / 1000, v / 100 % 10, v % 100);
}

/* The command that builds a fitting engine: the recorded options, the device overridden when
 * `device` >= 0. */
static void rebuild_cmd(const header *h, const char *engine, int device, char *buf, size_t n)
{
    int dev = device >= 0 ? device : (int)h->device;
    int pos = snprintf(buf, n, "zcinfer build %s -o %s", h->built_from && *h->built_from ? h->built_from : "MODEL.onnx",
                       engine_name(engine));
    if (pos < 0 || (size_t)pos >= n) return;
    snprintf(buf + pos, n - (size_t)pos, "%s%s%s%s", dev == ZCI_DEVICE_CUDA ? " --device cuda" : "",
             h->precision == ZCI_PRECISION_FP16 ? " --fp16" : "",
             h->fp16_io && dev == ZCI_DEVICE_CUDA ? " --fp16-io" : "",
             h->allow_tf32 && dev == ZCI_DEVICE_CUDA ? " --tf32" : "");
    if (h->batch != 1) {
        size_t len = strlen(buf);
        snprintf(buf + len, n - len, " --batch %lld", (long long)h->batch);
    }
}

static zci_status read_header(rbuf *r, header *h)
{
    take(r, ZCI_ENGINE_MAGIC_SIZE);
    h->format = get_u32(r);
    h->version = get_u32(r);
    h->file_size = get_u64(r);
    if (h->format != ZCI_ENGINE_FORMAT) return ZCI_OK; /* the caller says so before reading on */
    h->device = get_u32(r);
    h->precision = get_u32(r);
    h->batch = get_i64(r);
    h->fp16_io = get_u8(r);
    h->allow_tf32 = get_u8(r);
    h->dev.compute_capability = (int)get_u32(r);
    h->dev.cuda_version = (int)get_u32(r);
    h->dev.cudnn_version = (int)get_u32(r);
    CHECK_READ(r, "header");
    char *name;
    ZCI_TRY(get_str(r, &name, "device name"));
    snprintf(h->dev.name, sizeof h->dev.name, "%s", name);
    free(name);
    ZCI_TRY(get_str(r, &h->built_from, "model path"));
    if (h->device > ZCI_DEVICE_CUDA || h->precision > ZCI_PRECISION_FP16 || h->batch < 1 || h->batch > 1 << 20 ||
        h->fp16_io > 1 || h->allow_tf32 > 1 || h->dev.compute_capability < 0 || h->dev.cuda_version < 0 ||
        h->dev.cudnn_version < 0)
        return corrupt(r, "planning options");
    return ZCI_OK;
}

/* Describes the device of a file or of this machine: "NVIDIA H100 (compute capability 9.0,
 * CUDA 12.4, cuDNN 9.1.0)". */
static void device_str(const zci_device_desc *d, char *buf, size_t n)
{
    char cuda[32], cudnn[32];
    cuda_version_str(d->cuda_version, cuda, sizeof cuda);
    cudnn_version_str(d->cudnn_version, cudnn, sizeof cudnn);
    snprintf(buf, n, "%s (compute capability %d.%d, CUDA %s, cuDNN %s)", *d->name ? d->name : "a GPU",
             d->compute_capability / 10, d->compute_capability % 10, cuda, cudnn);
}

/* Refuses a file planned for a device this build or machine cannot run it on. */
static zci_status check_device(const header *h, const zci_options *opts, const char *source)
{
    if (h->device != ZCI_DEVICE_CUDA) return ZCI_OK;
    char cmd[1024], file_dev[256];
    device_str(&h->dev, file_dev, sizeof file_dev);
    const zci_backend_iface *be = zci_cuda_backend();
    if (!be) {
        rebuild_cmd(h, source, ZCI_DEVICE_CPU, cmd, sizeof cmd);
        return zci_error(ZCI_UNSUPPORTED,
                         "engine file '%s' was planned for CUDA%s%s; this build of zcinfer has no CUDA support. "
                         "Build an engine for the CPU: %s",
                         source, h->dev.compute_capability ? " on " : "", h->dev.compute_capability ? file_dev : "",
                         cmd);
    }
    if (!be->describe_device || !h->dev.compute_capability) return ZCI_OK;
    zci_device_desc here;
    memset(&here, 0, sizeof here);
    zci_status st = be->describe_device(opts, &here);
    if (st != ZCI_OK) return zci_error_prefix(st, "engine file '%s' was planned for CUDA on %s", source, file_dev);
    char diff[96] = "";
    if (here.compute_capability != h->dev.compute_capability) strcat(diff, ", GPU architecture");
    if (here.cuda_version != h->dev.cuda_version) strcat(diff, ", CUDA version");
    if (here.cudnn_version != h->dev.cudnn_version) strcat(diff, ", cuDNN version");
    if (!*diff) {
        if (strcmp(here.name, h->dev.name))
            zci_log(opts->verbose, "engine '%s' was planned on %s, runs on %s (same architecture)", source, h->dev.name,
                    here.name);
        return ZCI_OK;
    }
    char here_dev[256];
    device_str(&here, here_dev, sizeof here_dev);
    rebuild_cmd(h, source, -1, cmd, sizeof cmd);
    return zci_error(ZCI_UNSUPPORTED,
                     "engine file '%s' was planned for %s; device %d here is %s: they differ in %s. "
                     "Rebuild the engine on this machine: %s",
                     source, file_dev, opts->device_id, here_dev, diff + 2, cmd);
}

/* ---------------------------------------------------------------- summary and graph */

static zci_status read_summary(rbuf *r, zci_engine_loaded *e)
{
    zci_summary *s = &e->summary;
    s->opset = get_i32(r);
    s->parameters = get_i64(r);
    s->nodes_in_model = get_i32(r);
    uint32_t n = get_count(r, 8);
    CHECK_READ(r, "model summary");
    if (s->parameters < 0 || s->nodes_in_model < 0) return corrupt(r, "model summary");
    e->op_types = zci_calloc((size_t)n + 1, sizeof *e->op_types, "summary");
    e->op_counts = zci_calloc((size_t)n + 1, sizeof *e->op_counts, "summary");
    if (!e->op_types || !e->op_counts) return ZCI_OUT_OF_MEMORY;
    for (uint32_t i = 0; i < n; i++) {
        ZCI_TRY(get_str(r, &e->op_types[i], "op type"));
        s->n_op_types = (int)i + 1; /* kept current so that freeing finds what exists */
        e->op_counts[i] = get_i32(r);
        CHECK_READ(r, "op count");
        if (e->op_counts[i] < 0) return corrupt(r, "op count");
    }
    return ZCI_OK;
}

static zci_status read_tensors(rbuf *r, zci_graph *g)
{
    uint32_t n = get_count(r, 12);
    CHECK_READ(r, "tensor count");
    for (uint32_t i = 0; i < n; i++) {
        char *name;
        ZCI_TRY(get_str(r, &name, "tensor name"));
        if (!*name || zci_graph_find(g, name) >= 0) {
            free(name);
            return corrupt(r, "empty or repeated tensor name");
        }
        unsigned kind = get_u8(r), is_output = get_u8(r);
        zci_dtype dtype;
        int ndim;
        int64_t dims[ZCI_MAX_DIMS];
        size_t bytes;
        zci_status st = get_shape(r, &dtype, &ndim, dims, &bytes, "tensor shape");
        unsigned has_data = get_u8(r);
        if (st == ZCI_OK && (r->bad || kind > ZCI_TENSOR_CONSTANT || is_output > 1 ||
                             has_data != (kind == ZCI_TENSOR_CONSTANT)))
            st = corrupt(r, "tensor kind");
        int t = st == ZCI_OK ? zci_graph_add_tensor(g, name, (zci_tensor_kind)kind) : -1;
        free(name);
        if (st != ZCI_OK) return st;
        if (t < 0) return ZCI_OUT_OF_MEMORY;
        zci_tensor *x = &g->tensors[t];
        zci_tensor_set_shape(x, dtype, dims, ndim);
        x->is_output = is_output;
        if (has_data) {
            if (get_u64(r) != bytes) return corrupt(r, "constant size");
            void *data;
            ZCI_TRY(get_array(r, bytes, 1, &data, "constant data"));
            zci_tensor_make_const(x, data);
        }
    }
    return ZCI_OK;
}

/* The graph's input (output) list: tensor numbers that exist; inputs of kind INPUT, each once;
 * and the lists must be complete: every INPUT tensor is bound by the caller and every tensor
 * marked as an output is written to the caller's buffer (backends plan no memory for them). */
static zci_status read_io(rbuf *r, zci_graph *g, int outputs, uint8_t *listed)
{
    uint32_t n = get_count(r, 4);
    CHECK_READ(r, "input and output lists");
    int *list = zci_malloc(((size_t)n + 1) * sizeof *list, "graph inputs");
    if (!list) return ZCI_OUT_OF_MEMORY;
    if (outputs) {
        g->outputs = list;
        g->n_outputs = g->cap_outputs = (int)n;
    } else {
        g->inputs = list;
        g->n_inputs = g->cap_inputs = (int)n;
    }
    uint8_t bit = outputs ? 2 : 1;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = get_u32(r);
        if (r->bad || t >= (uint32_t)g->n_tensors) return corrupt(r, "input and output lists");
        const zci_tensor *x = &g->tensors[t];
        if (outputs ? !x->is_output : (x->kind != ZCI_TENSOR_INPUT || (listed[t] & bit)))
            return corrupt(r, outputs ? "a graph output not marked as one"
                                      : "a graph input listed twice or not an input");
        listed[t] |= bit;
        list[i] = (int)t;
    }
    for (int t = 0; t < g->n_tensors; t++) {
        const zci_tensor *x = &g->tensors[t];
        if (outputs ? x->is_output && !(listed[t] & bit) : x->kind == ZCI_TENSOR_INPUT && !(listed[t] & bit))
            return corrupt(r, outputs ? "a tensor marked as an output missing from the output list"
                                      : "an input missing from the input list");
    }
    return ZCI_OK;
}

static zci_status read_attr(rbuf *r, zci_attr *a)
{
    ZCI_TRY(get_str(r, &a->name, "attribute name"));
    uint32_t type = get_u32(r);
    CHECK_READ(r, "attribute");
    if (type > ZCI_ATTR_TYPE_PROTOS) return corrupt(r, "attribute type");
    a->type = (zci_attr_type)type;
    switch (a->type) {
    case ZCI_ATTR_FLOAT: a->f = get_f32(r); break;
    case ZCI_ATTR_INT: a->i = get_i64(r); break;
    case ZCI_ATTR_STRING: return get_str(r, &a->s, "attribute string");
    case ZCI_ATTR_FLOATS:
    case ZCI_ATTR_INTS: {
        uint32_t n = get_count(r, type == ZCI_ATTR_FLOATS ? 4 : 8);
        CHECK_READ(r, "attribute values");
        a->n = (int)n;
        return type == ZCI_ATTR_FLOATS ? get_array(r, n, 4, (void **)&a->floats, "attribute values")
                                       : get_array(r, n, 8, (void **)&a->ints, "attribute values");
    }
    case ZCI_ATTR_STRINGS: {
        uint32_t n = get_count(r, 4);
        CHECK_READ(r, "attribute strings");
        a->strings = zci_calloc((size_t)n + 1, sizeof *a->strings, "attribute strings");
        if (!a->strings) return ZCI_OUT_OF_MEMORY;
        a->n = (int)n;
        for (uint32_t i = 0; i < n; i++) ZCI_TRY(get_str(r, &a->strings[i], "attribute strings"));
        break;
    }
    case ZCI_ATTR_TENSOR: {
        unsigned present = get_u8(r);
        CHECK_READ(r, "attribute tensor");
        if (present > 1) return corrupt(r, "attribute tensor");
        if (!present) break;
        a->t = zci_calloc(1, sizeof *a->t, "attribute tensor");
        if (!a->t) return ZCI_OUT_OF_MEMORY;
        size_t bytes;
        ZCI_TRY(get_shape(r, &a->t->dtype, &a->t->ndim, a->t->dims, &bytes, "attribute tensor"));
        if (get_u64(r) != bytes) return corrupt(r, "attribute tensor size");
        return get_array(r, bytes, 1, &a->t->data, "attribute tensor");
    }
    default: break;
    }
    CHECK_READ(r, "attribute value");
    return ZCI_OK;
}

/* Tensor numbers of a node's inputs or outputs into a malloc'd array: -1 or an existing
 * tensor. */
static zci_status read_refs(rbuf *r, const zci_graph *g, int **refs, uint32_t *count)
{
    *count = get_count(r, 4);
    CHECK_READ(r, "node inputs or outputs");
    *refs = zci_malloc(((size_t)*count + 1) * sizeof **refs, "node inputs");
    if (!*refs) return ZCI_OUT_OF_MEMORY;
    for (uint32_t k = 0; k < *count; k++) {
        int32_t t = get_i32(r);
        if (r->bad || t < -1 || t >= g->n_tensors) return corrupt(r, "node inputs or outputs");
        (*refs)[k] = t;
    }
    return ZCI_OK;
}

static zci_status read_node(rbuf *r, zci_graph *g)
{
    char *name = NULL, *type = NULL, *domain = NULL;
    int *in = NULL, *out = NULL;
    uint32_t n_in = 0, n_out = 0;
    zci_status st = get_str(r, &name, "node name");
    if (st == ZCI_OK) st = get_str(r, &type, "op type");
    if (st == ZCI_OK) st = get_str(r, &domain, "op domain");
    int32_t opset = get_i32(r);
    if (st == ZCI_OK) st = read_refs(r, g, &in, &n_in);
    if (st == ZCI_OK) st = read_refs(r, g, &out, &n_out);
    int idx = -1;
    if (st == ZCI_OK) {
        idx = zci_graph_add_node(g, name, type, domain, in, (int)n_in, out, (int)n_out);
        if (idx < 0) st = ZCI_OUT_OF_MEMORY;
    }
    free(name);
    free(type);
    free(domain);
    free(in);
    free(out);
    if (st != ZCI_OK) return st;
    zci_node *n = &g->nodes[idx];
    n->opset = opset;
    /* every op has a first output (planning code reads out[0] unchecked) */
    if (!n->n_out || n->out[0] < 0) return corrupt(r, "a node without a first output");
    uint32_t n_attrs = get_count(r, 8);
    CHECK_READ(r, "attribute count");
    if (!n_attrs) return ZCI_OK;
    n->attrs = zci_calloc(n_attrs, sizeof *n->attrs, "node attributes");
    if (!n->attrs) return ZCI_OUT_OF_MEMORY;
    for (uint32_t a = 0; a < n_attrs; a++) {
        st = read_attr(r, &n->attrs[a]);
        n->n_attrs = (int)a + 1; /* counted before checking, so that freeing the graph frees it */
        if (st != ZCI_OK) return st;
    }
    return ZCI_OK;
}

/* Checks that the node list is a valid execution order (each input an input, a constant or
 * the output of an earlier node; each output a fresh activation written once; each graph
 * output produced), sets producers and g->order. */
static zci_status check_order(rbuf *r, zci_graph *g, uint8_t *defined)
{
    for (int t = 0; t < g->n_tensors; t++) {
        defined[t] = g->tensors[t].kind != ZCI_TENSOR_ACTIVATION;
        g->tensors[t].producer = -1;
    }
    g->order = zci_malloc(((size_t)g->n_nodes + 1) * sizeof *g->order, "execution order");
    if (!g->order) return ZCI_OUT_OF_MEMORY;
    for (int i = 0; i < g->n_nodes; i++) {
        zci_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && !defined[n->in[k]]) return corrupt(r, "a node reads a tensor before it is written");
        for (int k = 0; k < n->n_out; k++) {
            int t = n->out[k];
            if (t < 0) continue;
            if (defined[t]) return corrupt(r, "a tensor written twice, or a node writing an input or constant");
            defined[t] = 1;
            g->tensors[t].producer = i;
        }
        g->order[i] = i;
    }
    g->n_order = g->n_nodes;
    for (int i = 0; i < g->n_outputs; i++)
        if (!defined[g->outputs[i]]) return corrupt(r, "a graph output that nothing writes");
    return ZCI_OK;
}

/* Resolves each node's op and runs its infer again, in order: that re-derives n->params,
 * and the shapes it arrives at must be the ones the file holds. */
static zci_status infer_all(zci_graph *g, const char *source)
{
    size_t nt = (size_t)g->n_tensors;
    zci_tensor *expect = zci_malloc((nt + 1) * sizeof *expect, "engine shapes");
    if (!expect) return ZCI_OUT_OF_MEMORY;
    memcpy(expect, g->tensors, nt * sizeof *expect);
    zci_status st = ZCI_OK;
    for (int i = 0; i < g->n_nodes && st == ZCI_OK; i++) {
        zci_node *n = &g->nodes[i];
        n->op = zci_op_find(n->domain, n->op_type, n->opset);
        if (!n->op) {
            st = zci_error(ZCI_UNSUPPORTED, "engine file '%s': %s: this zcinfer has no such operator", source,
                           zci_node_desc(g, n));
            break;
        }
        st = n->op->infer(g, n);
        if (st != ZCI_OK) {
            st = zci_error_prefix(st, "engine file '%s': %s", source, zci_node_desc(g, n));
            break;
        }
        for (int k = 0; k < n->n_out && st == ZCI_OK; k++) {
            if (n->out[k] < 0) continue;
            const zci_tensor *got = &g->tensors[n->out[k]], *want = &expect[n->out[k]];
            if (got->dtype != want->dtype || got->ndim != want->ndim ||
                memcmp(got->dims, want->dims, (size_t)got->ndim * sizeof got->dims[0])) {
                char a[128], b[128];
                st = zci_error(ZCI_INVALID_MODEL,
                               "engine file '%s': %s: output '%s' is %s %s by shape inference, the file says %s %s; "
                               "rebuild the engine with `zcinfer build`",
                               source, zci_node_desc(g, n), got->name, zci_dtype_name(got->dtype),
                               zci_shape_str(got->dims, got->ndim, a, sizeof a), zci_dtype_name(want->dtype),
                               zci_shape_str(want->dims, want->ndim, b, sizeof b));
            }
        }
    }
    free(expect);
    return st;
}

static zci_status read_graph(rbuf *r, zci_graph *g)
{
    ZCI_TRY(read_tensors(r, g));
    uint8_t *flags = zci_calloc((size_t)g->n_tensors + 1, 1, "engine flags");
    if (!flags) return ZCI_OUT_OF_MEMORY;
    zci_status st = read_io(r, g, 0, flags);
    if (st == ZCI_OK) st = read_io(r, g, 1, flags);
    uint32_t n = st == ZCI_OK ? get_count(r, 28) : 0;
    if (st == ZCI_OK && r->bad) st = corrupt(r, "node count");
    for (uint32_t i = 0; i < n && st == ZCI_OK; i++) st = read_node(r, g);
    if (st == ZCI_OK) st = check_order(r, g, flags);
    if (st == ZCI_OK) st = infer_all(g, r->source);
    if (st == ZCI_OK) zci_graph_update_uses(g);
    free(flags);
    return st;
}

/* ---------------------------------------------------------------- decode */

static zci_status check_integrity(const uint8_t *b, size_t size, const char *source)
{
    if (size < FIXED_HEADER + CHECKSUM)
        return zci_error(ZCI_INVALID_MODEL,
                         "engine file '%s' is truncated: %zu bytes is too short for an engine; rebuild it with "
                         "`zcinfer build MODEL.onnx -o %s`",
                         source, size, engine_name(source));
    uint64_t stored, declared;
    memcpy(&stored, b + size - CHECKSUM, 8);
    memcpy(&declared, b + ZCI_ENGINE_MAGIC_SIZE + 8, 8);
    if (zci_xxh64(b, size - CHECKSUM, 0) == stored) return ZCI_OK;
    if (declared != size)
        return zci_error(ZCI_INVALID_MODEL,
                         "engine file '%s' is truncated or damaged: it has %zu bytes, its header says %llu; rebuild "
                         "it with `zcinfer build MODEL.onnx -o %s`",
                         source, size, (unsigned long long)declared, engine_name(source));
    return zci_error(ZCI_INVALID_MODEL,
                     "engine file '%s' is damaged: its checksum does not match its contents (altered or corrupted "
                     "bytes); rebuild it with `zcinfer build MODEL.onnx -o %s`",
                     source, engine_name(source));
}

static zci_status check_versions(const header *h, const char *source, size_t size)
{
    char mine[32], theirs[32];
    version_str(ZCI_VERSION_NUMBER, mine, sizeof mine);
    version_str(h->version, theirs, sizeof theirs);
    if (h->format != ZCI_ENGINE_FORMAT)
        return zci_error(ZCI_UNSUPPORTED,
                         "engine file '%s' has format version %u (written by zcinfer %s); this zcinfer %s reads "
                         "format %d: rebuild it with `zcinfer build MODEL.onnx -o %s`",
                         source, h->format, theirs, mine, ZCI_ENGINE_FORMAT, engine_name(source));
    if (h->file_size != size)
        return zci_error(ZCI_INVALID_MODEL, "engine file '%s' has %zu bytes, its header says %llu", source, size,
                         (unsigned long long)h->file_size);
    /* the planned graph's meaning (fusion attributes, op params) may change between minor
     * versions: a file is read by the major.minor series that wrote it */
    if (h->version / 100 != ZCI_VERSION_NUMBER / 100) {
        char cmd[1024];
        rebuild_cmd(h, source, -1, cmd, sizeof cmd);
        return zci_error(ZCI_UNSUPPORTED,
                         "engine file '%s' was written by zcinfer %s; this is zcinfer %s, which reads engines of "
                         "%d.%d.x only: rebuild it: %s",
                         source, theirs, mine, ZCI_VERSION_MAJOR, ZCI_VERSION_MINOR, cmd);
    }
    return ZCI_OK;
}

zci_status zci_engine_decode(const void *data, size_t size, const char *source, const zci_options *user_opts,
                             zci_engine_loaded *out)
{
    memset(out, 0, sizeof *out);
    if (!source) source = "<memory>";
    const uint8_t *b = data;
    if (!zci_engine_detect(data, size))
        return zci_error(ZCI_INVALID_MODEL, "'%s' is not an engine file (no engine magic)", source);
    double t0 = zci_now();
    ZCI_TRY(check_integrity(b, size, source));
    double t_sum = zci_now();
    rbuf r = {.base = b, .p = b, .end = b + size - CHECKSUM, .source = source};
    header h;
    memset(&h, 0, sizeof h);
    zci_status st = read_header(&r, &h);
    if (st == ZCI_OK) st = check_versions(&h, source, size);
    if (st == ZCI_OK) {
        if (user_opts)
            out->opts = *user_opts;
        else
            zci_options_init(&out->opts);
        if (user_opts && (user_opts->device != (zci_device)h.device ||
                          user_opts->precision != (zci_precision)h.precision || user_opts->batch != h.batch))
            zci_log(out->opts.verbose, "engine '%s' fixes device, precision and batch: the options' are not used",
                    source);
        out->opts.device = (zci_device)h.device;
        out->opts.precision = (zci_precision)h.precision;
        out->opts.batch = h.batch;
        out->opts.fp16_io = h.fp16_io;
        out->opts.allow_tf32 = h.allow_tf32;
        st = check_device(&h, &out->opts, source);
    }
    if (st == ZCI_OK) st = read_summary(&r, out);
    if (st == ZCI_OK && !(out->g = zci_graph_new())) st = ZCI_OUT_OF_MEMORY;
    if (st == ZCI_OK) {
        out->g->batch = h.batch;
        out->g->opset = out->summary.opset;
        out->g->verbose = out->opts.verbose;
        if (!(out->g->source = zci_strdup(source))) st = ZCI_OUT_OF_MEMORY;
    }
    if (st == ZCI_OK) st = read_graph(&r, out->g);
    double t_graph = zci_now();
    if (st == ZCI_OK) {
        uint64_t blob_size = get_u64(&r);
        const uint8_t *blob = take(&r, blob_size);
        if (r.bad || r.p != r.end) {
            st = corrupt(&r, "backend state");
        } else if (blob_size) {
            out->blob = blob;
            out->blob_size = (size_t)blob_size;
        }
    }
    if (st == ZCI_OK) {
        char theirs[32];
        version_str(h.version, theirs, sizeof theirs);
        zci_log(out->opts.verbose,
                "engine '%s': built from '%s' by zcinfer %s for %s, %s, batch %lld%s%s; checksum %.1f ms, "
                "graph %.1f ms",
                source, h.built_from, theirs, h.device == ZCI_DEVICE_CUDA ? "CUDA" : "the CPU",
                h.precision == ZCI_PRECISION_FP16 ? "FP16" : "FP32", (long long)h.batch, *h.dev.name ? " on " : "",
                h.dev.name, (t_sum - t0) * 1e3, (t_graph - t_sum) * 1e3);
    }
    free(h.built_from);
    if (st != ZCI_OK) zci_engine_loaded_free(out);
    return st;
}

void zci_engine_loaded_free(zci_engine_loaded *e)
{
    zci_graph_free(e->g);
    if (e->op_types)
        for (int i = 0; i < e->summary.n_op_types; i++) free(e->op_types[i]);
    free(e->op_types);
    free(e->op_counts);
    memset(e, 0, sizeof *e);
}
