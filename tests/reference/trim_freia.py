#!/usr/bin/env python3
"""Trims FrEIA's reference vectors (../shared/reference/freia_vectors.json, 14 MB) into the
project's fixture tests/data/freia/: the inputs, outputs and gradients as JSON (float64), and the
block weights as little-endian float32 in weights.bin, indexed from the JSON by offset and shape.

Kept: the one-block cases (rotation, hard permutation) and the 8-block decoder with rotations,
plus the positional encoding (128 x 6 x 8). Run once by hand; the tests read only the fixture:

    python3 tests/reference/trim_freia.py ../shared/reference/freia_vectors.json tests/data/freia
"""
import json
import struct
import sys
from pathlib import Path


def flat(v):
    if isinstance(v, list):
        for x in v:
            yield from flat(x)
    else:
        yield float(v)


def shape(v):
    s = []
    while isinstance(v, list):
        s.append(len(v))
        v = v[0] if v else None
    return s


def main(src, out):
    ref = json.load(open(src))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    blob = bytearray()

    def store(v):
        values = list(flat(v))
        entry = {"offset": len(blob) // 4, "shape": shape(v)}
        blob.extend(struct.pack(f"<{len(values)}f", *values))
        return entry

    cases = []
    for case in ref["cases"]:
        blocks = len(case["block_state_dicts"])
        if blocks == 8 and not case["permute_soft"]:
            continue  # the 8-block hard-permutation decoder: covered by the others
        kept = {k: case[k] for k in ("C", "cond_dim", "permute_soft", "clamp", "global_affine_type",
                                     "x", "cond", "z", "log_jac_det", "logp", "dlogp_dx")}
        kept["blocks"] = [{name: store(t) for name, t in sd.items()}
                          for sd in case["block_state_dicts"]]
        cases.append(kept)
    fixture = {
        "source": ref["source"],
        "notes": "trimmed by tests/reference/trim_freia.py; weights in weights.bin (f32 LE)",
        "cases": cases,
        "positional_encoding": {
            "D": ref["positional_encoding"]["D"],
            "H": ref["positional_encoding"]["H"],
            "W": ref["positional_encoding"]["W"],
            "P": store(ref["positional_encoding"]["P"]),
        },
    }
    json.dump(fixture, open(out / "vectors.json", "w"))
    (out / "weights.bin").write_bytes(bytes(blob))
    print(f"{len(cases)} cases, {len(blob)} bytes of weights")


if __name__ == "__main__":
    main(*sys.argv[1:])
