#!/usr/bin/env python3
"""Write a small checkpoint in torch's zip format (torch >= 1.6) without torch.

usage: write_torch_zip.py OUT.pth

The layout is what torch.save writes: `archive/data.pkl` (a protocol-2 pickle of an OrderedDict
whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` with
storages as persistent ids `('storage', torch.FloatStorage, key, 'cpu', numel)`),
`archive/data/<key>` (raw little-endian storage bytes), `archive/version` and `archive/byteorder`.
Tensors written: `w` 2x3 stored transposed (stride (1, 2)), values w[i][j] = 10 i + j;
`b` 3 values at storage offset 1 of a 4-value storage: 0.5, 1.5, 2.5.
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile

# Stand-ins so pickle can write torch's global references by name.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")


def _rebuild_tensor_v2(*args):
    raise NotImplementedError


class FloatStorage:
    pass


_rebuild_tensor_v2.__module__ = "torch._utils"
FloatStorage.__module__ = "torch"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2
torch.FloatStorage = FloatStorage
torch._utils = utils
sys.modules["torch"] = torch
sys.modules["torch._utils"] = utils


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class Rebuild:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


def main():
    out = sys.argv[1]
    # w is 2x3; memory holds its transpose (3x2) row-major, so stride is (1, 2).
    w_mem = [10 * i + j for j in range(3) for i in range(2)]
    b_mem = [99.0, 0.5, 1.5, 2.5]
    state = collections.OrderedDict()
    state["w"] = Rebuild(Storage("0", 6), 0, (2, 3), (1, 2))
    state["b"] = Rebuild(Storage("1", 4), 1, (3,), (1,))
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", struct.pack("<6f", *w_mem))
        z.writestr("archive/data/1", struct.pack("<4f", *b_mem))


if __name__ == "__main__":
    main()
