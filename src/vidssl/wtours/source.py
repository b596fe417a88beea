"""Frames of one input, front to back: a video file (decoded once, streaming) or one video of a
frame store (its stored JPEG frames: the original is never decoded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from vidssl.data.errors import VideoError
from vidssl.data.store import MANIFEST, open_store
from vidssl.data.video import iter_frames, probe_video, resized_size


@dataclass(frozen=True)
class Input:
    """One analysable video: a file, or video `video` of the store at `path`."""

    path: Path
    name: str
    fps: float
    num_frames: int  # what the header (or the store) says
    width: int
    height: int
    video: int | None = None  # index in the store; None for a file

    @property
    def kind(self) -> str:
        return "video" if self.video is None else "store"


def is_store(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open_inputs(path: str | Path) -> list[Input]:
    """A file is one input; a store is one input per video it holds."""
    p = Path(path)
    if p.is_dir():
        store = open_store(p)  # StoreError for a folder that is not a complete store
        out = []
        for v, meta in enumerate(store.videos):
            name = Path(meta["source"]["name"]).stem
            out.append(Input(p, name if len(store.videos) == 1 else f"{p.name}/{name}", float(meta["fps"]),
                             int(meta["num_frames"]), int(meta["width"]), int(meta["height"]), v))
        return out
    info = probe_video(p)
    return [Input(p, p.stem, info.fps, info.num_frames, info.width, info.height)]


def _downscale(rgb: np.ndarray, short_side: int) -> np.ndarray:
    w, h = resized_size(rgb.shape[1], rgb.shape[0], short_side)
    if (w, h) == (rgb.shape[1], rgb.shape[0]):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BOX))


def stream_frames(inp: Input, short_side: int = 224, chunk: int = 64) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, seconds, uint8 (H, W, 3) with the short side at most `short_side`) of every
    frame that decodes, in order. Store times are the source's presentation times."""
    if inp.video is None:
        for i, rgb in iter_frames(inp.path, short_side=short_side):
            yield i, i / inp.fps if inp.fps else float(i), rgb
        return
    store = open_store(inp.path, verify=False)
    reader = store.reader(inp.video)
    times = store.timestamps(inp.video)
    t0 = float(times[0]) if len(times) else 0.0
    try:
        for a in range(0, len(reader), chunk):
            got, _ = reader.read(list(range(a, min(a + chunk, len(reader)))))
            for i in sorted(got):
                yield i, float(times[i]) - t0, _downscale(got[i], short_side)
    finally:
        reader.close()


def check_input(path: str | Path) -> None:
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: no such video file or frame store")
