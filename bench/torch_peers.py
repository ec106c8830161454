#!/usr/bin/env python3
"""PyTorch peers for zcinfer's GPU benchmark: the same ONNX file run by PyTorch on the same GPU.

    python bench/torch_peers.py MODEL.onnx [--batch N] [--iters N] [--compile]
                                [--ref-dir DIR] [--zci-gpu-ms X] [--zci-roundtrip-ms Y]

The ONNX graph is turned into a PyTorch module by a small interpreter (constant subgraphs,
shape arithmetic included, are evaluated once at load; the remaining nodes map one to one onto
torch operators), so PyTorch runs exactly the network zcinfer runs. Timed (CUDA events, median
of --iters after warm-up, random inputs):

* eager FP32 (no TF32), eager FP16 channels-last (cuDNN benchmark mode on);
* FP16 channels-last replayed as a CUDA graph;
* torch.compile(mode="max-autotune") replayed as a CUDA graph, only with --compile (minutes);
* host round trips: pageable copies + FP32 eager (the seed's way), and pinned copies + the FP16
  CUDA graph.

With --ref-dir (ort_run.py's output folder) the FP32 and FP16 outputs are compared with
onnxruntime's first. With --zci-gpu-ms / --zci-roundtrip-ms (zcinfer's zero-copy GPU time and
regular-path wall time) it prints zcinfer's ratio to each peer.
"""

import argparse
import os
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper, shape_inference


def attrs_of(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(t):
    return [int(v) for v in t.reshape(-1).tolist()]


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph with torch operators; constants folded at construction."""

    def __init__(self, path, batch=1):
        super().__init__()
        model = onnx.load(path)
        for inp in model.graph.input:  # a symbolic batch dimension becomes `batch`
            for d in inp.type.tensor_type.shape.dim[:1]:
                if d.dim_param or d.dim_value <= 0:
                    d.dim_value = batch
        model = shape_inference.infer_shapes(model)
        g = model.graph
        self.shapes = {}
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            self.shapes[vi.name] = dims
        consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in consts]
        self.output_names = [o.name for o in g.output]
        self.nodes = []
        for node in g.node:
            a = attrs_of(node)
            if node.op_type == "Constant":
                consts[node.output[0]] = torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
                continue
            if node.op_type == "Shape" and node.input[0] in self.shapes and all(self.shapes[node.input[0]]):
                consts[node.output[0]] = torch.tensor(self.shapes[node.input[0]], dtype=torch.int64)
                continue
            ins = [i for i in node.input if i]
            if all(i in consts for i in ins):
                outs = self.run_node(node, a, [consts[i] if i else None for i in node.input])
                for name, v in zip(node.output, outs):
                    consts[name] = v
                continue
            self.nodes.append((node, a))
        self.consts = consts
        # float tensors (weights, grids) move with .to() and .half(); scalars and short vectors
        # (Resize scales, Clip bounds) stay on the CPU, where shape code reads them
        self.params = torch.nn.ParameterDict()
        self.param_key = {}
        for name, v in consts.items():
            if v.is_floating_point() and v.numel() > 4:
                key = "p%d" % len(self.param_key)
                self.params[key] = torch.nn.Parameter(v, requires_grad=False)
                self.param_key[name] = key

    def value(self, env, name):
        if not name:
            return None
        if name in env:
            return env[name]
        if name in self.param_key:
            return self.params[self.param_key[name]]
        return self.consts[name]

    def forward(self, *xs):
        env = dict(zip(self.input_names, xs))
        for node, a in self.nodes:
            outs = self.run_node(node, a, [self.value(env, i) for i in node.input])
            for name, v in zip(node.output, outs):
                env[name] = v
        res = [env[n] for n in self.output_names]
        return res[0] if len(res) == 1 else tuple(res)

    @staticmethod
    def run_node(node, a, x):
        op = node.op_type
        if op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            inp = x[0]
            nd = len(pads) // 2
            if pads[:nd] != pads[nd:]:
                inp = F.pad(inp, [p for i in reversed(range(nd)) for p in (pads[i], pads[i + nd])])
                pads = [0] * (2 * nd)
            return [F.conv2d(inp, x[1], x[2] if len(x) > 2 else None, a.get("strides", 1), pads[:nd],
                             a.get("dilations", 1), a.get("group", 1))]
        unary = {"Sigmoid": torch.sigmoid, "Relu": torch.relu, "Tanh": torch.tanh, "Exp": torch.exp,
                 "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Log": torch.log,
                 "Floor": torch.floor, "Ceil": torch.ceil, "Erf": torch.erf, "Reciprocal": torch.reciprocal,
                 "HardSwish": F.hardswish, "Identity": lambda t: t}
        if op in unary:
            return [unary[op](x[0])]
        binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
                  "Equal": torch.eq, "Less": torch.lt, "Greater": torch.gt}
        if op in binary:
            if op == "Div" and not x[0].is_floating_point():
                return [torch.div(x[0], x[1], rounding_mode="trunc")]
            return [binary[op](x[0], x[1])]
        if op in ("Max", "Min"):
            r = x[0]
            for t in x[1:]:
                r = torch.maximum(r, t) if op == "Max" else torch.minimum(r, t)
            return [r]
        if op == "LeakyRelu":
            return [F.leaky_relu(x[0], a.get("alpha", 0.01))]
        if op == "HardSigmoid":
            return [torch.clamp(a.get("alpha", 0.2) * x[0] + a.get("beta", 0.5), 0, 1)]
        if op == "Clip":
            lo = x[1] if len(x) > 1 and x[1] is not None else a.get("min")
            hi = x[2] if len(x) > 2 and x[2] is not None else a.get("max")
            lo = float(lo) if lo is not None else None
            hi = float(hi) if hi is not None else None
            return [torch.clamp(x[0], lo, hi)]
        if op == "Concat":
            return [torch.cat(x, dim=a["axis"])]
        if op == "Split":
            axis = a.get("axis", 0)
            if len(x) > 1 and x[1] is not None:
                sizes = _ints(x[1])
            elif "split" in a:
                sizes = list(a["split"])
            else:
                n = len(node.output)
                sizes = [x[0].shape[axis] // n] * n
            return list(torch.split(x[0], sizes, dim=axis))
        if op == "Slice":
            starts, ends = _ints(x[1]), _ints(x[2])
            axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
            steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
            idx = [slice(None)] * x[0].dim()
            for s, e, ax, st in zip(starts, ends, axes, steps):
                dim = x[0].shape[ax]
                s = max(min(s + dim if s < 0 else s, dim), 0)
                e = max(min(e + dim if e < 0 else e, dim), 0)
                idx[ax] = slice(s, e, st)
            return [x[0][tuple(idx)]]
        if op == "Reshape":
            shape = _ints(x[1])
            shape = [x[0].shape[i] if v == 0 else v for i, v in enumerate(shape)]
            return [x[0].reshape(shape)]
        if op == "Flatten":
            return [x[0].flatten(a.get("axis", 1))]
        if op == "Transpose":
            return [x[0].permute(*a.get("perm", list(reversed(range(x[0].dim())))))]
        if op == "Unsqueeze":
            axes = _ints(x[1]) if len(x) > 1 else list(a["axes"])
            r = x[0]
            for ax in sorted(v + r.dim() + 1 if v < 0 else v for v in axes):
                r = r.unsqueeze(ax)
            return [r]
        if op == "Squeeze":
            axes = _ints(x[1]) if len(x) > 1 else list(a.get("axes", []))
            return [x[0].squeeze(tuple(axes)) if axes else x[0].squeeze()]
        if op == "Gather":
            axis = a.get("axis", 0)
            idx = x[1].long()
            r = torch.index_select(x[0], axis, idx.reshape(-1).to(x[0].device))
            return [r.reshape(list(x[0].shape[:axis]) + list(idx.shape) + list(x[0].shape[axis + 1:]))]
        if op == "MaxPool":
            k, p = a["kernel_shape"], a.get("pads", [0, 0, 0, 0])
            return [F.max_pool2d(x[0], k, a.get("strides", k), p[:2], a.get("dilations", 1), bool(a.get("ceil_mode", 0)))]
        if op == "AveragePool":
            k, p = a["kernel_shape"], a.get("pads", [0, 0, 0, 0])
            return [F.avg_pool2d(x[0], k, a.get("strides", k), p[:2], bool(a.get("ceil_mode", 0)),
                                 bool(a.get("count_include_pad", 0)))]
        if op == "GlobalAveragePool":
            return [x[0].mean(dim=(2, 3), keepdim=True)]
        if op == "Resize":
            scales = x[2] if len(x) > 2 and x[2] is not None and x[2].numel() else None
            mode = a.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if scales is not None:
                sf = [float(v) for v in scales.tolist()[2:]]
                return [F.interpolate(x[0], scale_factor=sf, mode="nearest" if mode == "nearest" else "bilinear")]
            size = _ints(x[3])[2:]
            return [F.interpolate(x[0], size=size, mode="nearest" if mode == "nearest" else "bilinear")]
        if op == "Softmax":
            return [torch.softmax(x[0], dim=a.get("axis", -1))]
        if op == "MatMul":
            return [torch.matmul(x[0], x[1])]
        if op == "Gemm":
            A = x[0].t() if a.get("transA", 0) else x[0]
            B = x[1].t() if a.get("transB", 0) else x[1]
            y = a.get("alpha", 1.0) * (A @ B)
            if len(x) > 2 and x[2] is not None:
                y = y + a.get("beta", 1.0) * x[2]
            return [y]
        if op == "ReduceMean":
            axes = list(a["axes"]) if "axes" in a else (_ints(x[1]) if len(x) > 1 and x[1] is not None else None)
            keep = bool(a.get("keepdims", 1))
            return [x[0].mean(dim=axes, keepdim=keep) if axes else x[0].mean()]
        if op == "BatchNormalization":
            return [F.batch_norm(x[0], x[3], x[4], x[1], x[2], False, 0.0, a.get("epsilon", 1e-5))]
        if op == "Expand":
            shape = _ints(x[1])
            return [x[0] * torch.ones(shape, dtype=x[0].dtype, device=x[0].device)]
        if op == "Cast":
            to = onnx.helper.tensor_dtype_to_np_dtype(a["to"])
            return [x[0].to(torch.from_numpy(np.zeros(1, to)).dtype)]
        if op == "ConstantOfShape":
            v = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            return [torch.full(_ints(x[0]), float(v.reshape(-1)[0]), dtype=torch.from_numpy(v).dtype)]
        if op == "Range":
            return [torch.arange(x[0].item(), x[1].item(), x[2].item())]
        if op == "Where":
            return [torch.where(x[0], x[1], x[2])]
        raise NotImplementedError(f"torch_peers: op {op}")


def time_cuda(fn, iters, warmup=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for s, e in ev:
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return float(np.median([s.elapsed_time(e) for s, e in ev]))


def time_wall(fn, iters, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def cuda_graph(module, x):
    static_x = x.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(3):
            module(static_x)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        static_y = module(static_x)
    return g, static_x, static_y


def rel_err(a, ref):
    a = np.asarray(a, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    return float(np.linalg.norm(a - ref) / max(np.linalg.norm(ref), 1e-30))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--compile", action="store_true", help="also torch.compile(max-autotune) (minutes)")
    ap.add_argument("--ref-dir", help="ort_run.py output folder: compare with onnxruntime")
    ap.add_argument("--zci-gpu-ms", type=float, help="zcinfer zero-copy GPU time (FP16), for ratios")
    ap.add_argument("--zci-roundtrip-ms", type=float, help="zcinfer regular-path wall time (FP16, pinned)")
    args = ap.parse_args()

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda")
    t0 = time.perf_counter()
    m32 = OnnxModule(args.model, args.batch).eval().to(dev)
    m16 = OnnxModule(args.model, args.batch).eval().to(dev).half()
    for p in m16.parameters():  # channels-last weights (Module.to refuses the 5-D constants)
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; module built in "
          f"{time.perf_counter() - t0:.1f} s; {len(m32.nodes)} runtime nodes")
    shape = [args.batch if d == 0 else d for d in m32.shapes[m32.input_names[0]]]
    rng = np.random.default_rng(0)
    host = rng.random(shape, dtype=np.float32)
    if args.ref_dir and os.path.exists(os.path.join(args.ref_dir, "input_0.npy")):
        host = np.load(os.path.join(args.ref_dir, "input_0.npy"))
    x32 = torch.from_numpy(host).to(dev)
    x16 = x32.half().contiguous(memory_format=torch.channels_last)
    results = {}
    with torch.no_grad():
        if args.ref_dir and os.path.exists(os.path.join(args.ref_dir, "output_0.npy")):
            ref = np.load(os.path.join(args.ref_dir, "output_0.npy"))
            y32 = m32(x32)
            y16 = m16(x16)
            y32 = y32[0] if isinstance(y32, tuple) else y32
            y16 = y16[0] if isinstance(y16, tuple) else y16
            print(f"check vs onnxruntime: FP32 rel. error {rel_err(y32.cpu().numpy(), ref):.2e}, "
                  f"FP16 {rel_err(y16.float().cpu().numpy(), ref):.2e}")
        results["eager FP32"] = time_cuda(lambda: m32(x32), args.iters)
        results["eager FP16 channels-last"] = time_cuda(lambda: m16(x16), args.iters)
        g, sx, sy = cuda_graph(m16, x16)
        results["FP16 CUDA graph"] = time_cuda(g.replay, args.iters)
        if args.compile:
            t0 = time.perf_counter()
            mc = torch.compile(m16, mode="max-autotune")
            for _ in range(3):
                mc(x16)
            torch.cuda.synchronize()
            print(f"torch.compile: {time.perf_counter() - t0:.0f} s to compile")
            results["torch.compile max-autotune (CUDA graphs)"] = time_cuda(lambda: mc(x16), args.iters)
        # host round trips
        pinned_in = torch.from_numpy(host).pin_memory()
        out_shape = sy.shape if not isinstance(sy, tuple) else sy[0].shape
        pinned_out = torch.empty(out_shape, dtype=torch.float32).pin_memory()

        def seed_way():
            y = m32(torch.from_numpy(host).to(dev))
            (y[0] if isinstance(y, tuple) else y).cpu()

        def pinned_graph():
            sx.copy_(pinned_in.to(dev, non_blocking=True).half())
            g.replay()
            pinned_out.copy_((sy[0] if isinstance(sy, tuple) else sy).float(), non_blocking=True)
            torch.cuda.current_stream().synchronize()

        rt = {"round trip: pageable + eager FP32 (the seed's way)": time_wall(seed_way, max(20, args.iters // 4)),
              "round trip: pinned + FP16 CUDA graph": time_wall(pinned_graph, args.iters)}
    print(f"{'peer':48s} {'median ms':>10s}   zcinfer ratio")
    for name, ms in results.items():
        ratio = f"{ms / args.zci_gpu_ms:6.2f}x faster" if args.zci_gpu_ms else ""
        print(f"{name:48s} {ms:10.3f}   {ratio}")
    for name, ms in rt.items():
        ratio = f"{ms / args.zci_roundtrip_ms:6.2f}x faster" if args.zci_roundtrip_ms else ""
        print(f"{name:48s} {ms:10.3f}   {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
