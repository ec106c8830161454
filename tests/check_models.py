"""Runs one test model through zcinfer's CLI and onnxruntime on the same random input and
checks ||zcinfer - ort|| / ||ort|| for every output.

usage: check_models.py --zcinfer BIN --models DIR --name NAME [--tol 1e-5] [--batch N] [--device cpu|cuda] [--fp16]
The model is generated into DIR by make_models.py when it is missing.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx

here = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zcinfer", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()

    path = os.path.join(a.models, a.name + ".onnx")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(here, "models", "make_models.py"), a.models, "--only", a.name],
                       check=True)
    with tempfile.TemporaryDirectory() as tmp:
        ref, got = os.path.join(tmp, "ref"), os.path.join(tmp, "got")
        subprocess.run([sys.executable, os.path.join(here, "models", "ort_run.py"), path, "--seed", str(a.seed),
                        "--outdir", ref, "--batch", str(a.batch)], check=True)
        model = onnx.load(path, load_external_data=False)
        init = {t.name for t in model.graph.initializer}
        inputs = [i.name for i in model.graph.input if i.name not in init]
        cmd = [a.zcinfer, "run", path, "--output", got, "--batch", str(a.batch), "--device", a.device]
        if a.fp16:
            cmd.append("--fp16")
        for k, name in enumerate(inputs):
            cmd += ["--input", f"{name}={os.path.join(ref, f'input_{k}.npy')}"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        worst = 0.0
        for k, out in enumerate(model.graph.output):
            want = np.load(os.path.join(ref, f"output_{k}.npy")).astype(np.float64)
            fname = "".join("_" if c in "/\\: " else c for c in out.name)
            have = np.load(os.path.join(got, fname + ".npy")).astype(np.float64)
            if have.shape != want.shape:
                print(f"FAIL {a.name}: output {out.name} has shape {have.shape}, onnxruntime {want.shape}")
                return 1
            if not np.all(np.isfinite(have)):
                print(f"FAIL {a.name}: output {out.name} has non-finite values")
                return 1
            rel = np.linalg.norm(have - want) / max(np.linalg.norm(want), 1e-30)
            worst = max(worst, rel)
            print(f"{a.name} [{a.device}{' fp16' if a.fp16 else ''}, batch {a.batch}] {out.name} {list(want.shape)}: "
                  f"rel. error {rel:.3g} (limit {a.tol:g})")
        if worst > a.tol:
            print(f"FAIL {a.name}: rel. error {worst:.3g} > {a.tol:g}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
