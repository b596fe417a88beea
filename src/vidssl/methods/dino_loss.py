"""DINO self-distillation targets and cross-entropy (SPEC 1.7), shared by DINO and DoRA.

The teacher distribution is softmax((t - c) / tau_t) with a centre c that is an EMA of the
teacher outputs over the batch of every process (all-reduced), and a teacher temperature that
warms up linearly over the first epochs. The centre is a buffer, so it is checkpointed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from vidssl.config import MethodConfig


class DistillationLoss(nn.Module):
    def __init__(self, out_dim: int, cfg: MethodConfig) -> None:
        super().__init__()
        self.student_temp = cfg.student_temp
        self.teacher_temp = cfg.teacher_temp
        self.warmup_teacher_temp = cfg.warmup_teacher_temp
        self.warmup_epochs = cfg.warmup_teacher_temp_epochs
        self.center_momentum = cfg.center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """Linear from warmup_teacher_temp to teacher_temp over the warm-up epochs, then flat."""
        if epoch >= self.warmup_epochs:
            return self.teacher_temp
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        frac = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    @torch.no_grad()
    def teacher_probs(self, teacher_out: torch.Tensor, epoch: int) -> torch.Tensor:
        """(..., D) logits -> (..., D) centred, sharpened probabilities (float32, no gradient)."""
        return F.softmax((teacher_out.float() - self.center) / self.teacher_temperature(epoch), dim=-1)

    def cross_entropy(self, teacher_probs: torch.Tensor, student_out: torch.Tensor) -> torch.Tensor:
        """Mean over leading dims of H(q, softmax(s / tau_s)); gradients reach the student only."""
        log_p = F.log_softmax(student_out.float() / self.student_temp, dim=-1)
        return -(teacher_probs * log_p).sum(dim=-1).mean()

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """c <- m c + (1 - m) mean(teacher outputs of this step over all processes)."""
        flat = teacher_out.detach().float().reshape(-1, teacher_out.shape[-1])
        total = flat.sum(dim=0, keepdim=True)
        count = torch.tensor([flat.shape[0]], dtype=torch.float32, device=flat.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            dist.all_reduce(count)
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)

    def multi_view(self, student_outs: list[torch.Tensor], teacher_outs: list[torch.Tensor], epoch: int,
                   targets: list[torch.Tensor] | None = None) -> torch.Tensor:
        """DINO's loss: average CE over every (teacher view, student view) pair except the same view.

        Student views are ordered globals first, so student view i and teacher view i are the same
        crop for i < len(teacher_outs). `targets` are `teacher_probs` of the teacher views when the
        caller already has them. Updates the centre from all teacher views.
        """
        if targets is None:
            targets = [self.teacher_probs(t, epoch) for t in teacher_outs]
        total, pairs = 0.0, 0
        for iq, q in enumerate(targets):
            for v, s in enumerate(student_outs):
                if v == iq:
                    continue
                total = total + self.cross_entropy(q, s)
                pairs += 1
        self.update_center(torch.cat(teacher_outs))
        return total / pairs
