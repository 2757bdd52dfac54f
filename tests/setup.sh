#!/usr/bin/env bash
# Installs what the tests compare against: the reference runtimes and data from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/reference/requirements.txt
