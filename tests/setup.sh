#!/usr/bin/env bash
# Installs what the tests compare against: the reference runtimes and data from PyPI, libclang
# for the V4L2 bindings (bindgen), Mesa's software Vulkan and Chromium (the report's renderer)
# when they are missing and we may install packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q libclang-dev >/dev/null
    else
        echo "tests/setup.sh: libclang-dev is missing (needed by --features v4l2): install it" >&2
    fi
fi
# burn's wgpu test (tests/flow_cpu.rs) runs on Mesa's software Vulkan device (lavapipe).
if [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] && [ ! -e /usr/share/vulkan/icd.d/lvp_icd.json ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mesa-vulkan-drivers libvulkan1 >/dev/null
    else
        echo "tests/setup.sh: no software Vulkan device (needed by --features wgpu): install mesa-vulkan-drivers" >&2
    fi
fi
# The field report's test (tests/field_workflow.rs) renders the HTML in headless Chromium.
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
    else
        echo "tests/setup.sh: chromium is missing (needed by tests/field_workflow.rs): install it" >&2
    fi
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/reference/requirements.txt
