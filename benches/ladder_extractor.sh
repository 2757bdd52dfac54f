#!/usr/bin/env bash
# Builds the extractor of one rung of the extractor ladder, named VARIANT[pre]-SIZE-PRECISION
# (e.g. lite0-256-int8, lite0pre-256-fp32): 2 levels (strides 8 and 16), block-output taps or
# CFlow-AD's pre-residual ones (`pre`), int8 calibrated on CALIBRATION (a folder of images).
# Shared by benches/extractor_ladder.sh and benches/ladder_timing.sh, so both time and train the
# same ONNX.
#
# Usage: benches/ladder_extractor.sh NAME CALIBRATION OUT.onnx   (TRAIN: as the callers set it)
set -euo pipefail
name=$1 calibration=$2 out=$3
TRAIN=${TRAIN:-"cargo run --quiet -p inspect-train --"}
IFS=- read -r net size precision <<< "$name"
variant=${net%pre}
point=block-output
[ "$net" != "$variant" ] && point=pre-residual
args=(--weights "$(python3 tests/reference/lite_weights.py "${variant#lite}")"
    --variant "$variant" --tap-point "$point" --size "$size" --levels 2)
[ "$precision" = int8 ] && args+=(--int8-calibration "$calibration")
$TRAIN extractor "${args[@]}" --out "$out"
