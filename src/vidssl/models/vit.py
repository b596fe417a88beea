"""Backbone factory: timm VisionTransformers with names and weights the field can load."""

from __future__ import annotations

import timm
import torch.nn as nn

from vidssl.models.mimetic import mimetic_qk_init
from vidssl.registry import ARCHS


def timm_model_name(arch: str, patch_size: int) -> str:
    """The timm registry name of an architecture, e.g. ('vit_small', 16) -> 'vit_small_patch16_224'.

    vit_tiny/8 has no registered name; it is built from the /16 entry with `patch_size=8`,
    which is why exported metadata always carries `patch_size` next to the name.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture '{arch}'; valid: {', '.join(ARCHS)}")
    return f"{arch}_patch{patch_size}_224"


def create_vit(arch: str, patch_size: int = 16, drop_path: float = 0.0, attn_init: str = "timm") -> nn.Module:
    """A randomly initialised timm ViT without a classifier.

    attn_init: "timm" keeps timm's initialisation; "mimetic" re-initialises every block's query
    and key projections (`vidssl.models.mimetic`).

    The position-embedding grid is always the one of 224 px, and `dynamic_img_size` lets the
    same weights run at any multiple of the patch size (crops of 96, 112, 64 px ...). So the
    exported state dict loads into `timm.create_model(name, num_classes=0)` unchanged.
    """
    name = timm_model_name(arch, patch_size)
    kwargs = dict(pretrained=False, num_classes=0, drop_path_rate=drop_path, dynamic_img_size=True)
    if name not in timm.list_models():
        kwargs["patch_size"] = patch_size
        name = timm_model_name(arch, 16)
    vit = timm.create_model(name, **kwargs)
    if attn_init == "mimetic":
        mimetic_qk_init(vit)
    elif attn_init != "timm":
        raise ValueError(f"unknown attention initialisation {attn_init!r}; valid: 'timm', 'mimetic'")
    return vit
