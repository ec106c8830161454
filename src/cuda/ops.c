/* ops.c: the CUDA backend's dispatch table: one row per ONNX op type, pointing at the op
 * family's functions in src/cuda/<family>.cu. An op type missing here is refused when a session
 * is created (ZCI_UNSUPPORTED naming the node, op and opset). Shape, ConstantOfShape, Constant and
 * Range have no row: planning folds them into constants. */
#include <string.h>

#include "cuda/cuda_internal.h"

#define CU_FAMILY(f)                                                                               \
    zci_status cu_##f##_supports(const cu_ctx *c, const zci_node *n);                              \
    zci_status cu_##f##_prepare(cu_ctx *c, const zci_node *n, void **state);                       \
    zci_status cu_##f##_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t stream);
CU_FAMILY(ew)
CU_FAMILY(reduce)
CU_FAMILY(bn)
CU_FAMILY(conv)
CU_FAMILY(pool)
CU_FAMILY(mm)
CU_FAMILY(parts)
CU_FAMILY(copy)
CU_FAMILY(gather)
CU_FAMILY(resize)
CU_FAMILY(rowmap)
#undef CU_FAMILY
void cu_conv_release(void *state);
void cu_mm_release(void *state);
zci_status cu_view_launch(cu_ctx *c, const zci_node *n, void *state, cudaStream_t stream);

/* The last field says whether the op also runs on NHWC tensors (layout.c). */
#define EW(T) {#T, cu_ew_supports, cu_ew_prepare, cu_ew_launch, NULL, 1}
#define ROW(T, f, nhwc) {#T, cu_##f##_supports, cu_##f##_prepare, cu_##f##_launch, NULL, nhwc}
#define VIEW(T) {#T, NULL, NULL, cu_view_launch, NULL, 0}

static const cu_op table[] = {
    /* elementwise.cu */
    EW(Add), EW(Sub), EW(Mul), EW(Div), EW(Pow), EW(Max), EW(Min), EW(Equal), EW(Less), EW(Greater), EW(Where),
    EW(Sqrt), EW(Exp), EW(Sigmoid), EW(Tanh), EW(Relu), EW(LeakyRelu), EW(Clip), EW(HardSigmoid), EW(HardSwish),
    EW(Neg), EW(Abs), EW(Log), EW(Reciprocal), EW(Floor), EW(Ceil), EW(Erf), EW(Cast),
    /* normalize.cu */
    ROW(Softmax, reduce, 0), ROW(ReduceMean, reduce, 0), ROW(GlobalAveragePool, reduce, 1),
    ROW(GlobalMaxPool, reduce, 1), ROW(BatchNormalization, bn, 1),
    /* conv.cu, pool.cu, matmul.cu */
    {"Conv", cu_conv_supports, cu_conv_prepare, cu_conv_launch, cu_conv_release, 1},
    ROW(MaxPool, pool, 1), ROW(AveragePool, pool, 1),
    {"MatMul", cu_mm_supports, cu_mm_prepare, cu_mm_launch, cu_mm_release, 0},
    {"Gemm", cu_mm_supports, cu_mm_prepare, cu_mm_launch, cu_mm_release, 0},
    /* tensor.cu */
    ROW(Concat, parts, 1), ROW(Split, parts, 1), ROW(Slice, copy, 0), ROW(Transpose, copy, 0), ROW(Expand, copy, 0),
    ROW(Gather, gather, 0), VIEW(Reshape), VIEW(Flatten), VIEW(Squeeze), VIEW(Unsqueeze), VIEW(Identity),
    /* resize.cu */
    ROW(Resize, resize, 1), ROW(Upsample, resize, 1),
    /* rowmap.cu: zcinfer's own op (ops/rowmap.h) */
    ROW(RowMap, rowmap, 0),
};

const cu_op *cu_op_find(const char *type)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].type, type)) return &table[i];
    return NULL;
}
