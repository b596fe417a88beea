"""Is the run learning? Cheap statistics of one step that tell health from collapse (docs/diagnostics.md).

DINO-style distillation fails in two ways, told apart by two entropies of the teacher's
centred, sharpened output q over K prototypes:
- uniform collapse: every q is flat. Per-sample entropy mean_i H(q_i) -> log K.
- constant collapse: every input gets the same peaked q. Entropy of the batch mean H(mean_i q_i) -> 0.
A healthy teacher is confident per sample (low H(q_i)) and diverse over the batch (high H(mean q)).
DoRA adds a third: its k tracked objects cover the same patches (pairwise mask IoU -> 1), which
happens when the [CLS] attention of every head is flat, so the Sinkhorn plan stays uniform.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

# A tiny probability floor: 0 * log 0 counts as 0.
_TINY = 1e-12


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along `dim` of distributions `p`."""
    p = p.float()
    return -(p * p.clamp_min(_TINY).log()).sum(dim=dim)


def _entropy_pair(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = probs.detach().float().reshape(-1, probs.shape[-1])
    return entropy(flat).mean(), entropy(flat.mean(dim=0))


def teacher_entropies(probs: torch.Tensor) -> dict[str, float]:
    """probs: (..., K) teacher distributions of one step.
    teacher_entropy: mean per-sample entropy; teacher_batch_entropy: entropy of their mean."""
    per_sample, batch = _entropy_pair(probs)
    return {"teacher_entropy": per_sample.item(), "teacher_batch_entropy": batch.item()}


def attention_entropy_per_head(cls_attention: torch.Tensor) -> torch.Tensor:
    """(..., h, N) [CLS]->patch attention -> (h,) mean entropy of each head's map over the patches
    (renormalised over patches; log N is a flat map)."""
    a = cls_attention.detach().float()
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(_TINY)
    return entropy(a).reshape(-1, a.shape[-2]).mean(dim=0)


def mask_pairwise_iou(masks: torch.Tensor) -> float:
    """(B, T, k, N) bool masks of k objects -> mean IoU over the k(k-1)/2 object pairs, frames, clips.
    Identical masks give 1, disjoint ones 0; with k = 1 there is no pair and the answer is 0."""
    k = masks.shape[-2]
    if k < 2:
        return 0.0
    m = masks.float()
    inter = torch.einsum("btin,btjn->btij", m, m)  # (B, T, k, k)
    area = m.sum(dim=-1)  # (B, T, k)
    union = area[..., :, None] + area[..., None, :] - inter
    iou = inter / union.clamp_min(1.0)
    i, j = torch.triu_indices(k, k, offset=1)
    return iou[..., i, j].mean().item()


def plan_distance_from_uniform(assignment: torch.Tensor) -> float:
    """(B, N, k) Sinkhorn assignment (each patch's row sums to 1) -> mean total-variation distance
    of each patch's row from the uniform 1/k, scaled to [0, 1] (1 = every patch to one object)."""
    k = assignment.shape[-1]
    if k < 2:
        return 0.0
    tv = 0.5 * (assignment.detach().float() - 1.0 / k).abs().sum(dim=-1)  # (B, N)
    return (tv.mean() / (1.0 - 1.0 / k)).item()


def step_diagnostics(
    teacher_probs: torch.Tensor, loss: torch.Tensor, center: torch.Tensor, cls_attention: torch.Tensor
) -> dict[str, float]:
    """The diagnostics every method logs.

    kl: the loss minus the teacher's per-sample entropy. Both methods average H(q, p) over
    student views with the same weight for every teacher target, so this is exactly the mean
    KL(q || p) over the same pairs (only DoRA's official_loss_quirks weigh targets unequally).
    """
    per_sample, batch = _entropy_pair(teacher_probs)
    named = {"teacher_entropy": per_sample, "teacher_batch_entropy": batch,
             "kl": loss.detach().float() - per_sample, "center_norm": center.detach().float().norm()}
    heads = attention_entropy_per_head(cls_attention)
    named.update({f"attn_entropy_h{h}": heads[h] for h in range(len(heads))})
    values = torch.stack(list(named.values())).tolist()  # one device sync for all of them
    return dict(zip(named, values))


# --------------------------------------------------------------------------- the warning

UNIFORM_FRACTION = 0.95  # per-sample entropy above this share of log K: uniform collapse
CONSTANT_FRACTION = 0.1  # batch-mean entropy below this share of log K: constant collapse
SAME_OBJECTS_IOU = 0.9  # DoRA: the k objects' masks (nearly) coincide


def collapse_kind(values: dict[str, Any], out_dim: int) -> tuple[str, str] | None:
    """(kind, advice) when one step's diagnostics look collapsed, else None."""
    log_k = math.log(out_dim)
    per_sample = values.get("teacher_entropy")
    batch = values.get("teacher_batch_entropy")
    if per_sample is not None and per_sample > UNIFORM_FRACTION * log_k:
        return ("uniform collapse",
                f"the teacher's output is near uniform (per-sample entropy {per_sample:.2f} of log K = {log_k:.2f}); "
                "try a smaller model.bottleneck_dim, a lower method.teacher_temp, a lower optim.momentum_teacher or a higher optim.lr")
    if batch is not None and batch < CONSTANT_FRACTION * log_k:
        return ("constant collapse",
                f"every input gets the same teacher output (entropy of the batch mean {batch:.2f} of log K = {log_k:.2f}); "
                "try a lower method.center_momentum (stronger centring) or a higher method.teacher_temp")
    iou = values.get("mask_iou")
    if iou is not None and iou > SAME_OBJECTS_IOU:
        return ("same objects",
                f"the k tracked objects cover the same patches (mean pairwise mask IoU {iou:.2f}): the teacher's "
                "heads' [CLS] attention is still alike; train longer, check that the loss falls, or start the "
                "heads apart with model.attn_init=mimetic")
    return None


class CollapseWatch:
    """Warns once per kind, and only after `grace` steps (every run starts near uniform)."""

    def __init__(self, out_dim: int, grace: int, warn: Callable[[str], None]) -> None:
        self.out_dim, self.grace, self.warn = out_dim, grace, warn
        self.warned: set[str] = set()

    def __call__(self, step: int, values: dict[str, Any]) -> None:
        if step < self.grace:
            return
        found = collapse_kind(values, self.out_dim)
        if found and found[0] not in self.warned:
            self.warned.add(found[0])
            self.warn(f"warning: step {step} looks like {found[0]}: {found[1]}")
