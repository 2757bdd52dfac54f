#!/usr/bin/env python3
"""Does a threshold calibrated on some frames hold on others of the same kind?

Reads the `tile_scores.csv` that `inspect-train score-candidates` writes (every test tile's
score under each candidate, its image and its defect share), splits the frames (the crops of one
image are one frame) at random into FOLDS folds, sets the threshold for RATE on the defect-free
tiles of all folds but one and counts what it lets through and detects on the last one; repeated
over REPEATS random partitions. Two estimators: the trainer's (`decisions::calibrated_threshold`:
the empirical quantile with 10 or more scores above it, else a generalized Pareto tail fitted by
probability-weighted moments to the top fifth, ported here line for line) and the conformal
order statistic (the ceil((n + 1)(1 - rate))-th smallest score, whose expected false-alarm rate
on exchangeable tiles is at most the rate).

Usage: benches/split_calibration.py TILE_SCORES.csv "CANDIDATE LABEL" [...]
Environment: FOLDS (5), REPEATS (200), RATE (0.01).
"""
import csv
import math
import os
import re
import sys

import numpy as np


def trainer_threshold(scores, rate):
    s = np.sort(np.asarray(scores, float))
    n = len(s)
    if rate * n >= 10:
        return s[n - 1 - int(math.floor(rate * n))]
    tail = min(max(n // 5, 10), n - 1)
    u = s[n - tail - 1]
    y = s[n - tail:] - u
    m = len(y)
    a0 = y.mean()
    a1 = np.sum(y * (1 - (np.arange(m) + 0.65) / m)) / m
    shape = a0 / (a0 - 2 * a1) - 2
    scale = 2 * a0 * a1 / (a0 - 2 * a1)
    q = min(rate * n / tail, 1.0)
    t = -scale * math.log(q) if abs(shape) < 1e-9 else scale / shape * (1 - q**shape)
    return u + t


def conformal_threshold(scores, rate):
    s = np.sort(np.asarray(scores, float))
    rank = math.ceil((len(s) + 1) * (1 - rate))
    return s[rank - 1] if rank <= len(s) else math.inf


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    folds = int(os.environ.get("FOLDS", 5))
    repeats = int(os.environ.get("REPEATS", 200))
    rate = float(os.environ.get("RATE", 0.01))
    rows = list(csv.DictReader(open(sys.argv[1])))
    frame_of = lambda path: re.sub(r"_r\d+c\d+$", "", os.path.splitext(os.path.basename(path))[0])
    frames = np.array([frame_of(r["image"]) for r in rows])
    defect = np.array([float(r["defect_share"]) > 0 for r in rows])
    names = np.unique(frames)
    print(f"{len(names)} frames, {np.sum(~defect)} defect-free and {np.sum(defect)} defect tiles; "
          f"{folds} folds, {repeats} partitions, target {100 * rate:g}%")
    print("| candidate | estimator | false alarms on the left-out folds | detected |")
    print("|---|---|---|---|")
    for label in sys.argv[2:]:
        if label not in rows[0]:
            sys.exit(f"{sys.argv[1]}: no column {label!r}")
        scores = np.array([float(r[label]) for r in rows])
        for name, estimator in [("trainer", trainer_threshold), ("conformal", conformal_threshold)]:
            rng = np.random.default_rng(0)
            alarms = good = found = cracked = 0
            for _ in range(repeats):
                fold_of = {f: i % folds for i, f in enumerate(rng.permutation(names))}
                fold = np.array([fold_of[f] for f in frames])
                for k in range(folds):
                    threshold = estimator(scores[~defect & (fold != k)], rate)
                    out = fold == k
                    alarms += np.sum(scores[~defect & out] > threshold)
                    good += np.sum(~defect & out)
                    found += np.sum(scores[defect & out] > threshold)
                    cracked += np.sum(defect & out)
            print(f"| {label} | {name} | {100 * alarms / good:.2f}% | {found / cracked:.3f} |")


if __name__ == "__main__":
    main()
