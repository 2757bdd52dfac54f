#!/usr/bin/env bash
# Cross-builds edge-inspector for ARM with Debian's rustc-web and runs the whole test suite under
# qemu-user, so ARM correctness is checked without a board.
#
#   cross/test.sh [aarch64|armv7] [--install | --install-only] [--build-only]
#
# --install       apt-get the toolchain first (rustc-web, the target's std, gcc cross linker, qemu).
# --install-only  only that.
# --build-only    build the tests without running them.
# QEMU_CPU     CPU model qemu emulates (default cortex-a72, a Raspberry Pi 4; cortex-a76 for a Pi 5).
#
# qemu runs WITHOUT `-L /usr/<triple>`: with it every thread spawn hangs. Binaries find the
# target's dynamic loader through the multiarch libc that the target's std package installs.
set -euo pipefail

arch=aarch64
install=no
build_only=no
for a in "$@"; do
    case "$a" in
        aarch64 | armv7) arch=$a ;;
        --install) install=yes ;;
        --install-only) install=only ;;
        --build-only) build_only=yes ;;
        *) echo "usage: $0 [aarch64|armv7] [--install | --install-only] [--build-only]" >&2; exit 2 ;;
    esac
done

case "$arch" in
    aarch64)
        triple=aarch64-unknown-linux-gnu; deb=arm64; gcc=aarch64-linux-gnu-gcc
        qemu=qemu-aarch64-static; libc=libc6-dev-arm64-cross; cpu=${QEMU_CPU:-cortex-a72} ;;
    armv7)
        triple=armv7-unknown-linux-gnueabihf; deb=armhf; gcc=arm-linux-gnueabihf-gcc
        qemu=qemu-arm-static; libc=libc6-dev-armhf-cross; cpu=${QEMU_CPU:-cortex-a72} ;;
esac

if [ "$install" != no ]; then
    export DEBIAN_FRONTEND=noninteractive
    dpkg --add-architecture "$deb"
    # Debian mirrors are sometimes mid-sync for one architecture: retry the index a few times.
    for attempt in 1 2 3; do
        if apt-get update -q; then break; fi
        echo "apt-get update failed (attempt $attempt), retrying" >&2; sleep 10
    done
    # libclang-dev: bindgen generates the V4L2 bindings (feature v4l2) for the target.
    apt-get install -y -q rustc-web "libstd-rust-web-dev:$deb" "gcc-${gcc%-gcc}" "$libc" qemu-user-static \
        libclang-dev
    [ "$install" = only ] && exit 0
fi

# The rustup toolchain has no ARM std; Debian's rustc-web does.
export RUSTC=/usr/bin/rustc
if [ ! -d "/usr/lib/rustlib/$triple" ]; then
    echo "no Rust std for $triple under /usr/lib/rustlib: run $0 $arch --install" >&2
    exit 1
fi
upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${upper}_LINKER=$gcc"
export "CARGO_TARGET_${upper}_RUNNER=$qemu -cpu $cpu"
export "CC_${triple//-/_}=$gcc"
# The integration tests start the inspectd binary themselves: run it under the same qemu.
export EDGE_INSPECTOR_RUNNER="$qemu -cpu $cpu"
# Keep the cross build's artifacts apart from the host toolchain's.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cross"

echo "== $triple with $($RUSTC --version), tests under $qemu -cpu $cpu"
if [ "$build_only" = yes ]; then
    cargo build --target "$triple" --all-targets --features data,v4l2
else
    # Doc tests are left to the host run: rustup's rustdoc has no ARM std.
    cargo test --target "$triple" --features data,v4l2 --lib --bins --tests
fi
