#!/usr/bin/env bash
# build_gpu_bundle.sh: builds here (nvcc and cargo; no GPU needed) everything scripts/gpu_tests.sh
# runs on the GPU machine, which has neither, and gathers it into one folder small enough to carry
# there (a whole build folder, object files included, is close to the 64 MiB a carry takes):
#   1. the CUDA build (default build-cuda), configured as gpu_tests.sh's header says;
#   2. the Rust crate's test programs, linked against that build's static library (which makes
#      them self-contained but for the CUDA libraries the C programs need too): cargo builds them
#      without running them, and its JSON messages name the programs;
#   3. the bundle (default build-gpu): the programs gpu_tests.sh runs, in the build folder's
#      layout, plus rust-tests/, and the same packed as gpu-carry/build-gpu.tgz: the statically
#      linked test programs hold ~10 MB of device code each, ~100 MB together, ~28 MB packed.
#
#   scripts/build_gpu_bundle.sh [--build DIR] [--out DIR]
#
# Then carry gpu-carry and run, on the GPU machine:
#   tar xzf gpu-carry/build-gpu.tgz && scripts/gpu_tests.sh --build build-gpu
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-cuda
OUT=build-gpu
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    *) echo "build_gpu_bundle.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
PY=${ZCI_PYTHON:-}
[ -z "$PY" ] && [ -x .venv/bin/python ] && PY="$PWD/.venv/bin/python"

echo "== CUDA build ($BUILD)"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DZCI_WITH_CUDA=ON -DZCI_WITH_DNNL=OFF \
      -DCMAKE_CUDA_ARCHITECTURES=90 ${PY:+-DZCI_PYTHON="$PY"} >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

echo "== Rust test programs, linked against $BUILD"
rm -rf "$OUT"
mkdir -p "$OUT/tests/gpu" "$OUT/rust-tests"
# release: a debug test program carries tens of MB of debug information
(cd rust && ZCINFER_LIB_DIR="$PWD/../$BUILD" cargo test --offline --release --no-run --message-format=json) \
    >"$OUT/cargo.json"
python3 - "$OUT/cargo.json" "$OUT/rust-tests" <<'PYEOF'
import json, shutil, sys
found = 0
for line in open(sys.argv[1]):
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        shutil.copy2(m["executable"], f"{sys.argv[2]}/{m['target']['name']}")
        print(f"  {m['target']['name']}: {m['executable']}")
        found += 1
if not found:
    sys.exit("build_gpu_bundle.sh: cargo built no test program")
PYEOF
rm "$OUT/cargo.json"
strip "$OUT"/rust-tests/*

echo "== bundle ($OUT)"
cp "$BUILD/zcinfer" "$OUT/"
for t in test_gpu_api test_gpu_models test_gpu_conv gpu_profile; do cp "$BUILD/tests/gpu/$t" "$OUT/tests/gpu/"; done
for t in test_vision_gpu test_detect_accuracy test_engine test_compat test_lazy_libs; do cp "$BUILD/tests/$t" "$OUT/tests/"; done
if [ -d "$BUILD/lib" ]; then cp -r "$BUILD/lib" "$OUT/"; fi
du -sh "$OUT"
mkdir -p gpu-carry
tar czf gpu-carry/"$(basename "$OUT")".tgz "$OUT"
ls -la gpu-carry/"$(basename "$OUT")".tgz
echo "carry gpu-carry; on the GPU machine: tar xzf gpu-carry/$(basename "$OUT").tgz && scripts/gpu_tests.sh --build $OUT"
