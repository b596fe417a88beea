"""Ingest: decode each video once, front to back, into a frame store (see `store.py`).

Decoding goes through the one decode loop, `video.FrameIterator` (FFmpeg frame threads,
per-packet error handling, step-back past keyframes that do not decode alone). The scale to
the stored size and the conversion to RGB are one swscale pass per frame, and they run with the
JPEG encode in a thread pool beside the decoder (both release the GIL). With `jobs > 1` a long
video is split at keyframes into segments decoded by separate processes
(`ingest_parallel.py`), each writing its own shards; one index is merged at the end.

Frames are committed in shards: after each shard is written and fsync'd its index goes to the
segment's progress file, so an interrupted ingest resumes at the last shard of every segment
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
from typing import Callable

import numpy as np

from vidssl.data.blank import BlankThresholds, Stretch, detect_stretches, frame_stats, small_luma
from vidssl.data.errors import StoreError, VideoError
from vidssl.data.ingest_parallel import Segment, plan_segments, run_segments
from vidssl.data.store import FORMAT, MANIFEST, VERSION, file_hash, open_store, sample_hash
from vidssl.data.video import FrameIterator, check_video_path, frame_to_rgb, resized_size
from vidssl.io import ensure_dir, write_json, write_npy

SHARD_FRAMES = 1000


@dataclass
class IngestOptions:
    short_side: int | None = 512  # frames are downscaled (never upscaled) to this short side
    fps: float | None = None  # keep about this many frames per second (None: every frame)
    quality: int = 90  # JPEG quality
    shard_frames: int = SHARD_FRAMES
    threads: int = 2  # scale + encode threads beside the decoder (per process)
    thresholds: BlankThresholds = field(default_factory=BlankThresholds)
    jobs: int = 1  # processes, each decoding one keyframe-aligned segment of a video
    min_segment_frames: int = 300  # a shorter segment is not worth a process start

    def key(self) -> dict:
        """What must match for an interrupted ingest to be resumed rather than restarted (the
        number of jobs is not part of it: a resumed ingest keeps the segments it started with)."""
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


def _encode(frame, size: tuple[int, int] | None, quality: int) -> tuple[bytes, np.ndarray]:
    """Scale + RGB (one swscale pass) and JPEG-encode one frame; runs in the pool (PyAV's
    swscale call and Pillow's encoder release the GIL)."""
    from PIL import Image

    rgb = frame_to_rgb(frame, size)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), small_luma(rgb)


class _ShardWriter:
    def __init__(self, vdir: Path, number: int, prefix: str = ""):
        self.vdir, self.number = vdir, number
        self.file = vdir / f"{prefix}shard-{number:05d}.jpg"
        self.f = open(self.file, "wb")
        self.rows: list[tuple[int, int, int]] = []
        self.stats: list[tuple[float, float, float]] = []
        self.times: list[float] = []
        self.offset = 0
        self.first_luma: np.ndarray | None = None  # kept for a segment's first shard (merge fixes its diff)
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
        if self.first_luma is not None:
            write_npy(Path(f"{stem}.first.npy"), self.first_luma)
        return {"file": self.file.name, "frames": len(self.rows), "bytes": self.offset,
                "last_pts": self.last_pts, "last_src": self.last_src}

    def abort(self) -> None:
        self.f.close()


def _load_progress(path: Path, want: dict) -> dict | None:
    """The progress file if it describes the same source, options (and segment), else None."""
    if not path.is_file():
        return None
    try:
        prog = json.loads(path.read_text())
    except ValueError:
        return None
    return prog if all(prog.get(k) == v for k, v in want.items()) else None


def ingest_segment(path: Path, vdir: Path, options: IngestOptions, seg: Segment, source: dict,
                   tick: Callable[[int], None] | None = None, threads: int = 0, child: bool = False) -> dict:
    """Decode frames [seg.start, seg.end) of `path` into shards `vdir/{seg.prefix}shard-*.jpg`,
    resuming from the segment's progress file -> that progress, finished ("done": True).
    `tick(n)`: n more source frames decoded (the progress bar). `child`: run by a segment
    process, which stops when the ingest that started it is gone."""
    prog_path = vdir / seg.progress
    want = {"source": source, "options": options.key(), "segment": seg.key()}
    prog = _load_progress(prog_path, want)
    if prog and prog.get("done"):
        return prog
    if prog is None:
        prog = {**want, "shards": [], "lost": [], "errors": [], "corrupt": 0, "done": False}
        write_json(prog_path, prog)
    done_shards = prog["shards"]
    for p in vdir.glob(f"{seg.prefix}shard-*.jpg"):  # a shard that was being written when the process died
        if int(p.stem.rsplit("-", 1)[1]) >= len(done_shards):
            p.unlink()
    parent = os.getppid()

    it = FrameIterator(path, threads=threads)
    src_fps, start_time, output_order = it.fps, it.start_time, it.output_order
    if src_fps <= 0:
        it.close()
        raise VideoError(f"{path}: no frame rate in the video stream")
    cc = it.stream.codec_context
    size = resized_size(cc.width, cc.height, options.short_side)
    scale = size if size != (cc.width, cc.height) else None
    keep_every = options.fps and options.fps < src_fps
    out_fps = float(options.fps) if keep_every else src_fps

    last_src = done_shards[-1]["last_src"] if done_shards else seg.start - 1
    resume_pts = done_shards[-1]["last_pts"] if done_shards else None
    prev_luma = None
    if done_shards:
        last = vdir / f"{seg.prefix}shard-{len(done_shards) - 1:05d}.last.npy"
        prev_luma = np.load(last) if last.is_file() else None
        if not output_order:  # by output order the count from the start is the only position there is
            it.seek_pts(int(resume_pts), index=last_src + 1)
    elif seg.pts is not None:
        it.seek_pts(seg.pts, index=seg.start)
    # packet errors outside the segment (met while stepping back or reading up to its end) belong to another one
    lo_t = None if seg.start == 0 else start_time + (seg.start - 0.5) / src_fps
    hi_t = None if seg.end is None else start_time + (seg.end - 0.5) / src_fps
    lost: list[list[int]] = [list(x) for x in prog["lost"]]
    old_errors: list[str] = list(prog["errors"])
    corrupt = int(prog.get("corrupt", 0))
    first_src = prog.get("first_src")

    def errors() -> list[str]:
        mine = [m for t, m in it.errors if t is None or ((lo_t is None or t >= lo_t) and (hi_t is None or t < hi_t))]
        return old_errors + [f"{path.name}: {m}" for m in mine]

    writer = _ShardWriter(vdir, len(done_shards), seg.prefix)
    pool = ThreadPoolExecutor(max(1, options.threads))
    pending: deque = deque()
    last_kept_slot = int(np.floor(last_src / src_fps * out_fps + 1e-6)) if keep_every and last_src >= 0 else -1
    unticked = 0

    def drain(limit: int) -> None:
        nonlocal prev_luma, writer, first_src
        while len(pending) > limit:
            fut, t, pts, src = pending.popleft()
            data, luma = fut.result()
            if first_src is None:
                first_src, writer.first_luma = src, luma
            writer.add(data, frame_stats(luma, prev_luma), t)
            prev_luma = luma
            writer.last_luma, writer.last_pts, writer.last_src = luma, pts, src
            if len(writer.rows) >= options.shard_frames:
                if child and os.getppid() != parent:  # the ingest that started this process is gone: stop, resumable
                    raise SystemExit(1)
                done_shards.append(writer.commit())
                prog.update(lost=lost, errors=errors(), corrupt=corrupt, first_src=first_src)
                write_json(prog_path, prog)
                writer = _ShardWriter(vdir, len(done_shards), seg.prefix)

    try:
        for d in it:
            if seg.end is not None and d.index >= seg.end and not output_order:
                break
            if output_order:
                if d.index <= last_src:
                    continue  # already in a committed shard
            elif resume_pts is not None and d.pts is not None and d.pts <= resume_pts:
                continue  # already in a committed shard
            elif d.index < seg.start:
                continue  # before the segment (a step-back, or leading frames of the keyframe's GOP)
            if d.corrupt or d.untrusted:  # concealed damage: counted as lost, not stored
                corrupt += 1
                continue
            t = d.time
            src = int(round((t - start_time) * src_fps))
            if src <= last_src:
                src = last_src + 1  # duplicate or unordered timestamps: keep counting forward
            if src > last_src + 1:
                lost.append([last_src + 1, src])
            if tick is not None:
                unticked += src - last_src
                if unticked >= 25:
                    tick(unticked)
                    unticked = 0
            last_src = src
            if keep_every:
                slot = int(np.floor((t - start_time) * out_fps + 1e-6))
                if slot <= last_kept_slot:
                    continue
                last_kept_slot = slot
            pending.append((pool.submit(_encode, d.frame, scale, options.quality), t, d.pts, src))
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
        it.close()
    if tick is not None and unticked:
        tick(unticked)
    if seg.end is not None and last_src < seg.end - 1:
        lost.append([last_src + 1, seg.end])  # the segment's tail never decoded
    prog.update(lost=lost, errors=errors(), corrupt=corrupt, first_src=first_src, last_src=last_src,
                kept=sum(s["frames"] for s in done_shards), done=True)
    write_json(prog_path, prog)
    return prog


def _video_facts(path: Path) -> dict:
    """Frame rate, sizes, codec and the header's frame count, from one open."""
    it = FrameIterator(path)
    try:
        st, cc = it.stream, it.stream.codec_context
        if it.fps <= 0:
            raise VideoError(f"{path}: no frame rate in the video stream")
        header = int(st.frames or 0) or int(round(float(it.container.duration or 0) / 1e6 * it.fps))
        return {"fps": it.fps, "width": cc.width, "height": cc.height, "codec": cc.name,
                "header_frames": header, "output_order": it.output_order}
    finally:
        it.close()


def _merge_lost(parts: list[list[int]]) -> list[list[int]]:
    """Lost ranges of consecutive segments, with runs that meet at a boundary joined."""
    out: list[list[int]] = []
    for a, b in parts:
        if out and out[-1][1] == a:
            out[-1][1] = b
        else:
            out.append([a, b])
    return out


def ingest_video(path: Path, vdir: Path, options: IngestOptions, progress: bool = True) -> dict:
    """Decode `path` into `vdir` (resuming what `vdir` holds if it matches) -> video metadata."""
    from tqdm import tqdm

    source = source_identity(path)
    ensure_dir(vdir)
    facts = _video_facts(path)
    header_frames = facts["header_frames"]
    want = {"source": source, "options": options.key()}
    prog = _load_progress(vdir / "progress.json", want)
    if prog is None:  # start over: clear whatever an older attempt left
        shutil.rmtree(vdir)
        vdir.mkdir(parents=True)
        plan = plan_segments(path, options.jobs, header_frames, options.min_segment_frames,
                             facts["output_order"])
        if len(plan) > 1:  # one segment keeps its own progress in progress.json (the single-job layout)
            write_json(vdir / "progress.json", {**want, "plan": [s.key() for s in plan]})
    elif "plan" in prog:
        plan = [Segment.of(k, s, len(prog["plan"])) for k, s in enumerate(prog["plan"])]
    else:
        plan = [Segment.of(0, prog["segment"] if "segment" in prog else [0, None, None], 1)]

    hasher = _Hasher(path)
    bar = tqdm(total=header_frames or None, unit="frame", desc=path.name, disable=not progress, dynamic_ncols=True)
    try:
        results = run_segments(ingest_segment, path, vdir, options, plan, source, bar, start=hasher.start)
    finally:
        bar.close()
    shards, lost, errors, corrupt, kept = [], [], [], 0, 0
    for seg, r in zip(plan, results):
        for s in r["shards"]:
            shards.append({**s, "segment": seg.number})
        lost += r["lost"]
        errors += r["errors"]
        corrupt += r["corrupt"]
        kept += r["kept"]
    last_src = results[-1]["last_src"]  # seg.start - 1 where the last segment kept nothing
    keep_every = options.fps and options.fps < facts["fps"]
    if corrupt:
        errors.append(f"{path.name}: {corrupt} frame(s) decoded with errors (corrupt data) were dropped")
    if header_frames > last_src + 1 and not keep_every:
        lost.append([last_src + 1, header_frames])
    lost = _merge_lost(lost)
    if kept == 0:
        raise VideoError(f"{path}: no frame could be decoded ({errors[0] if errors else 'empty stream'})")
    hasher.join()
    out_fps = float(options.fps) if keep_every else facts["fps"]
    size = resized_size(facts["width"], facts["height"], options.short_side)
    return _finish_video(vdir, source, hasher.digest, options, out_fps, size, (facts["width"], facts["height"]),
                         facts["codec"], header_frames, shards, lost, errors,
                         "output order" if facts["output_order"] else "pts")


def _finish_video(vdir: Path, source: dict, digest: str, options: IngestOptions, fps: float,
                  size: tuple[int, int], orig: tuple[int, int], codec: str, header_frames: int,
                  shards: list[dict], lost: list[list[int]], errors: list[str], order: str = "pts") -> dict:
    """Merge the shard indexes, find blank/frozen stretches and describe the video."""
    idx, stats, times = [], [], []
    previous_last = None  # small luma of the last frame of the shard before
    for k, s in enumerate(shards):
        stem = (vdir / s["file"]).with_suffix("")
        rows = np.load(f"{stem}.idx.npy")
        idx.append(np.concatenate([np.full((len(rows), 1), k, np.int64), rows], axis=1))
        st = np.load(f"{stem}.stats.npy")
        first = Path(f"{stem}.first.npy")
        if k and s.get("segment", 0) != shards[k - 1].get("segment", 0) and first.is_file() and len(st):
            # a segment's first frame had no previous frame in its process: its difference to the
            # previous frame is computed here, as a single pass would have
            st[0] = frame_stats(np.load(first), previous_last)
        stats.append(st)
        times.append(np.load(f"{stem}.ts.npy"))
        last = Path(f"{stem}.last.npy")
        previous_last = np.load(last) if last.is_file() else None
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
    for s in shards:  # the merged files replace the per-shard ones
        stem = (vdir / s["file"]).with_suffix("")
        for suffix in (".idx.npy", ".stats.npy", ".ts.npy", ".last.npy", ".first.npy"):
            Path(f"{stem}{suffix}").unlink(missing_ok=True)
    return meta


def report_of(meta: dict) -> VideoReport:
    return VideoReport(meta["source"]["name"], meta["num_frames"], meta["fps"], meta["header_frames"],
                       [tuple(x) for x in meta["lost"]], meta["errors"],
                       [Stretch(**s) for s in meta["stretches"]], meta.get("frame_order", "pts"))


def ingest(videos: list[str | Path], out: str | Path, options: IngestOptions | None = None,
           progress: bool = True, part: int | None = None) -> list[VideoReport]:
    """Ingest `videos` into the store `out` (resuming an interrupted ingest into the same place).
    `part=k`: only video k of the list, and no manifest (one command per video, e.g. on a SLURM
    array); the same call without `part` afterwards finds them all done and writes the manifest."""
    options = options or IngestOptions()
    if not videos:
        raise VideoError("no video given to ingest")
    if part is not None and not 0 <= part < len(videos):
        raise VideoError(f"--part {part} is outside the {len(videos)} video(s) given (0 to {len(videos) - 1})")
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
        if part is not None and v != part:
            continue
        vdir = root / f"v{v:03d}"
        done = vdir / "video.json"
        if done.is_file():
            meta = json.loads(done.read_text())
            if meta["source"]["path"] == str(p.resolve()) and \
                    json.loads((vdir / "progress.json").read_text()).get("options") == options.key():
                metas.append(meta)
                continue
        metas.append(ingest_video(p, vdir, options, progress))
    if part is not None:
        return [report_of(m) for m in metas]
    manifest = {"format": FORMAT, "version": VERSION, "complete": True, "created": time.time(),
                "options": options.key(), "videos": metas}
    write_json(mpath, manifest)
    return [report_of(m) for m in metas]
