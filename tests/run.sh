#!/usr/bin/env bash
# The test command (README, CI): reference runtimes, then the whole suite in two builds.
#  1. everything the trainer and the daemon share, with burn's wgpu backend (`--features wgpu`,
#     which implies `train`; its test runs on Mesa's software Vulkan, installed by setup.sh);
#  2. the parts that need build tools the first does not: the V4L2 capture module (bindgen needs
#     libclang) and the technician's monitor (with the daemon, over a pty null-modem).
# Two builds rather than one `--features train,v4l2,monitor`: that feature mix rebuilds burn
# and tract a second time for no extra coverage.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh
cargo test --features wgpu "$@"
cargo test --features v4l2,monitor --lib --test monitor "$@"
