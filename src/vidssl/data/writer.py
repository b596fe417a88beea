"""The one video writer: the sample video, pictures (tracks, segmentation), test fixtures, benchmarks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from vidssl.io import atomic_write


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25, codec: str = "libx264",
                gop: int = 12, crf: int = 20, preset: str = "veryfast", faststart: bool = True,
                format: str | None = None) -> Path:
    """Encode uint8 (H, W, 3) frames, atomically (`vidssl.io`): a video container through PyAV, or
    a `.gif` through Pillow. Odd sizes are cropped by one pixel for yuv420p; fractional fps (29.97)
    are kept as a fraction. MP4 gets its index first (`faststart`), so a file cut short still
    opens, as files from cameras and downloads usually do."""
    path = Path(path)
    kind = (format or path.suffix.lstrip(".")).lower()
    if kind == "gif":
        return atomic_write(path, lambda tmp: _write_gif(tmp, frames, fps))
    return atomic_write(path, lambda tmp: _encode(tmp, frames, Fraction(fps).limit_denominator(1001), codec, gop, crf,
                                                  preset, faststart and kind in ("mp4", "mov"), format))


def _encode(path: Path, frames: Iterable[np.ndarray], fps: Fraction, codec: str, gop: int, crf: int, preset: str,
            faststart: bool, format: str | None) -> None:
    import av

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=format, options=options) as out:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2  # yuv420p: even sizes
                stream.pix_fmt = "yuv420p"
                stream.codec_context.gop_size = gop
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": preset}
            rgb = np.ascontiguousarray(rgb[: stream.height, : stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)


def _write_gif(path: Path, frames: Iterable[np.ndarray], fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    if not images:
        raise ValueError("no frames to write")
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)


def moving_frames(n: int, width: int = 96, height: int = 64, seed: int = 0, black_from: int | None = None,
                  frozen: tuple[int, int] | None = None) -> Iterable[np.ndarray]:
    """`n` frames of a textured backdrop scrolling under a moving bright square: every frame
    differs. Frames from `black_from` on are black; frames in `frozen` = [a, b) repeat frame a."""
    rng = np.random.default_rng(seed)
    tile = rng.integers(0, 256, size=(height // 4 + 1, (width + n) // 4 + 2, 3), dtype=np.uint8)
    backdrop = np.repeat(np.repeat(tile, 4, axis=0), 4, axis=1)[:height]
    held = None
    for i in range(n):
        if black_from is not None and i >= black_from:
            yield np.zeros((height, width, 3), np.uint8)
            continue
        if frozen and frozen[0] < i < frozen[1] and held is not None:
            yield held
            continue
        frame = backdrop[:, i : i + width].copy()
        s = max(4, height // 5)
        y = (i * 3) % (height - s)
        x = (i * 5) % (width - s)
        frame[y : y + s, x : x + s] = (255, 255 - (i * 7) % 256, (i * 13) % 256)
        if frozen and i == frozen[0]:
            held = frame
        yield frame
