"""Video data: sample video, readers, frame store + ingest, clip index and samplers, training data.

The names below are imported on first use, so `vidssl ingest` (and a process that only reads
a store) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DecodeLimitError": "vidssl.data.errors",
    "StoreError": "vidssl.data.errors",
    "VideoError": "vidssl.data.errors",
    "sample_video_path": "vidssl.data.sample",
    "TrainingData": "vidssl.data.training",
    "build_training_data": "vidssl.data.training",
}

if TYPE_CHECKING:
    from vidssl.data.errors import DecodeLimitError, StoreError, VideoError
    from vidssl.data.sample import sample_video_path
    from vidssl.data.training import TrainingData, build_training_data


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vidssl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
