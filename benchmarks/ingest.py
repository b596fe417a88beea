"""Ingest speed against a plain decode of the same file, with 1, 2, ... jobs, in one process run.

Generates (or takes with --video) an H.264 video, then prints frames/s of
  - a plain sequential PyAV decode: default settings (`for f in av.open(p).decode(video=0)`),
    and frame-threaded (what ingest's decoder uses);
  - `vidssl ingest` (default short side 512, JPEG q90) with `--jobs` 1, 2, ...: segment-parallel
    ingest, keyframe-aligned segments in separate processes;
the ratios ingest / plain decode, and the store's size per frame and per hour.
Runs alternate and the best of `--repeats` is kept: on a shared machine single runs are noisy.

    python benchmarks/ingest.py                       # generated 1080p, 20 s at 30 fps, GOP 250
    python benchmarks/ingest.py --video cockatoo.mp4  # real footage
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from clip_loading import bench_video, plain_decode_fps

from vidssl.data.ingest import IngestOptions, ingest
from vidssl.data.store import open_store
from vidssl.data.video import probe_video


def ingest_fps(video: Path, store: Path, jobs: int, frames: int, min_segment: int) -> tuple[float, int]:
    """(frames/s, segments written)."""
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    ingest([video], store, IngestOptions(jobs=jobs, min_segment_frames=min_segment), progress=False)
    fps = frames / (time.perf_counter() - t)
    return fps, len({sh["file"].split("-")[0] for sh in open_store(store).videos[0]["shards"]})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", help="use this video instead of generating one")
    p.add_argument("--4k", dest="uhd", action="store_true", help="generate 3840x2160 instead of 1920x1080")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the generated video (default 20)")
    p.add_argument("--gop", type=int, default=250, help="GOP of the generated video (default 250)")
    p.add_argument("--jobs", default="1,2", help="comma-separated job counts to time (default 1,2)")
    p.add_argument("--min-segment", type=int, default=100,
                   help="shortest segment in frames (default 100; vidssl ingest's default is 300)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each, best kept (default 2)")
    p.add_argument("--keep", help="keep the generated video in this directory")
    args = p.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="vidssl-ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        video = bench_video(args.video, work, args.uhd, args.seconds, 30, args.gop)
        info = probe_video(video)
        print(f"video: {video.name}, {info.width}x{info.height} {info.codec}, {info.num_frames} frames @ {info.fps:g} fps; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
        jobs = [int(j) for j in args.jobs.split(",")]
        dec: dict[str, float] = {}
        ing: dict[int, float] = {}
        segments: dict[int, int] = {}
        store = work / "store"
        for _ in range(args.repeats):
            for k, v in plain_decode_fps(str(video), info.num_frames).items():
                dec[k] = max(dec.get(k, 0.0), v)
            for j in jobs:
                fps, segments[j] = ingest_fps(video, store, j, info.num_frames, args.min_segment)
                ing[j] = max(ing.get(j, 0.0), fps)
        s = open_store(store)
        meta = s.videos[0]
        per_frame = sum(sh["bytes"] for sh in meta["shards"]) / meta["num_frames"]
        print(f"plain decode (PyAV): {dec['default']:.1f} frames/s default settings, {dec['threaded']:.1f} frame-threaded")
        for j in jobs:
            print(f"ingest --jobs {j} ({segments[j]} segment(s)): {ing[j]:.1f} frames/s -> {ing[j] / dec['default']:.2f}x default decode, "
                  f"{ing[j] / dec['threaded']:.2f}x threaded decode")
        print(f"store: {meta['width']}x{meta['height']} JPEG q90, {per_frame / 1e3:.1f} kB/frame -> "
              f"{per_frame * 30 * 3600 / 1e9:.1f} GB per hour at 30 fps, {per_frame * 60 * 3600 / 1e9:.1f} at 60 fps; "
              f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
