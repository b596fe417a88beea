"""What a self-supervised method supplies to the engine; everything else is the engine's.

A method owns: its student and teacher networks (`student`, `teacher`, each an
`nn.ModuleDict` with `backbone` (an `Encoder`) and `head`), the transform that turns a
uint8 clip into views (run in data-loader workers, or split between them and the training
device: `aug.device`, `views_on_device`), and the loss. The engine owns the
optimiser, schedules, EMA of the teacher, precision, devices, checkpoints and logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from vidssl.config import Config, ConfigError
from vidssl.data.transforms import ClipViews, LoaderStage
from vidssl.models import DINOHead, Encoder, create_vit


@dataclass
class StepInfo:  # not frozen: Fabric rebuilds dataclass inputs when it converts precision
    """Where training is; schedules that live in the method (teacher temperature) read it."""

    step: int  # optimizer steps done before this one
    epoch: int
    steps_per_epoch: int
    total_steps: int


def resolve_views_device(aug_device: str, accelerator: str) -> str:
    """`aug.device` -> "loader" | "accelerator": auto picks the accelerator when the engine's
    accelerator is (or, for "auto", resolves as Fabric's does to) a non-CPU device."""
    if aug_device != "auto":
        return aug_device
    if accelerator == "auto":
        mps = getattr(torch.backends, "mps", None)
        on_device = torch.cuda.is_available() or bool(mps and mps.is_available())
        return "accelerator" if on_device else "loader"
    return "loader" if accelerator == "cpu" else "accelerator"


def build_student_teacher(cfg: Config) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """Student (with drop path) and teacher (without), same weights at the start (SPEC 1.2)."""
    m = cfg.model

    def network(drop_path: float) -> nn.ModuleDict:
        backbone = Encoder(create_vit(m.arch, m.patch_size, drop_path, m.attn_init))
        head = DINOHead(
            backbone.embed_dim, m.out_dim, m.hidden_dim, m.bottleneck_dim, m.head_layers,
            m.use_bn_in_head, m.norm_last_layer,
        )
        return nn.ModuleDict({"backbone": backbone, "head": head})

    student = network(m.drop_path)
    teacher = network(0.0)
    teacher.load_state_dict(student.state_dict())
    student["backbone"].vit.set_grad_checkpointing(m.grad_checkpointing)  # the teacher never runs backward
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


class Method(nn.Module):
    """Base class. Subclasses set `self.student`, `self.teacher` and implement the two hooks.

    Any state that must survive a resume (e.g. the DINO centre) is a registered buffer, so it
    is part of `state_dict()`. Randomness inside `training_step` uses torch's global RNG, which
    the engine checkpoints.
    """

    student: nn.ModuleDict
    teacher: nn.ModuleDict
    # the EMA skips parameters the student does not train (their teacher copy stays bit-identical)
    ema_only_trainable: bool = False

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg

    def make_transform(self) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        """clip uint8 (T, H, W, 3) -> list of uint8 views, each (T, 3, S, S). Picklable."""
        raise NotImplementedError

    @property
    def views_device(self) -> str:
        """Where this run makes its views: "loader" or "accelerator" (`aug.device` resolved). A
        method whose transform is not a `ClipViews` always uses the loader (under auto)."""
        where = resolve_views_device(self.cfg.aug.device, self.cfg.engine.accelerator)
        if where == "accelerator" and not isinstance(self._views(), ClipViews):
            if self.cfg.aug.device == "accelerator":
                raise ConfigError(f"aug.device=accelerator: method.name={self.cfg.method.name} makes its views in the loader only")
            return "loader"
        return where

    def _views(self) -> Any:
        if "_device_views" not in self.__dict__:  # built once: the views hold only the config
            self.__dict__["_device_views"] = self.make_transform()
        return self.__dict__["_device_views"]

    def make_loader_transform(self) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        """What the data-loader workers run: the whole transform, or under aug.device=accelerator
        its `LoaderStage` (decode-size or pre-cropped uint8 clips and each sample's RNG state)."""
        if self.views_device == "accelerator":
            return LoaderStage(self._views())
        return self.make_transform()

    def views_on_device(
        self, views: list[torch.Tensor], to_device: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[torch.Tensor]:
        """The engine's hook between the loader and `training_step`: the collated loader output ->
        the views on the device. Loader path: each tensor moved as it is. Accelerator path: the rest
        of the views made here, with the loader path's code and draws (`ClipViews.on_device`)."""
        if self.views_device != "accelerator":
            return [to_device(v) for v in views]
        return self._views().on_device(views, to_device)

    def training_step(self, views: list[torch.Tensor], info: StepInfo) -> tuple[torch.Tensor, dict[str, Any]]:
        """views: the collated transform output, each (B, T, 3, S, S) uint8 on the device.
        Returns the scalar loss (gradients flow to the student only) and floats to log."""
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], info: StepInfo) -> tuple[torch.Tensor, dict[str, Any]]:
        # The engine calls the method through Fabric's wrapper (DDP, autocast), hence forward.
        return self.training_step(views, info)

    def cancel_last_layer_gradients(self) -> None:
        """Called by the engine after backward while `optim.freeze_last_layer` epochs last."""
        self.student["head"].cancel_last_layer_gradients()

    def lr_scale(self, name: str) -> float:
        """Factor on the scheduled lr for the student parameter `name` (all 1: one lr)."""
        return 1.0

    def after_optimizer_step(self) -> None:
        """Called after each optimizer step and EMA update (e.g. to re-normalise prototypes)."""
