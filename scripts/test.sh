#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test that needs no GPU:
#   1. the Release build's test suite (ctest): API and bad-input tests, the ONNX backend node
#      tests, the test models against onnxruntime, the CLI; then the Rust crate's tests;
#   2. the same suite built with AddressSanitizer and UndefinedBehaviorSanitizer;
#   3. a create -> run -> destroy loop under valgrind, which must show no leak.
# GPU tests are part of the suite but report "skipped: no GPU" on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/setup.sh

echo "== test suite (Release)"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== Rust bindings (rust/), linked against build/, on the models ctest made"
command -v cargo >/dev/null || { echo "cargo is needed for the Rust tests (Debian: apt-get install cargo)"; exit 1; }
(cd rust && ZCINFER_LIB_DIR="$PWD/../build" ZCINFER_TEST_FIXTURES="$PWD/../build/tests/fixtures" \
  ZCINFER_TEST_MODELS="$PWD/../build/models" cargo test --offline)

echo "== test suite under AddressSanitizer + UndefinedBehaviorSanitizer (CPU build)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DZCI_SANITIZE=address,undefined -DZCI_WITH_CUDA=OFF \
      -DZCI_PYTHON="$PWD/.venv/bin/python" >/dev/null
cmake --build build-asan -j"$jobs"
# LeakSanitizer is part of ASan: a leak fails the run too
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -E 'models_vs_onnxruntime_(yolov5s|yolov8n)'

echo "== leak check: create -> run -> destroy loop under valgrind"
# OpenMP's pool threads stay alive on purpose ("possibly lost" thread stacks): not counted
# tests/valgrind.supp: a glibc loader false positive (see there)
valgrind --quiet --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
  --suppressions=tests/valgrind.supp \
  build/tests/test_leak build/tests/fixtures/conv_block.onnx 20
echo "valgrind: no leak"
