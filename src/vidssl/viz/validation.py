"""Validation during training (`vidssl pretrain --val-davis DIR / --val-voc DIR`): the teacher's
unsupervised segmentation mIoU (TimeT's k-means protocol, `vidssl.eval.unsup_seg`) every few
epochs, logged to `validation_LAYOUT.jsonl`, plotted in `validation_LAYOUT.png`, and the best
teacher so far exported beside the last checkpoint as `best_LAYOUT_encoder.safetensors` (+
`best_LAYOUT.json`), LAYOUT being davis or voc (both may run in one training).

The score that picks the best is the first protocol's mIoU: clip-wise for DAVIS (cluster ids
must hold through a clip, what TimeT tunes for), frame-wise for VOC.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from vidssl.engine.callbacks import Callback
from vidssl.io import write_json

PROTOCOLS = {"davis": ["clip", "frame"], "voc": ["frame", "dataset"]}


class SegmentationValidation(Callback):
    def __init__(self, data: str | Path, layout: str, every: int = 1, input_size: int = 224,
                 eval_size: int = 112) -> None:
        if layout not in PROTOCOLS:
            raise ValueError(f"validation layout {layout!r}; valid: {', '.join(PROTOCOLS)}")
        self.data, self.layout, self.every = Path(data), layout, every
        self.input_size, self.eval_size = input_size, eval_size

    def on_epoch_end(self, trainer) -> None:
        if self.every < 1 or trainer.epoch % self.every:
            return
        from vidssl.eval.unsup_seg import evaluate_unsup_seg

        vit = trainer.method.teacher["backbone"].vit
        size = self.input_size - self.input_size % trainer.method.teacher["backbone"].patch_size
        # the run's randomness must not depend on validation (exact resume): k-means is seeded by
        # faiss, and the global RNGs are put back as they were
        states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
        try:
            result = evaluate_unsup_seg(vit, self.data, self.layout, protocols=PROTOCOLS[self.layout],
                                        input_size=size, eval_size=self.eval_size, num_workers=0, cache=False)
        finally:
            torch.random.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
        row = {"epoch": trainer.epoch, "step": trainer.step, "layout": self.layout, "data": str(self.data),
               **{f"{p}_mIoU": result["metrics"][p]["mIoU"] for p in PROTOCOLS[self.layout]}}
        run_dir, name = Path(trainer.run_dir), self.layout
        with open(run_dir / f"validation_{name}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        score_key = f"{PROTOCOLS[self.layout][0]}_mIoU"
        best = read_best(run_dir, name)
        if best is None or row[score_key] > best[score_key]:
            from vidssl.hub import export_encoder

            export_encoder(vit, run_dir / f"best_{name}_encoder.safetensors")
            write_json(run_dir / f"best_{name}.json", {**row, "score": score_key})
        plot_validation(run_dir / f"validation_{name}.jsonl", run_dir / f"validation_{name}.png")
        print(f"validation epoch {trainer.epoch}: " + ", ".join(
            f"{p} mIoU {row[f'{p}_mIoU']:.2f}" for p in PROTOCOLS[self.layout]), flush=True)


def read_best(run_dir: Path, layout: str) -> dict | None:
    path = Path(run_dir) / f"best_{layout}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def plot_validation(rows_path: Path, out_png: Path) -> Path:
    """mIoU per protocol against the epoch, the best epoch marked."""
    from vidssl.io import read_jsonl
    from vidssl.viz.plots import plt, save_figure

    rows = read_jsonl(rows_path)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    keys = [k for k in rows[0] if k.endswith("_mIoU")]
    for k in keys:
        ax.plot([r["epoch"] for r in rows], [r[k] for r in rows], marker="o", label=k.replace("_mIoU", "-wise"))
    best = max(rows, key=lambda r: r[keys[0]])
    ax.axvline(best["epoch"], color="grey", linestyle=":", label=f"best (epoch {best['epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"unsupervised segmentation on {Path(rows[0]['data']).name} ({rows[0]['layout']})")
    return save_figure(fig, out_png, dpi=110)
