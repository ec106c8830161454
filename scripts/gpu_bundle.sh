#!/usr/bin/env bash
# gpu_bundle.sh [BUILD]: packs what scripts/gpu_tests.sh runs on the GPU machine from a CUDA build
# made here (default build-cuda; see gpu_tests.sh for its cmake line) into build-gpu/ and
# gpu-carry/build-gpu.tgz (the statically linked test programs are ~10 MB each, mostly device
# code: compressed, the bundle stays under the device tool's 64 MB carry limit). On the GPU machine:
#   tar xzf gpu-carry/build-gpu.tgz && bash scripts/gpu_tests.sh --build build-gpu
set -eu
B=${1:-build-cuda}
rm -rf build-gpu
mkdir -p build-gpu/tests/gpu gpu-carry
cp "$B/zcinfer" build-gpu/
for t in test_gpu_api test_gpu_models test_gpu_conv gpu_profile; do cp "$B/tests/gpu/$t" build-gpu/tests/gpu/; done
for t in test_vision_gpu test_detect_accuracy test_engine test_compat test_lazy_libs; do
    [ -x "$B/tests/$t" ] && cp "$B/tests/$t" build-gpu/tests/
done
tar czf gpu-carry/build-gpu.tgz build-gpu
ls -la gpu-carry/build-gpu.tgz
