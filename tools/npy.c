/* npy.c: NumPy .npy reading and writing for the command line tool. */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *descr;
    zci_dtype dtype;
} descrs[] = {
    {"<f4", ZCI_FLOAT32}, {"<f2", ZCI_FLOAT16}, {"<f8", ZCI_FLOAT64}, {"<i8", ZCI_INT64}, {"<i4", ZCI_INT32},
    {"<i2", ZCI_INT16},   {"|i1", ZCI_INT8},    {"|u1", ZCI_UINT8},   {"|b1", ZCI_BOOL},  {"<u2", ZCI_UINT16},
    {"<u4", ZCI_UINT32},  {"<u8", ZCI_UINT64},
};

static const char *descr_of(zci_dtype dt)
{
    for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
        if (descrs[i].dtype == dt) return descrs[i].descr;
    return NULL;
}

int npy_read(const char *path, npy_array *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    unsigned char pre[10];
    char *header = NULL;
    int rc = -1;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6)) {
        snprintf(err, errlen, "'%s' is not a .npy file", path);
        goto done;
    }
    size_t hlen;
    if (pre[6] == 1) {
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8;
    } else {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) goto truncated;
        hlen = (size_t)pre[8] | (size_t)pre[9] << 8 | (size_t)more[0] << 16 | (size_t)more[1] << 24;
    }
    if (hlen > 1 << 20) goto truncated;
    header = calloc(1, hlen + 1);
    if (!header || fread(header, 1, hlen, f) != hlen) goto truncated;
    char *d = strstr(header, "'descr':");
    char *fo = strstr(header, "'fortran_order':");
    char *sh = strstr(header, "'shape':");
    if (!d || !fo || !sh) {
        snprintf(err, errlen, "'%s': malformed header", path);
        goto done;
    }
    if (!strncmp(fo + 16 + strspn(fo + 16, " "), "True", 4)) {
        snprintf(err, errlen, "'%s': Fortran-order arrays are not supported (save with np.ascontiguousarray)", path);
        goto done;
    }
    d = strchr(d + 8, '\'');
    if (!d) goto truncated;
    out->dtype = ZCI_DTYPE_UNDEFINED;
    for (size_t i = 0; i < sizeof descrs / sizeof descrs[0]; i++)
        if (!strncmp(d + 1, descrs[i].descr, 3) && d[4] == '\'') out->dtype = descrs[i].dtype;
    if (out->dtype == ZCI_DTYPE_UNDEFINED) {
        snprintf(err, errlen, "'%s': unsupported dtype %.8s", path, d + 1);
        goto done;
    }
    char *p = strchr(sh, '(');
    if (!p) goto truncated;
    p++;
    while (*p && *p != ')') {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ')') break;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0 || out->ndim >= ZCI_MAX_DIMS) {
            snprintf(err, errlen, "'%s': bad shape", path);
            goto done;
        }
        out->shape[out->ndim++] = v;
        p = end;
    }
    size_t n = 1;
    for (int i = 0; i < out->ndim; i++) n *= (size_t)out->shape[i];
    out->bytes = n * zci_dtype_size(out->dtype);
    out->data = malloc(out->bytes ? out->bytes : 1);
    if (!out->data || fread(out->data, 1, out->bytes, f) != out->bytes) goto truncated;
    rc = 0;
    goto done;
truncated:
    snprintf(err, errlen, "'%s' is truncated or malformed", path);
done:
    if (rc) {
        free(out->data);
        out->data = NULL;
    }
    free(header);
    fclose(f);
    return rc;
}

int npy_write(const char *path, zci_dtype dtype, const int64_t *shape, int ndim, const void *data, size_t bytes)
{
    const char *descr = descr_of(dtype);
    if (!descr) {
        errno = EINVAL;
        return -1;
    }
    char dict[512], dims[256] = "";
    size_t pos = 0;
    for (int i = 0; i < ndim; i++)
        pos += (size_t)snprintf(dims + pos, sizeof dims - pos, "%lld,%s", (long long)shape[i], i + 1 < ndim ? " " : "");
    if (ndim > 1) dims[strlen(dims) - 1] = 0; /* "(1, 3)" rather than "(1, 3,)"; one dim keeps its comma */
    int len = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, dims);
    /* pad so that magic (10) + header is a multiple of 64, ending in '\n' */
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    unsigned hl = (unsigned)(len + pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)len, f) == (size_t)len;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(data, 1, bytes, f) == bytes;
    ok = (fclose(f) == 0) && ok;
    return ok ? 0 : -1;
}
