#!/usr/bin/env bash
# Issue 19, item 2: a threshold calibrated out of fold on DeepCrack. The 150 training images are
# split into FOLDS contiguous blocks; per block, flows are trained on the other blocks'
# crack-free crops and the block is kept whole (crack-free and cracked parts, masks) as held-out
# frames (`prepare-crops --fold K/N`). `score-candidates --fold BUNDLE=FRAMES` scores each block
# with its own fold's bundle, pools the crack-free tiles (each tile against its own frame, as the
# daemon decides it), calibrates every candidate's threshold on the pool and reads what it does
# on the test split with the FINAL bundle (trained on all training images): the false-alarm rate
# measured beside the target, with its interval. Calibration never reads a test image.
#
# Two ways of cutting, as everywhere in docs/RESULTS.md: the paper's 3x3 crops (default), or with
# TILE_SIZE (and OVERLAP) whole frames cut as the daemon cuts them (the held-out blocks are then
# written whole, `--grid 1`, and the test split is the 150 test frames whole).
#
# With SPLIT=interleaved the images are dealt in turn instead of in name order (`prepare-crops
# --split interleaved`, the folds dealt in turn too), so every photo series lies on both sides;
# the split is written under WORK and the FINAL bundle is trained there (default
# WORK/bundle-final) when missing.
#
# Usage: benches/crossfit_calibration.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: FOLDS (default 5), SPLIT (blocks or interleaved, default blocks), FINAL (the
# bundle read on the test split, default data/lite2-work/seed-3/bundle-none), EXTRACTOR and
# EXTRACTOR_NAME (the FINAL bundle's extractor), CACHE (its feature cache), WORK (default
# data/crossfit-work), TILE_SIZE, OVERLAP, TRAIN (default: cargo run of inspect-train), SCORE
# (0: train the bundles and write the folds, score nothing; demo/regenerate.sh uses that).
# Resumable: each fold's training is checkpointed every epoch and a finished fold is kept. About
# 7 minutes per fold on 2 idle cores (Lite0 or Lite2 at 20 epochs), then 6-10 minutes of scoring.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
FOLDS=${FOLDS:-5}
SPLIT=${SPLIT:-blocks}
WORK=${WORK:-data/crossfit-work}
if [ "$SPLIT" = blocks ]; then
    FINAL=${FINAL:-data/lite2-work/seed-3/bundle-none}
    CROPS=data/demo-work/deepcrack-crops
    FRAMES=data/demo-work/deepcrack-frames
else
    FINAL=${FINAL:-$WORK/bundle-final}
    CROPS=$WORK/crops
    FRAMES=$WORK/frames
fi
EXTRACTOR=${EXTRACTOR:-data/lite2-work/extractor.onnx}
EXTRACTOR_NAME=${EXTRACTOR_NAME:-efficientnet-lite2-2-levels-int8}
CACHE=${CACHE:-data/lite2-work/cache}
TILE_SIZE=${TILE_SIZE:-}
OVERLAP=${OVERLAP:-0}
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
crops() {
    $TRAIN prepare-crops --images "$DATA/deepcrack/images" --masks "$DATA/deepcrack/masks" \
        --split "$SPLIT" "$@"
}

mkdir -p "$WORK"
[ -d "$CROPS" ] || crops --out "$CROPS"
test_split=$CROPS
cut=()
if [ -n "$TILE_SIZE" ]; then
    [ -d "$FRAMES" ] || crops --grid 1 --out "$FRAMES"
    test_split=$FRAMES
    cut=(--tile-size "$TILE_SIZE" --overlap "$OVERLAP")
fi
# The FINAL bundle's setup (benches/objective_seeds.sh, seed 3, L_none).
sed -e "s#\.\./\.\./shared/data#$DATA#" -e "s/^seed = 1$/seed = 3/" \
    train-config/objectives-deepcrack.toml > "$WORK/config.toml"
fit() {
    [ -f "$2/manifest.toml" ] || $TRAIN fit --config "$WORK/config.toml" \
        --extractor "$EXTRACTOR" --extractor-name "$EXTRACTOR_NAME" \
        --images "$1" --cache "$CACHE" --loss none --resume --out "$2"
}
fit "$CROPS/train/good" "$FINAL"
folds=()
for k in $(seq 1 "$FOLDS"); do
    fold="$WORK/fold-$k-of-$FOLDS"
    [ -d "$fold/test" ] || crops --fold "$k/$FOLDS" --out "$fold"
    held_out=$fold
    if [ -n "$TILE_SIZE" ]; then
        held_out="$WORK/frames-$k-of-$FOLDS"
        [ -d "$held_out/test" ] || crops --grid 1 --fold "$k/$FOLDS" --out "$held_out"
    fi
    fit "$fold/train/good" "$fold/bundle"
    folds+=(--fold "$fold/bundle=$held_out")
done
[ "${SCORE:-1}" = 0 ] && exit 0
$TRAIN score-candidates --bundle "$FINAL" --data "$test_split" "${cut[@]}" "${folds[@]}" \
    --out "$WORK/candidates${TILE_SIZE:+-tiles-$TILE_SIZE}"
