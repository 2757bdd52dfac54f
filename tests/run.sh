#!/usr/bin/env bash
# The test command (README, CI): reference runtimes, then the whole suite in two builds:
#  1. the wire protocol, the camera pixel formats and the technician's monitor (crates/, small;
#     the monitor's binary is also what tests/monitor.rs runs against the daemon);
#  2. the detector (inspect-core), the daemon and the trainer, with burn's wgpu backend
#     (inspect-train's `wgpu`, which implies `train`; its test runs on Mesa's software Vulkan,
#     installed by setup.sh), the daemon's V4L2
#     capture module (`v4l2`: bindgen, libclang) and Raspberry Pi GPIO (`gpio`; off a Pi it
#     reports that GPIO is unavailable). One feature set for all: each other set recompiles
#     tract and its dependencies (bindgen changes the features of the build tools).
# CI sets RUSTC_WORKSPACE_WRAPPER to clippy-driver for this script: the same build is linted.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
cargo test -p inspect-protocol -p inspect-pixel-formats -p inspect-monitor "$@"
cargo build -p inspect-monitor
cargo test -p inspect-core -p edge-inspector -p inspect-train \
    --features inspect-train/wgpu,edge-inspector/v4l2,edge-inspector/gpio "$@"
