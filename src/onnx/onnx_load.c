/* onnx_load.c: ModelProto bytes -> zci_graph. Decodes only what inference needs; everything
 * is bounds-checked (pb.h) and every inconsistency is an error naming the tensor or node. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "onnx/onnx.h"
#include "onnx/pb.h"

#define CORRUPT(what) zci_error(ZCI_INVALID_MODEL, "corrupt or truncated protobuf while reading %s", what)

/* ---------------------------------------------------------------- files */

zci_status zci_read_file(const char *path, void **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return zci_error(ZCI_IO, "cannot open '%s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return zci_error(ZCI_IO, "'%s' is not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    void *buf = zci_malloc(n ? n : 1, "model file");
    if (!buf) {
        fclose(f);
        return ZCI_OUT_OF_MEMORY;
    }
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        free(buf);
        return zci_error(ZCI_IO, "cannot read '%s': %s", path, strerror(errno));
    }
    fclose(f);
    *data = buf;
    *size = n;
    return ZCI_OK;
}

/* ---------------------------------------------------------------- tensors */

typedef struct raw_tensor {
    zci_value v;
    char *name;
    const uint8_t *raw; /* raw_data */
    size_t raw_len;
    pb_reader packed[5]; /* float_data, int32_data, int64_data, double_data, uint64_data */
    int n_singles;       /* non-packed repeated values seen (older writers) */
    int external;
    char *location;
    int64_t ext_offset, ext_length;
} raw_tensor;

enum { P_FLOAT, P_INT32, P_INT64, P_DOUBLE, P_UINT64 };

static void raw_tensor_clear(raw_tensor *t)
{
    free(t->v.data);
    free(t->name);
    free(t->location);
    memset(t, 0, sizeof *t);
}

static zci_status parse_string_entry(pb_reader r, char **key, char **value)
{
    uint32_t f, w;
    int rc;
    while ((rc = pb_field(&r, &f, &w)) > 0) {
        pb_reader s;
        if ((f == 1 || f == 2) && w == PB_LEN) {
            if (pb_len(&r, &s)) return CORRUPT("a key/value entry");
            char **dst = f == 1 ? key : value;
            free(*dst);
            *dst = zci_strndup((const char *)s.p, (size_t)(s.end - s.p));
            if (!*dst) return ZCI_OUT_OF_MEMORY;
        } else if (pb_skip(&r, w)) {
            return CORRUPT("a key/value entry");
        }
    }
    return rc < 0 ? CORRUPT("a key/value entry") : ZCI_OK;
}

/* Reads the TensorProto fields; values are decoded later by tensor_values. */
static zci_status parse_tensor_fields(pb_reader r, raw_tensor *t)
{
    uint32_t f, w;
    int rc;
    memset(t, 0, sizeof *t);
    while ((rc = pb_field(&r, &f, &w)) > 0) {
        pb_reader s;
        uint64_t v;
        switch (f) {
        case 1: /* dims */
            if (w == PB_LEN) {
                if (pb_len(&r, &s)) return CORRUPT("tensor dims");
                while (s.p < s.end) {
                    if (pb_varint(&s, &v)) return CORRUPT("tensor dims");
                    if (t->v.ndim >= ZCI_MAX_DIMS) return zci_error(ZCI_UNSUPPORTED, "tensor rank above %d", ZCI_MAX_DIMS);
                    t->v.dims[t->v.ndim++] = (int64_t)v;
                }
            } else {
                if (pb_varint(&r, &v)) return CORRUPT("tensor dims");
                if (t->v.ndim >= ZCI_MAX_DIMS) return zci_error(ZCI_UNSUPPORTED, "tensor rank above %d", ZCI_MAX_DIMS);
                t->v.dims[t->v.ndim++] = (int64_t)v;
            }
            break;
        case 2:
            if (pb_varint(&r, &v)) return CORRUPT("tensor data_type");
            t->v.dtype = (zci_dtype)v;
            break;
        case 8:
            if (w != PB_LEN || pb_len(&r, &s)) return CORRUPT("tensor name");
            free(t->name);
            t->name = zci_strndup((const char *)s.p, (size_t)(s.end - s.p));
            if (!t->name) return ZCI_OUT_OF_MEMORY;
            break;
        case 9:
            if (w != PB_LEN || pb_len(&r, &s)) return CORRUPT("tensor raw_data");
            t->raw = s.p;
            t->raw_len = (size_t)(s.end - s.p);
            break;
        case 4: case 5: case 7: case 10: case 11: {
            int k = f == 4 ? P_FLOAT : f == 5 ? P_INT32 : f == 7 ? P_INT64 : f == 10 ? P_DOUBLE : P_UINT64;
            if (w == PB_LEN) {
                if (t->packed[k].p) return zci_error(ZCI_UNSUPPORTED, "tensor data split over several packed fields");
                if (pb_len(&r, &t->packed[k])) return CORRUPT("tensor data");
            } else {
                /* unpacked repeated values: rare (very old writers); not supported */
                t->n_singles++;
                if (pb_skip(&r, w)) return CORRUPT("tensor data");
            }
            break;
        }
        case 6:
            return zci_error(ZCI_UNSUPPORTED, "string tensors are not supported");
        case 13: { /* external_data */
            char *key = NULL, *val = NULL;
            if (w != PB_LEN || pb_len(&r, &s)) return CORRUPT("tensor external_data");
            zci_status st = parse_string_entry(s, &key, &val);
            if (st == ZCI_OK && key && val) {
                if (!strcmp(key, "location")) {
                    free(t->location);
                    t->location = val;
                    val = NULL;
                } else if (!strcmp(key, "offset")) {
                    t->ext_offset = strtoll(val, NULL, 10);
                } else if (!strcmp(key, "length")) {
                    t->ext_length = strtoll(val, NULL, 10);
                }
            }
            free(key);
            free(val);
            if (st) return st;
            break;
        }
        case 14:
            if (pb_varint(&r, &v)) return CORRUPT("tensor data_location");
            t->external = v == 1;
            break;
        default:
            if (pb_skip(&r, w)) return CORRUPT("a tensor");
        }
    }
    if (rc < 0) return CORRUPT("a tensor");
    if (t->n_singles) return zci_error(ZCI_UNSUPPORTED, "tensor '%s' stores its values unpacked", t->name ? t->name : "");
    return ZCI_OK;
}

/* Reads external data `location` (relative to base_dir) into dst. The path may not be absolute
 * or climb out of the model's folder, as the ONNX checker also requires. */
static zci_status read_external(const raw_tensor *t, const char *base_dir, void *dst, size_t bytes)
{
    const char *loc = t->location;
    if (!loc || !*loc) return zci_error(ZCI_INVALID_MODEL, "tensor '%s' has external data without a location", t->name);
    if (loc[0] == '/' || strstr(loc, ".."))
        return zci_error(ZCI_INVALID_MODEL, "tensor '%s': external data location '%s' must stay inside the model's folder",
                         t->name, loc);
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", base_dir ? base_dir : ".", loc) >= sizeof path)
        return zci_error(ZCI_IO, "external data path too long");
    FILE *f = fopen(path, "rb");
    if (!f) return zci_error(ZCI_IO, "tensor '%s': cannot open external data file '%s': %s", t->name, path, strerror(errno));
    struct stat sb;
    zci_status st = ZCI_OK;
    if (fstat(fileno(f), &sb)) {
        st = zci_error(ZCI_IO, "cannot stat '%s'", path);
    } else if (t->ext_offset < 0 || (t->ext_length && t->ext_length != (int64_t)bytes)) {
        st = zci_error(ZCI_INVALID_MODEL, "tensor '%s': external data length %lld does not match its shape (%zu bytes)",
                       t->name, (long long)t->ext_length, bytes);
    } else if ((uint64_t)t->ext_offset + bytes > (uint64_t)sb.st_size) {
        st = zci_error(ZCI_INVALID_MODEL,
                       "tensor '%s': external data file '%s' holds %lld bytes, the tensor needs %zu at offset %lld",
                       t->name, path, (long long)sb.st_size, bytes, (long long)t->ext_offset);
    } else if (fseeko(f, (off_t)t->ext_offset, SEEK_SET) || (bytes && fread(dst, 1, bytes, f) != bytes)) {
        st = zci_error(ZCI_IO, "cannot read external data of tensor '%s' from '%s'", t->name, path);
    }
    fclose(f);
    return st;
}

/* Decodes the values of a parsed TensorProto into t->v.data. */
static zci_status tensor_values(raw_tensor *t, const char *base_dir)
{
    const char *name = t->name ? t->name : "";
    size_t es = zci_dtype_size(t->v.dtype);
    if (!es) return zci_error(ZCI_UNSUPPORTED, "tensor '%s' has unsupported data type %d", name, (int)t->v.dtype);
    for (int i = 0; i < t->v.ndim; i++)
        if (t->v.dims[i] < 0) return zci_error(ZCI_INVALID_MODEL, "tensor '%s' has a negative dimension", name);
    int64_t numel = zci_shape_numel(t->v.dims, t->v.ndim);
    if (numel < 0 || (uint64_t)numel > (uint64_t)1 << 40)
        return zci_error(ZCI_INVALID_MODEL, "tensor '%s' has an absurd element count", name);
    size_t bytes = (size_t)numel * es;
    uint8_t *dst = zci_calloc(1, bytes ? bytes : 1, "tensor data");
    if (!dst) return ZCI_OUT_OF_MEMORY;
    t->v.data = dst;
    if (t->external) return read_external(t, base_dir, dst, bytes);
    if (t->raw) {
        if (t->raw_len != bytes)
            return zci_error(ZCI_INVALID_MODEL, "tensor '%s': raw_data holds %zu bytes, its shape needs %zu", name,
                             t->raw_len, bytes);
        if (bytes) memcpy(dst, t->raw, bytes);
        return ZCI_OK;
    }
    /* typed fields: which one depends on the data type (onnx.proto's table) */
    pb_reader r;
    int64_t got = 0;
    switch (t->v.dtype) {
    case ZCI_FLOAT32:
        r = t->packed[P_FLOAT];
        if ((size_t)(r.end - r.p) != bytes) goto mismatch;
        if (bytes) memcpy(dst, r.p, bytes); /* an empty tensor has no data field at all */
        return ZCI_OK;
    case ZCI_FLOAT64:
        r = t->packed[P_DOUBLE];
        if ((size_t)(r.end - r.p) != bytes) goto mismatch;
        if (bytes) memcpy(dst, r.p, bytes); /* an empty tensor has no data field at all */
        return ZCI_OK;
    case ZCI_INT64: case ZCI_INT32: case ZCI_INT16: case ZCI_INT8: case ZCI_UINT16: case ZCI_UINT8:
    case ZCI_BOOL: case ZCI_FLOAT16: case ZCI_UINT32: case ZCI_UINT64:
        r = t->packed[t->v.dtype == ZCI_INT64 ? P_INT64 : (t->v.dtype == ZCI_UINT32 || t->v.dtype == ZCI_UINT64) ? P_UINT64 : P_INT32];
        while (r.p < r.end) {
            uint64_t v;
            if (pb_varint(&r, &v)) return CORRUPT("tensor values");
            if (got >= numel) goto mismatch;
            switch (es) {
            case 1: dst[got] = (uint8_t)v; break;
            case 2: ((uint16_t *)dst)[got] = (uint16_t)v; break;
            case 4: ((uint32_t *)dst)[got] = (uint32_t)v; break;
            default: ((uint64_t *)dst)[got] = v; break;
            }
            got++;
        }
        if (got != numel) goto mismatch;
        return ZCI_OK;
    default:
        return zci_error(ZCI_UNSUPPORTED, "tensor '%s' has unsupported data type %s", name, zci_dtype_name(t->v.dtype));
    }
mismatch:
    return zci_error(ZCI_INVALID_MODEL, "tensor '%s': the stored values do not match its shape (%lld elements)", name,
                     (long long)numel);
}

zci_status zci_onnx_load_tensor(const void *data, size_t size, zci_value *out, char **name)
{
    raw_tensor t;
    memset(out, 0, sizeof *out);
    if (name) *name = NULL;
    zci_status st = parse_tensor_fields(pb_make(data, size), &t);
    if (st == ZCI_OK) st = tensor_values(&t, NULL);
    if (st != ZCI_OK) {
        raw_tensor_clear(&t);
        return st;
    }
    *out = t.v;
    t.v.data = NULL;
    if (name) {
        *name = t.name;
        t.name = NULL;
    }
    raw_tensor_clear(&t);
    return ZCI_OK;
}

/* ---------------------------------------------------------------- loader state */

typedef struct loader {
    zci_graph *g;
    const char *base_dir;
    /* opset_import: domain -> version */
    char *domains[32];
    int versions[32];
    int n_domains;
} loader;

static zci_status take_string(pb_reader *r, uint32_t w, char **dst, const char *what)
{
    pb_reader s;
    if (w != PB_LEN || pb_len(r, &s)) return CORRUPT(what);
    free(*dst);
    *dst = zci_strndup((const char *)s.p, (size_t)(s.end - s.p));
    return *dst ? ZCI_OK : ZCI_OUT_OF_MEMORY;
}

static zci_status parse_opset(loader *L, pb_reader r)
{
    uint32_t f, w;
    int rc;
    char *domain = NULL;
    uint64_t version = 0;
    zci_status st = ZCI_OK;
    while (st == ZCI_OK && (rc = pb_field(&r, &f, &w)) > 0) {
        if (f == 1)
            st = take_string(&r, w, &domain, "opset_import");
        else if (f == 2 && w == PB_VARINT)
            st = pb_varint(&r, &version) ? CORRUPT("opset_import") : ZCI_OK;
        else if (pb_skip(&r, w))
            st = CORRUPT("opset_import");
    }
    if (st == ZCI_OK && rc < 0) st = CORRUPT("opset_import");
    if (st == ZCI_OK) {
        if (!domain || !*domain || !strcmp(domain, "ai.onnx")) {
            L->g->opset = (int)version;
        } else if (L->n_domains < 32) {
            L->domains[L->n_domains] = domain;
            L->versions[L->n_domains++] = (int)version;
            domain = NULL;
        }
    }
    free(domain);
    return st;
}

static int domain_opset(const loader *L, const char *domain)
{
    if (!domain || !*domain || !strcmp(domain, "ai.onnx")) return L->g->opset;
    for (int i = 0; i < L->n_domains; i++)
        if (!strcmp(L->domains[i], domain)) return L->versions[i];
    return 1;
}

/* ValueInfoProto -> name, dtype and dims (symbolic dims reported through sym[]). */
typedef struct value_info {
    char *name;
    zci_dtype dtype;
    int ndim;
    int has_shape;
    int64_t dims[ZCI_MAX_DIMS];
    char *sym[ZCI_MAX_DIMS];
} value_info;

static void value_info_clear(value_info *v)
{
    free(v->name);
    for (int i = 0; i < ZCI_MAX_DIMS; i++) free(v->sym[i]);
    memset(v, 0, sizeof *v);
}

static zci_status parse_shape(pb_reader r, value_info *v)
{
    uint32_t f, w;
    int rc;
    v->has_shape = 1;
    while ((rc = pb_field(&r, &f, &w)) > 0) {
        if (f != 1 || w != PB_LEN) {
            if (pb_skip(&r, w)) return CORRUPT("a tensor shape");
            continue;
        }
        pb_reader d;
        if (pb_len(&r, &d)) return CORRUPT("a tensor shape");
        if (v->ndim >= ZCI_MAX_DIMS) return zci_error(ZCI_UNSUPPORTED, "'%s' has rank above %d", v->name, ZCI_MAX_DIMS);
        int k = v->ndim++;
        v->dims[k] = -1; /* unknown unless dim_value says otherwise */
        uint32_t f2, w2;
        int rc2;
        while ((rc2 = pb_field(&d, &f2, &w2)) > 0) {
            uint64_t x;
            if (f2 == 1 && w2 == PB_VARINT) {
                if (pb_varint(&d, &x)) return CORRUPT("a dimension");
                v->dims[k] = (int64_t)x;
            } else if (f2 == 2) {
                ZCI_TRY(take_string(&d, w2, &v->sym[k], "a dimension"));
            } else if (pb_skip(&d, w2)) {
                return CORRUPT("a dimension");
            }
        }
        if (rc2 < 0) return CORRUPT("a dimension");
    }
    return rc < 0 ? CORRUPT("a tensor shape") : ZCI_OK;
}

static zci_status parse_value_info(pb_reader r, value_info *v)
{
    uint32_t f, w;
    int rc;
    memset(v, 0, sizeof *v);
    while ((rc = pb_field(&r, &f, &w)) > 0) {
        pb_reader s;
        if (f == 1) {
            ZCI_TRY(take_string(&r, w, &v->name, "a value info"));
        } else if (f == 2 && w == PB_LEN) { /* TypeProto */
            if (pb_len(&r, &s)) return CORRUPT("a type");
            uint32_t f2, w2;
            int rc2;
            while ((rc2 = pb_field(&s, &f2, &w2)) > 0) {
                pb_reader tt;
                if (f2 != 1 || w2 != PB_LEN) { /* sequences, maps, optionals: not tensors */
                    if (f2 == 4 || f2 == 5 || f2 == 8 || f2 == 9)
                        return zci_error(ZCI_UNSUPPORTED, "'%s' is not a dense tensor (sequence, map, optional or "
                                         "sparse types are not supported)", v->name ? v->name : "");
                    if (pb_skip(&s, w2)) return CORRUPT("a type");
                    continue;
                }
                if (pb_len(&s, &tt)) return CORRUPT("a tensor type");
                uint32_t f3, w3;
                int rc3;
                while ((rc3 = pb_field(&tt, &f3, &w3)) > 0) {
                    uint64_t x;
                    pb_reader sh;
                    if (f3 == 1 && w3 == PB_VARINT) {
                        if (pb_varint(&tt, &x)) return CORRUPT("a tensor type");
                        v->dtype = (zci_dtype)x;
                    } else if (f3 == 2 && w3 == PB_LEN) {
                        if (pb_len(&tt, &sh)) return CORRUPT("a tensor shape");
                        ZCI_TRY(parse_shape(sh, v));
                    } else if (pb_skip(&tt, w3)) {
                        return CORRUPT("a tensor type");
                    }
                }
                if (rc3 < 0) return CORRUPT("a tensor type");
            }
            if (rc2 < 0) return CORRUPT("a type");
        } else if (pb_skip(&r, w)) {
            return CORRUPT("a value info");
        }
    }
    return rc < 0 ? CORRUPT("a value info") : ZCI_OK;
}

/* ---------------------------------------------------------------- nodes */

static zci_status push_int(int64_t **arr, int *n, int *cap, int64_t v)
{
    ZCI_TRY(zci_grow((void **)arr, *n, cap, sizeof **arr));
    (*arr)[(*n)++] = v;
    return ZCI_OK;
}

static zci_status parse_attribute(loader *L, pb_reader r, zci_attr *a)
{
    uint32_t f, w;
    int rc;
    int cap = 0;
    int has[32] = {0};
    uint64_t v;
    pb_reader s;
    memset(a, 0, sizeof *a);
    while ((rc = pb_field(&r, &f, &w)) > 0) {
        if (f < 32) has[f] = 1;
        switch (f) {
        case 1: ZCI_TRY(take_string(&r, w, &a->name, "an attribute name")); break;
        case 20:
            if (pb_varint(&r, &v)) return CORRUPT("an attribute");
            a->type = (zci_attr_type)v;
            break;
        case 2: {
            uint32_t bits;
            if (w != PB_FIXED32 || pb_fixed(&r, &bits, 4)) return CORRUPT("an attribute");
            memcpy(&a->f, &bits, 4);
            break;
        }
        case 3:
            if (pb_varint(&r, &v)) return CORRUPT("an attribute");
            a->i = (int64_t)v;
            break;
        case 4: ZCI_TRY(take_string(&r, w, &a->s, "an attribute string")); break;
        case 5: { /* tensor */
            raw_tensor t;
            if (w != PB_LEN || pb_len(&r, &s)) return CORRUPT("an attribute tensor");
            zci_status st = parse_tensor_fields(s, &t);
            if (st == ZCI_OK) st = tensor_values(&t, L->base_dir);
            if (st == ZCI_OK) {
                zci_value_free(a->t);
                a->t = zci_malloc(sizeof *a->t, "attribute tensor");
                if (!a->t) st = ZCI_OUT_OF_MEMORY;
            }
            if (st != ZCI_OK) {
                raw_tensor_clear(&t);
                return st;
            }
            *a->t = t.v;
            t.v.data = NULL;
            raw_tensor_clear(&t);
            break;
        }
        case 7: /* floats, packed or not */
            if (w == PB_LEN) {
                if (pb_len(&r, &s) || (s.end - s.p) % 4) return CORRUPT("an attribute");
                while (s.p < s.end) {
                    float x;
                    pb_fixed(&s, &x, 4);
                    ZCI_TRY(zci_grow((void **)&a->floats, a->n, &cap, sizeof(float)));
                    a->floats[a->n++] = x;
                }
            } else {
                float x;
                if (pb_fixed(&r, &x, 4)) return CORRUPT("an attribute");
                ZCI_TRY(zci_grow((void **)&a->floats, a->n, &cap, sizeof(float)));
                a->floats[a->n++] = x;
            }
            break;
        case 8: /* ints, packed or not */
            if (w == PB_LEN) {
                if (pb_len(&r, &s)) return CORRUPT("an attribute");
                while (s.p < s.end) {
                    if (pb_varint(&s, &v)) return CORRUPT("an attribute");
                    ZCI_TRY(push_int(&a->ints, &a->n, &cap, (int64_t)v));
                }
            } else {
                if (pb_varint(&r, &v)) return CORRUPT("an attribute");
                ZCI_TRY(push_int(&a->ints, &a->n, &cap, (int64_t)v));
            }
            break;
        case 9: { /* strings */
            if (w != PB_LEN || pb_len(&r, &s)) return CORRUPT("an attribute");
            ZCI_TRY(zci_grow((void **)&a->strings, a->n, &cap, sizeof(char *)));
            a->strings[a->n] = zci_strndup((const char *)s.p, (size_t)(s.end - s.p));
            if (!a->strings[a->n++]) return ZCI_OUT_OF_MEMORY;
            break;
        }
        default:
            /* subgraphs, sparse tensors, type protos: kept as their type only; the ops that
             * would need them (If, Loop, Scan) are not supported */
            if (pb_skip(&r, w)) return CORRUPT("an attribute");
        }
    }
    if (rc < 0) return CORRUPT("an attribute");
    if (!a->name) return zci_error(ZCI_INVALID_MODEL, "an attribute has no name");
    if (a->type == ZCI_ATTR_UNDEFINED) { /* writers before IR version 2 left it out */
        a->type = has[5] ? ZCI_ATTR_TENSOR : has[4] ? ZCI_ATTR_STRING : has[7] ? ZCI_ATTR_FLOATS : has[8] ? ZCI_ATTR_INTS
                : has[9] ? ZCI_ATTR_STRINGS : has[2] ? ZCI_ATTR_FLOAT : has[3] ? ZCI_ATTR_INT : ZCI_ATTR_UNDEFINED;
    }
    if (a->type == ZCI_ATTR_STRING && !a->s) a->s = zci_strdup("");
    return ZCI_OK;
}

/* The tensor called `name`, created as a not-yet-produced activation if unseen. */
static int tensor_ref(zci_graph *g, const char *name, size_t len)
{
    char stackbuf[256];
    char *nm = len < sizeof stackbuf ? stackbuf : zci_malloc(len + 1, "name");
    if (!nm) return -1;
    memcpy(nm, name, len);
    nm[len] = 0;
    int t = zci_graph_find(g, nm);
    if (t < 0) t = zci_graph_add_tensor(g, nm, ZCI_TENSOR_ACTIVATION);
    if (nm != stackbuf) free(nm);
    return t;
}

static zci_status parse_node(loader *L, pb_reader r)
{
    zci_graph *g = L->g;
    uint32_t f, w;
    int rc;
    char *name = NULL, *op_type = NULL, *domain = NULL;
    int *in = NULL, *out = NULL, n_in = 0, n_out = 0, cap_in = 0, cap_out = 0;
    zci_attr *attrs = NULL;
    int n_attrs = 0, cap_attrs = 0;
    zci_status st = ZCI_OK;
    while (st == ZCI_OK && (rc = pb_field(&r, &f, &w)) > 0) {
        pb_reader s;
        if ((f == 1 || f == 2) && w == PB_LEN) {
            if (pb_len(&r, &s)) {
                st = CORRUPT("a node");
                break;
            }
            int t = -1;
            if (s.end > s.p && (t = tensor_ref(g, (const char *)s.p, (size_t)(s.end - s.p))) < 0) {
                st = ZCI_OUT_OF_MEMORY;
                break;
            }
            int **arr = f == 1 ? &in : &out;
            int *n = f == 1 ? &n_in : &n_out;
            st = zci_grow((void **)arr, *n, f == 1 ? &cap_in : &cap_out, sizeof(int));
            if (st == ZCI_OK) (*arr)[(*n)++] = t;
        } else if (f == 3) {
            st = take_string(&r, w, &name, "a node name");
        } else if (f == 4) {
            st = take_string(&r, w, &op_type, "a node op_type");
        } else if (f == 7) {
            st = take_string(&r, w, &domain, "a node domain");
        } else if (f == 5 && w == PB_LEN) {
            if (pb_len(&r, &s)) {
                st = CORRUPT("a node attribute");
                break;
            }
            st = zci_grow((void **)&attrs, n_attrs, &cap_attrs, sizeof *attrs);
            if (st == ZCI_OK) {
                st = parse_attribute(L, s, &attrs[n_attrs]);
                n_attrs++; /* counted even on failure so that the cleanup frees it */
            }
        } else if (pb_skip(&r, w)) {
            st = CORRUPT("a node");
        }
    }
    if (st == ZCI_OK && rc < 0) st = CORRUPT("a node");
    if (st == ZCI_OK && (!op_type || !*op_type)) st = zci_error(ZCI_INVALID_MODEL, "node '%s' has no op_type", name ? name : "");
    if (st == ZCI_OK) {
        int idx = zci_graph_add_node(g, name, op_type, domain, in, n_in, out, n_out);
        if (idx < 0) {
            st = ZCI_OUT_OF_MEMORY;
        } else {
            zci_node *n = &g->nodes[idx];
            n->attrs = attrs;
            n->n_attrs = n_attrs;
            n->opset = domain_opset(L, domain);
            attrs = NULL;
            n_attrs = 0;
        }
    } else if (st != ZCI_OK && name) {
        st = zci_error_prefix(st, "node '%s'", name);
    }
    for (int i = 0; i < n_attrs; i++) zci_attr_clear(&attrs[i]);
    free(attrs);
    free(name);
    free(op_type);
    free(domain);
    free(in);
    free(out);
    return st;
}

/* ---------------------------------------------------------------- graph */

static zci_status add_initializer(loader *L, pb_reader s)
{
    raw_tensor t;
    zci_status st = parse_tensor_fields(s, &t);
    if (st == ZCI_OK && (!t.name || !*t.name)) st = zci_error(ZCI_INVALID_MODEL, "an initializer has no name");
    if (st == ZCI_OK) st = tensor_values(&t, L->base_dir);
    if (st == ZCI_OK) {
        int idx = zci_graph_add_tensor(L->g, t.name, ZCI_TENSOR_CONSTANT);
        if (idx < 0) {
            st = zci_error_prefix(ZCI_INVALID_MODEL, "initializer");
        } else {
            zci_tensor *x = &L->g->tensors[idx];
            zci_tensor_set_shape(x, t.v.dtype, t.v.dims, t.v.ndim);
            x->data = t.v.data;
            t.v.data = NULL;
        }
    } else if (t.name) {
        st = zci_error_prefix(st, "initializer '%s'", t.name);
    }
    raw_tensor_clear(&t);
    return st;
}

static zci_status add_input(loader *L, const value_info *v)
{
    zci_graph *g = L->g;
    if (!v->name || !*v->name) return zci_error(ZCI_INVALID_MODEL, "a graph input has no name");
    int t = zci_graph_find(g, v->name);
    if (t >= 0 && g->tensors[t].kind == ZCI_TENSOR_CONSTANT) return ZCI_OK; /* initializer listed as input (IR < 4) */
    if (t >= 0) return zci_error(ZCI_INVALID_MODEL, "graph input '%s' is defined twice", v->name);
    if (!v->dtype || !zci_dtype_size(v->dtype))
        return zci_error(ZCI_UNSUPPORTED, "graph input '%s' has unsupported element type %s (ONNX data type %d)",
                         v->name, zci_dtype_name(v->dtype), (int)v->dtype);
    if (!v->has_shape)
        return zci_error(ZCI_UNSUPPORTED, "graph input '%s' has no shape; zcinfer plans fixed shapes", v->name);
    int64_t dims[ZCI_MAX_DIMS];
    for (int i = 0; i < v->ndim; i++) {
        dims[i] = v->dims[i];
        if (dims[i] >= 0 && !(dims[i] == 0 && v->sym[i])) continue;
        if (i == 0) {
            dims[i] = g->batch; /* symbolic leading dimension = batch */
        } else {
            return zci_error(ZCI_UNSUPPORTED,
                             "graph input '%s': dimension %d is symbolic ('%s'); zcinfer plans fixed shapes and only "
                             "the leading (batch) dimension may be symbolic",
                             v->name, i, v->sym[i] ? v->sym[i] : "?");
        }
    }
    t = zci_graph_add_tensor(g, v->name, ZCI_TENSOR_INPUT);
    if (t < 0) return ZCI_OUT_OF_MEMORY;
    zci_tensor_set_shape(&g->tensors[t], v->dtype, dims, v->ndim);
    ZCI_TRY(zci_grow((void **)&g->inputs, g->n_inputs, &g->cap_inputs, sizeof(int)));
    g->inputs[g->n_inputs++] = t;
    return ZCI_OK;
}

static zci_status parse_graph(loader *L, pb_reader r)
{
    zci_graph *g = L->g;
    uint32_t f, w;
    int rc;
    pb_reader s;
    /* Pass 1: initializers, so that inputs listed with them are recognised whatever the order. */
    pb_reader r1 = r;
    while ((rc = pb_field(&r1, &f, &w)) > 0) {
        if (f == 5 && w == PB_LEN) {
            if (pb_len(&r1, &s)) return CORRUPT("an initializer");
            ZCI_TRY(add_initializer(L, s));
        } else if (f == 15) {
            return zci_error(ZCI_UNSUPPORTED, "sparse initializers are not supported");
        } else if (pb_skip(&r1, w)) {
            return CORRUPT("the graph");
        }
    }
    if (rc < 0) return CORRUPT("the graph");
    /* Pass 2: inputs, then nodes, then outputs (their names must exist by then). */
    for (int pass = 0; pass < 3; pass++) {
        pb_reader r2 = r;
        while ((rc = pb_field(&r2, &f, &w)) > 0) {
            int want = pass == 0 ? 11 : pass == 1 ? 1 : 12;
            if (f != (uint32_t)want || w != PB_LEN) {
                if (pb_skip(&r2, w)) return CORRUPT("the graph");
                continue;
            }
            if (pb_len(&r2, &s)) return CORRUPT("the graph");
            if (pass == 1) {
                ZCI_TRY(parse_node(L, s));
                continue;
            }
            value_info v;
            zci_status st = parse_value_info(s, &v);
            if (st == ZCI_OK && pass == 0) st = add_input(L, &v);
            if (st == ZCI_OK && pass == 2) {
                int t = v.name ? zci_graph_find(g, v.name) : -1;
                if (t < 0) {
                    st = zci_error(ZCI_INVALID_MODEL, "graph output '%s' is not produced by any node",
                                   v.name ? v.name : "");
                } else {
                    g->tensors[t].is_output = true;
                    st = zci_grow((void **)&g->outputs, g->n_outputs, &g->cap_outputs, sizeof(int));
                    if (st == ZCI_OK) g->outputs[g->n_outputs++] = t;
                }
            }
            value_info_clear(&v);
            if (st != ZCI_OK) return st;
        }
        if (rc < 0) return CORRUPT("the graph");
    }
    if (!g->n_outputs) return zci_error(ZCI_INVALID_MODEL, "the graph has no outputs");
    return ZCI_OK;
}

zci_status zci_onnx_load(const void *data, size_t size, const char *base_dir, const char *source, int64_t batch,
                         zci_graph **out)
{
    *out = NULL;
    if (!data || !size) return zci_error(ZCI_INVALID_MODEL, "%s: the model is empty", source);
    loader L = {0};
    L.base_dir = base_dir;
    L.g = zci_graph_new();
    if (!L.g) return ZCI_OUT_OF_MEMORY;
    L.g->batch = batch;
    L.g->source = zci_strdup(source);
    zci_status st = L.g->source ? ZCI_OK : ZCI_OUT_OF_MEMORY;
    /* Scan the top level first, so that bytes that are not a model (another message, random
     * data) are named as such before any sub-message is decoded. */
    pb_reader r = pb_make(data, size), graph = {0}, opsets[64];
    int n_opsets = 0;
    uint32_t f, w;
    int rc = 0, have_graph = 0, have_ir = 0;
    while (st == ZCI_OK && (rc = pb_field(&r, &f, &w)) > 0) {
        uint64_t v;
        if (f == 1 && w == PB_VARINT) {
            have_ir = !pb_varint(&r, &v);
            if (!have_ir) st = CORRUPT("ir_version");
        } else if (f == 8 && w == PB_LEN) {
            if (n_opsets == 64) st = zci_error(ZCI_UNSUPPORTED, "more than 64 opset imports");
            else if (pb_len(&r, &opsets[n_opsets++])) st = CORRUPT("opset_import");
        } else if (f == 7 && w == PB_LEN) {
            if (pb_len(&r, &graph)) st = CORRUPT("the graph");
            have_graph = 1;
        } else if (pb_skip(&r, w)) {
            st = CORRUPT("the model");
        }
    }
    if (st == ZCI_OK && rc < 0) st = CORRUPT("the model");
    if (st == ZCI_OK && (!have_graph || !have_ir))
        st = zci_error(ZCI_INVALID_MODEL, "not an ONNX model (no %s)", !have_graph ? "graph" : "ir_version");
    for (int i = 0; st == ZCI_OK && i < n_opsets; i++) st = parse_opset(&L, opsets[i]);
    if (st == ZCI_OK && L.g->opset <= 0) L.g->opset = 1; /* no default-domain import: the oldest */
    if (st == ZCI_OK) st = parse_graph(&L, graph);
    for (int i = 0; i < L.n_domains; i++) free(L.domains[i]);
    if (st != ZCI_OK) {
        zci_graph_free(L.g);
        return zci_error_prefix(st, "%s", source);
    }
    *out = L.g;
    return ZCI_OK;
}
