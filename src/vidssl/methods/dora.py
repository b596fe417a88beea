"""DoRA: discover objects with the teacher's attention, track them through the clip, distil on them.

One step on B clips of T frames (SPEC 1.5-1.7), frames always folded into the batch:
1. the EMA teacher encodes the B*T global frames once, returning its [CLS] and the last block's
   q, k and [CLS] attention; the tracker (`vidssl.ops.tracking`) turns frame 0 into k object
   prototypes, refines them with Sinkhorn-Knopp and follows them into every frame by
   cross-attention with the keys, giving k binary masks per frame;
2. the student encodes the k masked copies of every frame (one call, k*B*T images) and the
   V local crops of every frame (one call, V*B*T images);
3. loss: per frame, the teacher's centred and sharpened [CLS] distribution of the full frame
   against each masked copy and each local crop of the same frame (`multi_object_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from vidssl.config import Config, ConfigError
from vidssl.data.transforms import normalize
from vidssl.methods.base import Method, StepInfo, build_student_teacher
from vidssl.methods.diagnostics import mask_pairwise_iou, plan_distance_from_uniform, step_diagnostics
from vidssl.methods.dino_loss import DistillationLoss
from vidssl.methods.dora_views import DoRAClipViews
from vidssl.methods.koleo import koleo_per_view
from vidssl.ops.tracking import choose_heads, mask_frames, track_clips


def multi_object_loss(
    criterion: DistillationLoss,
    teacher_probs: torch.Tensor,
    student_masked: torch.Tensor,
    student_local: torch.Tensor | None,
    official_quirks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """DoRA's loss over clips (SPEC 1.7).

    teacher_probs: (B, T, D) centred, sharpened teacher distributions of the full frames.
    student_masked: (k, B, T, D) student logits of the k masked copies of every frame.
    student_local: (V, B, T, D) student logits of the V local crops of every frame, or None.
    Per object j and frame t: f(j, t) = 0.5 * (CE_mask(j, t) + mean_v CE_local(v, t)) (f = CE_mask
    without local crops). Paper intent: loss = mean over j and t of f.
    official_quirks (SPEC 1.9 D11, D12): local crop 0 is left out, and the per-object sum
    over frames is not reset between objects: F_j = (F_{j-1} + sum_t f(j, t)) / T, loss = mean_j F_j.
    Returns (loss, CE_mask (k, T), CE_local (V, T) or None).
    """
    k, _, T = student_masked.shape[:3]
    mask_ce = torch.stack([
        torch.stack([criterion.cross_entropy(teacher_probs[:, t], student_masked[j, :, t]) for t in range(T)])
        for j in range(k)
    ])  # (k, T)
    local_ce = None
    f = mask_ce
    if student_local is not None and len(student_local):
        local_ce = torch.stack([
            torch.stack([criterion.cross_entropy(teacher_probs[:, t], student_local[v, :, t]) for t in range(T)])
            for v in range(len(student_local))
        ])  # (V, T)
        used = local_ce[1:] if official_quirks else local_ce
        if len(used):
            f = 0.5 * (mask_ce + used.mean(dim=0))  # (k, T)
    if not official_quirks:
        return f.mean(), mask_ce, local_ce
    carried = f.new_zeros(())
    total = f.new_zeros(())
    for j in range(k):
        carried = (carried + f[j].sum()) / T
        total = total + carried
    return total / k, mask_ce, local_ce


class DoRA(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        m = cfg.method
        if m.sinkhorn_iters < 1:
            raise ConfigError(f"method.sinkhorn_iters must be at least 1, got {m.sinkhorn_iters}")
        if m.sinkhorn_eps <= 0:
            raise ConfigError(f"method.sinkhorn_eps must be positive, got {m.sinkhorn_eps}")
        if cfg.aug.global_crops_number != 1:
            raise ConfigError("method.name=dora uses one global clip: set aug.global_crops_number=1")
        self.student, self.teacher = build_student_teacher(cfg)
        heads = self.teacher["backbone"].num_heads
        if not 1 <= m.num_objects <= heads:
            raise ConfigError(
                f"method.num_objects={m.num_objects}: each tracked object is seeded by the [CLS] attention "
                f"of its own attention head and {cfg.model.arch} has {heads} heads; use 1..{heads}"
            )
        self.loss = DistillationLoss(cfg.model.out_dim, m)

    def make_transform(self) -> DoRAClipViews:
        return DoRAClipViews(self.cfg.aug)

    @staticmethod
    def _embed(network: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, S, S) normalised -> (n, D_out) head output of [CLS]."""
        return network["head"](network["backbone"](x))

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> tuple[torch.Tensor, dict[str, Any]]:
        m = self.cfg.method
        global_view, local_views = views[0], views[1:]
        B, T = global_view.shape[:2]
        k = m.num_objects
        frames = normalize(global_view)  # (B, T, 3, S, S)
        teacher = self.teacher["backbone"]
        heads = choose_heads(teacher.num_heads, k)
        tracks, teacher_cls = track_clips(
            teacher, frames, k, m.sinkhorn_iters, m.sinkhorn_eps, m.mask_threshold, m.track_features, heads=heads
        )
        with torch.no_grad():
            teacher_out = self.teacher["head"](teacher_cls.flatten(0, 1)).view(B, T, -1)  # (B, T, D_out)
            probs = self.loss.teacher_probs(teacher_out, info.epoch)
        masked = mask_frames(frames, tracks.masks, teacher.patch_size)  # (k, B, T, 3, S, S)
        student_cls = self.student["backbone"](masked.flatten(0, 2))  # (k*B*T, D)
        student_masked = self.student["head"](student_cls).view(k, B, T, -1)
        student_local = None
        if local_views:
            locals_ = normalize(torch.stack(local_views))  # (V, B, T, 3, s, s)
            student_local = self._embed(self.student, locals_.flatten(0, 2)).view(len(local_views), B, T, -1)
        loss, mask_ce, local_ce = multi_object_loss(
            self.loss, probs, student_masked, student_local, m.official_loss_quirks
        )
        logs = step_diagnostics(probs, loss, self.loss.center, tracks.cls_attention)
        self.loss.update_center(teacher_out)
        logs.update(
            mask_iou=mask_pairwise_iou(tracks.masks),
            plan_distance=plan_distance_from_uniform(tracks.assignment),
            mask_ce=mask_ce.mean().item(),
            mask_kept=tracks.masks.float().mean().item(),
            teacher_temp=self.loss.teacher_temperature(info.epoch),
        )
        if local_ce is not None:
            logs["local_ce"] = local_ce.mean().item()
        if m.koleo_weight > 0:  # per object: the masked copies of one object, over all frames
            koleo = koleo_per_view(student_cls, k)
            logs["koleo"] = koleo.item()
            loss = loss + m.koleo_weight * koleo
        return loss, logs
