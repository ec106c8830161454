/* ops_list.h: every operator zcinfer supports, X(Type, family file). Each is defined as
 * `const zci_op zci_op_<Type>` in src/ops/<family>.c. */
#ifndef ZCI_OPS_LIST_H
#define ZCI_OPS_LIST_H

#define ZCI_OPS(X)                                                                                 \
    /* elementwise.c */                                                                            \
    X(Add) X(Sub) X(Mul) X(Div) X(Pow) X(Sqrt) X(Exp) X(Sigmoid) X(Tanh) X(Relu) X(LeakyRelu)      \
    X(Clip) X(HardSigmoid) X(HardSwish) X(Cast) X(Neg) X(Abs) X(Log) X(Reciprocal) X(Floor)       \
    X(Ceil) X(Erf) X(Equal) X(Less) X(Greater) X(Where) X(Max) X(Min)                              \
    /* normalize.c */                                                                              \
    X(Softmax) X(ReduceMean) X(BatchNormalization)                                                 \
    /* conv.c, pool.c, matmul.c */                                                                 \
    X(Conv) X(MaxPool) X(AveragePool) X(GlobalAveragePool) X(GlobalMaxPool) X(MatMul) X(Gemm)     \
    /* tensor.c */                                                                                 \
    X(Concat) X(Split) X(Slice) X(Reshape) X(Transpose) X(Flatten) X(Squeeze) X(Unsqueeze)        \
    X(Expand) X(Shape) X(Gather) X(ConstantOfShape) X(Constant) X(Range) X(Identity)              \
    /* resize.c */                                                                                 \
    X(Resize) X(Upsample)                                                                          \
    /* rowmap.c: zcinfer's own (domain "zcinfer"), made by graph/fuse.c */                        \
    X(RowMap)

#endif
