/* npy.h: NumPy .npy files (format versions 1-3, little-endian, C order). */
#ifndef ZCI_TOOLS_NPY_H
#define ZCI_TOOLS_NPY_H

#include "zcinfer.h"

typedef struct npy_array {
    zci_dtype dtype;
    int ndim;
    int64_t shape[ZCI_MAX_DIMS];
    void *data; /* malloc'd */
    size_t bytes;
} npy_array;

/* Reads `path`; on failure returns -1 and writes the reason into err. */
int npy_read(const char *path, npy_array *out, char *err, size_t errlen);
/* Writes `bytes` of `data` as an array of `dtype` and `shape`; -1 on failure (errno set). */
int npy_write(const char *path, zci_dtype dtype, const int64_t *shape, int ndim, const void *data, size_t bytes);

#endif
