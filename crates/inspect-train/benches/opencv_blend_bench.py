#!/usr/bin/env python3
"""Median time of OpenCV's seamlessClone(NORMAL_CLONE) on given images, in milliseconds.

usage: opencv_blend_bench.py TARGET SOURCE MASK X Y RUNS
"""
import sys
import time

import cv2
import numpy as np


def main():
    target, source, mask, x, y, runs = sys.argv[1:7]
    cv2.setNumThreads(1)
    dst = cv2.imread(target, cv2.IMREAD_COLOR)
    src = cv2.imread(source, cv2.IMREAD_COLOR)
    m = cv2.imread(mask, cv2.IMREAD_GRAYSCALE)
    times = []
    for _ in range(int(runs)):
        start = time.perf_counter()
        cv2.seamlessClone(src, dst, m, (int(x), int(y)), cv2.NORMAL_CLONE)
        times.append((time.perf_counter() - start) * 1000.0)
    print(f"{np.median(times):.3f}")


if __name__ == "__main__":
    main()
