"""Segment-parallel ingest: one video split at keyframes into ranges decoded by separate processes.

A keyframe (with the decoder's state reset there, as with H.264 IDR frames) decodes the same
after a seek as in a front-to-back pass, so segments starting at keyframes give the same frames
as one pass. The plan is found with one seek per boundary (no pass over the file): aim at
frame `k * n / jobs`, seek back to the keyframe at or before it, and take that keyframe's
pts. Each segment writes its own shards and its own progress file; `ingest.py` merges them into
one index at the end. Files whose frames are numbered by decode output order (AVI) cannot be
sought by frame number and are ingested in one segment.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vidssl.data.video import FrameIterator


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of a video (end None: to the last frame), starting at the keyframe
    with presentation timestamp `pts` (None: from the first frame)."""

    number: int
    start: int
    end: int | None
    pts: int | None
    single: bool  # the only segment: the single-job file layout (shard-00000.jpg, progress.json)

    @property
    def prefix(self) -> str:
        return "" if self.single else f"seg{self.number:03d}-"

    @property
    def progress(self) -> str:
        return "progress.json" if self.single else f"seg{self.number:03d}.progress.json"

    def key(self) -> list:
        return [self.start, self.end, self.pts]

    @classmethod
    def of(cls, number: int, key: list, count: int) -> "Segment":
        start, end, pts = key
        return cls(number, int(start), None if end is None else int(end), None if pts is None else int(pts), count == 1)


def keyframe_near(container, stream, index: int, fps: float, start_time: float,
                  packets: int = 500) -> tuple[int, int] | None:
    """(frame number, pts) of the keyframe a seek to frame `index` lands on: the one at or
    before it, or a later one in containers whose seeks land late (MPEG program streams) --
    any keyframe is a boundary. One seek, a few demuxed packets; None if none is found."""
    tb = stream.time_base
    ts = int(math.floor((start_time + index / fps) / tb))
    container.seek(ts, stream=stream, backward=True, any_frame=False)
    for k, pkt in enumerate(container.demux(stream)):
        if k >= packets:
            break
        if pkt.size and pkt.pts is not None and pkt.is_keyframe:
            return int(round((float(pkt.pts * tb) - start_time) * fps)), int(pkt.pts)
    return None


def plan_segments(path: Path, jobs: int, num_frames: int, min_frames: int, output_order: bool) -> list[Segment]:
    """Up to `jobs` keyframe-aligned segments of about `num_frames / jobs` frames each, none
    shorter than `min_frames`; one segment where the file cannot be split."""
    jobs = min(jobs, num_frames // max(1, min_frames)) if num_frames > 0 else 1
    if jobs <= 1 or output_order:
        return [Segment(0, 0, None, None, True)]
    starts: list[tuple[int, int | None]] = [(0, None)]
    it = FrameIterator(path)  # only for its container, stream and timing: nothing is decoded
    c, s, fps, start_time = it.container, it.stream, it.fps, it.start_time
    try:
        for k in range(1, jobs):
            try:
                found = keyframe_near(c, s, round(k * num_frames / jobs), fps, start_time)
            except Exception:  # a container that cannot seek: fewer segments
                found = None
            if found and found[0] - starts[-1][0] >= min_frames and num_frames - found[0] >= min_frames:
                starts.append(found)
    finally:
        it.close()
    if len(starts) == 1:
        return [Segment(0, 0, None, None, True)]
    ends = [a for a, _ in starts[1:]] + [None]
    return [Segment(k, a, e, pts, False) for k, ((a, pts), e) in enumerate(zip(starts, ends))]


_COUNTS: Any = None  # frames decoded per segment, shared with the main process's progress bar


def _init_child(counts) -> None:
    global _COUNTS
    _COUNTS = counts


def _run_child(fn: Callable, number: int, args: tuple, threads: int) -> dict:
    def tick(n: int) -> None:
        _COUNTS[number] += n  # one writer per slot: no lock needed

    return fn(*args, tick=tick, threads=threads, child=True)


def run_segments(fn: Callable, path: Path, vdir: Path, options, plan: list[Segment], source: dict, bar,
                 start: Callable[[], None] = lambda: None) -> list[dict]:
    """`fn(path, vdir, options, segment, source, tick=, threads=)` for every segment, in
    `options.jobs` processes (in this process for one job or one segment) -> results in plan
    order. `start()` runs once the processes exist (work for this process meanwhile)."""
    jobs = max(1, min(options.jobs, len(plan)))
    if jobs == 1:
        start()
        return [fn(path, vdir, options, seg, source, tick=bar.update) for seg in plan]
    import multiprocessing as mp

    # fork: a spawned child would re-run the caller's main module (a script without a
    # `__main__` guard would start its own ingest); the caller starts no thread before this
    # (the hasher starts after `start`)
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    counts = ctx.Array("q", len(plan), lock=False)
    threads = max(1, (os.cpu_count() or 1) // jobs)  # decoder threads per process: the cores are shared
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_child, initargs=(counts,)) as pool:
        todo = {pool.submit(_run_child, fn, seg.number, (path, vdir, options, seg, source), threads): seg.number
                for seg in plan}
        start()
        try:
            while todo:
                done, _ = wait(todo, timeout=0.5, return_when=FIRST_COMPLETED)
                for f in done:
                    results[todo.pop(f)] = f.result()
                bar.n = sum(counts)
                bar.refresh()
        except BaseException:
            for f in todo:
                f.cancel()
            raise
    return [results[seg.number] for seg in plan]
