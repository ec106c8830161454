#!/usr/bin/env bash
# gpu_tests.sh: the GPU test suite and benchmark, run ON the GPU machine from the repository root,
# with a CUDA build carried in (default build-cuda, made here with
#   cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DZCI_WITH_CUDA=ON -DZCI_WITH_DNNL=OFF \
#         -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build-cuda -j).
#
#   scripts/gpu_tests.sh [--build DIR] [--quick] [--no-bench] [--no-peers] [--ab] [--compile] [--profile]
#                        [--trained | --trained-only]
#
# --no-peers skips the PyTorch peers; --ab adds yolov5s FP16 benchmarks with every convolution on
# cuDNN (ZCI_CUDA_CONV=cudnn, batch 1 and 32) or on our kernel (ZCI_CUDA_CONV=igemm), and each
# convolution's timed choice, one stream only (ZCI_CUDA_STREAMS=1) against the planned side stream,
# the regular path without early output rows (ZCI_CUDA_NO_EARLY_OUTPUT=1), and batch 32 without the
# wgmma kernels (ZCI_CUDA_NO_WGMMA=1) or without the heads' padded rows (ZCI_CUDA_NO_PAD_HEADS=1),
# and with the output RowMap inside the graph (ZCI_CUDA_NO_TAIL=1) or a warp per row
# (ZCI_CUDA_NO_ROWMAP_TILES=1).
# --quick tests three models only; --profile adds gpu_profile's node times of yolov5s (FP16,
# FP32) and Nsight Compute's kernel list of one FP16 inference. --trained (about 4 minutes more)
# trains yolov5s on the synthetic scenes (tools/train_detector/train_yolov5s.py, 3 minutes, with
# PyTorch there) and benchmarks it: issue 4's frame -> detections with a real detector's output;
# --trained-only does that alone (the whole suite and --trained take more than one 10-minute call).
# Steps: the test models are generated into /tmp (tests/models/make_models.py) and onnxruntime's
# references for three seeds (tests/models/ort_run.py); test_lazy_libs (cuDNN and cuBLAS open on
# first use); test_gpu_conv (our convolution kernel against a CPU reference); test_gpu_api (API
# behaviour, memory, first-inference time); test_gpu_models (every model against onnxruntime in
# FP32 and FP16, all ways in); compute-sanitizer memcheck on a short run (and racecheck on our
# convolution and the vision kernels); `zcinfer bench` on yolov5s (FP32, FP16, FP16 with FP16
# input and output, FP16 batch 32; with the detector stages) and the PyTorch peers; the vision
# stage (GPU preprocessing and NMS against the CPU, detector accuracy through the CUDA path),
# engine files and the seed's C API on the GPU. Then the Rust crate's tests, prebuilt (the GPU
# machine has no cargo). scripts/build_gpu_bundle.sh builds everything this needs into
# build-gpu (zcinfer, tests/gpu/*, tests/{test_lazy_libs,test_vision_gpu,test_detect_accuracy,
# test_engine,test_compat}, rust-tests/*). Logs go to /tmp/zci_logs, packed at the end into
# $OUT/gpu_logs.tgz when $OUT is set. Exits non-zero when a test or the sanitizer fails; the
# benchmarks and peers only report.
set -u
BUILD=build-cuda
QUICK=0
BENCH=1
COMPILE=""
PROFILE=0
PEERS=1
AB=0
TRAINED=0
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD="$2"; shift ;;
    --quick) QUICK=1 ;;
    --no-bench) BENCH=0 ;;
    --compile) COMPILE="--compile" ;;
    --profile) PROFILE=1 ;;
    --trained) TRAINED=1 ;;
    --trained-only) TRAINED=2 ;;
    --no-peers) PEERS=0 ;;
    --ab) AB=1 ;;
    *) echo "gpu_tests.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
LOG=/tmp/zci_logs
mkdir -p "$LOG"
MODELS=/tmp/zci_models
REFS=/tmp/zci_refs
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# cuDNN 9 comes with PyTorch's wheels there; cuBLAS with the CUDA toolkit
# ($BUILD/lib: shared libraries carried with the build that the GPU machine lacks, e.g. libstb)
for d in /opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib /usr/local/cuda/lib64 /usr/local/cuda/lib "$PWD/$BUILD/lib"; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
status=0
summary=()
step() { # name, then the command; logs to $LOG/name.log
    local name=$1; shift
    local t0=$(date +%s)
    timeout "${STEP_TIMEOUT:-420}" "$@" >"$LOG/$name.log" 2>&1
    local rc=$?
    summary+=("$(printf '%-28s rc=%-3d %4ds' "$name" "$rc" $(($(date +%s) - t0)))")
    return $rc
}

# --trained: yolov5s trained on the synthetic scenes, and issue 4's frame -> detections with it
run_trained() {
    local TPY=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
    local T=$MODELS/yolov5s_shapes.onnx
    mkdir -p $MODELS
    STEP_TIMEOUT=260 step train_yolov5s "$TPY" tools/train_detector/train_yolov5s.py --device cuda --minutes 3.0 \
        --images 4000 --out $T || status=1
    grep -E "^val|^TRAINED|total" "$LOG/train_yolov5s.log"
    if [ -f $T ]; then
        STEP_TIMEOUT=90 step bench_trained "$BUILD/zcinfer" bench $T --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_trained_io "$BUILD/zcinfer" bench $T --device cuda --fp16 --fp16-io --iters 300
        for f in bench_trained bench_trained_io; do
            echo "== $f"; grep -hE "GPU time|decode|frame in device|host clock" "$LOG/$f.log"
        done
    else
        echo "gpu_tests.sh: training wrote no model"; status=1
    fi
}
finish() {
    echo "== summary"
    for l in "${summary[@]}"; do echo "$l"; done
    [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_logs.tgz" -C "$(dirname $LOG)" "$(basename $LOG)"
    [ $status = 0 ] && echo "gpu_tests.sh: all tests passed" || echo "gpu_tests.sh: FAILURES (logs in $LOG)"
    exit $status
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv >"$LOG/gpu.txt" 2>&1
cat "$LOG/gpu.txt"
if [ $TRAINED = 2 ]; then run_trained; finish; fi
for b in "$BUILD/zcinfer" "$BUILD"/tests/gpu/* "$BUILD"/rust-tests/*; do
    if [ -x "$b" ] && ldd "$b" | grep -q "not found"; then
        echo "gpu_tests.sh: $b: missing shared libraries:"; ldd "$b" | grep "not found"; exit 1
    fi
done

# ---- models and references (in parallel: one process per model)
ALL="yolov5n yolov5s yolov5n_opset11 yolov5n_opset13 yolov5n_split rowmap_cases yolov5_oddhead yolov8n yolov8n_opset19 yolo11n classifier classifier_external classifier_dynbatch classifier_opset11 classifier_opset13 classifier_opset18"
[ $QUICK = 1 ] && ALL="yolov5s yolov8n classifier rowmap_cases yolov5_oddhead"
t0=$(date +%s)
mkdir -p $MODELS $REFS
for m in $ALL; do
    ( [ -f $MODELS/$m.onnx ] || { $PY tests/models/make_models.py $MODELS/$m --only $m >/dev/null 2>&1 &&
        mv $MODELS/$m/$m.* $MODELS/; }
      b=1; [ $m = classifier_dynbatch ] && b=3
      for s in 0 1 2; do
          $PY tests/models/ort_run.py $MODELS/$m.onnx --seed $s --batch $b --outdir $REFS/$m/s$s >/dev/null 2>&1
      done ) &
done
wait
echo "models and references: $(($(date +%s) - t0)) s"; ls $MODELS | tr '\n' ' '; echo

NAMES=""
for m in $ALL; do
    [ $m = classifier_dynbatch ] && NAMES="$NAMES $m:3" || NAMES="$NAMES $m"
done

# cuDNN and cuBLAS are opened at run time (ldd above cannot see them): that they load from
# LD_LIBRARY_PATH, that a CPU session maps neither and a CUDA session maps cuDNN only
STEP_TIMEOUT=60 step test_lazy_libs env ZCI_VERBOSE=1 "$BUILD/tests/test_lazy_libs" models/shapes_detector.onnx || status=1
grep -E "loaded on first use|could not be loaded|FAIL|passed" "$LOG/test_lazy_libs.log"
STEP_TIMEOUT=120 step test_gpu_conv "$BUILD/tests/gpu/test_gpu_conv" || status=1
tail -n 14 "$LOG/test_gpu_conv.log"
STEP_TIMEOUT=150 step test_gpu_api "$BUILD/tests/gpu/test_gpu_api" $MODELS/yolov5s.onnx || status=1
tail -n 12 "$LOG/test_gpu_api.log"
STEP_TIMEOUT=300 step test_gpu_models "$BUILD/tests/gpu/test_gpu_models" $MODELS $REFS $NAMES || status=1
grep -E "FAIL|node |passed|failure" "$LOG/test_gpu_models.log" | head -40
# the RowMap kernels the default leaves aside: a warp per row (ZCI_CUDA_NO_ROWMAP_TILES) inside
# the graph (ZCI_CUDA_NO_TAIL), on the models whose heads the tile kernel takes by default
STEP_TIMEOUT=200 step test_gpu_models_rowmap_ab env ZCI_CUDA_NO_ROWMAP_TILES=1 ZCI_CUDA_NO_TAIL=1 \
    "$BUILD/tests/gpu/test_gpu_models" $MODELS $REFS yolov5s yolov5_oddhead rowmap_cases || status=1
grep -E "FAIL|node |passed|failure" "$LOG/test_gpu_models_rowmap_ab.log" | head -20

# ---- benchmarks
if [ $BENCH = 1 ]; then
    Y=$MODELS/yolov5s.onnx
    STEP_TIMEOUT=90 step bench_fp32 "$BUILD/zcinfer" bench $Y --device cuda --iters 300
    STEP_TIMEOUT=90 step bench_fp16 "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
    # FP16 input and output: issue 4's detector targets (FP16 letterbox, frame -> detections)
    STEP_TIMEOUT=90 step bench_fp16_io "$BUILD/zcinfer" bench $Y --device cuda --fp16 --fp16-io --iters 300
    $PY bench/make_dynbatch.py $Y $MODELS/yolov5s_dynbatch.onnx
    STEP_TIMEOUT=90 step bench_fp16_b32 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
    for f in bench_fp32 bench_fp16 bench_fp16_io bench_fp16_b32; do echo "== $f"; cat "$LOG/$f.log"; done
    if [ $AB = 1 ]; then
        STEP_TIMEOUT=90 step bench_fp16_cudnn env ZCI_CUDA_CONV=cudnn "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_fp16_igemm env ZCI_CUDA_CONV=igemm "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_fp16_b32_cudnn env ZCI_CUDA_CONV=cudnn "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=90 step bench_fp16_norowmap env ZCI_NO_ROWMAP=1 "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_fp16_b32_norowmap env ZCI_NO_ROWMAP=1 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=90 step bench_fp16_onestream env ZCI_CUDA_STREAMS=1 "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_fp16_b32_onestream env ZCI_CUDA_STREAMS=1 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=90 step bench_fp16_noearly env ZCI_CUDA_NO_EARLY_OUTPUT=1 "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_fp16_b32_nowgmma env ZCI_CUDA_NO_WGMMA=1 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=90 step bench_fp16_b32_nopadheads env ZCI_CUDA_NO_PAD_HEADS=1 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=90 step bench_fp16_notail env ZCI_CUDA_NO_TAIL=1 "$BUILD/zcinfer" bench $Y --device cuda --fp16 --iters 300
        STEP_TIMEOUT=90 step bench_fp16_b32_notail env ZCI_CUDA_NO_TAIL=1 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=90 step bench_fp16_b32_norowmaptiles env ZCI_CUDA_NO_ROWMAP_TILES=1 "$BUILD/zcinfer" bench $MODELS/yolov5s_dynbatch.onnx --device cuda --fp16 --batch 32 --iters 50
        STEP_TIMEOUT=60 step verbose_fp16 "$BUILD/zcinfer" run $Y --device cuda --fp16 -v
        for f in bench_fp16_cudnn bench_fp16_igemm bench_fp16_b32_cudnn bench_fp16_norowmap bench_fp16_b32_norowmap \
                 bench_fp16_onestream bench_fp16_b32_onestream bench_fp16_noearly bench_fp16_b32_nowgmma \
                 bench_fp16_b32_nopadheads bench_fp16_notail bench_fp16_b32_notail bench_fp16_b32_norowmaptiles; do
            echo "== A/B $f"; grep -hE "creation|GPU time|host buffers, wall" "$LOG/$f.log"
        done
        echo "== per-convolution choice (cuDNN fused graph or our kernel), batch 1"
        grep -hE "cuDNN fused .* us, ours|implicit-GEMM|fused into|stream|rows 0-" "$LOG/verbose_fp16.log" | sed 's/^zcinfer: //' | head -70
    fi
    zgpu=$(grep "GPU time (CUDA events)" "$LOG/bench_fp16.log" | awk '{print $6}')
    zrt=$(grep "pinned host buffers, wall" "$LOG/bench_fp16.log" | awk '{print $6}')
    [ $PEERS = 1 ] && [ $SECONDS -lt 400 ] && STEP_TIMEOUT=150 step torch_peers $PY bench/torch_peers.py $Y --ref-dir $REFS/yolov5s/s0 ${zgpu:+--zci-gpu-ms $zgpu} \
        ${zrt:+--zci-roundtrip-ms $zrt} $COMPILE
    [ $PEERS = 1 ] && tail -n 12 "$LOG/torch_peers.log"
fi

# ---- compute-sanitizer on a short run (the classifier through every path, and the API test
# without its 100 create/destroy cycles)
if [ $SECONDS -gt 430 ]; then
    echo "compute-sanitizer skipped: out of time ($SECONDS s)"
elif [ -x "$SANITIZER" ]; then
    STEP_TIMEOUT=100 step memcheck_models "$SANITIZER" --tool memcheck --leak-check no --error-exitcode 9 \
        "$BUILD/tests/gpu/test_gpu_models" $MODELS $REFS classifier || status=1
    STEP_TIMEOUT=60 step memcheck_api env ZCI_GPU_TEST_QUICK=1 "$SANITIZER" --tool memcheck --error-exitcode 9 \
        "$BUILD/tests/gpu/test_gpu_api" || status=1
    STEP_TIMEOUT=120 step memcheck_conv "$SANITIZER" --tool memcheck --error-exitcode 9 "$BUILD/tests/gpu/test_gpu_conv" --quick || status=1
    STEP_TIMEOUT=120 step racecheck_conv "$SANITIZER" --tool racecheck --error-exitcode 9 "$BUILD/tests/gpu/test_gpu_conv" --quick || status=1
    grep -hE "ERROR SUMMARY|RACECHECK SUMMARY" "$LOG/memcheck_conv.log" "$LOG/racecheck_conv.log" | head -4
    grep -E "ERROR SUMMARY|Invalid|passed|FAIL" "$LOG/memcheck_models.log" "$LOG/memcheck_api.log" | head -20
    # the NMS kernels' shared memory (races) and bounds, on small cases (ZCI_GPU_TEST_QUICK)
    if [ $SECONDS -lt 380 ]; then # leaves the vision tests and the Rust tests their time
        STEP_TIMEOUT=60 step memcheck_vision env ZCI_GPU_TEST_QUICK=1 "$SANITIZER" --tool memcheck --leak-check no \
            --error-exitcode 9 "$BUILD/tests/test_vision_gpu" || status=1
        STEP_TIMEOUT=60 step racecheck_vision env ZCI_GPU_TEST_QUICK=1 "$SANITIZER" --tool racecheck \
            --error-exitcode 9 "$BUILD/tests/test_vision_gpu" || status=1
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Invalid|hazard|passed|FAIL" "$LOG/memcheck_vision.log" \
            "$LOG/racecheck_vision.log" | head -20
    fi
else
    echo "compute-sanitizer not found"; status=1
fi

# ---- the vision stage, engine files and the seed's C API on the GPU (issues 4 and 5)
FIX=/tmp/zci_fixtures
$PY tests/fixtures/make_fixtures.py $FIX >/dev/null 2>&1
for t in test_vision_gpu test_detect_accuracy test_engine test_compat; do
    [ -x "$BUILD/tests/$t" ] || { echo "gpu_tests.sh: $BUILD/tests/$t missing"; status=1; }
done
STEP_TIMEOUT=120 step test_vision_gpu "$BUILD/tests/test_vision_gpu" || status=1
STEP_TIMEOUT=120 step detect_accuracy_cuda "$BUILD/tests/test_detect_accuracy" models/shapes_detector.onnx --device cuda || status=1
STEP_TIMEOUT=150 step test_engine_cuda "$BUILD/tests/test_engine" $FIX $MODELS yolov5s cuda || status=1
STEP_TIMEOUT=120 step test_compat_gpu "$BUILD/tests/test_compat" $MODELS || status=1
for f in test_vision_gpu detect_accuracy_cuda test_engine_cuda test_compat_gpu; do
    echo "== $f"; grep -vE "^PASS" "$LOG/$f.log" | tail -n 14
done

# ---- the Rust crate's tests (issue 5): its CPU cases again, and its CUDA cases, which print
# "skipped: no GPU" only where there is none
RUST_TESTS=$(ls "$BUILD"/rust-tests/* 2>/dev/null)
RUST_ENV="ZCINFER_TEST_FIXTURES=$FIX ZCINFER_TEST_MODELS=$MODELS"
if [ -z "$RUST_TESTS" ] && command -v cargo >/dev/null; then # a build folder made on this machine
    STEP_TIMEOUT=300 step rust_cargo env $RUST_ENV ZCINFER_LIB_DIR="$(cd "$BUILD" && pwd)" \
        cargo test --offline --release --manifest-path rust/Cargo.toml -- --test-threads 1 --nocapture || status=1
    echo "== rust_cargo"; grep -E "^test |test result|skipped|panicked|error" "$LOG/rust_cargo.log" | tail -n 16
elif [ -z "$RUST_TESTS" ]; then
    echo "gpu_tests.sh: no Rust test programs in $BUILD/rust-tests (scripts/build_gpu_bundle.sh) and no cargo"; status=1
fi
for t in $RUST_TESTS; do
    n=rust_$(basename "$t")
    STEP_TIMEOUT=120 step "$n" env $RUST_ENV "$t" --test-threads 1 --nocapture || status=1
    echo "== $n"; grep -E "^test |test result|skipped|panicked" "$LOG/$n.log" | tail -n 16
done

[ $TRAINED = 1 ] && run_trained

if [ $PROFILE = 1 ]; then
    step profile_fp16 "$BUILD/tests/gpu/gpu_profile" $MODELS/yolov5s.onnx --fp16 --iters 50 --top 30
    step profile_fp32 "$BUILD/tests/gpu/gpu_profile" $MODELS/yolov5s.onnx --iters 30 --top 12
    step profile_fp16_b32 "$BUILD/tests/gpu/gpu_profile" $MODELS/yolov5s_dynbatch.onnx --fp16 --batch 32 --iters 10 --top 12
    step profile_fp16_b32_nopad env ZCI_CUDA_NO_PAD=1 "$BUILD/tests/gpu/gpu_profile" $MODELS/yolov5s_dynbatch.onnx --fp16 --batch 32 --iters 10 --top 4
    step profile_fp16_nchw env ZCI_CUDA_NCHW=1 "$BUILD/tests/gpu/gpu_profile" $MODELS/yolov5s.onnx --fp16 --iters 50 --top 4
    step verbose_fp16 "$BUILD/zcinfer" run $MODELS/yolov5s.onnx --device cuda --fp16 -v
    cat "$LOG/profile_fp16.log" "$LOG/profile_fp32.log" "$LOG/profile_fp16_b32.log" "$LOG/profile_fp16_b32_nopad.log" "$LOG/profile_fp16_nchw.log"
    grep "CUDA" "$LOG/verbose_fp16.log"
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
    if [ -n "$NCU" ] && [ -n "${ZCI_NCU:-}" ] && [ $SECONDS -lt 450 ]; then
        # the first kernels of the process are the warm-up inference of session creation
        STEP_TIMEOUT=120 step ncu "$NCU" --metrics gpu__time_duration.sum --csv --launch-count 400 \
            "$BUILD/tests/gpu/gpu_profile" $MODELS/yolov5s.onnx --fp16 --iters 1
        $PY - "$LOG/ncu.log" <<'PYEOF'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
head = rows[0]; rows = rows[1:]
ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
tot = collections.defaultdict(lambda: [0, 0.0])
for r in rows:
    v = float(r[vi].replace(",", "")) * (1e-3 if r[ui] == "nsecond" else 1.0)
    k = r[ki].split("(")[0][:90]
    tot[k][0] += 1; tot[k][1] += v
print(f"ncu: {len(rows)} kernels, {sum(t[1] for t in tot.values()):.1f} us")
for k, (n, us) in sorted(tot.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{us:9.1f} us {n:4d}x  {k}")
PYEOF
    fi
fi

finish
