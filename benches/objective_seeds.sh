#!/usr/bin/env bash
# Issue 19, item 4: does L_boundary or L_fusion beat L_none by more than the seed spread?
# One `inspect-train sweep` per seed on the DeepCrack crops (train-config/objectives-deepcrack.toml:
# the demo's setup, 20 epochs, CFlow-AD's schedule), then the seeds table (mean and standard
# deviation per objective) in WORK/seeds.md and .json, and its chart in WORK/seeds.png.
#
# Usage: benches/objective_seeds.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: SEEDS (default "1 2 3"), LOSSES (default none,boundary,fusion,cl,likelihood),
# WORK (default data/seeds-work), RESULTS, TRAIN (default: cargo run of inspect-train).
# Resumable: every epoch is checkpointed; run the same command again to go on. About 15 minutes
# per objective and seed on 2 cores otherwise idle (20 epochs of 21-26 s, then 5 minutes of
# evaluation); three times that beside test builds. Each finished seed's sweep.json is copied
# to RESULTS/seed-N/ (default docs/results/objective-seeds), to be committed: work folders do
# not outlive their machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=${WORK:-data/seeds-work}
RESULTS=${RESULTS:-docs/results/objective-seeds}
SEEDS=${SEEDS:-"1 2 3"}
LOSSES=${LOSSES:-none,boundary,fusion,cl,likelihood}
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
CROPS=data/demo-work/deepcrack-crops

mkdir -p "$WORK"
# The demo's crops (the paper's 3x3 protocol): the same split the demo bundle trained on.
[ -d "$CROPS" ] || $TRAIN prepare-crops --images "$DATA/deepcrack/images" \
    --masks "$DATA/deepcrack/masks" --out "$CROPS"
sweeps=()
for seed in $SEEDS; do
    # The config resolves its paths against its own folder: point it at DATA through a copy.
    sed -e "s#\.\./\.\./shared/data#$DATA#" -e "s/^seed = 1$/seed = $seed/" \
        train-config/objectives-deepcrack.toml > "$WORK/config-seed-$seed.toml"
    $TRAIN sweep --config "$WORK/config-seed-$seed.toml" \
        --extractor demo/lite0-bundle/extractor.onnx \
        --extractor-name efficientnet-lite0-2-levels-int8 \
        --images "$CROPS/train/good" --cache "$WORK/feature-cache" \
        --data "$CROPS" --losses "$LOSSES" --name "seed $seed" --out "$WORK/seed-$seed"
    sweeps+=("$WORK/seed-$seed")
    mkdir -p "$RESULTS/seed-$seed"
    cp "$WORK/seed-$seed/sweep.json" "$RESULTS/seed-$seed/"
done
$TRAIN table --seeds --sweeps "$(IFS=,; echo "${sweeps[*]}")" --out "$WORK/seeds"
