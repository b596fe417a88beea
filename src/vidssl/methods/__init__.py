"""Self-supervised methods by `method.name`."""

from __future__ import annotations

import importlib

from vidssl.config import Config
from vidssl.methods.base import Method, StepInfo
from vidssl.registry import METHODS


def build_method(cfg: Config) -> Method:
    module_name, class_name = METHODS[cfg.method.name].split(":")
    return getattr(importlib.import_module(module_name), class_name)(cfg)


__all__ = ["Method", "StepInfo", "build_method"]
