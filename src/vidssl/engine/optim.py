"""Optimiser pieces owned by the engine: parameter groups, gradient clipping, EMA teacher."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


def param_groups(module: nn.Module, lr_scale: Callable[[str], float] | None = None) -> list[dict]:
    """Two AdamW groups: weight decay on weight matrices only, none on biases and norms (1-D).

    `lr_scale` (a method's per-parameter factor on the scheduled lr, by parameter name; TimeT's
    backbone at 1/10 of its head) splits each group by factor and records it as `lr_scale`.
    Without it the groups are exactly the two above (and carry no `lr_scale`)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append((name, p))
    if lr_scale is None:
        return [{"params": [p for _, p in decay], "apply_wd": True},
                {"params": [p for _, p in no_decay], "apply_wd": False}]
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for apply_wd, members in ((True, decay), (False, no_decay)):
        for name, p in members:
            groups.setdefault((float(lr_scale(name)), apply_wd), []).append(p)
    return [{"params": ps, "apply_wd": wd, "lr_scale": scale} for (scale, wd), ps in groups.items()]


@torch.no_grad()
def clip_gradients_per_tensor(module: nn.Module, max_norm: float) -> float:
    """DINO's clipping (SPEC 1.8): each parameter tensor's gradient is scaled to norm <= max_norm.
    Returns the largest norm seen before clipping."""
    largest = 0.0
    for p in module.parameters():
        if p.grad is None:
            continue
        norm = p.grad.norm(2)
        largest = max(largest, float(norm))
        scale = max_norm / (norm + 1e-6)
        if scale < 1:
            p.grad.mul_(scale)
    return largest


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, only_trainable: bool = False) -> None:
    """teacher <- m * teacher + (1 - m) * student, parameter by parameter (same architecture).

    `only_trainable`: skip the pairs whose student parameter is frozen (TimeT's frozen blocks),
    so the teacher's copy stays bit-identical instead of drifting by rounding."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise RuntimeError("teacher and student have different parameter lists")
    if only_trainable:
        pairs = [(t, s) for t, s, p in zip(t_params, s_params, student.parameters()) if p.requires_grad]
        t_params, s_params = [t for t, _ in pairs], [s for _, s in pairs]
        if not t_params:
            return
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)

