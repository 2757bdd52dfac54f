#!/usr/bin/env bash
# Issue 19, item 3: the extractor ladder. EfficientNet-Lite0/1/2, input 192 and 256, float and
# int8, and Lite0 with CFlow-AD's pre-residual taps, each with 2 levels (strides 8 and 16, as the
# demo) and the same short recipe (train-config/ladder.toml), on the DeepCrack crops and
# magnetic-tile: pixel AUROC, AUPRO, tile TPR at 1% FPR and ms per tile, one table per dataset
# with the Pareto-optimal extractors marked (WORK/ladder.md, .json).
#
# Usage: benches/extractor_ladder.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: DATASETS (default "deepcrack-crops magnetic-tile"), EXTRACTORS (names
# VARIANT[pre]-SIZE-PRECISION, default: all 14), WORK (default data/ladder-work), TRAIN (default:
# cargo run of inspect-train). Resumable: finished runs are kept, training is checkpointed.
# The ms per tile come from a timing pass at the end (TIMING=0 skips it): keep the machine
# otherwise idle for it. Without it, `inspect-train ladder --root RESULTS` takes each rung's
# time from benches/ladder_timing.sh's pass (RESULTS/timing/NAME.json): the same networks.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=${WORK:-data/ladder-work}
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
DATASETS=${DATASETS:-"deepcrack-crops magnetic-tile"}
EXTRACTORS=${EXTRACTORS:-"lite0-256-fp32 lite0-256-int8 lite0pre-256-fp32 lite1-256-fp32 \
lite2-256-fp32 lite0-192-fp32 lite1-192-fp32 lite2-192-fp32 lite0pre-256-int8 lite1-256-int8 \
lite2-256-int8 lite0-192-int8 lite1-192-int8 lite2-192-int8"}
RESULTS=${RESULTS:-docs/results/extractor-ladder}
CROPS=data/demo-work/deepcrack-crops

# Work folders do not outlive their machine: each run's figures (metrics.json, under a
# kilobyte) are copied to RESULTS/DATASET/EXTRACTOR/ to be committed, where `inspect-train
# ladder --root RESULTS` makes the same table.
keep() { # run folder, eval or timing
    local to=$RESULTS/$(basename "$(dirname "$1")")/$(basename "$1")/$2
    mkdir -p "$to" && cp "$1/$2/metrics.json" "$to/"
}

# The demo's crops (the paper's 3x3 protocol).
[ -d "$CROPS" ] || $TRAIN prepare-crops --images "$DATA/deepcrack/images" \
    --masks "$DATA/deepcrack/masks" --out "$CROPS"
for dataset in $DATASETS; do
    case $dataset in
        deepcrack-crops) root=$CROPS ;;
        magnetic-tile) root=$DATA/magnetic-tile ;;
        *) echo "unknown dataset $dataset" >&2; exit 2 ;;
    esac
    for name in $EXTRACTORS; do
        run=$WORK/$dataset/$name
        [ -f "$run/eval/metrics.json" ] && continue
        mkdir -p "$run"
        [ -f "$run/extractor.onnx" ] || TRAIN=$TRAIN benches/ladder_extractor.sh "$name" \
            "$root/train/good" "$run/extractor.onnx"
        if [ ! -f "$run/bundle/manifest.toml" ]; then
            $TRAIN fit --config train-config/ladder.toml --extractor "$run/extractor.onnx" \
                --extractor-name "efficientnet-$name" --images "$root/train/good" \
                --cache "$run/cache" --checkpoint "$run/fit.ckpt" --resume --out "$run/bundle"
            # The features only serve training (about 150 MB per run).
            rm -rf "$run/cache"
        fi
        $TRAIN eval --bundle "$run/bundle" --data "$root" --out "$run/eval"
        keep "$run" eval
    done
done
# The timing pass: every bundle back to back on 25 test images per class, so the ms per tile
# compare under the same conditions (TIMING=0 skips it; run it on an otherwise idle machine).
if [ "${TIMING:-1}" = 1 ]; then
    for run in "$WORK"/*/*/; do
        [ -f "$run/eval/metrics.json" ] || continue
        case $(basename "$(dirname "$run")") in
            deepcrack-crops) root=$CROPS ;;
            magnetic-tile) root=$DATA/magnetic-tile ;;
        esac
        $TRAIN eval --bundle "$run/bundle" --data "$root" --limit 25 --out "$run/timing" >/dev/null
        keep "$run" timing
    done
fi
$TRAIN ladder --root "$WORK" --out "$WORK/ladder"
