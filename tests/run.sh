#!/usr/bin/env bash
# The test command (README, CI): reference runtimes, then the whole suite:
#  1. the wire protocol, the camera pixel formats and the technician's monitor (crates/, small;
#     the monitor's binary is also what tests/monitor.rs runs against the daemon);
#  2. the daemon and the trainer, with burn's wgpu backend (`--features wgpu`, which implies
#     `train`; its test runs on Mesa's software Vulkan, installed by setup.sh);
#  3. the V4L2 capture module, which needs a build tool the others do not (bindgen: libclang).
# Its own build rather than `--features wgpu,v4l2` in 2: only the library is rebuilt for it.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
cargo test -p inspect-protocol -p inspect-pixel-formats -p inspect-monitor "$@"
cargo build -p inspect-monitor
cargo test --features wgpu "$@"
cargo test --features v4l2 --lib "$@"
