"""DINO on video frames ("DINO (WT)" in SPEC): every frame is an independent image.

Each clip's T frames are folded into the batch, so a batch of B clips is B*T images, each
with G global and L local crops (DINO's multi-crop). The teacher sees the globals only.
"""

from __future__ import annotations

from typing import Any

import torch

from vidssl.config import Config
from vidssl.data.transforms import normalize
from vidssl.methods.dino_views import MultiCropFrames
from vidssl.methods.base import Method, StepInfo, build_student_teacher
from vidssl.methods.diagnostics import step_diagnostics
from vidssl.methods.dino_loss import DistillationLoss
from vidssl.methods.koleo import koleo_per_view


def fold_frames(view: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, S, S) uint8 -> (B*T, 3, S, S) normalised float."""
    return normalize(view.flatten(0, 1))


class DINO(Method):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.student, self.teacher = build_student_teacher(cfg)
        self.loss = DistillationLoss(cfg.model.out_dim, cfg.method)
        self.num_globals = cfg.aug.global_crops_number

    def make_transform(self) -> MultiCropFrames:
        return MultiCropFrames(self.cfg.aug)

    def embed(self, network: torch.nn.ModuleDict, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Views of one size in one backbone call: head outputs, one (B*T, D_out) per view, and
        the backbone's [CLS] of all of them (len(views) * B*T, D)."""
        cls = network["backbone"](torch.cat([fold_frames(v) for v in views]))
        return list(network["head"](cls).chunk(len(views))), cls

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> tuple[torch.Tensor, dict[str, Any]]:
        globals_, locals_ = views[: self.num_globals], views[self.num_globals :]
        with torch.no_grad():  # the teacher's pass also gives its [CLS] attention, for the diagnostics
            seen = self.teacher["backbone"].encode_with_last_attention(torch.cat([fold_frames(v) for v in globals_]))
            teacher_out = list(self.teacher["head"](seen.cls).chunk(len(globals_)))
            probs = self.loss.teacher_probs(torch.stack(teacher_out), info.epoch)  # (G, B*T, K)
        student_out, student_cls = self.embed(self.student, globals_)
        if locals_:
            student_out += self.embed(self.student, locals_)[0]
        loss = self.loss.multi_view(student_out, teacher_out, info.epoch, targets=list(probs))
        logs = step_diagnostics(probs, loss, self.loss.center, seen.cls_attention)
        logs["teacher_temp"] = self.loss.teacher_temperature(info.epoch)
        weight = self.cfg.method.koleo_weight
        if weight > 0:
            koleo = koleo_per_view(student_cls, len(globals_))
            logs["koleo"] = koleo.item()
            loss = loss + weight * koleo
        return loss, logs
