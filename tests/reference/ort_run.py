#!/usr/bin/env python3
"""Run an ONNX model in onnxruntime (the reference runtime) on one raw float32 input.

usage: ort_run.py MODEL INPUT_RAW DIMS OUT_DIR
  INPUT_RAW  little-endian float32 values, row-major
  DIMS       comma-separated input shape, e.g. 1,3,256,256
Writes OUT_DIR/<output name>.raw (float32) and OUT_DIR/outputs.json (names and shapes, in order).
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main():
    model, raw, dims, out_dir = sys.argv[1:5]
    shape = [int(d) for d in dims.split(",")]
    x = np.fromfile(raw, dtype="<f4").reshape(shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: x})
    os.makedirs(out_dir, exist_ok=True)
    listing = []
    for meta, value in zip(session.get_outputs(), outputs):
        value.astype("<f4").tofile(os.path.join(out_dir, meta.name + ".raw"))
        listing.append({"name": meta.name, "shape": list(value.shape)})
    with open(os.path.join(out_dir, "outputs.json"), "w") as f:
        json.dump(listing, f)


if __name__ == "__main__":
    main()
