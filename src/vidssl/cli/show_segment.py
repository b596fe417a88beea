"""`vidssl show segment`: k-means segmentation of a whole video with colours consistent over time."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vidssl.errors import VidsslError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="k-means segmentation of a whole video (one k-means over all frames)",
        description="One k-means over the patch features of all frames of a video, so cluster colours stay "
                    "consistent through time; writes an MP4 or GIF and a PNG strip. With several --weights, "
                    "one row per encoder (same k, one k-means each), colours matched across rows by "
                    "Hungarian matching of the clusters' masks.",
    )
    p.add_argument("--weights", required=True, metavar="W", nargs="+", action="extend",
                   help="our export, a run directory or checkpoint, an official DINO/DoRA checkpoint, a timm "
                        "state dict, or random:MODEL_NAME; several (--weights A --weights B, or --weights A B) "
                        "give one row per encoder with colours matched to the first row")
    p.add_argument("--labels", nargs="+", metavar="NAME",
                   help="row titles, one per --weights (default: short names of the weights)")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="network inside training checkpoints (default teacher)")
    p.add_argument("--video", required=True, metavar="V", help="any video FFmpeg reads")
    p.add_argument("-k", "--k", type=int, default=5, help="number of clusters (default 5)")
    p.add_argument("--out", required=True, metavar="FILE", help="output video, .mp4 or .gif")
    p.add_argument("--strip", metavar="FILE.png", help="PNG strip of frames and segmentations (default: --out with .png)")
    p.add_argument("--strip-frames", type=int, default=8, help="frames in the PNG strip (default 8)")
    p.add_argument("--size", type=int, default=224, help="short side of the frames fed to the encoder (default 224)")
    p.add_argument("--max-frames", type=int, default=300, help="at most this many frames are read (default 300)")
    p.add_argument("--frame-step", type=int, default=1, help="use every n-th frame (default 1)")
    p.add_argument("--display-size", type=int, default=360,
                   help="short side of the output video and strip; larger videos are downscaled (default 360)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of random:MODEL_NAME and of k-means (default 0)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda:0 ...")
    p.set_defaults(func=run)


def short_name(weights: str) -> str:
    """A row title for a weights argument: the file stem, the run directory's name, or
    random:NAME as given."""
    if weights.startswith("random:"):
        return weights
    path = Path(weights)
    if path.name == "checkpoint.pt":  # a run's checkpoint: the run's name says more
        return path.resolve().parent.name
    return path.stem if path.suffix else path.name


def run(args: argparse.Namespace) -> int:
    from vidssl.eval.features import resolve_device
    from vidssl.hub import load_encoder
    from vidssl.data.video import probe_video, read_frames
    from vidssl.data.writer import write_video
    from vidssl.viz.segment import (overlay, segment_rows, segment_video, stack_rows, video_patch_features,
                                    write_rows_strip, write_strip)

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise VidsslError(f"--out {out}: use a .mp4 or .gif file name")
    if args.k < 1:
        raise VidsslError("-k must be at least 1")
    if args.labels is not None and len(args.labels) != len(args.weights):
        raise VidsslError(f"--labels: {len(args.labels)} name(s) for {len(args.weights)} --weights; give one per --weights")
    if args.frame_step < 1 or args.max_frames < 1:
        raise VidsslError("--frame-step and --max-frames must be at least 1")
    device = resolve_device(args.device)
    # load every encoder before the (slow) video decode, so a bad --weights fails at once;
    # random:NAME uses --seed in every row, so the same weights twice give the same row
    encoders = [load_encoder(w, checkpoint_key=args.checkpoint_key, seed=args.seed) for w in args.weights]
    info = probe_video(args.video)
    indices = list(range(0, info.num_frames, args.frame_step))[: args.max_frames]
    frames = read_frames(args.video, indices, short_side=args.display_size, skip_undecodable=True)
    fps = info.fps / args.frame_step
    H, W = frames.shape[1:3]
    grid = (max(1, H // 4), max(1, W // 4))  # every row's labels on this grid, so masks are comparable
    label_rows = []
    for i in range(len(encoders)):
        vit, encoders[i] = encoders[i].to(device), None  # one encoder in memory at a time
        feats = video_patch_features(vit, frames, args.size, args.batch_size)  # (T, D, h, w)
        if feats.shape[0] * feats.shape[2] * feats.shape[3] < args.k:
            raise VidsslError(f"-k {args.k} exceeds the number of patches in the video")
        label_rows.append(segment_video(feats, args.k, grid, seed=args.seed + 1))
        del vit, feats
    strip = Path(args.strip) if args.strip else out.with_suffix(".png")
    if len(args.weights) == 1 and args.labels is None:  # the single-encoder picture, as before
        blended = overlay(frames, label_rows[0], args.k)
        write_video(out, blended, fps)
        write_strip(strip, frames, blended, args.strip_frames)
        print(f"segment: {len(frames)} frames, k={args.k} -> {out} and {strip}")
        return 0
    names = args.labels or [short_name(w) for w in args.weights]
    matched, agreement = segment_rows(label_rows, args.k)
    rows = [overlay(frames, labels, args.k) for labels in matched]
    write_video(out, stack_rows(rows, names), fps)
    times = np.asarray(indices) / info.fps if len(frames) == len(indices) else None  # unknown if frames were skipped
    write_rows_strip(strip, frames, rows, names, args.strip_frames, times=times)
    print(f"segment: {len(frames)} frames, k={args.k}, {len(rows)} rows -> {out} and {strip}")
    for name, a in zip(names[1:], agreement[1:]):
        print(f"  {name}: mean IoU of its clusters with {names[0]}'s after matching {a:.2f}")
    return 0
