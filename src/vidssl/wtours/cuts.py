"""Scene cuts with PySceneDetect's content detector (the paper used PySceneDetect, SPEC §2),
fed frame by frame from our own decoder or a frame store, so a store needs no original."""

from __future__ import annotations

import inspect
from fractions import Fraction

import numpy as np

from vidssl.errors import VidsslError

SCENES_EXTRA = "the `scenes` extra is needed for cut detection: pip install 'vidssl[scenes]' (PySceneDetect)"


class CutDetector:
    """Content-detector cuts: `add(index, rgb)` for every frame in order, then `finish()` gives
    the frame indices where a new shot starts. Defaults are PySceneDetect's (threshold 27,
    minimum shot 15 frames)."""

    def __init__(self, fps: float, threshold: float = 27.0, min_scene_len: int = 15):
        try:
            from scenedetect import FrameTimecode
            from scenedetect.detectors import ContentDetector
        except ImportError as e:
            raise VidsslError(f"{SCENES_EXTRA} ({e})") from None
        # 0.7 wants an exact rate (an int fps is a TypeError); 0.6 takes a float
        self.fps = Fraction(fps if fps > 0 else 1.0).limit_denominator(1001)
        self.detector = ContentDetector(threshold=threshold, min_scene_len=min_scene_len)
        # 0.6 passes frame numbers, 0.7 passes FrameTimecodes, to process_frame and post_process
        first = next(iter(inspect.signature(self.detector.process_frame).parameters))
        if first == "timecode":
            self._at = lambda i: FrameTimecode(i, fps=self.fps)
        else:
            self._at = int
        self.cuts: list[int] = []
        self._last = 0

    @staticmethod
    def _frame(c) -> int:
        return int(getattr(c, "frame_num", c))

    def add(self, index: int, rgb: np.ndarray) -> None:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        found = self.detector.process_frame(self._at(index), bgr)
        self.cuts.extend(self._frame(c) for c in found)
        self._last = index

    def finish(self) -> list[int]:
        found = self.detector.post_process(self._at(self._last))
        self.cuts.extend(self._frame(c) for c in found)
        return sorted(set(c for c in self.cuts if c > 0))
