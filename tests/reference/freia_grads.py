#!/usr/bin/env python3
"""Parameter gradients of FrEIA's own AllInOneBlock stack for the trimmed reference cases
(tests/data/freia): d(sum of log p over the batch) / d(every trainable parameter), in float64,
from the fixture's (float32) weights and its inputs. Written to tests/data/freia/param_grads.bin
(float32 LE; per case, per block: subnet.0.weight, subnet.0.bias, subnet.2.weight, subnet.2.bias,
global_scale, global_offset, each row-major in FrEIA's shape) with its index param_grads.json,
which tests/flow_freia.rs compares the CPU flow's backward pass against.

The blocks are tests/reference/cflow_flows.py's (CFlow-AD's soft clamp `clamp * tanh(a / clamp)`).
Needs torch and FrEIA (PyPI `FrEIA`); run once by hand:

    python3 tests/reference/freia_grads.py tests/data/freia
"""
import json
import math
import struct
import sys
from pathlib import Path

import torch

from cflow_flows import cflow_head

ORDER = ["subnet.0.weight", "subnet.0.bias", "subnet.2.weight", "subnet.2.bias", "global_scale",
         "global_offset"]


def main(fixture):
    fixture = Path(fixture)
    meta = json.load(open(fixture / "vectors.json"))
    blob = (fixture / "weights.bin").read_bytes()
    weights = struct.unpack(f"<{len(blob) // 4}f", blob)

    def tensor(entry):
        n = math.prod(entry["shape"])
        values = weights[entry["offset"]:entry["offset"] + n]
        return torch.tensor(values, dtype=torch.float64).reshape(entry["shape"])

    torch.set_default_dtype(torch.float64)
    out, grads = [], []
    for case in meta["cases"]:
        c, d_cond = case["C"], case["cond_dim"]

        inn = cflow_head(c, blocks=len(case["blocks"]), condition=d_cond, clamp=case["clamp"],
                         permute_soft=case["permute_soft"])
        for module, block in zip(inn.module_list, case["blocks"]):
            state = module.state_dict()
            for name, entry in block.items():
                t = tensor(entry)
                if name.startswith("w_perm") and t.dim() == 1:
                    # A hard permutation stored as indices (y = v[:, perm]): its matrix.
                    one_hot = torch.zeros(c, c)
                    one_hot[torch.arange(c), t.long()] = 1.0
                    t = one_hot
                state[name] = t.reshape(state[name].shape)
            module.load_state_dict(state)
        inn.double()
        x = torch.tensor(case["x"], dtype=torch.float64)
        cond = torch.tensor(case["cond"], dtype=torch.float64)
        z, log_jac_det = inn(x, c=[cond])
        logp = c * (-0.5 * math.log(2 * math.pi)) - 0.5 * (z ** 2).sum(1) + log_jac_det
        logp.sum().backward()
        start = len(grads)
        for module in inn.module_list:
            params = dict(module.named_parameters())
            for name in ORDER:
                grads.extend(params[name].grad.flatten().tolist())
        worst = float((logp.detach() - torch.tensor(case["logp"])).abs().max())
        print(f"C={c} blocks={len(case['blocks'])}: log p vs the fixture, max |diff| {worst:.2e}")
        out.append({"C": c, "offset": start, "len": len(grads) - start})
    json.dump({"source": "tests/reference/freia_grads.py (FrEIA AllInOneBlock, float64)",
               "order": ORDER, "cases": out}, open(fixture / "param_grads.json", "w"))
    (fixture / "param_grads.bin").write_bytes(struct.pack(f"<{len(grads)}f", *grads))


if __name__ == "__main__":
    main(*sys.argv[1:])
