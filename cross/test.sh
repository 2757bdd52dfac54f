#!/usr/bin/env bash
# Cross-builds edge-inspector for ARM with Debian's rustc-web and runs the whole test suite under
# qemu-user, so ARM correctness is checked without a board.
#
#   cross/test.sh [aarch64|armv7] [--install | --install-only] [--build-only] [-- TESTS...]
#
# TESTS: cargo test's selection of packages, features and targets (e.g. `-p inspect-core --lib
# --test kernels`), instead of the default: every test of the wire protocol, the pixel formats,
# the detector (inspect-core), the daemon (with `v4l2` and `gpio`) and the trainer without its
# flows (no burn: the trainer's flows run on workstations, not boards). One cargo invocation, so
# the shared dependencies are resolved and compiled once.
# --install       apt-get the toolchain first (rustc-web, the target's std, gcc cross linker, qemu).
# --install-only  only that.
# --build-only    build the tests without running them (exactly what the run would build, so a
#                 later run with the same TESTS only runs them).
# QEMU_CPU     CPU model qemu emulates. aarch64: default cortex-a72 (Raspberry Pi 4), cortex-a76 for
#              a Pi 5. armv7: default cortex-a7 (Raspberry Pi 2, and the ARMv7 profile a 32-bit
#              Raspberry Pi OS builds for); Debian's qemu-arm has no 32-bit cortex-a72 model.
#
# qemu runs WITHOUT `-L /usr/<triple>`: with it every thread spawn hangs. Binaries find the
# target's dynamic loader through the multiarch libc that the target's std package installs.
set -euo pipefail

arch=aarch64
install=no
build_only=no
selection=(-p inspect-protocol -p inspect-pixel-formats -p inspect-core -p edge-inspector
    -p inspect-train --features edge-inspector/v4l2,edge-inspector/gpio --lib --bins --tests)
while [ $# -gt 0 ]; do
    a=$1; shift
    case "$a" in
        --) selection=("$@"); break ;;
        aarch64 | armv7) arch=$a ;;
        --install) install=yes ;;
        --install-only) install=only ;;
        --build-only) build_only=yes ;;
        *) echo "usage: $0 [aarch64|armv7] [--install | --install-only] [--build-only] [-- TESTS...]" >&2; exit 2 ;;
    esac
done

case "$arch" in
    aarch64)
        triple=aarch64-unknown-linux-gnu; deb=arm64; gcc=aarch64-linux-gnu-gcc
        qemu=qemu-aarch64-static; libc=libc6-dev-arm64-cross; cpu=${QEMU_CPU:-cortex-a72} ;;
    armv7)
        triple=armv7-unknown-linux-gnueabihf; deb=armhf; gcc=arm-linux-gnueabihf-gcc
        qemu=qemu-arm-static; libc=libc6-dev-armhf-cross; cpu=${QEMU_CPU:-cortex-a7} ;;
esac

# The packages' armhf / arm64 build at the version installed for the host, from Debian's
# security pool (where rustc-web and its dependencies' updates live).
fetch_from_security_pool() {
    local pkg=$1 dir=$2 version source prefix
    version=$(dpkg-query -W -f '${Version}' "$pkg:amd64" 2>/dev/null || dpkg-query -W -f '${Version}' "$pkg")
    source=$(dpkg-query -W -f '${source:Package}' "$pkg:amd64" 2>/dev/null || dpkg-query -W -f '${source:Package}' "$pkg")
    case $source in lib*) prefix=${source:0:4} ;; *) prefix=${source:0:1} ;; esac
    echo "fetching $pkg:$deb $version from the security pool" >&2
    curl -fsS -o "$dir/$pkg.deb" \
        "http://deb.debian.org/debian-security/pool/updates/main/$prefix/$source/${pkg}_${version#*:}_$deb.deb" \
        || { rm -f "$dir/$pkg.deb"; return 1; }
}

# The target's Rust std, at exactly rustc-web's version (any other is unusable). Debian's
# security index for one architecture is sometimes mid-sync for days (armhf in November 2026:
# "File has unexpected size") while its packages are in the pool: then fetch them from there,
# with each Multi-Arch library the install reports missing at the host's version.
install_target_std() {
    local version dir missing pkg
    version=$(dpkg-query -W -f '${Version}' rustc-web)
    if apt-get install -y -q "libstd-rust-web-dev:$deb=$version"; then return; fi
    dir=$(mktemp -d)
    fetch_from_security_pool libstd-rust-web-dev "$dir"
    fetch_from_security_pool "libstd-rust-web-$(echo "$version" | cut -d. -f1-2)" "$dir"
    for _ in 1 2 3 4 5 6; do
        # apt names the unmet dependencies on stdout.
        if apt-get install -y -q "$dir"/*.deb >"$dir/log" 2>&1; then rm -rf "$dir"; return; fi
        cat "$dir/log" >&2
        missing=$(grep -oE "Depends: [a-z0-9.+-]+:$deb" "$dir/log" | sed -E "s/Depends: //; s/:$deb//" | sort -u)
        # A package apt names that is not in the pool is not the version-skewed one: skip it;
        # stop when a round fetches nothing new.
        local fetched=0
        for pkg in $missing; do
            [ -e "$dir/$pkg.deb" ] && continue
            if fetch_from_security_pool "$pkg" "$dir"; then fetched=1; fi
        done
        [ "$fetched" = 1 ] || break
    done
    echo "could not install the Rust std for $triple (libstd-rust-web-dev:$deb $version)" >&2
    exit 1
}

if [ "$install" != no ]; then
    export DEBIAN_FRONTEND=noninteractive
    dpkg --add-architecture "$deb"
    # Debian mirrors are sometimes mid-sync for one architecture: retry the index a few times.
    for attempt in 1 2 3; do
        if apt-get update -q; then break; fi
        echo "apt-get update failed (attempt $attempt), retrying" >&2; sleep 10
    done
    # libclang-dev: bindgen generates the V4L2 bindings (feature v4l2) for the target.
    apt-get install -y -q rustc-web "gcc-${gcc%-gcc}" "$libc" qemu-user-static libclang-dev curl
    install_target_std
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
# Keep the cross build's artifacts apart from the host toolchain's (the boards share the
# build tools compiled for the host).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cross"

echo "== $triple with $($RUSTC --version), tests under $qemu -cpu $cpu"
if [ "$build_only" = yes ]; then
    cargo test --target "$triple" --no-default-features "${selection[@]}" --no-run
else
    # Doc tests are left to the host run: rustup's rustdoc has no ARM std. `--no-default-features`
    # leaves out the trainer's flows (burn).
    cargo test --target "$triple" --no-default-features "${selection[@]}"
fi
