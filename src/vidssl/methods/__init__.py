"""Self-supervised methods by `method.name`."""

from __future__ import annotations

import importlib

from vidssl.config import Config
from vidssl.methods.base import Method, StepInfo

REGISTRY = {
    "dino": "vidssl.methods.dino:DINO",
    "dora": "vidssl.methods.dora:DoRA",
}


def build_method(cfg: Config) -> Method:
    module_name, class_name = REGISTRY[cfg.method.name].split(":")
    return getattr(importlib.import_module(module_name), class_name)(cfg)


__all__ = ["Method", "StepInfo", "build_method"]
