"""Clip loading speed: the official access pattern vs our streaming reader vs our frame store.

Generates (or takes with --video) a long H.264 video at 1080p (--4k for 2160p) with a long GOP,
then prints, in one run, DoRA clips per second (T=8, stride 60, 2 loader workers), raw and
augmented with DoRA's clip views, for
  (a) the official access pattern, re-implemented here: a new reader per clip that fetches 8
      frames at stride 60 (seek to the keyframe, decode forward), as decord does per item;
  (b) our streaming reader over the video file (`data.videos`);
  (c) our frame store (`vidssl ingest`, default short side 512),
the ratios (b)/(a) and (c)/(a), the same per loader core (clips/s / workers), ingest frames/s
over plain sequential decode frames/s of the same file with the same library (PyAV), and the
store's size per hour of 60 fps video (`benchmarks/ingest.py` times ingest with 1, 2, ... jobs).
Besides raw clips (what the loader delivers for DINO and TimeT under `aug.device=accelerator`:
it only decodes) and clips with DoRA's views made in the loader, it times DoRA's loader stage
under `aug.device=accelerator` (the shared pre-crop only; the rest is made on the device).

    python benchmarks/clip_loading.py                 # 1080p, about 5 minutes on 2 cores
    python benchmarks/clip_loading.py --4k --seconds 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidssl.config import AugConfig, DataConfig
from vidssl.data import build_training_data
from vidssl.data.ingest import IngestOptions, ingest
from vidssl.data.store import open_store
from vidssl.data.video import PyAVReader, probe_video
from vidssl.data.writer import write_video

T, STRIDE = 8, 60


def bench_video(given: str | None, work: Path, uhd: bool, seconds: float, fps: int, gop: int) -> Path:
    """`given`, else a generated 1080p (or 4K) video in `work` (made once, kept with --keep)."""
    if given:
        return Path(given)
    w, h = (3840, 2160) if uhd else (1920, 1080)
    video = work / f"bench-{h}p-{seconds:g}s-{fps}fps-gop{gop}.mp4"
    if not video.exists():
        t = time.perf_counter()
        make_video(video, w, h, seconds, fps, gop)
        print(f"generated {video.name} in {time.perf_counter() - t:.0f} s")
    return video


def make_video(path: Path, width: int, height: int, seconds: float, fps: int, gop: int) -> Path:
    """The sample scene upscaled to width x height, with fine grain so it is not too easy to code."""
    import av

    from vidssl.data.sample import render_frames

    n = int(seconds * fps)
    small = render_frames(seed=11, num_frames=n)
    rng = np.random.default_rng(0)
    grain = rng.integers(-6, 7, size=(height, width + n * 2, 1), dtype=np.int16)

    def frames():
        for i, f in enumerate(small):
            big = av.VideoFrame.from_ndarray(f, format="rgb24").to_ndarray(
                format="rgb24", width=width, height=height, interpolation="BICUBIC")
            g = grain[:, 2 * i : 2 * i + width]  # grain that pans with the camera
            yield np.clip(big.astype(np.int16) + g, 0, 255).astype(np.uint8)

    return write_video(path, frames(), fps=fps, gop=gop, crf=23, preset="ultrafast")


class OfficialPattern(Dataset):
    """Item = a random start; a NEW reader per item fetches T frames at stride s (decord-like)."""

    def __init__(self, path: str, num_frames: int, gop: int, transform, items: int):
        self.path, self.n, self.gop, self.transform, self.items = path, num_frames, gop, transform, items
        self.starts = np.random.default_rng(0).integers(0, num_frames - (T - 1) * STRIDE, size=items)

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, i: int):
        reader = PyAVReader(self.path, seek_gap=self.gop)  # opened per clip, like the official loader
        idx = [int(self.starts[i]) + k * STRIDE for k in range(T)]
        got, _ = reader.read(idx)
        reader.close()
        clip = torch.from_numpy(np.stack([got[j] for j in idx]))
        return self.transform(clip) if self.transform else [clip]


def _first(x):
    return x


def time_official(path: str, num_frames: int, gop: int, transform, clips: int, workers: int) -> float:
    """Clips/s from the loader's creation to its `clips`-th clip."""
    ds = OfficialPattern(path, num_frames, gop, transform, clips)
    t = time.perf_counter()
    for _ in DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=_first):
        pass
    return clips / (time.perf_counter() - t)


def time_ours(cfg: DataConfig, transform, batch: int, batches: int, workers: int) -> float:
    """Clips/s from the loader's creation to its `batches`-th batch: worker start-up and the
    decoding of whole streaming blocks are inside the measurement."""
    data = build_training_data(cfg, transform, seed=0)
    batches = min(batches, data.batches_per_epoch(batch))
    t = time.perf_counter()
    n = 0
    for i, b in enumerate(data.loader(batch, workers, epoch=0)):
        n += len(b["views"][0])
        if i + 1 == batches:
            break
    return n / (time.perf_counter() - t)


def plain_decode_fps(path: str, limit: int) -> dict[str, float]:
    """Frames/s of a plain sequential PyAV decode: with PyAV's default settings (what
    `for f in av.open(p).decode(video=0)` gives), with frame threading, and threaded + RGB."""
    import av

    out: dict[str, float] = {}
    for name, threaded, rgb in (("warm-up", True, False), ("default", False, False),
                                ("threaded", True, False), ("threaded+rgb", True, True)):
        with av.open(path) as c:
            s = c.streams.video[0]
            if threaded:
                s.thread_type = "AUTO"
            t, n = time.perf_counter(), 0
            for f in c.decode(s):
                if rgb:
                    f.to_ndarray(format="rgb24")
                n += 1
                if n >= limit:
                    break
            out[name] = n / (time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--4k", dest="uhd", action="store_true", help="generate 3840x2160 instead of 1920x1080")
    p.add_argument("--video", help="use this video instead of generating one")
    p.add_argument("--seconds", type=float, default=40.0, help="length of the generated video (default 40)")
    p.add_argument("--fps", type=int, default=30, help="frame rate of the generated video (default 30)")
    p.add_argument("--gop", type=int, default=250, help="GOP of the generated video (default 250, like camera files)")
    p.add_argument("--official-clips", type=int, default=6, help="clips timed for the official pattern (default 6)")
    p.add_argument("--batches", type=int, default=32, help="batches timed for ours (default 32: 4 streaming blocks)")
    p.add_argument("--window", type=int, default=64, help="data.stream_window for (b) (default 64 clips = 8 batches)")
    p.add_argument("--batch", type=int, default=8, help="clips per batch (default 8)")
    p.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    p.add_argument("--no-augment", action="store_true", help="only raw clips, no DoRA augmentation")
    p.add_argument("--ingest-only", action="store_true", help="only the ingest vs plain decode figures")
    p.add_argument("--keep", help="keep the generated video and store in this directory")
    args = p.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="vidssl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        video = bench_video(args.video, work, args.uhd, args.seconds, args.fps, args.gop)
        info = probe_video(video)
        print(f"video: {info.width}x{info.height}, {info.num_frames} frames @ {info.fps:g} fps, "
              f"{video.stat().st_size / 1e6:.1f} MB, GOP {args.gop}")

        # ingest vs plain decode, same file, same library
        # alternated twice, best of each: the machine is shared, so single runs are noisy
        store = work / "store"
        dec: dict[str, float] = {}
        ingest_fps = 0.0
        for _ in range(2):
            for k, v in plain_decode_fps(str(video), info.num_frames).items():
                dec[k] = max(dec.get(k, 0.0), v)
            shutil.rmtree(store, ignore_errors=True)
            t = time.perf_counter()
            ingest([video], store, IngestOptions(), progress=False)
            ingest_fps = max(ingest_fps, info.num_frames / (time.perf_counter() - t))
        s = open_store(store)
        bytes_per_frame = sum(sh["bytes"] for sh in s.videos[0]["shards"]) / s.videos[0]["num_frames"]
        print(f"plain decode (PyAV): {dec['default']:.1f} frames/s with default settings, "
              f"{dec['threaded']:.1f} frames/s frame-threaded, {dec['threaded+rgb']:.1f} frames/s threaded + RGB")
        print(f"ingest: {ingest_fps:.1f} frames/s -> {ingest_fps / dec['default']:.2f}x plain default decode, "
              f"{ingest_fps / dec['threaded']:.2f}x threaded decode")
        print(f"store: {s.videos[0]['width']}x{s.videos[0]['height']} JPEG q90, {bytes_per_frame / 1e3:.1f} kB/frame "
              f"-> {bytes_per_frame * 60 * 3600 / 1e9:.1f} GB per hour at 60 fps")

        if args.ingest_only:
            return
        modes = [("raw", None)]
        if not args.no_augment:
            from vidssl.methods.dora_views import DoRAClipViews

            aug = AugConfig(local_crops_number=6, local_crop_size=112)  # the README DoRA recipe
            modes.append(("augmented (DoRA views)", DoRAClipViews(aug)))
            from vidssl.data.transforms import LoaderStage

            modes.append(("DoRA loader stage (aug.device=accelerator: pre-crop only)", LoaderStage(DoRAClipViews(aug))))
        for name, transform in modes:
            a = time_official(str(video), info.num_frames, args.gop, transform, args.official_clips, args.workers)
            base = dict(frames_per_clip=T, frame_stride=STRIDE)
            b = time_ours(DataConfig(videos=[str(video)], stream_window=args.window, **base), transform,
                          args.batch, args.batches, args.workers)
            c = time_ours(DataConfig(store=str(store), **base), transform, args.batch, args.batches, args.workers)
            print(f"{name}: clips/s (a) official {a:.2f} | (b) streaming {b:.2f} | (c) store {c:.2f} "
                  f"-> (b)/(a) {b / a:.1f}x, (c)/(a) {c / a:.1f}x")
            # each loader worker is one process on one core: the figure that says how many cores a
            # training node needs to feed its accelerators (ISSUE 16's aims: >= 25 augmented, >= 80 raw)
            w = max(1, args.workers)
            print(f"{name}: per loader core ({w} workers): (a) {a / w:.2f} | (b) {b / w:.2f} | (c) {c / w:.2f} clips/s; "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
