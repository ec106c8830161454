/* rowmap.h: RowMap, zcinfer's own op (domain "zcinfer") for the tail of a detection head, made
 * by graph/fuse.c from the nodes an exporter writes, never read from a model by name.
 *
 * YOLOv5's Detect head writes, per level, Transpose -> Slice x3 (or Split) -> Mul/Add/Pow with
 * constants (grid, anchors, stride) -> Concat on the last axis -> Reshape, and one Concat of the
 * levels: about a dozen nodes and as many passes over the 25,200 x 85 output per level. RowMap
 * does all of it in one pass: every output row is a row of a (permuted) input, and each range
 * of its columns goes through a short program of elementwise operations with constants.
 *
 * Semantics. Inputs 0 .. parts-1 are the sources X_p; later inputs are constants. Part p's
 * tensor T_p is X_p transposed by perm_p: shape (N, mid..., C), the same N and C for every part.
 * Each part's columns are split into branches [lo, hi), in order and covering [0, C); branch b
 * applies its operations in order to T_p[..., lo:hi]:
 *     v = v op K   (ADD, SUB, MUL, DIV, POW)       v = K op v   (RSUB, RDIV)
 * where K is a scalar or a constant input broadcast (numpy rules) to the branch's shape
 * (N, mid..., hi - lo). With one part and flatten = 0 the output is T_0's shape; otherwise the
 * parts' rows (the product of their mid dims) follow each other: output (N, sum of rows, C).
 * This is exactly Concat(axis 1) of Reshape(N, -1, C) of Concat(axis -1) of the branches.
 *
 * Attributes (all numbers, so that engine files carry the node like any other):
 *     "parts"    INT     number of source inputs
 *     "flatten"  INT     0 or 1, as above
 *     "perm"     INTS    the parts' permutations, one after another (rank of X_p entries each)
 *     "prog"     INTS    per part: branch count; per branch: lo, hi, op count; per op: code
 *                        (zci_rm_code), then the constant's input index or -1 for a scalar
 *     "scalars"  FLOATS  the scalar operands, in the order prog names them */
#ifndef ZCI_OPS_ROWMAP_H
#define ZCI_OPS_ROWMAP_H

#include <math.h>

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ZCI_RM_MAX_PARTS 4
#define ZCI_RM_MAX_BRANCHES 4
#define ZCI_RM_MAX_OPS 4
#define ZCI_RM_MAX_RANK 6 /* N, up to 4 mid dims, C */

typedef enum zci_rm_code {
    ZCI_RM_ADD = 0,
    ZCI_RM_SUB = 1,
    ZCI_RM_MUL = 2,
    ZCI_RM_DIV = 3,
    ZCI_RM_POW = 4,
    ZCI_RM_RSUB = 5, /* K - v */
    ZCI_RM_RDIV = 6, /* K / v */
    ZCI_RM_CODE_COUNT_
} zci_rm_code;

typedef struct zci_rm_op {
    int code;    /* zci_rm_code */
    int input;   /* node input holding K, or -1: K is `scalar` */
    float scalar;
    /* K's element strides over T's dims (N, mid..., column within the branch); 0 where K is
     * broadcast */
    int64_t kstride[ZCI_RM_MAX_RANK];
} zci_rm_op;

typedef struct zci_rm_branch {
    int lo, hi, n_ops;
    zci_rm_op ops[ZCI_RM_MAX_OPS];
} zci_rm_branch;

typedef struct zci_rm_part {
    int rank;                     /* of X_p and T_p */
    int perm[ZCI_RM_MAX_RANK];    /* T_p's dim d is X_p's dim perm[d] */
    int64_t dims[ZCI_RM_MAX_RANK]; /* T_p's shape */
    int64_t rows;                 /* product of the mid dims: rows per image */
    int64_t row0;                 /* first output row of the part within an image */
    int n_branches;
    zci_rm_branch br[ZCI_RM_MAX_BRANCHES];
} zci_rm_part;

typedef struct zci_rowmap_params {
    int n_parts, flatten;
    int64_t batch, cols;   /* N and C */
    int64_t rows;          /* output rows per image, all parts */
    zci_rm_part part[ZCI_RM_MAX_PARTS];
} zci_rowmap_params;

#ifdef __CUDACC__
#define ZCI_RM_HD __host__ __device__
#else
#define ZCI_RM_HD
#endif

/* One operation on one value: the arithmetic of every backend (Pow as the CPU's Pow: powf). */
static inline ZCI_RM_HD float zci_rm_apply(int code, float v, float k)
{
    switch (code) {
    case ZCI_RM_ADD: return v + k;
    case ZCI_RM_SUB: return v - k;
    case ZCI_RM_MUL: return v * k;
    case ZCI_RM_DIV: return v / k;
    case ZCI_RM_POW: return powf(v, k);
    case ZCI_RM_RSUB: return k - v;
    default: return k / v; /* ZCI_RM_RDIV */
    }
}

/* Node attribute names. */
#define ZCI_RM_ATTR_PARTS "parts"
#define ZCI_RM_ATTR_FLATTEN "flatten"
#define ZCI_RM_ATTR_PERM "perm"
#define ZCI_RM_ATTR_PROG "prog"
#define ZCI_RM_ATTR_SCALARS "scalars"
#define ZCI_RM_DOMAIN "zcinfer"

#ifdef __cplusplus
}
#endif

#endif
