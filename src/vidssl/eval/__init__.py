"""Evaluations of frozen encoders, callable from Python. Each `evaluate_*` takes an encoder (a timm
ViT, a vidssl `Encoder`, or anything `vidssl.hub.load_encoder` accepts: an export, a run
directory, a checkpoint, `random:NAME`), dataset paths and the protocol's parameters as keywords,
and returns the plain JSON-ready dict that `vidssl eval ... --json` writes:

    from vidssl.eval import evaluate_knn
    r = evaluate_knn("enc.safetensors", "imagenet/train", "imagenet/val")
    r["metrics"]["top1@20"]

evaluate_knn        DINO weighted k-NN (SPEC 4.1)                      knn.py
evaluate_linear     DINO linear probe, full or fast mode (SPEC 4.2)    linear.py
evaluate_davis      DAVIS-2017 label propagation, J&F (SPEC 4.3)       davis.py (+ davis_metrics, palette)
evaluate_unsup_seg  k-means segmentation, mIoU (SPEC 4.5)              unsup_seg.py (+ seg_data: VOC/DAVIS/ADE20k)
evaluate_semseg     linear semantic segmentation, mIoU (VOC, ADE20k)   semseg.py
evaluate_objdisc    LOST single-object discovery, CorLoc               objdisc.py
evaluate_track      GOT-10k tracking, AO / SR0.5 / SR0.75 (no training) track.py
evaluate_suite      encoders x a suite of evaluations: report.md/json/png suite.py

datasets      ImageFolder reading, images, eval transforms, dataset-name checks
features      the encoder to evaluate, feature functions, the feature cache and its key
report        plain dicts, one-line warnings (EvalWarning), the command's JSON and headline

The names are imported on first use, so `from vidssl.eval import evaluate_knn` loads only k-NN's
modules. vidssl.eval imports models, data, ops, hub and io, never methods, engine or cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOMES = {
    "evaluate_knn": "vidssl.eval.knn",
    "evaluate_linear": "vidssl.eval.linear",
    "evaluate_davis": "vidssl.eval.davis",
    "evaluate_unsup_seg": "vidssl.eval.unsup_seg",
    "evaluate_semseg": "vidssl.eval.semseg",
    "evaluate_objdisc": "vidssl.eval.objdisc",
    "evaluate_track": "vidssl.eval.track",
    "evaluate_suite": "vidssl.eval.suite",
    "EvalWarning": "vidssl.eval.report",
    "DatasetError": "vidssl.eval.datasets",
}

__all__ = sorted(_HOMES)

if TYPE_CHECKING:
    from vidssl.eval.datasets import DatasetError
    from vidssl.eval.davis import evaluate_davis
    from vidssl.eval.knn import evaluate_knn
    from vidssl.eval.linear import evaluate_linear
    from vidssl.eval.objdisc import evaluate_objdisc
    from vidssl.eval.report import EvalWarning
    from vidssl.eval.semseg import evaluate_semseg
    from vidssl.eval.suite import evaluate_suite
    from vidssl.eval.track import evaluate_track
    from vidssl.eval.unsup_seg import evaluate_unsup_seg


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'vidssl.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
