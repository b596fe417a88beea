"""Plots of a run: the loss curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from vidssl.io import atomic_write, read_jsonl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: "plt.Figure", path: Path, dpi: int = 100) -> Path:
    """Lay out, write (atomically, creating the folder) and close a figure."""
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
    finally:
        plt.close(fig)


def plot_loss_curve(metrics_path: Path, out_png: Path) -> Path:
    """Loss (and learning rate on a second axis) against optimizer step."""
    rows = [r for r in read_jsonl(metrics_path) if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    window = max(1, len(rows) // 20)
    if window > 1:  # small batches make single steps noisy: show the trend over it
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8)
        smooth = np.convolve(losses, np.full(window, 1.0 / window), mode="valid")
        ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"loss (mean of {window} logs)")
    else:
        ax.plot(steps, losses, color="tab:blue", label="loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss", color="tab:blue")
    ax.grid(alpha=0.3)
    if rows and "lr" in rows[0]:
        ax2 = ax.twinx()
        ax2.plot(steps, [r["lr"] for r in rows], color="tab:orange", alpha=0.7, label="lr")
        ax2.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(f"training loss ({Path(metrics_path).parent.name})")
    return save_figure(fig, out_png, dpi=110)
