"""Writes the ONNX backend node tests in their usual layout (DIR/test_NAME/model.onnx and
test_data_set_N/input_K.pb, output_K.pb) from the test-case generators in the onnx package.
Wheels of onnx 1.23 ship those generators rather than the generated files.

usage: gen_node_tests.py OUTDIR
"""
import os
import shutil
import sys
import warnings

from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node


def write_tensor(path, value, name):
    tensor = value if isinstance(value, TensorProto) else numpy_helper.from_array(value, name)
    with open(path, "wb") as f:
        f.write(tensor.SerializeToString())


def main():
    warnings.simplefilter("ignore", RuntimeWarning)  # the generators overflow on purpose (Cast cases)
    out = sys.argv[1]
    stamp = os.path.join(out, ".complete")
    if os.path.exists(stamp):
        return
    os.makedirs(out, exist_ok=True)
    count = 0
    for case in node.collect_testcases(None):
        case_dir = os.path.join(out, case.name)
        shutil.rmtree(case_dir, ignore_errors=True)
        os.makedirs(case_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for k, (inputs, outputs) in enumerate(case.data_sets):
            data_dir = os.path.join(case_dir, f"test_data_set_{k}")
            os.makedirs(data_dir)
            for kind, values, decls in (("input", inputs, case.model.graph.input),
                                        ("output", outputs, case.model.graph.output)):
                for j, value in enumerate(values):
                    # sequences, maps and optionals have no tensor file; the runner skips such cases
                    if j < len(decls) and decls[j].type.HasField("tensor_type"):
                        write_tensor(os.path.join(data_dir, f"{kind}_{j}.pb"), value, decls[j].name)
        count += 1
    open(stamp, "w").close()
    print(f"wrote {count} ONNX node test cases into {out}")


if __name__ == "__main__":
    main()
