#!/usr/bin/env python3
"""Median latency of one ONNX model in onnxruntime (the reference runtime), all optimizations on.

usage: ort_bench.py MODEL THREADS RUNS INPUT_RAW DIMS   -> prints the median in milliseconds
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, threads, runs, raw, dims = sys.argv[1:6]
    shape = [int(d) for d in dims.split(",")]
    x = np.fromfile(raw, dtype="<f4").reshape(shape)
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(int(runs)):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    print(f"{np.median(times):.3f}")


if __name__ == "__main__":
    main()
