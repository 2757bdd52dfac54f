#!/usr/bin/env python3
"""Issue 22 on real surfaces: checks what benches/field_e2e.sh produced, and scores it.

Checks (exit 1 with the reason if one fails):
- the monitor logged alerts, and each one carries the chainage the odometer gave its frame
  (the inspection pass's positions.csv);
- the report has a row for every logged alert, at that chainage and in its 5 m section, and the
  CSV a line for each; the page loads nothing from the network; the screenshot exists.
Scores (printed): alerts whose tile holds a real defect (the box of its ground-truth mask,
inspect/defects.csv), defect frames with an alert on the defect, alerts on defect-free frames.

Usage: benches/field_e2e_check.py WORK   (WORK: field_e2e.sh's work folder)
"""
import csv
import json
import math
import os
import sys

SECTION_M = 5.0


def fail(why):
    print(f"field e2e check FAILED: {why}")
    sys.exit(1)


def overlaps(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def main():
    work = sys.argv[1]
    with open(os.path.join(work, "inspect", "positions.csv")) as f:
        positions = list(csv.DictReader(f))
    defects = {}
    with open(os.path.join(work, "inspect", "defects.csv")) as f:
        for row in csv.DictReader(f):
            defects[int(row["frame"])] = tuple(int(row[k]) for k in "xywh")
    with open(os.path.join(work, "logs", "alerts.jsonl")) as f:
        alerts = [json.loads(line) for line in f if line.strip()]
    if not alerts:
        fail("the monitor logged no alert")

    # Every alert at its frame's chainage (the folder source replays the frames in order).
    for a in alerts:
        expected = float(positions[a["frame"] % len(positions)]["chainage_m"])
        pos = a.get("pos")
        if pos is None or pos.get("src") != "odometer":
            fail(f"alert {a['seq']} has no odometer position: {a}")
        if abs(pos["chainage_m"] - expected) > 5e-4:
            fail(f"alert {a['seq']} of frame {a['frame']} at {pos['chainage_m']} m, "
                 f"the odometer gave {expected} m")

    # The report: a row per alert with its chainage and section, a CSV line per alert.
    with open(os.path.join(work, "report.html")) as f:
        html = f.read()
    for loads in ['src="http', 'href="http', "url(http", "@import"]:
        if loads in html:
            fail(f"the report loads {loads}...: it must open offline")
    rows = {}
    for line in html.splitlines():
        marker = 'data-seq="'
        if marker in line:
            seq = line.split(marker, 1)[1].split('"', 1)[0]
            rows[seq] = line
    for a in alerts:
        metres = a["pos"]["chainage_m"]
        row = rows.get(str(a["seq"]))
        if row is None:
            fail(f"alert {a['seq']} is not in the report")
        if f"{metres:.2f} m" not in row:
            fail(f"alert {a['seq']}: the report's row does not say {metres:.2f} m")
        section = math.floor(metres / SECTION_M)
        if f'data-section="{section}"' not in row:
            fail(f"alert {a['seq']}: not in section {section}")
    with open(os.path.join(work, "report.csv")) as f:
        logged = {r["seq"] for r in csv.DictReader(f)}
    if logged != {str(a["seq"]) for a in alerts}:
        fail(f"report.csv holds {len(logged)} alerts, the monitor logged {len(alerts)}")
    shot = os.path.join(work, "report.png")
    if not os.path.isfile(shot) or os.path.getsize(shot) < 10_000:
        fail("no screenshot of the report")

    # Scores against the defects' boxes.
    def tile(a):
        t = a["tile"]
        return t["x"], t["y"], t["w"], t["h"]

    on_defect = [a for a in alerts if a["frame"] in defects and overlaps(tile(a), defects[a["frame"]])]
    found = {a["frame"] for a in on_defect}
    clean_frames = {a["frame"] for a in alerts if a["frame"] not in defects}
    print(f"{len(alerts)} alerts, every one at its frame's chainage and in the report "
          f"({len(rows)} rows, {len(logged)} CSV lines)")
    print(f"on a real defect: {len(on_defect)} of {len(alerts)} alerts; "
          f"defect frames found: {len(found)} of {len(defects)}; "
          f"defect-free frames with an alert: {len(clean_frames)} of {len(positions) - len(defects)}")


if __name__ == "__main__":
    main()
