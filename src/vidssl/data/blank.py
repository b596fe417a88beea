"""Blank and frozen stretches: per-frame statistics and the runs they form.

Ingest computes three numbers per frame on a small greyscale copy (cheap, and robust to
compression noise): mean luma, luma standard deviation, and mean absolute difference to the
previous frame. A frame is *blank* when it is near-black or near-constant, *frozen* when it
barely differs from the previous one. Runs of blank frames longer than `blank_seconds`, or of
frozen frames longer than `frozen_seconds`, are excluded from the clip index (the Walking
Tours Venice file runs on with blank frames for about half its nominal length, SPEC 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAT_WIDTH = 64  # frames are reduced to this width before the statistics


@dataclass(frozen=True)
class BlankThresholds:
    black_mean: float = 16.0  # mean luma (0-255) below this: near-black
    flat_std: float = 3.0  # luma std below this: near-constant (a flat colour)
    frozen_diff: float = 0.25  # mean |luma - previous| below this: frozen
    blank_seconds: float = 2.0
    frozen_seconds: float = 5.0


def small_luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 luma of every k-th pixel, about STAT_WIDTH wide. Plain
    subsampling (no averaging): the statistics are means over many pixels, and it keeps ingest cheap."""
    step = max(1, rgb.shape[1] // STAT_WIDTH)
    small = rgb[::step, ::step].astype(np.float32)
    return small @ np.array([0.299, 0.587, 0.114], np.float32)


def frame_stats(luma: np.ndarray, previous: np.ndarray | None) -> tuple[float, float, float]:
    """(mean, std, mean abs diff to previous; inf for the first frame)."""
    diff = float(np.abs(luma - previous).mean()) if previous is not None and previous.shape == luma.shape else float("inf")
    return float(luma.mean()), float(luma.std()), diff


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True in a boolean array."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    edges = np.flatnonzero(f[1:] != f[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


@dataclass(frozen=True)
class Stretch:
    kind: str  # "blank" | "frozen"
    start: int
    end: int  # exclusive

    def describe(self, fps: float) -> str:
        return (f"{self.kind} frames {self.start}-{self.end - 1} "
                f"({_clock(self.start / fps)}-{_clock(self.end / fps)}, {(self.end - self.start) / fps:.1f} s)")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def detect_stretches(stats: np.ndarray, fps: float, th: BlankThresholds = BlankThresholds()) -> list[Stretch]:
    """Blank and frozen runs long enough to exclude. `stats` is (N, 3): mean, std, diff."""
    stats = np.asarray(stats, dtype=np.float32).reshape(-1, 3)
    mean, std, diff = stats[:, 0], stats[:, 1], stats[:, 2]
    blank = (mean < th.black_mean) | (std < th.flat_std)
    # a frozen run starts at the frame its successors repeat, hence the shift by one
    frozen_next = np.concatenate([diff[1:] < th.frozen_diff, [False]])
    frozen = (frozen_next | np.concatenate([[False], diff[1:] < th.frozen_diff])) & ~blank
    out = [Stretch("blank", a, b) for a, b in runs(blank) if b - a >= th.blank_seconds * fps]
    out += [Stretch("frozen", a, b) for a, b in runs(frozen) if b - a >= th.frozen_seconds * fps]
    return sorted(out, key=lambda s: s.start)
