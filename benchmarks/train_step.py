"""Seconds per DINO-on-frames training step on this machine: fp32 vs bf16 autocast, timm's fused
attention on vs off. Picks the CPU precision default (docs/engine.md).

    python benchmarks/train_step.py --arch vit_tiny --size 224 --batch 8
"""

from __future__ import annotations

import argparse
import time

import torch

from vidssl.config import load_config
from vidssl.engine.optim import ema_update, param_groups
from vidssl.methods import StepInfo, build_method


def views_for(cfg, batch: int) -> list[torch.Tensor]:
    a = cfg.aug
    g = [torch.randint(0, 256, (batch, 1, 3, a.global_crop_size, a.global_crop_size), dtype=torch.uint8) for _ in range(a.global_crops_number)]
    loc = [torch.randint(0, 256, (batch, 1, 3, a.local_crop_size, a.local_crop_size), dtype=torch.uint8) for _ in range(a.local_crops_number)]
    return g + loc


def time_steps(cfg, batch: int, bf16: bool, fused: bool, steps: int) -> float:
    torch.manual_seed(0)
    method = build_method(cfg)
    for block in list(method.student["backbone"].vit.blocks) + list(method.teacher["backbone"].vit.blocks):
        block.attn.fused_attn = fused
    opt = torch.optim.AdamW(param_groups(method.student), lr=1e-4)
    views = views_for(cfg, batch)
    info = StepInfo(0, 0, 1, 1)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = method(views, info)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(method.teacher, method.student, 0.996)
        if i:  # the first step warms up kernels
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="vit_small")
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--locals", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(None, [
        f"model.arch={args.arch}", f"model.patch_size={args.patch}", f"aug.global_crop_size={args.size}",
        f"aug.local_crops_number={args.locals}", f"aug.local_crop_size={args.size * 96 // 224 // args.patch * args.patch}",
    ])
    print(f"{args.arch}/{args.patch} at {args.size} px, batch {args.batch}, 2 global + {args.locals} local crops, "
          f"{torch.get_num_threads()} threads")
    base = None
    for bf16 in (False, True):
        for fused in (True, False):
            s = time_steps(cfg, args.batch, bf16, fused, args.steps)
            base = base or s
            print(f"  {'bf16' if bf16 else 'fp32'} fused_attn={fused!s:5}: {s:.3f} s/step  {1 / s:.2f} steps/s  speed-up x{base / s:.2f} vs fp32 fused")


if __name__ == "__main__":
    main()
