#!/usr/bin/env python3
"""Issue 22: a 1000-frame "site" for timing `inspect-train enroll`, as inspectd's [record] would
save it: 1280x720 PNG frames, each a mosaic of defect-free magnetic-tile surfaces (the only real
defect-free surface data at hand), with a simulated odometer's chainage in positions.csv.
With --defects, the inspection pass instead: the held-out defect-free surfaces, one cell of
every other frame a real defect (crack, break, blowhole) of the test split, listed in defects.csv
with the box of its ground-truth mask in the frame (what benches/field_e2e_check.py scores the
alerts against).

Usage: benches/enroll_site.py DATA OUT [FRAMES] [--defects]   (DATA: the shared data folder)
"""
import glob
import os
import sys

import cv2
import numpy as np

args = [a for a in sys.argv[1:] if a != "--defects"]
defects = "--defects" in sys.argv
data, out = args[0], args[1]
count = int(args[2]) if len(args) > 2 else 1000
split = "test" if defects else "train"
good = sorted(glob.glob(os.path.join(data, "magnetic-tile", split, "good", "*.jpg")))
bad = sorted(
    f
    for kind in ["crack", "break", "blowhole"]
    for f in glob.glob(os.path.join(data, "magnetic-tile", "test", kind, "*.jpg"))
)
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(22)
rows = ["file,frame,time,source,chainage_m,lat,lon,age_ms,stale"]
defect_rows = ["file,frame,x,y,w,h,source"]


def mask_box(source, cell_x, cell_y):
    """The box of the defect's mask in the frame, its image resized into the cell."""
    kind, name = source.split(os.sep)[-2], os.path.basename(source)[:-4]
    mask = cv2.imread(os.path.join(data, "magnetic-tile", "ground_truth", kind, name + "_mask.png"),
                      cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(cv2.resize(mask, (320, 360), interpolation=cv2.INTER_NEAREST))
    if len(xs) == 0:
        return cell_x, cell_y, 320, 360
    return (cell_x + int(xs.min()), cell_y + int(ys.min()), int(xs.max() - xs.min()) + 1,
            int(ys.max() - ys.min()) + 1)


for i in range(count):
    frame = np.zeros((720, 1280, 3), np.uint8)
    # 2 x 4 cells of 320 x 360, each a resized defect-free tile surface.
    for cy in range(2):
        for cx in range(4):
            source = good[rng.integers(len(good))]
            if defects and i % 2 == 1 and (cy, cx) == (i // 2 % 2, i // 4 % 4):
                source = bad[i // 2 % len(bad)]
                x, y, w, h = mask_box(source, cx * 320, cy * 360)
                defect_rows.append(f"frame-{i:08d}.png,{i},{x},{y},{w},{h},"
                                   f"{os.path.relpath(source, data)}")
            img = cv2.imread(source, cv2.IMREAD_COLOR)
            frame[cy * 360:(cy + 1) * 360, cx * 320:(cx + 1) * 320] = cv2.resize(img, (320, 360))
    name = f"frame-{i:08d}.png"
    cv2.imwrite(os.path.join(out, name), frame)
    rows.append(f"{name},{i},2026-12-04T10:{i // 600 % 60:02d}:{i // 10 % 60:02d}.000Z,odometer,{0.5 * i:.3f},,,0,false")
with open(os.path.join(out, "positions.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
if defects:
    with open(os.path.join(out, "defects.csv"), "w") as f:
        f.write("\n".join(defect_rows) + "\n")
print(f"{count} frames in {out}")
