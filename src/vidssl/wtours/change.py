"""Frame-to-frame change: the mean absolute luma difference to the previous frame, computed as
ingest computes it (`data/blank.py`), so blank and frozen stretches found here are the ones
`vidssl ingest` will exclude with the same thresholds."""

from __future__ import annotations

import numpy as np

from vidssl.data.blank import BlankThresholds, Stretch, detect_stretches, frame_stats, small_luma


class ChangeMeter:
    """Feed every frame in order; `stats()` is (N, 3): mean luma, luma std, diff to previous."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []
        self.indices: list[int] = []
        self._previous: np.ndarray | None = None
        self._previous_index = -2

    def add(self, index: int, rgb: np.ndarray) -> None:
        luma = small_luma(rgb)
        # after a gap (frames that did not decode) there is no "previous" to compare with
        prev = self._previous if index == self._previous_index + 1 else None
        self.rows.append(frame_stats(luma, prev))
        self.indices.append(index)
        self._previous, self._previous_index = luma, index

    def stats(self) -> np.ndarray:
        return np.asarray(self.rows, np.float32).reshape(-1, 3)


def stretches(stats: np.ndarray, fps: float, thresholds: BlankThresholds = BlankThresholds()) -> list[Stretch]:
    """Blank and frozen stretches, by `data.blank.detect_stretches` (position in `stats`)."""
    return detect_stretches(stats, fps, thresholds)


def finite_diffs(stats: np.ndarray) -> np.ndarray:
    """The diff column with the first frame's (and any post-gap frame's) inf as NaN, for plots."""
    d = stats[:, 2].astype(np.float64).copy()
    d[~np.isfinite(d)] = np.nan
    return d
