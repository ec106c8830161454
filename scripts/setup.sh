#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for zcinfer and builds it into build/:
#   Debian packages (compiler, CMake, oneDNN, stb, valgrind), a Python virtual environment
#   (.venv) with the test tools, and a Release build. Safe to run again: it skips what is done.
# Environment: ZCI_BUILD_DIR (default build), ZCI_CMAKE_ARGS (extra CMake arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages="build-essential cmake python3 python3-venv libdnnl-dev libstb-dev valgrind"
missing=""
for p in $packages; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
# the Rust crate's tests need cargo; Debian's package when no toolchain is installed already
command -v cargo >/dev/null 2>&1 || missing="$missing cargo"
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import numpy, onnx, onnxruntime' 2>/dev/null; then
  echo "setup: creating .venv with numpy, onnx and onnxruntime"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
fi

build=${ZCI_BUILD_DIR:-build}
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DZCI_PYTHON="$PWD/.venv/bin/python" ${ZCI_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
echo "setup: built zcinfer into $build/ (CLI: $build/zcinfer)"
