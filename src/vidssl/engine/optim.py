"""Optimiser pieces owned by the engine: parameter groups, gradient clipping, EMA teacher."""

from __future__ import annotations

import torch
import torch.nn as nn


def param_groups(module: nn.Module) -> list[dict]:
    """Two AdamW groups: weight decay on weight matrices only, none on biases and norms (1-D)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}]


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
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, parameter by parameter (same architecture)."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise RuntimeError("teacher and student have different parameter lists")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1 - momentum)

