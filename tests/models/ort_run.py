#!/usr/bin/env python3
"""Reference outputs and CPU timings from onnxruntime for zcinfer's tests.

Reference mode (default):

    python tests/models/ort_run.py MODEL.onnx --seed S --outdir DIR [--batch N]

  For every model input i, in graph order, draws a deterministic input from
  ``numpy.random.default_rng(S)`` (one generator shared by all inputs, so input
  1 depends on input 0's size) and writes ``DIR/input_<i>.npy`` plus the raw
  little-endian ``DIR/input_<i>.bin``.  Float inputs are uniform [0, 1) drawn
  as ``rng.random(shape, dtype=np.float32)``; integer inputs are uniform in
  [0, 16).  Symbolic dimensions (e.g. a dynamic batch) are set to ``--batch``
  (default 1).  The model is run with onnxruntime's CPU provider with all graph
  optimisations disabled (no fusions, so the reference is the plain op-by-op
  result) and ``DIR/output_<i>.npy`` / ``.bin`` are written.  ``DIR/io.json``
  records names, shapes and dtypes of all inputs and outputs, so that a C test
  can read the ``.bin`` files without parsing ``.npy``.

Bench mode:

    python tests/models/ort_run.py MODEL.onnx --bench N [--threads T] [--seed S] [--batch N]

  Runs onnxruntime with its default (full) graph optimisations and
  ``intra_op_num_threads = T`` (default: os.cpu_count()), 5 warm-up runs, then
  N timed runs, and prints one JSON line
  ``{"median_ms": ..., "p90_ms": ..., "peak_rss_mb": ...}``.  The benchmark
  runs in a fresh child process so that the peak RSS (``getrusage``) is that
  of onnxruntime alone, not of this process.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

WARMUP_RUNS = 5

# onnxruntime type strings -> numpy dtypes for the input types we can generate.
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def concrete_shape(shape, batch):
    """Replace symbolic / unknown dimensions (str or None) by ``batch``."""
    return [d if isinstance(d, int) and d >= 0 else batch for d in shape]


def make_inputs(session, seed, batch):
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        if inp.type not in ORT_TYPES:
            raise SystemExit(f"input {inp.name}: unsupported type {inp.type}")
        dtype = np.dtype(ORT_TYPES[inp.type])
        shape = concrete_shape(inp.shape, batch)
        if dtype.kind == "f":
            # Drawn directly in float32 (not float64 then cast) so that the
            # C side can reproduce it if it ever needs to.
            x = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            x = rng.integers(0, 2, shape).astype(dtype)
        else:
            x = rng.integers(0, 16, shape).astype(dtype)
        feeds[inp.name] = x
    return feeds


def save_array(outdir, stem, arr):
    arr = np.ascontiguousarray(arr)
    np.save(os.path.join(outdir, stem + ".npy"), arr)
    # Raw data, little-endian regardless of the host.
    arr.astype(arr.dtype.newbyteorder("<"), copy=False).tofile(os.path.join(outdir, stem + ".bin"))


def describe(name, arr):
    return {"name": name, "shape": list(arr.shape), "dtype": arr.dtype.name}


def run_reference(args):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    feeds = make_inputs(sess, args.seed, args.batch)
    out_names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(out_names, feeds)

    os.makedirs(args.outdir, exist_ok=True)
    meta = {"model": os.path.abspath(args.model), "seed": args.seed, "batch": args.batch,
            "onnxruntime": ort.__version__, "inputs": [], "outputs": []}
    for i, (name, x) in enumerate(feeds.items()):
        save_array(args.outdir, f"input_{i}", x)
        meta["inputs"].append(describe(name, x))
    for i, (name, y) in enumerate(zip(out_names, outputs)):
        save_array(args.outdir, f"output_{i}", y)
        entry = describe(name, y)
        if y.dtype.kind == "f":
            entry["stats"] = {"min": float(y.min()), "max": float(y.max()),
                              "mean": float(y.mean()), "std": float(y.std()),
                              "finite": bool(np.isfinite(y).all())}
        meta["outputs"].append(entry)
    with open(os.path.join(args.outdir, "io.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    for o in meta["outputs"]:
        print(f"{o['name']}: shape {o['shape']} {o['dtype']} {o.get('stats', '')}", file=sys.stderr)


def bench_child(args):
    """Runs in the child process; prints the JSON result line."""
    so = ort.SessionOptions()  # default graph optimisation level: ORT_ENABLE_ALL
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    feeds = make_inputs(sess, args.seed, args.batch)
    out_names = [o.name for o in sess.get_outputs()]
    for _ in range(WARMUP_RUNS):
        sess.run(out_names, feeds)
    times = []
    for _ in range(args.bench):
        t0 = time.perf_counter()
        sess.run(out_names, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    print(json.dumps({"median_ms": round(float(np.median(times)), 3),
                      "p90_ms": round(float(np.percentile(times, 90)), 3),
                      "peak_rss_mb": round(rss_mb, 1),
                      "threads": args.threads, "runs": args.bench}))


def run_bench(args):
    cmd = [sys.executable, os.path.abspath(__file__), args.model, "--bench", str(args.bench),
           "--threads", str(args.threads), "--seed", str(args.seed), "--batch", str(args.batch),
           "--_bench-child"]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.exit(res.returncode)
    sys.stdout.write(res.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="path to the .onnx file")
    ap.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    ap.add_argument("--outdir", help="where to write input_*/output_* (reference mode)")
    ap.add_argument("--batch", type=int, default=1,
                    help="value for symbolic dimensions (default 1)")
    ap.add_argument("--bench", type=int, metavar="N", help="benchmark mode: N timed runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="intra-op threads in bench mode (default: os.cpu_count())")
    ap.add_argument("--_bench-child", dest="bench_child", action="store_true",
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.bench is not None:
        if args.bench < 1:
            ap.error("--bench needs N >= 1")
        (bench_child if args.bench_child else run_bench)(args)
    else:
        if not args.outdir:
            ap.error("--outdir is required (unless --bench)")
        run_reference(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
