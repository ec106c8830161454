"""zcinfer against onnxruntime's CPU provider on the same model, same machine, same thread
count: median latency of each, the ratio, and the peak memory (RSS) of each process.

usage: cpu_vs_ort.py --zcinfer BIN --model MODEL.onnx [--iters N] [--threads T]
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))


def zcinfer_child(args):
    """Runs `zcinfer bench` and reports its median and the child's peak RSS."""
    cmd = [args.zcinfer, "bench", args.model, "--iters", str(args.iters), "--warmup", "5",
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    m = re.search(r"wall time per call\s+median\s+([0-9.]+) ms\s+p90\s+([0-9.]+)", out)
    if not m:
        sys.exit("cannot read zcinfer bench's output:\n" + out)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    print(json.dumps({"median_ms": float(m.group(1)), "p90_ms": float(m.group(2)), "peak_rss_mb": rss_mb}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zcinfer", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return zcinfer_child(args)
    # each measurement in a fresh process, so that peak RSS belongs to that runtime alone
    z = json.loads(subprocess.run([sys.executable, __file__, "--_child", "--zcinfer", args.zcinfer, "--model",
                                   args.model, "--iters", str(args.iters), "--threads", str(args.threads)],
                                  check=True, capture_output=True, text=True).stdout)
    o = json.loads(subprocess.run([sys.executable, os.path.join(here, "..", "tests", "models", "ort_run.py"),
                                   args.model, "--bench", str(args.iters), "--threads", str(args.threads)],
                                  check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    name = os.path.basename(args.model)
    print(f"{name}, {args.threads} threads, median of {args.iters} runs after warm-up:")
    print(f"  zcinfer      {z['median_ms']:9.2f} ms (p90 {z['p90_ms']:.2f})   peak RSS {z['peak_rss_mb']:7.1f} MB")
    print(f"  onnxruntime  {o['median_ms']:9.2f} ms (p90 {o['p90_ms']:.2f})   peak RSS {o['peak_rss_mb']:7.1f} MB")
    ratio = z["median_ms"] / o["median_ms"]
    print(f"  zcinfer / onnxruntime time: {ratio:.2f} ({'faster' if ratio < 1 else 'slower'}), "
          f"memory: {z['peak_rss_mb'] / o['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
