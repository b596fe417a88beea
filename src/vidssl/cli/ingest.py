"""`vidssl ingest VIDEO... --out STORE`: decode videos once into a frame store for fast training."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vidssl.data.blank import BlankThresholds
from vidssl.data.errors import VideoError


def register(subparsers: argparse._SubParsersAction) -> None:
    d = BlankThresholds()
    p = subparsers.add_parser(
        "ingest",
        help="decode videos once into a frame store (fast random clip access for training)",
        description=(
            "Decode each video once, front to back, resize it and write a frame store (JPEG frames in "
            "large shard files with an index) that gives any frame in constant time. Blank and frozen "
            "stretches are detected and kept out of training. An interrupted ingest resumes when the "
            "same command is run again. Train from it with `vidssl pretrain --store STORE`. "
            "`vidssl ingest STORE --report` prints what an existing store holds; `--verify` checks every byte."
        ),
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO",
                   help="video files to ingest (anything FFmpeg reads), or one existing STORE with --report/--verify")
    p.add_argument("--out", metavar="STORE", help="directory of the frame store to write (required to ingest)")
    p.add_argument("--short-side", type=int, default=512,
                   help="downscale frames so their short side is this many pixels; never upscales (default: 512; 0 keeps the size)")
    p.add_argument("--fps", type=float, default=None,
                   help="keep about this many frames per second (default: every frame)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored frames, 1-100 (default: 90)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads that resize and encode beside the decoder, per process (default: 2)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="processes per video: a long video is split at keyframes into this many segments decoded "
                        "in parallel, merged into one index at the end (default: the CPU count, here "
                        f"{os.cpu_count() or 1}; videos shorter than 300 frames a segment use fewer)")
    p.add_argument("--part", type=int, default=None, metavar="K",
                   help="ingest only the K-th video (from 0) of the list, without writing the manifest: one "
                        "command per video on a SLURM array or several nodes (--part $SLURM_ARRAY_TASK_ID); "
                        "then the same command without --part writes the manifest (docs/data.md)")
    p.add_argument("--blank-seconds", type=float, default=d.blank_seconds,
                   help=f"exclude near-black or near-constant runs at least this long (default: {d.blank_seconds})")
    p.add_argument("--frozen-seconds", type=float, default=d.frozen_seconds,
                   help=f"exclude runs of repeated (frozen) frames at least this long (default: {d.frozen_seconds})")
    p.add_argument("--report", action="store_true",
                   help="print what was found: frames kept and lost, decode errors, excluded blank/frozen stretches")
    p.add_argument("--verify", action="store_true",
                   help="with an existing STORE: hash every shard and compare with what ingest wrote")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _print_report(reports) -> None:
    for r in reports:
        for line in r.lines():
            print(line)


def run(args: argparse.Namespace) -> int:
    from vidssl.data.ingest import IngestOptions, ingest, report_of
    from vidssl.data.store import MANIFEST, open_store

    if len(args.videos) == 1 and (Path(args.videos[0]) / MANIFEST).is_file() and not args.out:
        store = open_store(args.videos[0], verify=True)
        if args.verify:
            store.verify(full=True)
            print(f"{store.root}: every shard matches what ingest wrote")
        _print_report([report_of(m) for m in store.videos])
        return 0
    if not args.out:
        raise VideoError("--out STORE is required to ingest (or give one existing store with --report)")
    if not 1 <= args.quality <= 100:
        raise VideoError(f"--quality must be between 1 and 100, got {args.quality}")
    if args.jobs < 1 or args.threads < 1:
        raise VideoError(f"--jobs and --threads must be at least 1, got --jobs {args.jobs} --threads {args.threads}")
    if args.fps is not None and args.fps <= 0:
        raise VideoError(f"--fps must be positive, got {args.fps}")
    from vidssl.data.video import check_video_path
    from vidssl.io import writable_dir

    for video in args.videos:  # a missing video is reported before the output folder is made
        check_video_path(video)
    writable_dir(args.out)  # a file in the way or a read-only folder: one line, nothing decoded
    options = IngestOptions(
        short_side=args.short_side or None, fps=args.fps, quality=args.quality, threads=args.threads, jobs=args.jobs,
        thresholds=BlankThresholds(blank_seconds=args.blank_seconds, frozen_seconds=args.frozen_seconds),
    )
    reports = ingest(args.videos, args.out, options, progress=not args.no_progress and sys.stderr.isatty(),
                     part=args.part)
    total = sum(r.num_frames for r in reports)
    excluded = sum(s.end - s.start for r in reports for s in r.stretches)
    lost = sum(r.lost_frames for r in reports)
    if args.part is not None:
        print(f"{args.out}: video {args.part} of {len(args.videos)} stored ({total} frames, {lost} lost); "
              "run the command without --part once every part is done, to write the manifest")
        return 0
    print(f"{args.out}: {len(reports)} video(s), {total} frames stored, {excluded} in excluded stretches, {lost} lost")
    if args.report:
        _print_report(reports)
    return 0
