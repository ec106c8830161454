/* conv.h: parameters of the sliding-window operators (Conv, MaxPool, AveragePool) as their
 * infer functions leave them in n->params, for every backend to read, and the fused epilogue
 * that a graph pass may attach to a Conv.
 *
 * Fused epilogue. A fusion pass may fold the activation that follows a Conv (Relu, Sigmoid,
 * SiLU = x * Sigmoid(x), LeakyRelu, Clip, HardSwish) and a residual Add into the Conv node:
 *
 *     sum_first = 0:   y = act(conv(x, w) + b) + s     (YOLOv5's Bottleneck: x + cv2(cv1(x)))
 *     sum_first = 1:   y = act(conv(x, w) + b + s)     (ResNet's block: relu(x + conv(..)))
 *
 * where s is the Conv node's input number `sum_input` (-1: no residual), of the output's shape
 * and type. The fusion lives in node attributes, not only in params, so that shape inference
 * can run again at any time and arrive at the same params:
 *
 *     "zci_activation"  INT    a zci_activation value (absent: ZCI_ACT_NONE)
 *     "zci_alpha"       FLOAT  activation parameter: LeakyRelu's alpha, Clip's min
 *     "zci_beta"        FLOAT  activation parameter: Clip's max
 *     "zci_sum_input"   INT    index into the node's inputs of the residual (absent: -1)
 *     "zci_sum_first"   INT    0 or 1, as above (absent: 0)
 *
 * A pass calls zci_conv_set_fusion(), which writes these attributes and re-runs Conv's infer
 * (that validates them and refreshes n->params). The residual is an extra input the pass
 * appends to the node (inputs 0..2 keep their ONNX meaning; an absent bias stays -1). */
#ifndef ZCI_OPS_CONV_H
#define ZCI_OPS_CONV_H

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The activations a Conv can apply to its output (the values of "zci_activation"). */
typedef enum zci_activation {
    ZCI_ACT_NONE = 0,
    ZCI_ACT_RELU = 1,       /* max(x, 0) */
    ZCI_ACT_SILU = 2,       /* x * sigmoid(x) */
    ZCI_ACT_LEAKY_RELU = 3, /* x >= 0 ? x : alpha * x */
    ZCI_ACT_CLIP = 4,       /* min(max(x, alpha), beta) */
    ZCI_ACT_HARDSWISH = 5,  /* x * max(0, min(1, x / 6 + 0.5)) (ONNX HardSwish) */
    ZCI_ACT_SIGMOID = 6,    /* 1 / (1 + exp(-x)) */
    ZCI_ACT_COUNT_
} zci_activation;

#define ZCI_CONV_ATTR_ACTIVATION "zci_activation"
#define ZCI_CONV_ATTR_ALPHA "zci_alpha"
#define ZCI_CONV_ATTR_BETA "zci_beta"
#define ZCI_CONV_ATTR_SUM_INPUT "zci_sum_input"
#define ZCI_CONV_ATTR_SUM_FIRST "zci_sum_first"

/* Spatial geometry of a window op with 1 to 3 spatial dimensions, pads already resolved from
 * auto_pad. Arrays are indexed by spatial dimension (0 = the outermost: D, or H, or W of a 1-D
 * op); entries beyond `nsp` are 1 (sizes, strides, dilations) or 0 (pads). */
typedef struct zci_window {
    int nsp;               /* spatial dimensions: 1, 2 or 3 */
    int64_t in[3];         /* input spatial size */
    int64_t out[3];        /* output spatial size */
    int64_t kernel[3];
    int64_t stride[3];
    int64_t dilation[3];
    int64_t pad_begin[3];
    int64_t pad_end[3];
} zci_window;

/* Conv's params (flat: free() releases them). Input x is (N, C, spatial...), weights
 * (M, C / group, kernel...), output (N, M, out...). */
typedef struct zci_conv_params {
    zci_window w;
    int64_t batch;      /* N */
    int64_t in_ch;      /* C */
    int64_t out_ch;     /* M */
    int64_t group;
    int has_bias;       /* input 2 present */
    int activation;     /* zci_activation */
    float act_alpha, act_beta;
    int sum_input;      /* input index of the residual, -1 for none */
    int sum_first;      /* 1: the residual is added before the activation */
} zci_conv_params;

/* The pooling ops' params (flat). */
typedef struct zci_pool_params {
    zci_window w;
    int64_t batch, channels;
    int ceil_mode;          /* the output size rounded up (already applied to w.out) */
    int count_include_pad;  /* AveragePool: padding counts in the divisor */
} zci_pool_params;

/* Resolves the window of node n from its attributes "strides", "dilations", "pads" and
 * "auto_pad" (NOTSET, VALID, SAME_UPPER, SAME_LOWER), for an input of spatial size in[0..nsp)
 * and the given kernel, and computes the output size; ceil_mode rounds it up, dropping a last
 * window that would start in the end padding (the ONNX reference's rule). ZCI_INVALID_MODEL
 * for malformed attributes or an input smaller than the kernel's extent. */
zci_status zci_window_init(const zci_node *n, int nsp, const int64_t *in, const int64_t *kernel, int ceil_mode,
                           zci_window *w);

/* A window lifted to 3-D with leading unit dimensions (a 2-D op is D = 1, pads 0), so that one
 * kernel loop serves every rank (the CPU Conv and pooling kernels), with the sizes the loops use. */
typedef struct zci_win3 {
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
    int64_t in_plane, out_plane, kvol; /* D*H*W of input and output, kernel taps */
} zci_win3;
zci_win3 zci_window_3d(const zci_window *w);

/* Attaches a fused epilogue to Conv node n (see the top of this file): writes the attributes
 * and re-runs Conv's infer, which checks the values (activation in range; sum_input names a
 * present input of the output's shape and type) and refreshes n->params. activation
 * ZCI_ACT_NONE with sum_input -1 removes the fusion. ZCI_INVALID_ARGUMENT when n is not a
 * Conv, or the infer's error. */
zci_status zci_conv_set_fusion(zci_graph *g, zci_node *n, zci_activation activation, float alpha, float beta,
                               int sum_input, int sum_first);

/* How the CPU backend stores activation tensor t of a planned graph: 0 = plain (the ONNX
 * layout), B (16 or 8) = channel-blocked (N, C / B, H, W, B), -1 = cannot tell (out of memory).
 * Tensors that flow between Convs run by oneDNN (directly, or through a Concat along the
 * channels of one image, a MaxPool or a nearest Resize) are kept blocked, saving two reorders per edge; conv.c states the
 * exact rule. Always 0 without oneDNN, or with the environment variable ZCI_CPU_NO_DNNL=1 (which
 * keeps every Conv on the built-in kernels). Anything that reads intermediate CPU buffers (a
 * debugging dump) must check this. */
int zci_conv_tensor_block(const zci_graph *g, int t);

/* Ops that can also pass a blocked tensor through, block for block (their input and output are
 * then both blocked or both plain): a 2-D float MaxPool of one image (pool.c), and a nearest
 * Resize of one image that keeps the channels (resize.c). */
int zci_pool_blockable(const zci_graph *g, const zci_node *n);
int zci_resize_blockable(const zci_graph *g, const zci_node *n);

/* Applies an activation to one value (the reference the kernels follow). */
float zci_activation_apply(zci_activation act, float x, float alpha, float beta);

#ifdef __cplusplus
}
#endif

#endif
