#!/usr/bin/env python3
"""Reference post-processing of an anomaly map for crates/inspect-train/tests/metrics.rs.

Reads JSON from stdin: {"width": W, "height": H, "map": [...] (flat, row-major), "sigma": s,
"top_fraction": f}. Writes JSON to stdout: "smoothed", scipy.ndimage.gaussian_filter of the map
(float32 as the scorer keeps it, mode "reflect", truncate 4, CFlow-AD's and anomalib's
smoothing), and "top_mean", the mean of its ceil(f * W * H) highest pixels (the maximum for
f = 0).
"""
import json
import math
import sys

import numpy as np
from scipy.ndimage import gaussian_filter

case = json.load(sys.stdin)
width, height = case["width"], case["height"]
raw = np.asarray(case["map"], dtype=np.float32).reshape(height, width)
smoothed = gaussian_filter(raw, sigma=case["sigma"], mode="reflect", truncate=4.0)
count = max(1, math.ceil(case["top_fraction"] * width * height))
top = np.sort(smoothed.ravel().astype(np.float64))[-count:]
json.dump({"smoothed": smoothed.ravel().tolist(), "top_mean": float(top.mean())}, sys.stdout)
