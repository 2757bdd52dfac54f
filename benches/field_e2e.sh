#!/usr/bin/env bash
# Issue 22 on real surfaces: the field workflow (docs/FIELD.md) on magnetic-tile images, timed.
#  1. the site's camera frames (benches/enroll_site.py: 1280x720 mosaics of defect-free
#     surfaces, odometer chainage 0.5 m apart), recorded by inspectd's [record];
#  2. inspect-train enroll on the recording (the time a crew waits on a laptop);
#  3. an inspection pass (held-out surfaces, real cracks, breaks and blowholes in every other
#     frame) through inspectd with the site's bundle, received by inspect-monitor;
#  4. inspect-monitor report, and a screenshot of it by headless Chromium;
#  5. benches/field_e2e_check.py: every alert the monitor logged at its frame's chainage, in the
#     report and its CSV (fails otherwise), and the alerts scored against the defects' masks.
#
# Usage: benches/field_e2e.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: WORK (default data/field-e2e), FRAMES (default 1000), BIN (default: the debug
# binaries of target/). Resumable: steps whose output exists are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=${WORK:-data/field-e2e}
FRAMES=${FRAMES:-1000}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug}
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
BUNDLE=demo/bundle
# The Pi 4 rung's extractor (Lite0-256 int8), the one docs/FIELD.md enrolls with.
EXTRACTOR=demo/lite0-bundle/extractor.onnx

config() { # source folder, extra tables
    cat <<TOML
device_id = "site-a-robot"
[model]
bundle = "$2"
[source]
kind = "folder"
path = "$1"
[tiling]
tile_size = 256
overlap = 32
[alerts]
output = "stdout"
status_interval_s = 10
$3
TOML
}

[ -d "$WORK/camera" ] || python3 benches/enroll_site.py "$DATA" "$WORK/camera" "$FRAMES"
if [ ! -f "$WORK/recording/positions.csv" ]; then
    config "$WORK/camera" "$(realpath $BUNDLE)" "[record]
dir = \"$WORK/recording\"
every = 1" >"$WORK/record.toml"
    /usr/bin/time -f "record: %e s" "$BIN/inspectd" --config "$WORK/record.toml" >/dev/null
fi
if [ ! -f "$WORK/site-bundle/enrollment.json" ]; then
    /usr/bin/time -f "enroll: %e s, %M KiB" "$BIN/inspect-train" enroll \
        --recording "$WORK/recording" --config train-config/enroll.toml \
        --extractor $EXTRACTOR --extractor-name efficientnet-lite0-2-levels-int8 \
        --tile-size 256 --overlap 32 --out "$WORK/site-bundle"
fi
[ -d "$WORK/inspect" ] || python3 benches/enroll_site.py "$DATA" "$WORK/inspect" 40 --defects
rm -rf "$WORK/logs" "$WORK/evidence"
config "$WORK/inspect" "$WORK/site-bundle" "[evidence]
dir = \"$WORK/evidence\"" >"$WORK/inspect.toml"
"$BIN/inspectd" --config "$WORK/inspect.toml" 2>"$WORK/inspect.log" \
    | "$BIN/inspect-monitor" --file - --log-dir "$WORK/logs" --lines >"$WORK/monitor.log"
# The daemon's evidence store and the monitor's log name the files alike.
mkdir -p "$WORK/logs/evidence" && cp "$WORK"/evidence/* "$WORK/logs/evidence/" 2>/dev/null || true
"$BIN/inspect-monitor" report --log-dir "$WORK/logs" --out "$WORK/report.html" --section-m 5
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1300 \
    --screenshot="$WORK/report.png" "file://$WORK/report.html" 2>/dev/null
cat "$WORK/site-bundle/enrollment.json"
tail -1 "$WORK/monitor.log"
echo "report: $WORK/report.html, screenshot $WORK/report.png"
python3 benches/field_e2e_check.py "$WORK"
