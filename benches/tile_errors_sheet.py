#!/usr/bin/env python3
"""What fools a bundle and what it misses, as one picture.

Reads the tile_scores.csv that `inspect-train score-candidates` writes (every test tile, highest
score first under the bundle's own post-processing) and draws two rows of the highest-scored
defect-free tiles (the false alarms at any low rate) and two rows of the lowest-scored defect
tiles whose defect covers at least MIN_SHARE of the tile (the clear misses), each labelled
with its image and score.

Usage: benches/tile_errors_sheet.py TILE_SCORES_CSV OUT_PNG [MIN_SHARE=0.05]
Needs opencv-python-headless and numpy (tests/reference/requirements.txt).
"""
import csv
import os
import sys

import cv2
import numpy as np

SIDE = 192
PER_ROW = 6


def tile(row, score_column):
    image = cv2.imread(row["image"])
    if image is None:
        sys.exit(f"{row['image']}: cannot read the image named in the CSV")
    x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
    crop = cv2.resize(image[y : y + h, x : x + w], (SIDE, SIDE))
    label = f"{os.path.basename(row['image'])[:18]} {float(row[score_column]):.3f}"
    cv2.rectangle(crop, (0, 0), (SIDE, 16), (0, 0, 0), -1)
    cv2.putText(crop, label, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return crop


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    path, out = sys.argv[1], sys.argv[2]
    min_share = float(sys.argv[3]) if len(sys.argv) == 4 else 0.05
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        score_column = reader.fieldnames[6]
        rows = list(reader)
    alarms = [r for r in rows if float(r["defect_share"]) == 0.0][: 2 * PER_ROW]
    misses = [r for r in rows if float(r["defect_share"]) >= min_share][-2 * PER_ROW :]
    if len(alarms) < 2 * PER_ROW or len(misses) < 2 * PER_ROW:
        sys.exit(f"{path}: fewer than {2 * PER_ROW} defect-free or defect tiles")
    grid = [
        np.hstack([tile(r, score_column) for r in part[i : i + PER_ROW]])
        for part in (alarms, misses)
        for i in (0, PER_ROW)
    ]
    cv2.imwrite(out, np.vstack(grid))
    print(f"{out}: top rows the highest-scored defect-free tiles, bottom rows the "
          f"lowest-scored tiles with at least {min_share:.0%} defect ({score_column})")


if __name__ == "__main__":
    main()
