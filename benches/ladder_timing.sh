#!/usr/bin/env bash
# Issue 19, item 3: the ms per tile of the extractor ladder, on its own. The time of the
# daemon's work per tile (sampling to the model input, extractor, flows, scorer) depends on the
# network's shape, not on the values of its weights, so each rung is timed with flows trained
# for one epoch on 16 crops (a minute) instead of the ladder's full run: the same extractor ONNX
# as `benches/extractor_ladder.sh` builds (int8 calibrated on the same crops), the same
# 2-level head, then `inspect-train eval --limit 25` on the DeepCrack crop test split, every
# rung back to back. Keep the machine otherwise idle.
#
# Usage: benches/ladder_timing.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: EXTRACTORS (default: the 8 rungs of the ladder table), WORK (default
# data/ladder-timing), RESULTS (default docs/results/extractor-ladder/timing), TRAIN (default:
# cargo run of inspect-train), TIME (0: build and fit only, to time later on an idle machine).
# Writes RESULTS/NAME.json (the eval metrics) and RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=${WORK:-data/ladder-timing}
RESULTS=${RESULTS:-docs/results/extractor-ladder/timing}
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
EXTRACTORS=${EXTRACTORS:-"lite0-192-fp32 lite0-256-fp32 lite0-256-int8 lite0pre-256-fp32 \
lite1-192-fp32 lite1-256-fp32 lite2-192-fp32 lite2-256-fp32 lite2-256-int8"}
CROPS=data/demo-work/deepcrack-crops

[ -d "$CROPS" ] || $TRAIN prepare-crops --images "$DATA/deepcrack/images" \
    --masks "$DATA/deepcrack/masks" --out "$CROPS"
few=$WORK/few-crops
if [ ! -d "$few" ]; then
    mkdir -p "$few"
    ls "$CROPS/train/good" | head -16 | while read -r f; do cp "$CROPS/train/good/$f" "$few/"; done
fi
mkdir -p "$RESULTS"
for name in $EXTRACTORS; do
    run=$WORK/$name
    mkdir -p "$run"
    [ -f "$run/extractor.onnx" ] || TRAIN=$TRAIN benches/ladder_extractor.sh "$name" "$CROPS/train/good" \
        "$run/extractor.onnx"
    [ -f "$run/bundle/manifest.toml" ] || $TRAIN fit --config train-config/ladder.toml \
        --epochs 1 --extractor "$run/extractor.onnx" --extractor-name "efficientnet-$name" \
        --images "$few" --cache "$run/cache" --out "$run/bundle"
done
[ "${TIME:-1}" = 1 ] || exit 0
# Timed back to back, after every build and fit.
for name in $EXTRACTORS; do
    $TRAIN eval --bundle "$WORK/$name/bundle" --data "$CROPS" --limit 25 \
        --out "$WORK/$name/timing" >/dev/null
    cp "$WORK/$name/timing/metrics.json" "$RESULTS/$name.json"
done
python3 - "$RESULTS" $EXTRACTORS > "$RESULTS.md" <<'EOF'
import json, sys
root, names = sys.argv[1], sys.argv[2:]
print("| extractor | ms per tile |\n|---|---|")
for name in names:
    m = json.load(open(f"{root}/{name}.json"))
    print(f"| {name} | {1000 * m['seconds_per_image']:.1f} |")
EOF
cat "$RESULTS.md"
