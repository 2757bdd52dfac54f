#!/usr/bin/env python3
"""Reference Poisson blending: OpenCV's seamlessClone with NORMAL_CLONE.

usage: opencv_blend.py TARGET SOURCE MASK X Y OUT
"""
import sys

import cv2


def main():
    target, source, mask, x, y, out = sys.argv[1:7]
    dst = cv2.imread(target, cv2.IMREAD_COLOR)
    src = cv2.imread(source, cv2.IMREAD_COLOR)
    m = cv2.imread(mask, cv2.IMREAD_GRAYSCALE)
    blended = cv2.seamlessClone(src, dst, m, (int(x), int(y)), cv2.NORMAL_CLONE)
    cv2.imwrite(out, blended)


if __name__ == "__main__":
    main()
