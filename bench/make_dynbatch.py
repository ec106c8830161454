"""make_dynbatch.py IN.onnx OUT.onnx: the YOLOv5 test model with a symbolic batch (for batch > 1
benchmarks): the input's and output's first dimension named "batch", and the head's final Reshape
targets [1, -1, 85] made [0, -1, 85] (0 copies the batch)."""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

m = onnx.load(sys.argv[1])
for vi in list(m.graph.input) + list(m.graph.output):
    vi.type.tensor_type.shape.dim[0].dim_param = "batch"
for n in m.graph.node:
    if n.op_type == "Constant":
        v = numpy_helper.to_array(n.attribute[0].t)
        if v.dtype == np.int64 and v.shape == (3,) and v[0] == 1 and v[1] == -1:
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array([0, -1, v[2]], np.int64)))
onnx.save(m, sys.argv[2])
