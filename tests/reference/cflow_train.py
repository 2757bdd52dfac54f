#!/usr/bin/env python3
"""One epoch of CFlow-AD's own training loop (github.com/gudovskiy/cflow-ad, `train_meta_epoch`)
on features written by benches/trainer.rs, with FrEIA + PyTorch on the CPU (on CUDA with
`--device cuda`): per image batch and level, the fibers with their positional encoding, a random
permutation, chunks of 256 fibers, one Adam step per chunk (one Adam over every decoder, as
CFlow-AD builds it), loss `-logsigmoid(logp / C)`. With `--loss fusion`, the paper's fusion term
(BGAD boundary + bounded likelihood difference, DESIGN.md) on the augmented fibers at the same
positions is added, as the project's trainer does. Prints one JSON line: seconds, steps, per-level
seconds, mean loss.

    python3 tests/reference/cflow_train.py DIR --threads 1 --loss none
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cflow_flows import cflow_head

GCONST = -0.9189385332046727  # -0.5 ln(2 pi)


def positional_encoding_2d(d, height, width):
    """CFlow-AD's `positionalencoding2d`."""
    p = torch.zeros(d, height, width)
    d = d // 2
    div = torch.exp(torch.arange(0.0, d, 2) * -(math.log(1e4) / d))
    pos_w = torch.arange(0.0, width).unsqueeze(1)
    pos_h = torch.arange(0.0, height).unsqueeze(1)
    p[0:d:2] = torch.sin(pos_w * div).transpose(0, 1).unsqueeze(1).repeat(1, height, 1)
    p[1:d:2] = torch.cos(pos_w * div).transpose(0, 1).unsqueeze(1).repeat(1, height, 1)
    p[d::2] = torch.sin(pos_h * div).transpose(0, 1).unsqueeze(2).repeat(1, 1, width)
    p[d + 1::2] = torch.cos(pos_h * div).transpose(0, 1).unsqueeze(2).repeat(1, 1, width)
    return p


def fusion_term(logp, logp_aug, defect, channels, margin):
    """boundary + likelihood (DESIGN.md, "Contrastive objectives")."""
    l = torch.cat([logp, logp_aug]) / channels / 10.0
    is_defect = torch.cat([torch.zeros_like(defect), defect]) > 0.5
    normal = l[~is_defect].detach()
    b_n = torch.sort(normal).values[int(math.floor(len(normal) * 0.05))]
    b_a = b_n - 0.1
    below = (~is_defect) & (l <= b_n)
    above = is_defect & (l >= b_a)
    boundary = (b_n - l[below]).sum() / max(int(below.sum()), 1) \
        + (l[above] - b_a).sum() / max(int(above.sum()), 1)
    d = ((logp - logp_aug) / channels).abs()
    on = defect > 0.5
    likelihood = d[~on].sum() / max(int((~on).sum()), 1)
    if on.any():
        likelihood = likelihood + torch.clamp(margin - d[on].mean(), min=0.0)
    return boundary + likelihood


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--loss", choices=["none", "fusion"], default="none")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: on the GPU where PyTorch sees one (else an error)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device")
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    root = Path(args.dir)
    meta = json.load(open(root / "meta.json"))
    levels = meta["levels"]
    n_images = meta["images"]
    raw = np.fromfile(root / "features.bin", dtype="<f4")
    masks_raw = np.fromfile(root / "masks.bin", dtype=np.uint8)
    # features.bin: per image, per level, the real (C, H, W) then the augmented (C, H, W).
    per_image = sum(2 * l["channels"] * l["height"] * l["width"] for l in levels)
    per_image_masks = sum(l["height"] * l["width"] for l in levels)
    real, aug, masks = [], [], []
    for li, l in enumerate(levels):
        shape = (l["channels"], l["height"], l["width"])
        size = math.prod(shape)
        start = sum(2 * math.prod((m["channels"], m["height"], m["width"])) for m in levels[:li])
        mstart = sum(m["height"] * m["width"] for m in levels[:li])
        r = np.stack([raw[i * per_image + start:i * per_image + start + size].reshape(shape)
                      for i in range(n_images)])
        a = np.stack([raw[i * per_image + start + size:i * per_image + start + 2 * size]
                     .reshape(shape) for i in range(n_images)])
        m = np.stack([masks_raw[i * per_image_masks + mstart:
                                i * per_image_masks + mstart + shape[1] * shape[2]]
                      for i in range(n_images)])
        real.append(torch.from_numpy(r).to(dev))
        aug.append(torch.from_numpy(a).to(dev))
        masks.append(torch.from_numpy(m.astype(np.float32)).to(dev))
    decoders = [cflow_head(l["channels"]).to(dev) for l in levels]
    params = [p for d in decoders for p in d.parameters()]
    optimizer = torch.optim.Adam(params, lr=meta["lr"])
    n_fib = meta["fiber_batch"]
    batch = meta["image_batch"]
    fusion = args.loss == "fusion"
    level_seconds = [0.0] * len(levels)
    steps, loss_sum = 0, 0.0
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    order = torch.randperm(n_images)
    for b0 in range(0, n_images, batch):
        idx = order[b0:b0 + batch]
        for li, l in enumerate(levels):
            t0 = time.perf_counter()
            c_dim, h, w = l["channels"], l["height"], l["width"]
            e = real[li][idx]
            bsz, hw = e.shape[0], h * w
            e_count = bsz * hw
            p = positional_encoding_2d(128, h, w).to(dev).unsqueeze(0).repeat(bsz, 1, 1, 1)
            c_r = p.reshape(bsz, 128, hw).transpose(1, 2).reshape(e_count, 128)
            e_r = e.reshape(bsz, c_dim, hw).transpose(1, 2).reshape(e_count, c_dim)
            if fusion:
                a_r = aug[li][idx].reshape(bsz, c_dim, hw).transpose(1, 2).reshape(e_count, c_dim)
                m_r = masks[li][idx].reshape(e_count)
            perm = torch.randperm(e_count, device=dev)
            decoder = decoders[li]
            for f in range(math.ceil(e_count / n_fib)):
                sel = perm[f * n_fib:(f + 1) * n_fib]
                c_p, e_p = c_r[sel], e_r[sel]
                z, log_jac_det = decoder(e_p, c=[c_p])
                logp = c_dim * GCONST - 0.5 * torch.sum(z ** 2, 1) + log_jac_det
                loss = -F.logsigmoid(logp / c_dim).mean()
                if fusion:
                    z_a, ldj_a = decoder(a_r[sel], c=[c_p])
                    logp_a = c_dim * GCONST - 0.5 * torch.sum(z_a ** 2, 1) + ldj_a
                    loss = loss + fusion_term(logp, logp_a, m_r[sel], c_dim, meta["margin"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                # CFlow-AD reads the loss back every step too (a GPU sync).
                loss_sum += float(loss)
                steps += 1
            level_seconds[li] += time.perf_counter() - t0
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"device": args.device, "seconds": seconds, "steps": steps, "level_seconds": level_seconds,
                      "mean_loss": loss_sum / max(steps, 1), "threads": args.threads,
                      "loss": args.loss, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
