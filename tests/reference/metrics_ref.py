#!/usr/bin/env python3
"""Reference anomaly-detection metrics for tests/metrics.rs.

Reads JSON from stdin: {"width": W, "height": H, "maps": [[...], ...], "masks": [[...], ...]}
(one flat row-major map and 0/1 mask per image). Writes JSON to stdout:
- pixel_auroc: scikit-learn's roc_auc_score over every pixel (null when one class is missing);
- image_auroc: roc_auc_score of the per-image maximum against "mask has a defect pixel";
- aupro: the MVTec AD definition, as in the MVTec AD evaluation code (pro_curve_util.py,
  generic_util.py): 8-connected regions per image (scipy.ndimage.label), per-region overlap
  against the global false-positive rate, integrated up to FPR 0.3 and divided by 0.3.
"""
import json
import sys
from bisect import bisect

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import roc_auc_score


def compute_pro(anomaly_maps, ground_truth_maps):
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = anomaly_maps.shape
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for i, gt in enumerate(ground_truth_maps):
        labeled, n = label(gt, structure)
        num_gt_regions += n
        ok = labeled == 0
        num_ok_pixels += np.sum(ok)
        fp_changes[i, ok] = 1
        for k in range(n):
            region = labeled == (k + 1)
            pro_changes[i, region] = 1.0 / np.sum(region)
    scores = anomaly_maps.ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    scores_sorted = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]).astype(np.float64) / num_ok_pixels
    pros = np.cumsum(pro_changes.ravel()[order]) / num_gt_regions
    keep = np.append(np.diff(scores_sorted) != 0, np.True_)
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def trapezoid(x, y, x_max):
    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def main():
    case = json.load(sys.stdin)
    w, h = case["width"], case["height"]
    maps = np.array(case["maps"], dtype=np.float64).reshape(-1, h, w)
    masks = np.array(case["masks"], dtype=np.uint8).reshape(-1, h, w)
    labels = masks.ravel()
    out = {"pixel_auroc": None, "image_auroc": None, "aupro": None}
    if 0 < labels.sum() < labels.size:
        out["pixel_auroc"] = float(roc_auc_score(labels, maps.ravel()))
    image_labels = masks.reshape(len(masks), -1).max(axis=1)
    if 0 < image_labels.sum() < len(image_labels):
        out["image_auroc"] = float(roc_auc_score(image_labels, maps.reshape(len(maps), -1).max(axis=1)))
    if labels.sum() > 0 and labels.sum() < labels.size:
        fprs, pros = compute_pro(maps, masks)
        out["aupro"] = trapezoid(fprs, pros, 0.3) / 0.3
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
