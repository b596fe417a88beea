"""Frame folders: one folder of JPEG frames per video (the DAVIS / YouTube-VOS `JPEGImages` layout).

Frames are the folder's `.jpg`/`.jpeg` files in name order (`00000.jpg`, `00005.jpg`, ... sorted
as numbers where the names are numbers, so `10.jpg` follows `9.jpg`). A folder is a video to the
rest of vidssl: `probe_frame_folder` gives the same `VideoInfo` as `probe_video`, and
`FrameFolderReader.read` the same ({index: uint8 (H, W, 3)}, {index: why it is missing}) as the
video readers, so the clip index, samplers and loader use it unchanged. A frame that fails to
decode is reported missing (its clip is skipped and counted), never raised.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from vidssl.data.errors import VideoError
from vidssl.data.video import VideoInfo, resized_size

FRAME_SUFFIXES = (".jpg", ".jpeg")
NOMINAL_FPS = 0.0  # a folder of frames has no frame rate; 0 means unknown (as for probe_video's streams without one)


def _order(path: Path) -> tuple:
    digits = re.fullmatch(r"\d+", path.stem)
    return (0, int(path.stem), path.name) if digits else (1, 0, path.name)


def frame_files(folder: str | Path) -> list[Path]:
    """The folder's JPEG frames in frame order; a missing, non-folder or frameless path is a `VideoError`."""
    p = Path(folder)
    if not p.exists():
        raise VideoError(f"{p}: no such folder")
    if not p.is_dir():
        raise VideoError(f"{p}: not a folder of frames")
    files = sorted((f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES and f.is_file()), key=_order)
    if not files:
        raise VideoError(f"{p}: no JPEG frames (.jpg or .jpeg) in the folder")
    return files


def is_frame_folder(path: str | Path) -> bool:
    return Path(path).is_dir()


def probe_frame_folder(folder: str | Path) -> VideoInfo:
    """Frame count and size (of the first frame) of a frame folder."""
    files = frame_files(folder)
    try:
        with Image.open(files[0]) as im:
            width, height = im.size
    except Exception as e:  # noqa: BLE001 - PIL raises many types for a broken file
        raise VideoError(f"{files[0]}: cannot be read as an image ({type(e).__name__}: {e})") from None
    return VideoInfo(str(Path(folder)), len(files), NOMINAL_FPS, width, height, "jpeg")


class FrameFolderReader:
    """Reads frames of one folder by index; every frame comes out at the first frame's size
    (downscaled to `short_side` if given), so the frames of a clip always stack."""

    def __init__(self, folder: str | Path, short_side: int | None = None, **_: object) -> None:
        self.folder = Path(folder)
        self.files = frame_files(folder)
        info = probe_frame_folder(folder)
        self.size = resized_size(info.width, info.height, short_side)  # (width, height)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, path: Path) -> np.ndarray:
        with Image.open(path) as im:
            im.draft("RGB", self.size)  # JPEG: decode at a power-of-two reduction when that suffices
            im = im.convert("RGB")
            if im.size != self.size:
                im = im.resize(self.size, Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)

    def read(self, indices: list[int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        got: dict[int, np.ndarray] = {}
        lost: dict[int, str] = {}
        for i in indices:
            if not 0 <= i < len(self.files):
                lost[i] = f"no frame {i} (the folder has {len(self.files)})"
                continue
            try:
                got[i] = self._load(self.files[i])
            except Exception as e:  # noqa: BLE001 - a truncated or broken JPEG: report, do not raise
                lost[i] = f"{self.files[i].name}: {type(e).__name__}: {e}"
        return got, lost

    def close(self) -> None:
        pass
