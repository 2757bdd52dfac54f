#!/usr/bin/env python3
"""The demo's alerts on its frames, as one picture.

Reads the JSON Lines that `inspectd` prints on the demo (`cargo run -- --config
firmware-config/desk-replay.toml > ALERTS`) and draws each frame of demo/frames (in the order the
folder source reads them: by name) with its annotated cracks in red, the alerted tiles in thin
yellow and each alert's region (the part of the tile above the threshold) in green when it
touches a crack grown by 8 px (the check of tests/demo.rs), in magenta when it does not; the
frame's label says how many alerts it raised.

Usage: benches/demo_sheet.py ALERTS_JSONL OUT_JPG
Needs opencv-python-headless and numpy (tests/reference/requirements.txt).
"""
import json
import os
import sys

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PER_ROW = 3
SCALE = 0.5


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    alerts = []
    with open(sys.argv[1]) as lines:
        for number, line in enumerate(lines, 1):
            try:
                message = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{sys.argv[1]}:{number}: not a JSON line ({e})")
            if message.get("type") == "alert":
                alerts.append(message)
    frames_dir = os.path.join(ROOT, "demo", "frames")
    names = sorted(n for n in os.listdir(frames_dir) if n.endswith(".jpg"))
    panels = []
    for index, name in enumerate(names):
        frame = cv2.imread(os.path.join(frames_dir, name))
        stem = os.path.splitext(name)[0]
        mask = cv2.imread(os.path.join(ROOT, "demo", "masks", stem + ".png"), cv2.IMREAD_GRAYSCALE)
        if frame is None or mask is None:
            sys.exit(f"{name}: frame or mask unreadable under demo/")
        grown = cv2.dilate((mask >= 128).astype(np.uint8), np.ones((17, 17), np.uint8))
        frame[mask >= 128] = (0, 0, 255)
        mine = [a for a in alerts if a["frame"] == index]
        for a in mine:
            t = a["tile"]
            cv2.rectangle(frame, (t["x"], t["y"]), (t["x"] + t["w"] - 1, t["y"] + t["h"] - 1),
                          (0, 255, 255), 1)
        for a in mine:
            r = a["region"]
            x, y, w, h = r["x"], r["y"], r["w"], r["h"]
            on_crack = grown[y : y + h, x : x + w].any()
            colour = (0, 200, 0) if on_crack else (255, 0, 255)
            cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), colour, 3)
        panel = cv2.resize(frame, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_AREA)
        label = f"{stem}: {len(mine)} alert{'s' if len(mine) != 1 else ''}"
        cv2.rectangle(panel, (0, 0), (panel.shape[1], 18), (0, 0, 0), -1)
        cv2.putText(panel, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        panels.append(panel)
    if not panels:
        sys.exit("no frames under demo/frames")
    h, w = panels[0].shape[:2]
    blank = np.zeros((h, w, 3), np.uint8)
    rows = []
    for start in range(0, len(panels), PER_ROW):
        row = [cv2.resize(p, (w, h)) for p in panels[start : start + PER_ROW]]
        row += [blank] * (PER_ROW - len(row))
        rows.append(np.hstack(row))
    cv2.imwrite(sys.argv[2], np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"{sys.argv[2]}: {len(alerts)} alerts on {len(panels)} frames")


if __name__ == "__main__":
    main()
