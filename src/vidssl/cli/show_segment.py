"""`vidssl show segment`: k-means segmentation of a whole video with colours consistent over time."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidssl.errors import VidsslError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="k-means segmentation of a whole video (one k-means over all frames)",
        description="One k-means over the patch features of all frames of a video, so cluster colours stay "
                    "consistent through time; writes an MP4 or GIF and a PNG strip.",
    )
    p.add_argument("--weights", required=True, metavar="W",
                   help="our export, a run directory or checkpoint, an official DINO/DoRA checkpoint, a timm "
                        "state dict, or random:MODEL_NAME")
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


def run(args: argparse.Namespace) -> int:
    from vidssl.eval.features import resolve_device
    from vidssl.hub import load_encoder
    from vidssl.data.video import probe_video, read_frames
    from vidssl.data.writer import write_video
    from vidssl.viz.segment import overlay, segment_video, video_patch_features, write_strip

    out = Path(args.out)
    if out.suffix.lower() not in (".mp4", ".gif"):
        raise VidsslError(f"--out {out}: use a .mp4 or .gif file name")
    if args.k < 1:
        raise VidsslError("-k must be at least 1")
    vit = load_encoder(args.weights, checkpoint_key=args.checkpoint_key, seed=args.seed).to(resolve_device(args.device))
    if args.frame_step < 1 or args.max_frames < 1:
        raise VidsslError("--frame-step and --max-frames must be at least 1")
    info = probe_video(args.video)
    indices = list(range(0, info.num_frames, args.frame_step))[: args.max_frames]
    frames = read_frames(args.video, indices, short_side=args.display_size, skip_undecodable=True)
    fps = info.fps / args.frame_step
    feats = video_patch_features(vit, frames, args.size, args.batch_size)  # (T, D, h, w)
    if feats.shape[0] * feats.shape[2] * feats.shape[3] < args.k:
        raise VidsslError(f"-k {args.k} exceeds the number of patches in the video")
    H, W = frames.shape[1:3]
    labels = segment_video(feats, args.k, (max(1, H // 4), max(1, W // 4)), seed=args.seed + 1)
    blended = overlay(frames, labels, args.k)
    write_video(out, blended, fps)
    strip = Path(args.strip) if args.strip else out.with_suffix(".png")
    write_strip(strip, frames, blended, args.strip_frames)
    print(f"segment: {len(frames)} frames, k={args.k} -> {out} and {strip}")
    return 0
