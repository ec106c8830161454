#!/usr/bin/env bash
# The main job, end to end on the CPU: sets everything up (scripts/setup.sh), builds a YOLOv5s
# test model (the reference model's architecture: 1x3x640x640 in, 1x25200x85 out; random
# weights, since no pretrained weights can be downloaded here), shows what zcinfer makes of it,
# runs it, checks the result against onnxruntime, times both side by side, then runs the
# shipped shapes detector on a sample picture and writes it with the detections drawn.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=.venv/bin/python
models=build/models
[ -f $models/yolov5s.onnx ] || $py tests/models/make_models.py $models --only yolov5s
echo
echo "== zcinfer info"
build/zcinfer info $models/yolov5s.onnx
echo
echo "== zcinfer run (same random input as onnxruntime), compared with onnxruntime"
$py tests/check_models.py --zcinfer build/zcinfer --models $models --name yolov5s
echo
echo "== zcinfer and onnxruntime side by side on this machine's $(nproc) cores"
$py bench/cpu_vs_ort.py --zcinfer build/zcinfer --model $models/yolov5s.onnx
echo
echo "== a detector that really detects: the shipped shapes model on a sample scene, on the CPU"
build/zcinfer detect models/shapes_detector.onnx tools/train_detector/sample.png -o build/sample_detections.png
echo "annotated picture: build/sample_detections.png"
