"""zcinfer against onnxruntime's CPU provider on the same model, same machine, same thread
count: median latency of each, the ratio, and the peak memory (RSS) of each process.

usage: cpu_vs_ort.py --zcinfer BIN --model MODEL.onnx [--iters N] [--threads T] [--rounds R]

The two alternate R times (default 5), each measurement in a fresh process: the development VM's
speed drifts by 20% over minutes (onnxruntime measured 82 and 107 ms a minute apart), so one
measurement of each is not a comparison. Reported: every round's medians and ratio, the median
of the rounds' ratios (the paired comparison), and each runtime's largest peak RSS.
"""
import statistics
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
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return zcinfer_child(args)
    # each measurement in a fresh process, so that peak RSS belongs to that runtime alone
    zs, os_, ratios = [], [], []
    name = os.path.basename(args.model)
    print(f"{name}, {args.threads} threads, {args.rounds} alternating rounds, each the median of {args.iters} runs after warm-up:")
    for r in range(args.rounds):
        z = json.loads(subprocess.run([sys.executable, __file__, "--_child", "--zcinfer", args.zcinfer, "--model",
                                       args.model, "--iters", str(args.iters), "--threads", str(args.threads)],
                                      check=True, capture_output=True, text=True).stdout)
        o = json.loads(subprocess.run([sys.executable, os.path.join(here, "..", "tests", "models", "ort_run.py"),
                                       args.model, "--bench", str(args.iters), "--threads", str(args.threads)],
                                      check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        zs.append(z)
        os_.append(o)
        ratios.append(z["median_ms"] / o["median_ms"])
        print(f"  round {r + 1}: zcinfer {z['median_ms']:8.2f} ms, onnxruntime {o['median_ms']:8.2f} ms, ratio {ratios[-1]:.3f}")
    zm = statistics.median(z["median_ms"] for z in zs)
    om = statistics.median(o["median_ms"] for o in os_)
    zr = max(z["peak_rss_mb"] for z in zs)
    orr = max(o["peak_rss_mb"] for o in os_)
    print(f"  zcinfer      median of rounds {zm:9.2f} ms   peak RSS {zr:7.1f} MB")
    print(f"  onnxruntime  median of rounds {om:9.2f} ms   peak RSS {orr:7.1f} MB")
    ratio = statistics.median(ratios)
    print(f"  zcinfer / onnxruntime time: {ratio:.3f} (median of the rounds' ratios; range {min(ratios):.3f}-{max(ratios):.3f}): "
          f"{'faster' if ratio < 1 else 'slower'}; memory: {zr / orr:.2f}")


if __name__ == "__main__":
    main()
