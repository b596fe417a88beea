"""Frame store: every frame of one or more videos as JPEG bytes in a few large shard files.

Layout (written by `vidssl.data.ingest`):
  STORE/store.json                 manifest, written last and atomically: the store is complete
                                   exactly when this file exists with "complete": true
  STORE/v000/shard-00000.jpg ...   concatenated JPEG frames (about 1000 per shard)
  STORE/v000/index.npy             (N, 4) int64: shard, byte offset, byte length, crc32
  STORE/v000/stats.npy             (N, 3) float32: mean luma, luma std, diff to previous frame
  STORE/v000/timestamps.npy        (N,) float64: presentation time of each frame in the source
Any frame is one `pread` and one JPEG decode: constant time, no decoder state. Why JPEG
rather than a short-GOP re-encode: docs/data.md (measured there).

Integrity: on open every shard's size and a hash of its first, middle and last 64 KiB are
checked against the manifest (fast even for a 100 GB store), and index.npy, stats.npy and
timestamps.npy are hashed whole (a few MB for hours of video); every frame's crc32 is checked
when it is read; `verify(full=True)` hashes every byte.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vidssl.data.errors import StoreError

FORMAT = "vidssl-frame-store"
VERSION = 1
MANIFEST = "store.json"
SAMPLE_BYTES = 64 * 1024


def sample_hash(path: Path) -> str:
    """blake2b of the size and of the first, middle and last 64 KiB of a file."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=16)
    with open(path, "rb") as f:
        for pos in sorted({0, max(0, size // 2 - SAMPLE_BYTES // 2), max(0, size - SAMPLE_BYTES)}):
            f.seek(pos)
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def file_hash(path: Path, algo: str = "blake2b") -> str:
    """Hash of every byte of a file (blake2b for shards, sha256 for sources)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


_TV_DECODE: Any = None


def _torchvision_decoder() -> Any:
    """torchvision's libjpeg-turbo decoder (about 30% faster than PIL at 512 px, docs/data.md),
    imported on first use; False if torchvision has none (it may drop its decoders)."""
    global _TV_DECODE
    if _TV_DECODE is None:
        try:
            import torch
            from torchvision.io import ImageReadMode, decode_jpeg as tv_decode

            def _decode(data: bytes) -> np.ndarray:
                t = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
                return t.permute(1, 2, 0).numpy()

            _TV_DECODE = _decode
        except ImportError:  # pragma: no cover
            _TV_DECODE = False
    return _TV_DECODE


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, 3)."""
    decode = _torchvision_decoder()
    if decode:
        with warnings.catch_warnings():  # torchvision >= 0.29 marks its decoders deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode(data)
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class FrameStore:
    """An opened, complete frame store."""

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        self.videos: list[dict] = manifest["videos"]

    def video_dir(self, video: int) -> Path:
        return self.root / self.videos[video]["dir"]

    def reader(self, video: int) -> "StoreReader":
        return StoreReader(self, video)

    def index(self, video: int) -> np.ndarray:
        return np.load(self.video_dir(video) / "index.npy")

    def stats(self, video: int) -> np.ndarray:
        return np.load(self.video_dir(video) / "stats.npy")

    def timestamps(self, video: int) -> np.ndarray:
        return np.load(self.video_dir(video) / "timestamps.npy")

    def verify(self, full: bool = False) -> None:
        """StoreError naming the first file that is missing, truncated or changed since ingest."""
        for v, meta in enumerate(self.videos):
            vdir = self.video_dir(v)
            for name in ("index.npy", "stats.npy", "timestamps.npy"):
                p = vdir / name
                if not p.is_file():
                    raise StoreError(f"{p}: missing from the store (re-run vidssl ingest)")
                want = meta["files"].get(name)
                if want is not None and p.stat().st_size != want:
                    raise StoreError(f"{p}: is {p.stat().st_size} bytes, ingest wrote {want}; the store was modified")
                # Stores written before "file_hashes" existed get the size check only (docs/data.md).
                digest = meta.get("file_hashes", {}).get(name)
                if digest is not None and file_hash(p) != digest:
                    raise StoreError(f"{p}: content differs from what ingest wrote; the store was modified "
                                     "(re-run vidssl ingest)")
            for shard in meta["shards"]:
                p = vdir / shard["file"]
                if not p.is_file():
                    raise StoreError(f"{p}: shard missing from the store (re-run vidssl ingest)")
                size = p.stat().st_size
                if size != shard["bytes"]:
                    raise StoreError(
                        f"{p}: is {size} bytes, ingest wrote {shard['bytes']}; the store was truncated or modified"
                    )
                if sample_hash(p) != shard["sample_hash"]:
                    raise StoreError(f"{p}: content differs from what ingest wrote; the store was modified")
                if full and file_hash(p) != shard["blake2b"]:
                    raise StoreError(f"{p}: content differs from what ingest wrote (full check); the store was modified")


def open_store(path: str | Path, verify: bool = True) -> FrameStore:
    """Open a complete store (StoreError if missing, unfinished or modified)."""
    root = Path(path)
    if not root.exists():
        raise StoreError(f"{root}: no such frame store")
    if not root.is_dir():
        raise StoreError(f"{root}: is a file, not a frame store directory (write one with vidssl ingest)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        if any(root.glob("v*/progress.json")):
            raise StoreError(f"{root}: ingest did not finish; run the same vidssl ingest command again to resume it")
        raise StoreError(f"{root}: not a frame store (no {MANIFEST}); write one with vidssl ingest")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{mpath}: unreadable ({e}); the store was modified") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise StoreError(f"{mpath}: not a {FORMAT} v{VERSION} manifest")
    if not manifest.get("complete"):
        raise StoreError(f"{root}: ingest did not finish; run the same vidssl ingest command again to resume it")
    store = FrameStore(root, manifest)
    if verify:
        store.verify(full=False)
    return store


class StoreReader:
    """Random access to the frames of one video of a store; keeps its shard files open."""

    def __init__(self, store: FrameStore, video: int):
        self.store, self.video = store, video
        self.dir = store.video_dir(video)
        self.index = store.index(video)  # (N, 4)
        self.shards = [s["file"] for s in store.videos[video]["shards"]]
        self.fps = float(store.videos[video]["fps"])
        self._fds: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            fd = self._fds[shard] = os.open(self.dir / self.shards[shard], os.O_RDONLY)
        return fd

    def read_bytes(self, i: int) -> bytes:
        shard, offset, length, crc = (int(x) for x in self.index[i])
        data = os.pread(self._fd(shard), length, offset)
        if len(data) != length or (zlib.crc32(data) & 0xFFFFFFFF) != crc:
            raise StoreError(f"{self.dir / self.shards[shard]}: frame {i} is damaged (crc mismatch); the store was modified")
        return data

    def read(self, indices: list[int]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """({index: uint8 (H, W, 3)}, {index: why it could not be read})."""
        out, missing = {}, {}
        for i in sorted(set(int(i) for i in indices)):
            if not 0 <= i < len(self.index):
                missing[i] = f"outside the store's {len(self.index)} frames"
                continue
            try:
                out[i] = decode_jpeg(self.read_bytes(i))
            except StoreError as e:
                missing[i] = str(e)
            except Exception as e:
                missing[i] = f"JPEG decode error ({type(e).__name__}: {e})"
        return out, missing
