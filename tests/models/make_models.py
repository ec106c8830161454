#!/usr/bin/env python3
"""Build synthetic ONNX test models for zcinfer.

    python tests/models/make_models.py OUTDIR [--only NAME ...] [--list]

The models are built with ``onnx.helper`` and ``numpy`` only (no PyTorch) but
are laid out the way ``torch.onnx.export`` (TorchScript exporter, eval mode)
writes the corresponding PyTorch modules:

* node names follow the module scope (``/model.2/m/m.0/cv1/conv/Conv``) and
  node outputs are named ``<node name>_output_<i>``;
* parameters are initializers named after the ``state_dict`` key
  (``model.2.m.0.cv1.conv.weight``);
* BatchNorm is folded into the preceding conv's weight + bias (what YOLOv5 /
  Ultralytics ``fuse()`` + export does), except for one block in the
  classifier where a real ``BatchNormalization`` node is kept;
* SiLU is written as ``Conv -> Sigmoid -> Mul``;
* small constants are ``Constant`` nodes, large ones (grids, anchors) are
  initializers.

Weights are random but deterministic (``numpy.random.default_rng`` with a fixed
seed per model family).  All opset variants of one family use the same seed
and draw their weights in the same order, so e.g. ``yolov5n`` and
``yolov5n_opset13`` compute exactly the same function; only the op
signatures differ.  That makes the variants useful for cross-checking the
loader's opset handling.

Models: yolov5n, yolov5s (YOLOv5 v7.0), yolov8n, yolo11n (Ultralytics),
a small torchvision-style classifier, and loader variants (external data,
dynamic batch, other opsets); ``--list`` prints them.  The YOLO parameter
counts equal those of the real fused models (e.g. yolov5s 7,225,885).

Every model is checked with ``onnx.checker.check_model(full_check=True)``
and ``OUTDIR/manifest.json`` lists every model with its inputs and outputs.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# --------------------------------------------------------------------------
# Weight initialisation: emulated, folded BatchNorm.
#
# Plain random weights do not give a usable network: with SiLU, He init times
# any fixed gain either shrinks activations geometrically with depth (only the
# biases survive and the output no longer depends on the image) or grows them
# geometrically.  A trained network avoids this because every conv is followed
# by BatchNorm, which YOLOv5 / Ultralytics fold into the conv before export.
#
# We do the same: the builder evaluates the graph eagerly in numpy on a
# "probe" batch of two uniform [0, 1) images at the model's input size (the
# same distribution ort_run.py feeds) while building it.  For each conv it
# measures the statistics of the raw (He-initialised) conv output and folds a
# BatchNorm with random gamma / beta into weight and bias, like a BN layer with
# running statistics: the mean is removed per channel, the std is normalised
# per layer (per-channel std would blow up channels that barely vary over a
# noise image, and the weights would then only suit the probe image).  Pre-
# activations stay ~N(beta, gamma^2)-sized at any depth, also for inputs other
# than the probe (checked: conv outputs stay within ~1-1.3 std on new inputs).
# Heads feeding a Sigmoid / Softmax are normalised as a whole ("layer") to
# HEAD_STD, so those outputs spread over (0, 1) without saturating.
#
# The fold factors are rounded (scale to 1/64 of an octave, bias to 2^-12)
# so that ulp-level BLAS differences between machines practically never change
# the stored weights.
# --------------------------------------------------------------------------
BN_GAMMA = (0.6, 1.4)  # uniform range of the emulated BatchNorm gamma
BN_BETA_STD = 0.2  # std of the emulated BatchNorm beta (= bias of the folded conv)
HEAD_STD = 1.5  # std of the logits feeding the final Sigmoid / Softmax
PROBE_SEED = 1234

INT64_MAX = np.iinfo(np.int64).max  # what torch writes for an open-ended slice `x[..., 4:]`


def _quantize_scale(scale):
    return np.exp2(np.round(np.log2(scale) * 64) / 64)


def _quantize_shift(shift):
    return np.round(shift * 4096) / 4096


# ---- numpy reference implementations used for the probe evaluation ---------

def np_conv2d(x, w, b, strides, pads, group):
    """NCHW conv (float64) with symmetric pads; the slow-but-obvious im2col way."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1]]  # (n, c, ho, wo, kh, kw)
    ho, wo = win.shape[2:4]
    win = win.reshape(n, group, cg, ho, wo, kh, kw)
    wg = w.reshape(group, o // group, cg, kh, kw)
    if group == 1:
        y = np.tensordot(win[:, 0], wg[0], axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    else:
        y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, o, ho, wo)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


def np_pool(x, kernel, strides, pads, kind):
    pad_val = -np.inf if kind == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=pad_val)
    win = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1]]
    return win.max(axis=(4, 5)) if kind == "max" else win.mean(axis=(4, 5))


def np_hardsigmoid(x, alpha=1.0 / 6.0, beta=0.5):
    return np.clip(alpha * x + beta, 0.0, 1.0)


def np_eval(op, ins, attrs):
    """Evaluate one node on probe values; None where the op is not needed for
    calibration (shape arithmetic and the detection-head decoding)."""
    if any(v is None for v in ins if not isinstance(v, str)):
        return None
    a = attrs
    if op == "Constant":
        return [numpy_helper.to_array(a["value"])]
    if op == "Conv":
        return [np_conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                          a["strides"], a["pads"], a["group"])]
    unary = {"Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "Relu": lambda x: np.maximum(x, 0.0),
             "HardSigmoid": lambda x: np_hardsigmoid(x, a["alpha"], a["beta"]),
             "HardSwish": lambda x: x * np_hardsigmoid(x)}
    if op in unary:
        return [unary[op](ins[0])]
    binary = {"Add": np.add, "Mul": np.multiply, "Sub": np.subtract, "Div": np.divide}
    if op in binary:
        return [binary[op](ins[0], ins[1])]
    if op == "Concat":
        return [np.concatenate(ins, axis=a["axis"])]
    if op == "Split":
        if "split" in a:
            sizes = a["split"]
        elif len(ins) > 1:
            sizes = ins[1]
        else:
            sizes = [ins[0].shape[a["axis"]] // a["num_outputs"]] * a["num_outputs"]
        return np.split(ins[0], np.cumsum(sizes)[:-1], axis=a["axis"])
    if op == "MaxPool":
        return [np_pool(ins[0], a["kernel_shape"], a["strides"], a["pads"], "max")]
    if op == "AveragePool":
        return [np_pool(ins[0], a["kernel_shape"], a["strides"], a["pads"], "avg")]
    if op == "Resize":  # nearest, integer scales only
        s = ins[2].astype(int)
        x = ins[0]
        for axis in range(x.ndim):
            x = np.repeat(x, s[axis], axis=axis)
        return [x]
    if op == "MatMul":
        return [ins[0] @ ins[1]]
    if op == "Transpose":
        return [ins[0].transpose(a["perm"])]
    if op == "Softmax":
        e = np.exp(ins[0] - ins[0].max(axis=a["axis"], keepdims=True))
        return [e / e.sum(axis=a["axis"], keepdims=True)]
    if op == "Reshape":
        # The probe batch may be larger than the model's static batch of 1:
        # treat dim 0 of the target shape as the batch dimension.
        shape = [int(d) for d in ins[1]]
        if shape and shape[0] == 1:
            shape[0] = ins[0].shape[0]
        return [ins[0].reshape(shape)]
    if op == "Clip":
        return [np.clip(ins[0], ins[1], ins[2])]
    if op == "GlobalAveragePool":
        return [ins[0].mean(axis=(2, 3), keepdims=True)]
    if op == "ReduceMean":
        axes = a["axes"] if "axes" in a else ins[1]
        return [ins[0].mean(axis=tuple(axes), keepdims=bool(a["keepdims"]))]
    if op == "Flatten":
        return [ins[0].reshape(int(np.prod(ins[0].shape[:a["axis"]])), -1)]
    if op == "Gemm":
        bmat = ins[1].T if a.get("transB") else ins[1]
        return [ins[0] @ bmat + ins[2]]
    if op == "BatchNormalization":
        x, g, bb, m, v = ins
        r = lambda t: t.reshape(1, -1, 1, 1)  # noqa: E731
        return [(x - r(m)) / np.sqrt(r(v) + a["epsilon"]) * r(g) + r(bb)]
    return None


class Builder:
    """Accumulates nodes and initializers with torch-exporter style naming, and
    evaluates the graph eagerly on the probe batch (see above)."""

    def __init__(self, opset, seed):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.initializers = []
        self.probe = {}  # tensor name -> float64 value on the probe batch
        self._op_count = {}  # "<scope>/<OpType>" -> times used, for the _1, _2 suffixes

    def set_probe_input(self, name, shape):
        self.probe[name] = np.random.default_rng(PROBE_SEED).random(shape)

    # ---- naming / raw graph construction --------------------------------

    def op(self, op_type, inputs, scope="", n_out=1, outputs=None, **attrs):
        """Append a node; return its output name (or list of names if n_out > 1).

        Like the torch exporter, the node is named ``<scope>/<OpType>`` with a
        ``_<k>`` suffix for the k-th repetition in the same scope, and its
        outputs ``<node name>_output_<i>``.  ``outputs`` overrides the output
        names (used for the graph outputs).
        """
        base = f"{scope}/{op_type}"
        k = self._op_count.get(base, 0)
        self._op_count[base] = k + 1
        name = base if k == 0 else f"{base}_{k}"
        if outputs is None:
            outputs = [f"{name}_output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=name, **attrs))
        vals = np_eval(op_type, [self.probe.get(i) if i else "" for i in inputs], attrs)
        if vals is not None:
            for o, v in zip(outputs, vals):
                v = np.asarray(v)
                self.probe[o] = v.astype(np.float64) if v.dtype.kind == "f" else v
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def constant(self, value, scope="", dtype=None):
        """A ``Constant`` node holding ``value`` (numpy scalar / array / list)."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return self.op("Constant", [], scope, value=numpy_helper.from_array(arr))

    def initializer(self, name, array):
        assert name not in self.probe, f"duplicate name {name}"
        array = np.ascontiguousarray(array)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.probe[name] = array.astype(np.float64) if array.dtype.kind == "f" else array
        return name

    def he_weight(self, shape, fan_in):
        return self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    def model(self, name, inputs, outputs, doc=""):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        return helper.make_model(
            graph,
            opset_imports=opsets,
            # The lowest IR version that supports the opset, as the torch
            # exporter does (IR 8 for opset 17 etc.).
            ir_version=helper.find_min_ir_version_for(opsets),
            producer_name="zcinfer-make_models",
            producer_version="1",
            doc_string=doc,
        )

    # ---- opset-aware helpers ---------------------------------------------
    # These hide the op signature changes between opsets.  They never draw
    # random numbers and compute the same probe values in every opset, so all
    # opset variants of a model get bit-identical weights.

    def unsqueeze(self, x, axes, scope):
        if self.opset < 13:  # axes became an input in opset 13
            return self.op("Unsqueeze", [x], scope, axes=list(axes))
        return self.op("Unsqueeze", [x, self.constant(np.array(axes, np.int64), scope)], scope)

    def split(self, x, sizes, axis, scope):
        if self.opset < 13:  # split became an input in opset 13
            return self.op("Split", [x], scope, n_out=len(sizes), axis=axis, split=list(sizes))
        if self.opset >= 18 and len(set(sizes)) == 1:
            # Opset 18 adds num_outputs for an even split (torch.chunk).
            return self.op("Split", [x], scope, n_out=len(sizes), axis=axis, num_outputs=len(sizes))
        return self.op("Split", [x, self.constant(np.array(sizes, np.int64), scope)], scope,
                       n_out=len(sizes), axis=axis)

    def slice(self, x, start, end, axis, scope):
        c = lambda v: self.constant(np.array([v], np.int64), scope)  # noqa: E731
        return self.op("Slice", [x, c(start), c(end), c(axis), c(1)], scope)

    def reduce_mean(self, x, axes, keepdims, scope):
        if self.opset < 18:  # axes became an input in opset 18
            return self.op("ReduceMean", [x], scope, axes=list(axes), keepdims=keepdims)
        return self.op("ReduceMean", [x, self.constant(np.array(axes, np.int64), scope)], scope,
                       keepdims=keepdims)

    def resize_nearest_2x(self, x, scope):
        """nn.Upsample(scale_factor=2, mode='nearest') as the exporter writes it."""
        if self.opset < 13:
            # roi is a required input in opset 11; torch passes an empty tensor.
            roi = self.constant(np.zeros([0], np.float32), scope)
        else:
            roi = ""  # optional input left out
        scales = self.constant(np.array([1, 1, 2, 2], np.float32), scope)
        return self.op("Resize", [x, roi, scales], scope,
                       coordinate_transformation_mode="asymmetric", cubic_coeff_a=-0.75,
                       mode="nearest", nearest_mode="floor")

    def clip(self, x, lo, hi, scope):
        """ReLU6 / clamp: opset >= 11 takes min/max as inputs."""
        assert self.opset >= 11
        return self.op("Clip", [x, self.constant(np.float32(lo), scope),
                                self.constant(np.float32(hi), scope)], scope)

    def hardsigmoid(self, x, scope):
        # torch.nn.Hardsigmoid = relu6(x + 3) / 6
        return self.op("HardSigmoid", [x], scope, alpha=1.0 / 6.0, beta=0.5)

    def hardswish(self, x, scope):
        if self.opset >= 14:
            return self.op("HardSwish", [x], scope)
        # HardSwish only exists from opset 14; torch writes x * hardsigmoid(x).
        y = self.op("Mul", [x, self.hardsigmoid(x, scope)], scope)
        if x in self.probe:  # same probe value as the HardSwish node, bit for bit
            self.probe[y] = self.probe[x] * np_hardsigmoid(self.probe[x])
        return y

    # ---- layers -------------------------------------------------------------

    def conv2d(self, x, scope, prefix, c1, c2, k, s=1, p=None, g=1, bias=True,
               norm="channel", target_std=HEAD_STD):
        """A bare nn.Conv2d: node ``<scope>/Conv``, params ``<prefix>.weight/.bias``.

        norm="channel": fold an emulated BatchNorm (per output channel);
        norm="layer":   scale the whole output to std ``target_std`` (heads);
        norm=None:      plain He init (a real BatchNormalization follows).
        """
        p = k // 2 if p is None else p
        w = self.he_weight((c2, c1 // g, k, k), fan_in=(c1 // g) * k * k)
        gamma = self.rng.uniform(*BN_GAMMA, c2) if norm == "channel" else np.full(c2, target_std)
        beta = self.rng.standard_normal(c2) * BN_BETA_STD if bias else None
        if norm:
            assert bias, "a normalised conv needs a bias to absorb the mean"
            raw = np_conv2d(self.probe[x], w, None, [s, s], [p] * 4, g)
            # The mean is removed per channel (as BN does), but the std is
            # measured over the whole layer: deep features of a noise image
            # vary little over the image, and per-channel scaling would blow
            # such channels up to unit variance, so that the weights would
            # only suit the probe image (other inputs then drift to a larger
            # scale layer after layer).
            if norm == "channel":
                mean = raw.mean(axis=(0, 2, 3))
                std = np.sqrt(raw.var(axis=(0, 2, 3)).mean()) + 1e-6
            else:
                mean, std = np.full(c2, raw.mean()), raw.std() + 1e-6
            scale = _quantize_scale(gamma / std)
            w = w * scale.reshape(-1, 1, 1, 1)
            beta = beta - _quantize_shift(mean * scale)
        inputs = [x, self.initializer(f"{prefix}.weight", w.astype(np.float32))]
        if bias:
            inputs.append(self.initializer(f"{prefix}.bias", beta.astype(np.float32)))
        return self.op("Conv", inputs, scope, dilations=[1, 1], group=g, kernel_shape=[k, k],
                       pads=[p, p, p, p], strides=[s, s])

    def gemm(self, x, scope, prefix, c1, c2):
        """nn.Linear as Gemm(transB=1), output normalised like a head (feeds Softmax)."""
        w = self.he_weight((c2, c1), fan_in=c1)
        beta = self.rng.standard_normal(c2) * BN_BETA_STD
        raw = self.probe[x] @ w.T
        scale = _quantize_scale(HEAD_STD / (raw.std() + 1e-6))
        w = w * scale
        beta = beta - _quantize_shift(raw.mean() * scale)
        return self.op("Gemm", [x, self.initializer(f"{prefix}.weight", w.astype(np.float32)),
                                self.initializer(f"{prefix}.bias", beta.astype(np.float32))],
                       scope, alpha=1.0, beta=1.0, transB=1)

    def silu(self, x, scope):
        return self.op("Mul", [x, self.op("Sigmoid", [x], scope)], scope)

    def maxpool(self, x, k, s, p, scope):
        return self.op("MaxPool", [x], scope, ceil_mode=0, dilations=[1, 1], kernel_shape=[k, k],
                       pads=[p, p, p, p], strides=[s, s])


def float_input(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# ==========================================================================
# Ultralytics building blocks (common to YOLOv5 and YOLOv8)
# ==========================================================================

def ul_conv(b, x, path, c1, c2, k=1, s=1, p=None, g=1, act=True):
    """ultralytics Conv = Conv2d (BN folded into bias) + SiLU (unless act=False).

    ``path`` is the module path, e.g. ``("model.2", "m", "m.0", "cv1")``; the
    scope is ``/model.2/m/m.0/cv1`` and the parameter prefix
    ``model.2.m.0.cv1`` (container names are repeated in the scope, exactly
    like the torch exporter does for nn.Sequential / nn.ModuleList children).
    """
    scope, prefix = _scope(path), _prefix(path)
    y = b.conv2d(x, scope + "/conv", prefix + ".conv", c1, c2, k, s, p, g)
    return b.silu(y, scope + "/act") if act else y


def _scope(path):
    return "/" + "/".join(path)


def _prefix(path):
    # scope components for container children are "m.0", "cv2.0.1", ...; the
    # state_dict key only keeps the last component of such chains.
    parts = []
    for comp in path:
        if parts and comp.startswith(parts[-1] + "."):
            parts[-1] = comp
        else:
            parts.append(comp)
    return ".".join(parts)


def sppf(b, x, path, c1, c2, k=5):
    """SPPF: cv1, three chained MaxPool(5, 1, 2), Concat, cv2."""
    c_ = c1 // 2
    scope = _scope(path)
    x = ul_conv(b, x, path + ("cv1",), c1, c_)
    y1 = b.maxpool(x, k, 1, k // 2, scope + "/m")
    y2 = b.maxpool(y1, k, 1, k // 2, scope + "/m_1")  # torch names repeated calls m, m_1, m_2
    y3 = b.maxpool(y2, k, 1, k // 2, scope + "/m_2")
    y = b.op("Concat", [x, y1, y2, y3], scope, axis=1)
    return ul_conv(b, y, path + ("cv2",), c_ * 4, c2)


def make_divisible(x, divisor=8):
    return int(np.ceil(x / divisor) * divisor)


def scale_depth(n, gd):
    return max(round(n * gd), 1) if n > 1 else n


# ==========================================================================
# YOLOv5 (v6.0+ / v7.0 layout)
# ==========================================================================

YOLOV5_ANCHORS = np.array([[10, 13, 16, 30, 33, 23],
                           [30, 61, 62, 45, 59, 119],
                           [116, 90, 156, 198, 373, 326]], np.float32).reshape(3, 3, 2)


def yolov5_c3(b, x, path, c1, c2, n, shortcut=True):
    """C3: cv3(cat(m(cv1(x)), cv2(x))), m = n Bottlenecks (e=1.0)."""
    c_ = int(c2 * 0.5)
    scope = _scope(path)
    a = ul_conv(b, x, path + ("cv1",), c1, c_)
    for i in range(n):
        bp = path + ("m", f"m.{i}")
        h = ul_conv(b, a, bp + ("cv1",), c_, c_, 1)
        h = ul_conv(b, h, bp + ("cv2",), c_, c_, 3)
        a = b.op("Add", [a, h], _scope(bp)) if shortcut else h
    c = ul_conv(b, x, path + ("cv2",), c1, c_)
    y = b.op("Concat", [a, c], scope, axis=1)
    return ul_conv(b, y, path + ("cv3",), 2 * c_, c2)


def yolov5_detect(b, feats, chans, nc=80, imgsz=640, strides=(8, 16, 32), split=False):
    """Detect head as YOLOv5's export writes it (non-dynamic, inplace=False branch): the
    sigmoid's output cut by three Slices, or (split=True, YOLOv5 v7.0's
    ``.split((2, 2, nc + 1), 4)``) by one Split."""
    na, no = 3, nc + 5
    scope = "/model.24"
    z = []
    for i, (x, c, s) in enumerate(zip(feats, chans, strides)):
        y = b.conv2d(x, f"{scope}/m.{i}", f"model.24.m.{i}", c, na * no, 1, norm="layer")
        # x.view(bs, na, no, ny, nx): bs/ny/nx come from x.shape, which the
        # exporter writes as Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
        shape = b.op("Shape", [y], scope)
        dims = {}
        for d in (0, 2, 3):
            g = b.op("Gather", [shape, b.constant(np.array(d, np.int64), scope)], scope, axis=0)
            dims[d] = b.unsqueeze(g, [0], scope)
        target = b.op("Concat", [dims[0], b.constant(np.array([na], np.int64), scope),
                                 b.constant(np.array([no], np.int64), scope), dims[2], dims[3]],
                      scope, axis=0)
        y = b.op("Reshape", [y, target], scope)
        y = b.op("Transpose", [y], scope, perm=[0, 1, 3, 4, 2])  # (bs, na, ny, nx, no)
        y = b.op("Sigmoid", [y], scope)

        ny = nx = imgsz // s
        yv, xv = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        grid = np.stack((xv, yv), 2).reshape(1, 1, ny, nx, 2).astype(np.float32) - 0.5
        grid = np.broadcast_to(grid, (1, na, ny, nx, 2))
        anchor_grid = np.broadcast_to(YOLOV5_ANCHORS[i].reshape(1, na, 1, 1, 2), (1, na, ny, nx, 2))
        grid = b.initializer(f"model.24.grid.{i}", grid.astype(np.float32))
        anchor_grid = b.initializer(f"model.24.anchor_grid.{i}", anchor_grid.astype(np.float32))

        if split:
            xy, wh, conf = b.split(y, [2, 2, no - 4], 4, scope)
        else:
            xy = b.slice(y, 0, 2, 4, scope)
            wh = b.slice(y, 2, 4, 4, scope)
            conf = b.slice(y, 4, INT64_MAX, 4, scope)
        two = lambda: b.constant(np.float32(2.0), scope)  # noqa: E731 (torch emits one Constant per use)
        xy = b.op("Mul", [xy, two()], scope)
        xy = b.op("Add", [xy, grid], scope)
        xy = b.op("Mul", [xy, b.constant(np.float32(s), scope)], scope)
        wh = b.op("Mul", [wh, two()], scope)
        wh = b.op("Pow", [wh, two()], scope)
        wh = b.op("Mul", [wh, anchor_grid], scope)
        y = b.op("Concat", [xy, wh, conf], scope, axis=4)
        y = b.op("Reshape", [y, b.constant(np.array([1, -1, no], np.int64), scope)], scope)
        z.append(y)
    return b.op("Concat", z, scope, outputs=["output0"], axis=1)


def build_yolov5(variant, opset=17, split_head=False):
    gd, gw = {"n": (0.33, 0.25), "s": (0.33, 0.50)}[variant]
    ch = lambda c: make_divisible(c * gw)  # noqa: E731
    n = lambda k: scale_depth(k, gd)  # noqa: E731
    b = Builder(opset, seed=5)
    b.set_probe_input("images", (2, 3, 640, 640))

    x = "images"
    c = [None] * 24  # output channels per layer index
    out = [None] * 24  # output tensor per layer index
    M = lambda i: (f"model.{i}",)  # noqa: E731

    # backbone
    out[0] = ul_conv(b, x, M(0), 3, ch(64), 6, 2, 2); c[0] = ch(64)
    out[1] = ul_conv(b, out[0], M(1), c[0], ch(128), 3, 2); c[1] = ch(128)
    out[2] = yolov5_c3(b, out[1], M(2), c[1], ch(128), n(3)); c[2] = ch(128)
    out[3] = ul_conv(b, out[2], M(3), c[2], ch(256), 3, 2); c[3] = ch(256)
    out[4] = yolov5_c3(b, out[3], M(4), c[3], ch(256), n(6)); c[4] = ch(256)
    out[5] = ul_conv(b, out[4], M(5), c[4], ch(512), 3, 2); c[5] = ch(512)
    out[6] = yolov5_c3(b, out[5], M(6), c[5], ch(512), n(9)); c[6] = ch(512)
    out[7] = ul_conv(b, out[6], M(7), c[6], ch(1024), 3, 2); c[7] = ch(1024)
    out[8] = yolov5_c3(b, out[7], M(8), c[7], ch(1024), n(3)); c[8] = ch(1024)
    out[9] = sppf(b, out[8], M(9), c[8], ch(1024)); c[9] = ch(1024)
    # head
    out[10] = ul_conv(b, out[9], M(10), c[9], ch(512), 1, 1); c[10] = ch(512)
    out[11] = b.resize_nearest_2x(out[10], "/model.11"); c[11] = c[10]
    out[12] = b.op("Concat", [out[11], out[6]], "/model.12", axis=1); c[12] = c[11] + c[6]
    out[13] = yolov5_c3(b, out[12], M(13), c[12], ch(512), n(3), shortcut=False); c[13] = ch(512)
    out[14] = ul_conv(b, out[13], M(14), c[13], ch(256), 1, 1); c[14] = ch(256)
    out[15] = b.resize_nearest_2x(out[14], "/model.15"); c[15] = c[14]
    out[16] = b.op("Concat", [out[15], out[4]], "/model.16", axis=1); c[16] = c[15] + c[4]
    out[17] = yolov5_c3(b, out[16], M(17), c[16], ch(256), n(3), shortcut=False); c[17] = ch(256)
    out[18] = ul_conv(b, out[17], M(18), c[17], ch(256), 3, 2); c[18] = ch(256)
    out[19] = b.op("Concat", [out[18], out[14]], "/model.19", axis=1); c[19] = c[18] + c[14]
    out[20] = yolov5_c3(b, out[19], M(20), c[19], ch(512), n(3), shortcut=False); c[20] = ch(512)
    out[21] = ul_conv(b, out[20], M(21), c[20], ch(512), 3, 2); c[21] = ch(512)
    out[22] = b.op("Concat", [out[21], out[10]], "/model.22", axis=1); c[22] = c[21] + c[10]
    out[23] = yolov5_c3(b, out[22], M(23), c[22], ch(1024), n(3), shortcut=False); c[23] = ch(1024)
    yolov5_detect(b, [out[17], out[20], out[23]], [c[17], c[20], c[23]], split=split_head)

    return b.model(f"yolov5{variant}",
                   [float_input("images", [1, 3, 640, 640])],
                   [float_input("output0", [1, 25200, 85])],
                   doc=f"Synthetic YOLOv5{variant} (v7.0 layout, random weights), opset {opset}")


# ==========================================================================
# YOLOv8 (anchor-free, decoupled head, DFL)
# ==========================================================================

def yolov8_c2f(b, x, path, c1, c2, n, shortcut=False):
    """C2f: cv1 -> chunk(2) -> n Bottlenecks on the last chunk -> cat all -> cv2."""
    c = int(c2 * 0.5)
    scope = _scope(path)
    y = ul_conv(b, x, path + ("cv1",), c1, 2 * c)
    ys = b.split(y, [c, c], 1, scope)
    for i in range(n):
        bp = path + (f"m.{i}",)  # self.m is a ModuleList that is iterated: no "/m" scope
        h = ul_conv(b, ys[-1], bp + ("cv1",), c, c, 3)
        h = ul_conv(b, h, bp + ("cv2",), c, c, 3)
        ys.append(b.op("Add", [ys[-1], h], _scope(bp)) if shortcut else h)
    y = b.op("Concat", ys, scope, axis=1)
    return ul_conv(b, y, path + ("cv2",), (2 + n) * c, c2)


def yolov8_detect(b, feats, chans, idx=22, dw_cls=False, nc=80, reg_max=16, imgsz=640,
                  strides=(8, 16, 32)):
    """Anchor-free Detect head (model index ``idx``) with DFL and dist2bbox.

    dw_cls=True is the YOLO11 class branch: (DWConv 3x3, Conv 1x1) twice
    instead of two 3x3 Convs.
    """
    no = nc + 4 * reg_max
    c2 = max(16, chans[0] // 4, reg_max * 4)
    c3 = max(chans[0], min(nc, 100))
    P = f"model.{idx}"
    scope = "/" + P
    levels = []
    for i, (x, c) in enumerate(zip(feats, chans)):
        bx = ul_conv(b, x, (P, f"cv2.{i}", f"cv2.{i}.0"), c, c2, 3)
        bx = ul_conv(b, bx, (P, f"cv2.{i}", f"cv2.{i}.1"), c2, c2, 3)
        bx = b.conv2d(bx, f"{scope}/cv2.{i}/cv2.{i}.2", f"{P}.cv2.{i}.2", c2, 4 * reg_max, 1,
                      norm="layer")
        if dw_cls:
            cl = x
            for j, (ci, co) in enumerate(((c, c3), (c3, c3))):
                seq = (P, f"cv3.{i}", f"cv3.{i}.{j}")
                cl = ul_conv(b, cl, seq + (f"cv3.{i}.{j}.0",), ci, ci, 3, g=ci)  # DWConv
                cl = ul_conv(b, cl, seq + (f"cv3.{i}.{j}.1",), ci, co, 1)
        else:
            cl = ul_conv(b, x, (P, f"cv3.{i}", f"cv3.{i}.0"), c, c3, 3)
            cl = ul_conv(b, cl, (P, f"cv3.{i}", f"cv3.{i}.1"), c3, c3, 3)
        cl = b.conv2d(cl, f"{scope}/cv3.{i}/cv3.{i}.2", f"{P}.cv3.{i}.2", c3, nc, 1, norm="layer")
        levels.append(b.op("Concat", [bx, cl], scope, axis=1))
    flat = [b.op("Reshape", [l, b.constant(np.array([1, no, -1], np.int64), scope)], scope)
            for l in levels]
    x_cat = b.op("Concat", flat, scope, axis=2)
    box, cls = b.split(x_cat, [4 * reg_max, nc], 1, scope)

    # make_anchors(): cell centres (x+0.5, y+0.5) per level, concatenated.
    anchors, stride_t = [], []
    for s in strides:
        h = w = imgsz // s
        sy, sx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        anchors.append(np.stack((sx, sy), -1).reshape(-1, 2))
        stride_t.append(np.full((h * w, 1), s))
    anchors = np.concatenate(anchors).T[None].astype(np.float32)  # (1, 2, 8400)
    stride_t = np.concatenate(stride_t).T.astype(np.float32)  # (1, 8400)
    n_anchors = anchors.shape[2]

    # DFL: softmax over the 16 bins, expectation via a fixed 1x1 conv with arange(16).
    ds = scope + "/dfl"
    d = b.op("Reshape", [box, b.constant(np.array([1, 4, reg_max, n_anchors], np.int64), ds)], ds)
    d = b.op("Transpose", [d], ds, perm=[0, 2, 1, 3])  # (1, 16, 4, N)
    d = b.op("Softmax", [d], ds, axis=1)
    w = np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1)
    d = b.op("Conv", [d, b.initializer(f"{P}.dfl.conv.weight", w)], ds + "/conv",
             dilations=[1, 1], group=1, kernel_shape=[1, 1], pads=[0, 0, 0, 0], strides=[1, 1])
    d = b.op("Reshape", [d, b.constant(np.array([1, 4, n_anchors], np.int64), ds)], ds)

    # dist2bbox(xywh=True)
    anc = b.initializer(f"{P}.anchors", anchors)
    lt = b.slice(d, 0, 2, 1, scope)
    rb = b.slice(d, 2, 4, 1, scope)
    x1y1 = b.op("Sub", [anc, lt], scope)
    x2y2 = b.op("Add", [anc, rb], scope)
    c_xy = b.op("Add", [x1y1, x2y2], scope)
    c_xy = b.op("Div", [c_xy, b.constant(np.float32(2.0), scope)], scope)
    wh = b.op("Sub", [x2y2, x1y1], scope)
    dbox = b.op("Concat", [c_xy, wh], scope, axis=1)
    dbox = b.op("Mul", [dbox, b.initializer(f"{P}.strides", stride_t)], scope)
    cls = b.op("Sigmoid", [cls], scope)
    return b.op("Concat", [dbox, cls], scope, outputs=["output0"], axis=1)


def build_yolov8(variant="n", opset=17):
    gd, gw, max_c = {"n": (0.33, 0.25, 1024)}[variant]
    ch = lambda c: make_divisible(min(c, max_c) * gw)  # noqa: E731
    n = lambda k: scale_depth(k, gd)  # noqa: E731
    M = lambda i: (f"model.{i}",)  # noqa: E731
    b = Builder(opset, seed=8)
    b.set_probe_input("images", (2, 3, 640, 640))

    o, c = {}, {}
    o[0] = ul_conv(b, "images", M(0), 3, ch(64), 3, 2); c[0] = ch(64)
    o[1] = ul_conv(b, o[0], M(1), c[0], ch(128), 3, 2); c[1] = ch(128)
    o[2] = yolov8_c2f(b, o[1], M(2), c[1], ch(128), n(3), True); c[2] = ch(128)
    o[3] = ul_conv(b, o[2], M(3), c[2], ch(256), 3, 2); c[3] = ch(256)
    o[4] = yolov8_c2f(b, o[3], M(4), c[3], ch(256), n(6), True); c[4] = ch(256)
    o[5] = ul_conv(b, o[4], M(5), c[4], ch(512), 3, 2); c[5] = ch(512)
    o[6] = yolov8_c2f(b, o[5], M(6), c[5], ch(512), n(6), True); c[6] = ch(512)
    o[7] = ul_conv(b, o[6], M(7), c[6], ch(1024), 3, 2); c[7] = ch(1024)
    o[8] = yolov8_c2f(b, o[7], M(8), c[7], ch(1024), n(3), True); c[8] = ch(1024)
    o[9] = sppf(b, o[8], M(9), c[8], ch(1024)); c[9] = ch(1024)
    o[10] = b.resize_nearest_2x(o[9], "/model.10"); c[10] = c[9]
    o[11] = b.op("Concat", [o[10], o[6]], "/model.11", axis=1); c[11] = c[10] + c[6]
    o[12] = yolov8_c2f(b, o[11], M(12), c[11], ch(512), n(3)); c[12] = ch(512)
    o[13] = b.resize_nearest_2x(o[12], "/model.13"); c[13] = c[12]
    o[14] = b.op("Concat", [o[13], o[4]], "/model.14", axis=1); c[14] = c[13] + c[4]
    o[15] = yolov8_c2f(b, o[14], M(15), c[14], ch(256), n(3)); c[15] = ch(256)
    o[16] = ul_conv(b, o[15], M(16), c[15], ch(256), 3, 2); c[16] = ch(256)
    o[17] = b.op("Concat", [o[16], o[12]], "/model.17", axis=1); c[17] = c[16] + c[12]
    o[18] = yolov8_c2f(b, o[17], M(18), c[17], ch(512), n(3)); c[18] = ch(512)
    o[19] = ul_conv(b, o[18], M(19), c[18], ch(512), 3, 2); c[19] = ch(512)
    o[20] = b.op("Concat", [o[19], o[9]], "/model.20", axis=1); c[20] = c[19] + c[9]
    o[21] = yolov8_c2f(b, o[20], M(21), c[20], ch(1024), n(3)); c[21] = ch(1024)
    yolov8_detect(b, [o[15], o[18], o[21]], [c[15], c[18], c[21]])

    return b.model(f"yolov8{variant}",
                   [float_input("images", [1, 3, 640, 640])],
                   [float_input("output0", [1, 84, 8400])],
                   doc=f"Synthetic YOLOv8{variant} (random weights), opset {opset}")


# ==========================================================================
# YOLO11 (C3k2, C2PSA attention, YOLOv8-style head with depthwise class branch)
# ==========================================================================

def yolo11_c3k2(b, x, path, c1, c2, n, c3k=False, e=0.5):
    """C3k2: C2f whose blocks are Bottleneck(e=0.5) or, with c3k, C3k (a C3
    with two 3x3 Bottlenecks)."""
    c = int(c2 * e)
    scope = _scope(path)
    y = ul_conv(b, x, path + ("cv1",), c1, 2 * c)
    ys = b.split(y, [c, c], 1, scope)
    for i in range(n):
        bp = path + (f"m.{i}",)
        h_in = ys[-1]
        if c3k:  # C3k(c, c, n=2, shortcut=True, e=0.5, k=3)
            c_ = c // 2
            a = ul_conv(b, h_in, bp + ("cv1",), c, c_)
            for j in range(2):
                mp = bp + ("m", f"m.{j}")
                h = ul_conv(b, a, mp + ("cv1",), c_, c_, 3)
                h = ul_conv(b, h, mp + ("cv2",), c_, c_, 3)
                a = b.op("Add", [a, h], _scope(mp))
            cc = ul_conv(b, h_in, bp + ("cv2",), c, c_)
            h = b.op("Concat", [a, cc], _scope(bp), axis=1)
            ys.append(ul_conv(b, h, bp + ("cv3",), 2 * c_, c))
        else:  # Bottleneck(c, c, shortcut=True, e=0.5)
            h = ul_conv(b, h_in, bp + ("cv1",), c, c // 2, 3)
            h = ul_conv(b, h, bp + ("cv2",), c // 2, c, 3)
            ys.append(b.op("Add", [h_in, h], _scope(bp)))
    y = b.op("Concat", ys, scope, axis=1)
    return ul_conv(b, y, path + ("cv2",), (2 + n) * c, c2)


def yolo11_attention(b, x, path, dim, hw, num_heads):
    """ultralytics Attention: qkv 1x1 conv, per-head softmax(q^T k * scale),
    v @ attn^T, plus a depthwise positional conv on v, then a 1x1 projection.
    Reshape targets are constants, as with a static-shape export."""
    scope = _scope(path)
    head_dim = dim // num_heads
    key_dim = int(head_dim * 0.5)
    n_tok = hw[0] * hw[1]
    shape = lambda *d: b.constant(np.array(d, np.int64), scope)  # noqa: E731
    qkv = ul_conv(b, x, path + ("qkv",), dim, dim + 2 * key_dim * num_heads, act=False)
    qkv = b.op("Reshape", [qkv, shape(1, num_heads, 2 * key_dim + head_dim, n_tok)], scope)
    q, k, v = b.split(qkv, [key_dim, key_dim, head_dim], 2, scope)
    qt = b.op("Transpose", [q], scope, perm=[0, 1, 3, 2])
    attn = b.op("MatMul", [qt, k], scope)  # (1, heads, N, N)
    attn = b.op("Mul", [attn, b.constant(np.float32(key_dim ** -0.5), scope)], scope)
    attn = b.op("Softmax", [attn], scope, axis=-1)
    attn_t = b.op("Transpose", [attn], scope, perm=[0, 1, 3, 2])
    y = b.op("MatMul", [v, attn_t], scope)  # (1, heads, head_dim, N)
    y = b.op("Reshape", [y, shape(1, dim, hw[0], hw[1])], scope)
    v_img = b.op("Reshape", [v, shape(1, dim, hw[0], hw[1])], scope)
    pe = ul_conv(b, v_img, path + ("pe",), dim, dim, 3, g=dim, act=False)
    y = b.op("Add", [y, pe], scope)
    return ul_conv(b, y, path + ("proj",), dim, dim, act=False)


def yolo11_c2psa(b, x, path, c1, n, hw):
    c = int(c1 * 0.5)
    scope = _scope(path)
    y = ul_conv(b, x, path + ("cv1",), c1, 2 * c)
    a, h = b.split(y, [c, c], 1, scope)
    for i in range(n):  # PSABlock: x + attn(x), then x + ffn(x)
        bp = path + ("m", f"m.{i}")
        h = b.op("Add", [h, yolo11_attention(b, h, bp + ("attn",), c, hw, c // 64)], _scope(bp))
        f = ul_conv(b, h, bp + ("ffn", "ffn.0"), c, 2 * c)
        f = ul_conv(b, f, bp + ("ffn", "ffn.1"), 2 * c, c, act=False)
        h = b.op("Add", [h, f], _scope(bp))
    y = b.op("Concat", [a, h], scope, axis=1)
    return ul_conv(b, y, path + ("cv2",), 2 * c, c1)


def build_yolo11(variant="n", opset=17):
    gd, gw, max_c = {"n": (0.50, 0.25, 1024)}[variant]
    ch = lambda c: make_divisible(min(c, max_c) * gw)  # noqa: E731
    n = lambda k: scale_depth(k, gd)  # noqa: E731
    M = lambda i: (f"model.{i}",)  # noqa: E731
    b = Builder(opset, seed=11)
    b.set_probe_input("images", (2, 3, 640, 640))

    o, c = {}, {}
    o[0] = ul_conv(b, "images", M(0), 3, ch(64), 3, 2); c[0] = ch(64)
    o[1] = ul_conv(b, o[0], M(1), c[0], ch(128), 3, 2); c[1] = ch(128)
    o[2] = yolo11_c3k2(b, o[1], M(2), c[1], ch(256), n(2), False, 0.25); c[2] = ch(256)
    o[3] = ul_conv(b, o[2], M(3), c[2], ch(256), 3, 2); c[3] = ch(256)
    o[4] = yolo11_c3k2(b, o[3], M(4), c[3], ch(512), n(2), False, 0.25); c[4] = ch(512)
    o[5] = ul_conv(b, o[4], M(5), c[4], ch(512), 3, 2); c[5] = ch(512)
    o[6] = yolo11_c3k2(b, o[5], M(6), c[5], ch(512), n(2), True); c[6] = ch(512)
    o[7] = ul_conv(b, o[6], M(7), c[6], ch(1024), 3, 2); c[7] = ch(1024)
    o[8] = yolo11_c3k2(b, o[7], M(8), c[7], ch(1024), n(2), True); c[8] = ch(1024)
    o[9] = sppf(b, o[8], M(9), c[8], ch(1024)); c[9] = ch(1024)
    o[10] = yolo11_c2psa(b, o[9], M(10), c[9], n(2), (20, 20)); c[10] = c[9]
    o[11] = b.resize_nearest_2x(o[10], "/model.11"); c[11] = c[10]
    o[12] = b.op("Concat", [o[11], o[6]], "/model.12", axis=1); c[12] = c[11] + c[6]
    o[13] = yolo11_c3k2(b, o[12], M(13), c[12], ch(512), n(2), False); c[13] = ch(512)
    o[14] = b.resize_nearest_2x(o[13], "/model.14"); c[14] = c[13]
    o[15] = b.op("Concat", [o[14], o[4]], "/model.15", axis=1); c[15] = c[14] + c[4]
    o[16] = yolo11_c3k2(b, o[15], M(16), c[15], ch(256), n(2), False); c[16] = ch(256)
    o[17] = ul_conv(b, o[16], M(17), c[16], ch(256), 3, 2); c[17] = ch(256)
    o[18] = b.op("Concat", [o[17], o[13]], "/model.18", axis=1); c[18] = c[17] + c[13]
    o[19] = yolo11_c3k2(b, o[18], M(19), c[18], ch(512), n(2), False); c[19] = ch(512)
    o[20] = ul_conv(b, o[19], M(20), c[19], ch(512), 3, 2); c[20] = ch(512)
    o[21] = b.op("Concat", [o[20], o[10]], "/model.21", axis=1); c[21] = c[20] + c[10]
    o[22] = yolo11_c3k2(b, o[21], M(22), c[21], ch(1024), n(2), True); c[22] = ch(1024)
    yolov8_detect(b, [o[16], o[19], o[22]], [c[16], c[19], c[22]], idx=23, dw_cls=True)

    return b.model(f"yolo11{variant}",
                   [float_input("images", [1, 3, 640, 640])],
                   [float_input("output0", [1, 84, 8400])],
                   doc=f"Synthetic YOLO11{variant} (random weights), opset {opset}")


# ==========================================================================
# Small torchvision-style classifier
# ==========================================================================

def build_classifier(opset=14, dyn_batch=False, num_classes=1000):
    """ResNet basic blocks + MobileNetV2/V3 style blocks + pooling + Gemm + Softmax.

    Layout (input 224x224):
      conv1 3x3 s2 (folded BN) + Relu, MaxPool 3x3 s2        -> 16 x 56 x 56
      layer1.0  BasicBlock 16->16, real BatchNormalization   -> 16 x 56 x 56
      layer2.0  BasicBlock 16->32 s2, 1x1 downsample         -> 32 x 28 x 28
      features.0  MobileNetV2 inverted residual, ReLU6 = Clip,
                  depthwise 3x3 (group=128), residual Add    -> 32 x 28 x 28
      features.1  MobileNetV3 block: HardSwish, depthwise 5x5 s2,
                  squeeze-excite (GAP, Conv, Relu, Conv, HardSigmoid, Mul)
                                                             -> 48 x 14 x 14
      features.2  1x1 conv + HardSwish                       -> 256 x 14 x 14
      AveragePool 2x2 s2, ReduceMean(2,3), Flatten, Gemm, Softmax
    """
    b = Builder(opset, seed=13)
    b.set_probe_input("input", (2, 3, 224, 224))
    batch = "batch" if dyn_batch else 1

    def bn(x, scope, prefix, c):
        """A real (unfolded) BatchNormalization node in eval mode; its running
        statistics are the probe statistics of its input, as after training."""
        gamma = b.rng.uniform(*BN_GAMMA, c).astype(np.float32)
        beta = (b.rng.standard_normal(c) * BN_BETA_STD).astype(np.float32)
        mean = _quantize_shift(b.probe[x].mean(axis=(0, 2, 3))).astype(np.float32)
        var = _quantize_scale(b.probe[x].var(axis=(0, 2, 3))).astype(np.float32)
        ins = [x] + [b.initializer(f"{prefix}.{k}", v) for k, v in
                     (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var))]
        return b.op("BatchNormalization", ins, scope, epsilon=1e-5, momentum=0.9)

    # stem
    x = b.conv2d("input", "/conv1", "conv1", 3, 16, 3, 2)
    x = b.op("Relu", [x], "/relu")
    x = b.maxpool(x, 3, 2, 1, "/maxpool")

    # layer1.0: BasicBlock with real BatchNormalization nodes
    s, p = "/layer1/layer1.0", "layer1.0"
    h = b.conv2d(x, s + "/conv1", p + ".conv1", 16, 16, 3, bias=False, norm=None)
    h = bn(h, s + "/bn1", p + ".bn1", 16)
    h = b.op("Relu", [h], s + "/relu")
    h = b.conv2d(h, s + "/conv2", p + ".conv2", 16, 16, 3, bias=False, norm=None)
    h = bn(h, s + "/bn2", p + ".bn2", 16)
    h = b.op("Add", [h, x], s)
    x = b.op("Relu", [h], s + "/relu_1")

    # layer2.0: BasicBlock with stride and downsample, BN folded
    s, p = "/layer2/layer2.0", "layer2.0"
    h = b.conv2d(x, s + "/conv1", p + ".conv1", 16, 32, 3, 2)
    h = b.op("Relu", [h], s + "/relu")
    h = b.conv2d(h, s + "/conv2", p + ".conv2", 32, 32, 3)
    idn = b.conv2d(x, s + "/downsample/downsample.0", p + ".downsample.0", 16, 32, 1, 2)
    h = b.op("Add", [h, idn], s)
    x = b.op("Relu", [h], s + "/relu_1")

    # features.0: MobileNetV2 InvertedResidual (expand 4, ReLU6 as Clip(0, 6))
    s, p = "/features/features.0/conv", "features.0.conv"
    h = b.conv2d(x, s + "/conv.0/conv.0.0", p + ".0.0", 32, 128, 1)
    h = b.clip(h, 0.0, 6.0, s + "/conv.0/conv.0.2")
    h = b.conv2d(h, s + "/conv.1/conv.1.0", p + ".1.0", 128, 128, 3, g=128)
    h = b.clip(h, 0.0, 6.0, s + "/conv.1/conv.1.2")
    h = b.conv2d(h, s + "/conv.2", p + ".2", 128, 32, 1)
    x = b.op("Add", [x, h], "/features/features.0")

    # features.1: MobileNetV3 InvertedResidual (HardSwish, dw 5x5 s2, SE)
    s, p = "/features/features.1/block", "features.1.block"
    h = b.conv2d(x, s + "/block.0/block.0.0", p + ".0.0", 32, 96, 1)
    h = b.hardswish(h, s + "/block.0/block.0.2")
    h = b.conv2d(h, s + "/block.1/block.1.0", p + ".1.0", 96, 96, 5, 2, g=96)
    h = b.hardswish(h, s + "/block.1/block.1.2")
    se, sp = s + "/block.2", p + ".2"
    z = b.op("GlobalAveragePool", [h], se + "/avgpool")
    # 1x1 spatial: too few samples for per-channel statistics, normalise per layer
    z = b.conv2d(z, se + "/fc1", sp + ".fc1", 96, 24, 1, norm="layer", target_std=1.0)
    z = b.op("Relu", [z], se + "/activation")
    z = b.conv2d(z, se + "/fc2", sp + ".fc2", 24, 96, 1, norm="layer", target_std=1.0)
    z = b.hardsigmoid(z, se + "/scale_activation")
    h = b.op("Mul", [z, h], se)
    x = b.conv2d(h, s + "/block.3/block.3.0", p + ".3.0", 96, 48, 1)

    # features.2: last 1x1 conv + HardSwish
    x = b.conv2d(x, "/features/features.2/features.2.0", "features.2.0", 48, 256, 1)
    x = b.hardswish(x, "/features/features.2/features.2.2")

    # pooling + classifier
    x = b.op("AveragePool", [x], "/avgpool", ceil_mode=0, kernel_shape=[2, 2], pads=[0, 0, 0, 0],
             strides=[2, 2])
    x = b.reduce_mean(x, [2, 3], 1, "")  # x.mean((2, 3), keepdim=True)
    x = b.op("Flatten", [x], "", axis=1)
    x = b.gemm(x, "/classifier", "classifier", 256, num_classes)
    # Explicit axis: the default (and, before opset 13, the meaning: "flatten
    # to 2-D from axis") changed; on a 2-D input axis=1 means the same thing
    # in every opset.
    b.op("Softmax", [x], "", outputs=["output"], axis=1)

    return b.model("classifier",
                   [float_input("input", [batch, 3, 224, 224])],
                   [float_input("output", [batch, num_classes])],
                   doc=f"Synthetic small classifier (random weights), opset {opset}")


# ==========================================================================
# The patterns graph/fuse.c turns into RowMap nodes, and near misses
# ==========================================================================

def build_rowmap_cases():
    """Detection-head tails beyond YOLOv5's: a transposed source cut by Slices
    with every kind of constant operation (scalars, broadcast tensors, K - v,
    K / v, Pow), a rank-3 source cut by a Split, both levels concatenated
    along the rows; and a tail whose Slice is also a model output (not fused)."""
    b = Builder(13, seed=11)
    b.set_probe_input("x", (2, 2, 7, 4, 5))
    b.set_probe_input("u", (2, 3, 7))
    rng = np.random.default_rng(11)
    k = lambda name, shape: b.initializer(name, (rng.random(shape) + 0.5).astype(np.float32))  # noqa: E731
    f = lambda v: b.constant(np.float32(v))  # noqa: E731

    t = b.op("Transpose", ["x"], "/a", perm=[0, 1, 3, 4, 2])  # (2, 2, 4, 5, 7)
    p = b.slice(t, 0, 1, -1, "/a")
    p = b.op("Sub", [k("a.k0", (2, 1, 5, 1)), p], "/a")  # K - v, broadcast over two dims
    p = b.op("Div", [p, f(4.0)], "/a")
    q = b.slice(t, 1, 3, 4, "/a")
    q = b.op("Pow", [q, f(2.0)], "/a")
    q = b.op("Add", [q, f(1.0)], "/a")
    q = b.op("Div", [k("a.k1", (4, 5, 2)), q], "/a")  # K / v
    q = b.op("Mul", [q, f(3.0)], "/a")
    r = b.slice(t, 3, INT64_MAX, 4, "/a")  # no operation
    a = b.op("Concat", [p, q, r], "/a", axis=-1)
    a = b.op("Reshape", [a, b.constant(np.array([2, -1, 7], np.int64), "/a")], "/a")

    s0, s1 = b.split("u", [3, 4], 2, "/b")
    s0 = b.op("Mul", [s0, k("b.k0", (3, 3))], "/b")
    s1 = b.op("Sub", [s1, f(0.25)], "/b")
    c = b.op("Concat", [s0, s1], "/b", axis=2)
    c = b.op("Reshape", [c, b.constant(np.array([2, 3, 7], np.int64), "/b")], "/b")
    b.op("Concat", [a, c], "", outputs=["rows"], axis=1)  # (2, 43, 7)

    d0 = b.op("Slice", ["u", b.constant(np.array([0], np.int64)), b.constant(np.array([2], np.int64)),
                        b.constant(np.array([2], np.int64))], "/c", outputs=["peek"])
    d0 = b.op("Mul", [d0, f(2.0)], "/c")
    d1 = b.slice("u", 2, 7, 2, "/c")
    b.op("Concat", [d0, d1], "/c", outputs=["kept"], axis=2)
    return b.model("rowmap_cases",
                   [float_input("x", [2, 2, 7, 4, 5]), float_input("u", [2, 3, 7])],
                   [float_input("rows", [2, 43, 7]), float_input("peek", [2, 3, 2]),
                    float_input("kept", [2, 3, 7])],
                   doc="RowMap fusion cases (graph/fuse.c)")


def build_yolov5_oddhead():
    """YOLOv5's Detect head on feature maps of odd sizes (13 x 13 and 6 x 6) with 2 classes
    (7 columns): the RowMap's rows then start anywhere within 16 bytes of the output, and its
    parts end inside a block's pixels (the CUDA tile kernel's partial 16-byte groups)."""
    b = Builder(17, seed=13)
    b.set_probe_input("images", (2, 3, 104, 104))
    f0 = ul_conv(b, "images", ("model.0",), 3, 16, 6, 8, 1)      # 13 x 13
    f1 = ul_conv(b, f0, ("model.1",), 16, 24, 3, 2, 0)           # 6 x 6
    yolov5_detect(b, [f0, f1], [16, 24], nc=2, imgsz=104, strides=(8, 16))
    return b.model("yolov5_oddhead",
                   [float_input("images", [1, 3, 104, 104])],
                   [float_input("output0", [1, 3 * (13 * 13 + 6 * 6), 7])],
                   doc="YOLOv5 Detect head on 13 x 13 and 6 x 6 maps, 2 classes")


# ==========================================================================
# Registry / driver
# ==========================================================================

# name -> (builder, save options).  "external" saves weights as external data.
MODELS = {
    "yolov5n": (lambda: build_yolov5("n"), {}),
    "yolov5s": (lambda: build_yolov5("s"), {}),
    "yolov5n_opset11": (lambda: build_yolov5("n", opset=11), {}),
    "yolov5n_opset13": (lambda: build_yolov5("n", opset=13), {}),
    "yolov5n_split": (lambda: build_yolov5("n", opset=13, split_head=True), {}),
    "rowmap_cases": (lambda: build_rowmap_cases(), {}),
    "yolov5_oddhead": (lambda: build_yolov5_oddhead(), {}),
    "yolov8n": (lambda: build_yolov8("n"), {}),
    "yolov8n_opset19": (lambda: build_yolov8("n", opset=19), {}),
    "yolo11n": (lambda: build_yolo11("n"), {}),
    # HardSwish needs opset 14, so the base classifier uses opset 14; the
    # opset 11 / 13 variants write HardSwish as HardSigmoid + Mul.
    "classifier": (lambda: build_classifier(), {}),
    "classifier_external": (lambda: build_classifier(), {"external": True}),
    "classifier_dynbatch": (lambda: build_classifier(dyn_batch=True), {}),
    "classifier_opset11": (lambda: build_classifier(opset=11), {}),
    "classifier_opset13": (lambda: build_classifier(opset=13), {}),
    "classifier_opset18": (lambda: build_classifier(opset=18), {}),
}


def _value_info_json(vi):
    t = vi.type.tensor_type
    shape = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim]
    return {"name": vi.name, "shape": shape,
            "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name}


def write_model(name, outdir):
    build, opts = MODELS[name]
    model = build()
    model.graph.name = name
    path = os.path.join(outdir, f"{name}.onnx")
    entry = {"name": name, "file": f"{name}.onnx",
             "opset": model.opset_import[0].version, "ir_version": model.ir_version}
    if opts.get("external"):
        data = f"{name}.data"
        if os.path.exists(os.path.join(outdir, data)):
            os.remove(os.path.join(outdir, data))  # onnx appends to an existing file
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data, size_threshold=0)
        os.chmod(os.path.join(outdir, data), 0o644)  # onnx creates it 0600
        entry["external_data"] = data
    else:
        onnx.save_model(model, path)
    # Check the file on disk (the path form also resolves external data).
    onnx.checker.check_model(path, full_check=True)
    entry["inputs"] = [_value_info_json(v) for v in model.graph.input]
    entry["outputs"] = [_value_info_json(v) for v in model.graph.output]
    entry["num_nodes"] = len(model.graph.node)
    entry["bytes"] = os.path.getsize(path) + (
        os.path.getsize(os.path.join(outdir, entry["external_data"])) if "external_data" in entry else 0)
    return entry


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="build only these models")
    ap.add_argument("--list", action="store_true", help="list model names and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(MODELS))
        return 0
    if not args.outdir:
        ap.error("OUTDIR is required")
    names = args.only or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MODELS)}")
    os.makedirs(args.outdir, exist_ok=True)

    # Merge into an existing manifest so that --only does not drop other entries.
    manifest_path = os.path.join(args.outdir, "manifest.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = {m["name"]: m for m in json.load(f)["models"]}
    for name in names:
        entry = write_model(name, args.outdir)
        manifest[name] = entry
        print(f"{name}: {entry['file']} ({entry['bytes'] / 1e6:.2f} MB, {entry['num_nodes']} nodes, "
              f"opset {entry['opset']})", file=sys.stderr)
    ordered = [manifest[n] for n in MODELS if n in manifest]
    with open(manifest_path, "w") as f:
        json.dump({"models": ordered}, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
