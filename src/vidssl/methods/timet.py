"""TimeT (Time-Tuning, Salehi et al. ICCV 2023; SPEC 5): make a pretrained encoder's patch
features consistent through time.

Networks (student and EMA teacher alike): the backbone, loaded from `model.init_weights` (a
pretrained start: `vidssl pretrain --init W`), with only its last `timet_trainable_blocks`
blocks trainable; an MLP head on every patch token (384-1024-1024-512-256 at ViT-S width,
GELU, no norm, scaled with the width); K prototypes in the head's output space, unit-norm
after every step.

One step on B clips of T frames (SPEC 5.2, `vidssl.methods.timet_loss`):
1. the teacher encodes all B*T frames once (no gradient): its backbone patch tokens feed the
   feature forwarder, its head + prototypes give frame 0's Sinkhorn assignment;
2. that assignment is forwarded to the last frame;
3. the student encodes the last frames only (the only frames the loss reads), and its
   prototype scores are trained towards argmax of the forwarded map.

The teacher is a real EMA: teacher <- m teacher + (1 - m) student, m rising 0.995 -> 1 (the
engine's `ema_update`). The official code writes (1 - m) teacher + m student, which with m near 1
makes the "teacher" a copy of the current student (SPEC 5.2 item 8); docs/timet.md. The
forwarder's features come from the teacher's backbone (the official code takes the student's
under no_grad; with its near-identity "EMA" the two are the same network).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidssl.config import Config, ConfigError
from vidssl.data.transforms import normalize
from vidssl.methods.base import Method, StepInfo
from vidssl.methods.timet_loss import alignment_loss, first_frame_assignment, forward_features, prototype_scores
from vidssl.methods.timet_views import TimeTClipViews
from vidssl.models import Encoder, create_vit

VIT_S_WIDTH = 384  # the width TimeT's head sizes are given for


class PatchHead(nn.Module):
    """MLP applied to every patch token: Linear-GELU-...-Linear, no norm layers."""

    def __init__(self, in_dim: int, dims: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip([in_dim, *dims[:-1]], dims)):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class Prototypes(nn.Module):
    """K unit vectors in the head's output space (re-normalised by `normalize_`)."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(F.normalize(torch.randn(k, dim), dim=1))

    @torch.no_grad()
    def normalize_(self) -> None:
        self.weight.copy_(F.normalize(self.weight, dim=1))


def scaled_head_dims(dims: list[int], width: int) -> list[int]:
    """TimeT's head sizes (given at ViT-S width) for a backbone of `width`."""
    return [max(1, round(d * width / VIT_S_WIDTH)) for d in dims]


def load_backbone_weights(encoder: Encoder, path: str) -> None:
    """A vidssl encoder export (timm state dict in safetensors) into `encoder`, strictly."""
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except Exception as e:  # noqa: BLE001 - missing file, not safetensors
        raise ConfigError(f"model.init_weights={path}: cannot be read as a safetensors export ({e})") from None
    own = encoder.vit.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ConfigError(
            f"model.init_weights={path} does not fit model.arch/patch_size: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, other shapes {wrong[:3]}"
        )
    encoder.vit.load_state_dict(state, strict=True)


class TimeT(Method):
    ema_only_trainable = True  # the frozen blocks' teacher copy stays bit-identical

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        m, mc = cfg.method, cfg.model
        if cfg.aug.local_crops_number or cfg.aug.global_crops_number != 1:
            raise ConfigError("method.name=timet uses one clip view: set aug.global_crops_number=1 and aug.local_crops_number=0")
        if cfg.data.frames_per_clip < 2:
            raise ConfigError("method.name=timet forwards frame 0 to the last frame: data.frames_per_clip must be at least 2")
        self.student = self._network(cfg)
        depth = len(self.student["backbone"].vit.blocks)
        if not 1 <= m.timet_trainable_blocks <= depth:
            raise ConfigError(f"method.timet_trainable_blocks={m.timet_trainable_blocks}: {mc.arch} has {depth} blocks; use 1..{depth}")
        if mc.init_weights:
            load_backbone_weights(self.student["backbone"], mc.init_weights)
        self.teacher = self._network(cfg)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        for p in self.student["backbone"].parameters():
            p.requires_grad_(False)
        for block in self.student["backbone"].vit.blocks[depth - m.timet_trainable_blocks :]:
            for p in block.parameters():
                p.requires_grad_(True)
        self.student["backbone"].vit.set_grad_checkpointing(mc.grad_checkpointing)

    @staticmethod
    def _network(cfg: Config) -> nn.ModuleDict:
        backbone = Encoder(create_vit(cfg.model.arch, cfg.model.patch_size, 0.0))  # no drop path: a fine-tune
        dims = scaled_head_dims(cfg.method.timet_head_dims, backbone.embed_dim)
        return nn.ModuleDict({
            "backbone": backbone,
            "head": PatchHead(backbone.embed_dim, dims),
            "prototypes": Prototypes(cfg.method.timet_prototypes, dims[-1]),
        })

    # ----------------------------------------------------------------- engine hooks
    def make_transform(self) -> TimeTClipViews:
        return TimeTClipViews(self.cfg.aug)

    def lr_scale(self, name: str) -> float:
        """Backbone blocks at `timet_backbone_lr_scale` of the head and prototypes' lr."""
        return self.cfg.method.timet_backbone_lr_scale if name.startswith("backbone.") else 1.0

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        self.student["prototypes"].normalize_()
        self.teacher["prototypes"].normalize_()

    def cancel_last_layer_gradients(self) -> None:  # no DINO last layer here
        pass

    # ----------------------------------------------------------------- the step
    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> tuple[torch.Tensor, dict[str, Any]]:
        m = self.cfg.method
        clips = normalize(views[0])  # (B, T, 3, S, S)
        B, T = clips.shape[:2]
        with torch.no_grad():
            _, tokens = self.teacher["backbone"].encode(clips.flatten(0, 1))  # (B*T, N, D)
            N, D = tokens.shape[1:]
            h, w = clips.shape[-2] // self.teacher["backbone"].patch_size, clips.shape[-1] // self.teacher["backbone"].patch_size
            first = tokens.view(B, T, N, D)[:, 0]
            teacher_scores = prototype_scores(self.teacher["head"](first), self.teacher["prototypes"].weight)  # (B, N, K)
            assignment = first_frame_assignment(teacher_scores, m.sinkhorn_iters, m.sinkhorn_eps)  # (B, N, K)
            K = assignment.shape[-1]
            grid = tokens.view(B, T, h, w, D).permute(0, 1, 4, 2, 3)  # (B, T, D, h, w)
            maps = forward_features(
                grid, assignment.transpose(1, 2).reshape(B, K, h, w), context=m.timet_prop_context,
                radius=m.timet_prop_radius, topk=m.timet_prop_topk, temperature=m.timet_prop_temp,
            )  # (B, T, K, h, w)
        _, last_tokens = self.student["backbone"].encode(clips[:, -1])  # (B, N, D), gradient from the trainable blocks
        student_scores = prototype_scores(self.student["head"](last_tokens), self.student["prototypes"].weight)
        loss = alignment_loss(student_scores, maps[:, -1], m.student_temp)
        with torch.no_grad():
            targets = maps[:, -1].reshape(B, K, N).argmax(dim=1)
            # distinct pseudo-labels in the batch (a collapse shows as 1) and the student's agreement,
            # read back in one device sync
            used = (torch.bincount(targets.flatten(), minlength=K) > 0).sum().float()
            agreement = (student_scores.argmax(-1) == targets).float().mean()
            clusters_used, agreement = torch.stack([used, agreement]).tolist()
        return loss, {"clusters_used": clusters_used, "agreement": agreement}
