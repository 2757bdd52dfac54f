#!/usr/bin/env bash
# Issue 19, item 2: a threshold calibrated out of fold on the DeepCrack crops. The 150 training
# images are split into FOLDS contiguous blocks; per block, flows are trained on the others'
# crack-free crops and the block is kept whole (crack-free and cracked crops, masks) as held-out
# frames (`prepare-crops --fold K/N`). `score-candidates --fold BUNDLE=FRAMES` scores each block
# with its own fold's bundle, pools the crack-free tiles (each tile against its own frame, as the
# daemon decides it), calibrates every candidate's threshold on the pool and reads what it does
# on the test split with the FINAL bundle (trained on all training images): the false-alarm rate
# measured beside the target, with its interval. The test split is never read before that.
#
# Usage: benches/crossfit_calibration.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: FOLDS (default 5), FINAL (the bundle read on the test split, default
# data/lite2-work/seed-3/bundle-none), EXTRACTOR and EXTRACTOR_NAME (the FINAL bundle's
# extractor), CACHE (feature cache), WORK (default data/crossfit-work), TRAIN (default: cargo
# run of inspect-train). Resumable: each fold's training is checkpointed every epoch and a
# finished fold is kept. About 7 minutes per fold with Lite2-256 on 2 idle cores, then 6 minutes
# of scoring.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
FOLDS=${FOLDS:-5}
WORK=${WORK:-data/crossfit-work}
FINAL=${FINAL:-data/lite2-work/seed-3/bundle-none}
EXTRACTOR=${EXTRACTOR:-data/lite2-work/extractor.onnx}
EXTRACTOR_NAME=${EXTRACTOR_NAME:-efficientnet-lite2-2-levels-int8}
CACHE=${CACHE:-data/lite2-work/cache}
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
CROPS=data/demo-work/deepcrack-crops

mkdir -p "$WORK"
[ -d "$CROPS" ] || $TRAIN prepare-crops --images "$DATA/deepcrack/images" \
    --masks "$DATA/deepcrack/masks" --out "$CROPS"
# The FINAL bundle's setup (benches/objective_seeds.sh, seed 3, L_none).
sed -e "s#\.\./\.\./shared/data#$DATA#" -e "s/^seed = 1$/seed = 3/" \
    train-config/objectives-deepcrack.toml > "$WORK/config.toml"
folds=()
for k in $(seq 1 "$FOLDS"); do
    fold="$WORK/fold-$k-of-$FOLDS"
    [ -d "$fold/test" ] || $TRAIN prepare-crops --images "$DATA/deepcrack/images" \
        --masks "$DATA/deepcrack/masks" --fold "$k/$FOLDS" --out "$fold"
    [ -f "$fold/bundle/manifest.toml" ] || $TRAIN fit --config "$WORK/config.toml" \
        --extractor "$EXTRACTOR" --extractor-name "$EXTRACTOR_NAME" \
        --images "$fold/train/good" --cache "$CACHE" --loss none --resume --out "$fold/bundle"
    folds+=(--fold "$fold/bundle=$fold")
done
$TRAIN score-candidates --bundle "$FINAL" --data "$CROPS" "${folds[@]}" --out "$WORK/candidates"
