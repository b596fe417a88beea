"""Ingest: decode each video once, front to back, into a frame store (see `store.py`).

Decoding is threaded (FFmpeg frame threads) and the resize + JPEG encode of each frame runs in
a small thread pool beside it. Frames are committed in shards: after each shard is written and
fsync'd its index goes to `progress.json`, so an interrupted ingest resumes at the last shard
and an unfinished store is never mistaken for a complete one (the manifest comes last).

Broken input: decoding errors are caught per packet; ingest keeps every frame that decodes,
records where frames were lost (gaps in the timestamps, a missing tail) and always ends,
because each packet is read once and never retried.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vidssl.data.blank import BlankThresholds, Stretch, detect_stretches, frame_stats, small_luma
from vidssl.data.errors import StoreError, VideoError
from vidssl.data.store import FORMAT, MANIFEST, VERSION, file_hash, open_store, sample_hash
from vidssl.data.video import (
    _open_container, _stream_fps, check_video_path, resized_size, timestamps_unusable,
)
from vidssl.errors import first_line
from vidssl.io import ensure_dir, write_json, write_npy

SHARD_FRAMES = 1000


@dataclass
class IngestOptions:
    short_side: int | None = 512  # frames are downscaled (never upscaled) to this short side
    fps: float | None = None  # keep about this many frames per second (None: every frame)
    quality: int = 90  # JPEG quality
    shard_frames: int = SHARD_FRAMES
    threads: int = 2  # resize + encode threads beside the decoder
    thresholds: BlankThresholds = field(default_factory=BlankThresholds)

    def key(self) -> dict:
        """What must match for an interrupted ingest to be resumed rather than restarted."""
        return {"short_side": self.short_side, "fps": self.fps, "quality": self.quality,
                "shard_frames": self.shard_frames}


@dataclass
class VideoReport:
    """What ingest found in one video."""

    name: str
    num_frames: int
    fps: float
    header_frames: int
    lost: list[tuple[int, int]]  # [a, b) source frame numbers that never decoded
    errors: list[str]  # decoding errors, one line each
    stretches: list[Stretch]
    frame_order: str = "pts"  # "pts", or "output order" where the container's timestamps are unusable

    @property
    def lost_frames(self) -> int:
        return sum(b - a for a, b in self.lost)

    def lines(self) -> list[str]:
        out = [f"{self.name}: {self.num_frames} frames kept at {self.fps:g} fps (header says {self.header_frames})"]
        if self.frame_order != "pts":
            out.append("  frames indexed by decode output order: the container has no usable presentation timestamps")
        if self.lost:
            where = ", ".join(f"{a}-{b - 1}" for a, b in self.lost[:10]) + (" ..." if len(self.lost) > 10 else "")
            out.append(f"  lost {self.lost_frames} frames (source frame numbers {where})")
        for e in self.errors[:5]:
            out.append(f"  decode error: {e}")
        if len(self.errors) > 5:
            out.append(f"  ... {len(self.errors) - 5} more decode errors")
        if not self.stretches:
            out.append("  no blank or frozen stretches")
        for s in self.stretches:
            out.append(f"  excluded {s.describe(self.fps)}")
        return out


def source_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "name": path.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Hasher(threading.Thread):
    """sha256 of the source file, computed beside the decoding."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.digest = path, ""

    def run(self) -> None:
        self.digest = file_hash(self.path, "sha256")


def _encode(frame, size: tuple[int, int], resize: bool, quality: int) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    if resize:
        rgb = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), small_luma(rgb)


class _ShardWriter:
    def __init__(self, vdir: Path, number: int):
        self.vdir, self.number = vdir, number
        self.file = vdir / f"shard-{number:05d}.jpg"
        self.f = open(self.file, "wb")
        self.rows: list[tuple[int, int, int]] = []
        self.stats: list[tuple[float, float, float]] = []
        self.times: list[float] = []
        self.offset = 0
        self.last_luma: np.ndarray | None = None
        self.last_pts: int | None = None
        self.last_src: int = -1

    def add(self, data: bytes, stats: tuple[float, float, float], t: float) -> None:
        self.f.write(data)
        self.rows.append((self.offset, len(data), zlib.crc32(data) & 0xFFFFFFFF))
        self.offset += len(data)
        self.stats.append(stats)
        self.times.append(t)

    def commit(self) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        stem = self.file.with_suffix("")
        write_npy(Path(f"{stem}.idx.npy"), np.asarray(self.rows, dtype=np.int64).reshape(-1, 3))
        write_npy(Path(f"{stem}.stats.npy"), np.asarray(self.stats, dtype=np.float32).reshape(-1, 3))
        write_npy(Path(f"{stem}.ts.npy"), np.asarray(self.times, dtype=np.float64))
        if self.last_luma is not None:
            write_npy(Path(f"{stem}.last.npy"), self.last_luma)
        return {"file": self.file.name, "frames": len(self.rows), "bytes": self.offset,
                "last_pts": self.last_pts, "last_src": self.last_src}

    def abort(self) -> None:
        self.f.close()


def ingest_video(path: Path, vdir: Path, options: IngestOptions, progress: bool = True) -> dict:
    """Decode `path` into `vdir` (resuming from `vdir/progress.json` if it matches) -> video metadata."""
    from tqdm import tqdm

    source = source_identity(path)
    ensure_dir(vdir)
    prog_path = vdir / "progress.json"
    prog = None
    if prog_path.is_file():
        try:
            prog = json.loads(prog_path.read_text())
        except ValueError:
            prog = None
        if prog and (prog.get("source") != source or prog.get("options") != options.key()):
            prog = None
    if prog is None:  # start over: clear whatever an older attempt left
        shutil.rmtree(vdir)
        vdir.mkdir(parents=True)
        prog = {"source": source, "options": options.key(), "shards": [], "lost": [], "errors": [], "done": False}
        write_json(prog_path, prog)
    done_shards = prog["shards"]
    for p in vdir.glob("shard-*.jpg"):  # a shard that was being written when the process died
        if int(p.stem.split("-")[1]) >= len(done_shards):
            p.unlink()

    hasher = _Hasher(path)
    hasher.start()
    container = _open_container(path)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    # frames are numbered by pts, or by decode output order where the container has no usable
    # presentation times (AVI): there the n-th frame FFmpeg outputs is frame n
    output_order = timestamps_unusable(container, stream)
    src_fps = _stream_fps(stream)
    if src_fps <= 0:
        raise VideoError(f"{path}: no frame rate in the video stream")
    tb = float(stream.time_base)
    start_time = float((stream.start_time or 0) * stream.time_base)
    cc = stream.codec_context
    header_frames = int(stream.frames or 0) or int(round(float(container.duration or 0) / 1e6 * src_fps))
    size = resized_size(cc.width, cc.height, options.short_side)
    resize = size != (cc.width, cc.height)
    keep_every = options.fps and options.fps < src_fps
    out_fps = float(options.fps) if keep_every else src_fps

    kept = sum(s["frames"] for s in done_shards)
    last_src = done_shards[-1]["last_src"] if done_shards else -1
    resume_pts = done_shards[-1]["last_pts"] if done_shards else None
    prev_luma = None
    if done_shards:
        last = vdir / f"shard-{len(done_shards) - 1:05d}.last.npy"
        prev_luma = np.load(last) if last.is_file() else None
        if not output_order:  # by output order the count from the start is the only position there is
            container.seek(int(resume_pts), stream=stream, backward=True, any_frame=False)
    lost: list[list[int]] = [list(x) for x in prog["lost"]]
    errors: list[str] = list(prog["errors"])
    corrupt = 0

    writer = _ShardWriter(vdir, len(done_shards))
    bar = tqdm(total=header_frames or None, initial=min(last_src + 1, header_frames or last_src + 1),
               unit="frame", desc=path.name, disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max(1, options.threads))
    pending: deque = deque()
    last_kept_slot = int(np.floor((last_src / src_fps) * out_fps)) if keep_every and last_src >= 0 else -1

    def drain(limit: int) -> None:
        nonlocal kept, prev_luma, writer
        while len(pending) > limit:
            fut, t, pts, src = pending.popleft()
            data, luma = fut.result()
            writer.add(data, frame_stats(luma, prev_luma), t)
            prev_luma = luma
            writer.last_luma, writer.last_pts, writer.last_src = luma, pts, src
            kept += 1
            if len(writer.rows) >= options.shard_frames:
                done_shards.append(writer.commit())
                prog["lost"], prog["errors"] = lost, errors
                write_json(prog_path, prog)
                writer = _ShardWriter(vdir, len(done_shards))

    def frames():
        """Decoded frames; a packet that fails to decode is recorded and skipped."""
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except Exception as e:
                    t = float(packet.pts * tb) if packet.pts is not None else None
                    errors.append(f"{path.name}: packet at {t if t is None else round(t, 3)} s: {type(e).__name__}: {first_line(e)}")
                    continue
                yield from decoded
        except Exception as e:  # the container itself is damaged beyond this point
            errors.append(f"{path.name}: reading stopped after frame {last_src}: {type(e).__name__}: {first_line(e)}")

    produced = 0  # frames FFmpeg has output so far (the index in output-order mode)
    try:
        for frame in frames():
            produced += 1
            if output_order:
                if produced - 1 <= last_src:
                    continue  # already in a committed shard
                t = start_time + (produced - 1) / src_fps
            else:
                if frame.pts is not None and resume_pts is not None and frame.pts <= resume_pts:
                    continue  # already in a committed shard
                t = float(frame.time) if frame.time is not None else (last_src + 1) / src_fps + start_time
            if getattr(frame, "is_corrupt", False):  # concealed damage: counted as lost, not stored
                corrupt += 1
                continue
            src = int(round((t - start_time) * src_fps))
            if src <= last_src:
                src = last_src + 1  # duplicate or unordered timestamps: keep counting forward
            if src > last_src + 1:
                lost.append([last_src + 1, src])
            last_src = src
            bar.update(1)
            if keep_every:
                slot = int(np.floor((t - start_time) * out_fps + 1e-6))
                if slot <= last_kept_slot:
                    continue
                last_kept_slot = slot
            pending.append((pool.submit(_encode, frame, size, resize, options.quality), t, frame.pts, src))
            drain(2 * max(1, options.threads) + 2)
        drain(0)
        if writer.rows:
            done_shards.append(writer.commit())
        else:
            writer.abort()
            writer.file.unlink(missing_ok=True)
    except BaseException:
        writer.abort()
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
        container.close()
    if corrupt:
        errors.append(f"{path.name}: {corrupt} frame(s) decoded with errors (corrupt data) were dropped")
    if header_frames > last_src + 1 and not keep_every:
        lost.append([last_src + 1, header_frames])
    if kept == 0:
        raise VideoError(f"{path}: no frame could be decoded ({errors[0] if errors else 'empty stream'})")
    prog["lost"], prog["errors"] = lost, errors
    write_json(prog_path, prog)
    hasher.join()
    return _finish_video(vdir, source, hasher.digest, options, out_fps, size, (cc.width, cc.height), cc.name,
                         header_frames, done_shards, lost, errors,
                         "output order" if output_order else "pts")


def _finish_video(vdir: Path, source: dict, digest: str, options: IngestOptions, fps: float,
                  size: tuple[int, int], orig: tuple[int, int], codec: str, header_frames: int,
                  shards: list[dict], lost: list[list[int]], errors: list[str], order: str = "pts") -> dict:
    """Merge the shard indexes, find blank/frozen stretches and describe the video."""
    idx, stats, times = [], [], []
    for k, s in enumerate(shards):
        stem = vdir / f"shard-{k:05d}"
        rows = np.load(f"{stem}.idx.npy")
        idx.append(np.concatenate([np.full((len(rows), 1), k, np.int64), rows], axis=1))
        stats.append(np.load(f"{stem}.stats.npy"))
        times.append(np.load(f"{stem}.ts.npy"))
    index, stats_a, times_a = np.concatenate(idx), np.concatenate(stats), np.concatenate(times)
    files, file_hashes = {}, {}
    for name, arr in (("index.npy", index), ("stats.npy", stats_a), ("timestamps.npy", times_a)):
        write_npy(vdir / name, arr)
        files[name] = (vdir / name).stat().st_size
        # small (52 bytes a frame together), so hashed whole and checked on every open: the index
        # holds the offsets and crc32s every frame read relies on
        file_hashes[name] = file_hash(vdir / name)
    stretches = detect_stretches(stats_a, fps, options.thresholds)
    # clips must not run across frames lost in the source either: a zero-length exclusion at
    # each gap splits the stretch there
    kept_src = np.round((times_a - times_a[0]) * fps).astype(np.int64) if len(times_a) else times_a
    gaps = [int(i) + 1 for i in np.flatnonzero(np.diff(kept_src) > 1)] if not options.fps else []
    excluded = [[s.start, s.end] for s in stretches] + [[g, g] for g in gaps]
    shard_meta = []
    for s in shards:
        p = vdir / s["file"]
        shard_meta.append({"file": s["file"], "frames": s["frames"], "bytes": s["bytes"],
                           "sample_hash": sample_hash(p), "blake2b": file_hash(p)})
    meta = {
        "dir": vdir.name, "source": {**source, "sha256": digest},
        "fps": fps, "num_frames": int(len(index)), "width": size[0], "height": size[1],
        "orig_width": orig[0], "orig_height": orig[1], "codec": codec, "header_frames": header_frames,
        "jpeg_quality": options.quality, "frame_order": order, "lost": lost, "errors": errors,
        "stretches": [asdict(s) for s in stretches], "excluded": excluded,
        "thresholds": asdict(options.thresholds), "shards": shard_meta, "files": files, "file_hashes": file_hashes,
        "duration_s": float(times_a[-1] - times_a[0] + 1 / fps) if len(times_a) else 0.0,
    }
    write_json(vdir / "video.json", meta)
    for k in range(len(shards)):  # the merged files replace the per-shard ones
        for suffix in (".idx.npy", ".stats.npy", ".ts.npy", ".last.npy"):
            Path(f"{vdir / f'shard-{k:05d}'}{suffix}").unlink(missing_ok=True)
    return meta


def report_of(meta: dict) -> VideoReport:
    return VideoReport(meta["source"]["name"], meta["num_frames"], meta["fps"], meta["header_frames"],
                       [tuple(x) for x in meta["lost"]], meta["errors"],
                       [Stretch(**s) for s in meta["stretches"]], meta.get("frame_order", "pts"))


def ingest(videos: list[str | Path], out: str | Path, options: IngestOptions | None = None,
           progress: bool = True) -> list[VideoReport]:
    """Ingest `videos` into the store `out` (resuming an interrupted ingest into the same place)."""
    options = options or IngestOptions()
    if not videos:
        raise VideoError("no video given to ingest")
    paths = [check_video_path(v) for v in videos]
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise StoreError(f"{root}: exists and is not a directory")
    ensure_dir(root)
    mpath = root / MANIFEST
    if mpath.is_file():
        old = json.loads(mpath.read_text())
        if [v["source"]["path"] for v in old.get("videos", [])] == [str(p.resolve()) for p in paths] and \
                old.get("options") == options.key() and old.get("complete"):
            store = open_store(root, verify=True)
            return [report_of(m) for m in store.videos]
        raise StoreError(f"{root}: already holds a different complete store; choose another --out")
    metas = []
    for v, p in enumerate(paths):
        vdir = root / f"v{v:03d}"
        done = vdir / "video.json"
        if done.is_file():
            meta = json.loads(done.read_text())
            if meta["source"]["path"] == str(p.resolve()) and \
                    json.loads((vdir / "progress.json").read_text()).get("options") == options.key():
                metas.append(meta)
                continue
        metas.append(ingest_video(p, vdir, options, progress))
    manifest = {"format": FORMAT, "version": VERSION, "complete": True, "created": time.time(),
                "options": options.key(), "videos": metas}
    write_json(mpath, manifest)
    return [report_of(m) for m in metas]
