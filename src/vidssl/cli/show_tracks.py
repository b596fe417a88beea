"""`vidssl show tracks`: the objects DoRA's tracker follows through a clip (PNG grid + MP4/GIF)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidssl.errors import VidsslError

VIDEO_SUFFIXES = (".mp4", ".gif")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tracks",
        help="the k objects DoRA's tracker follows through a clip: a PNG grid and an MP4 or GIF",
        description=(
            "Discover k objects on the first frame of a clip from the [CLS] attention of k heads, refine "
            "them with Sinkhorn-Knopp and track them into every frame by cross-attention (DoRA's tracker, "
            "as in training). Writes a PNG grid (frames by objects) and a video of the clip with the "
            "objects coloured."
        ),
    )
    p.add_argument("--weights", required=True, metavar="W",
                   help="encoder weights: a run directory, checkpoint, export (.safetensors), official "
                        "DINO/DoRA checkpoint, timm state dict, or random:MODEL_NAME")
    p.add_argument("--video", required=True, metavar="V", help="the video file")
    p.add_argument("--start", type=int, default=0, metavar="N", help="first frame of the clip (default: 0)")
    p.add_argument("--frames", type=int, default=8, metavar="T", help="frames in the clip (default: 8, as in training)")
    p.add_argument("--stride", type=int, default=30, metavar="S",
                   help="frames between consecutive clip frames (default: 30; the paper's recipe uses 60 at 60 fps)")
    p.add_argument("--size", type=int, default=224, metavar="PX",
                   help="frames are resized (shorter side) and centre-cropped to PX x PX, rounded down to "
                        "a multiple of the patch size (default: 224)")
    p.add_argument("--objects", type=int, default=3, metavar="K",
                   help="objects to track, 1 to the number of heads (default: 3)")
    p.add_argument("--heads", default=None, metavar="A,B,...",
                   help="the heads that seed the objects (default: K heads drawn with --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the head draw (default: 0)")
    p.add_argument("--sinkhorn-iters", type=int, default=30, help="Sinkhorn-Knopp iterations (default: 30)")
    p.add_argument("--sinkhorn-eps", type=float, default=0.05, help="Sinkhorn-Knopp epsilon (default: 0.05)")
    p.add_argument("--features", default="attention_output", choices=("attention_output", "final_tokens"),
                   help="patch embeddings the prototypes are refined against (default: attention_output, "
                        "the paper; final_tokens is the official code, see docs/dora.md)")
    p.add_argument("--fps", type=float, default=2.0, help="frame rate of the written video (default: 2)")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="which network of a training checkpoint to use (default: teacher, as in training)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="FILE.png: the grid, with the video beside it as FILE.mp4; FILE.mp4 or FILE.gif: the "
                        "video, with the grid beside it as FILE.png")
    p.set_defaults(func=run)


def _output_paths(out: str) -> tuple[Path, Path]:
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".png":
        return path, path.with_suffix(".mp4")
    if suffix in VIDEO_SUFFIXES:
        return path.with_suffix(".png"), path
    raise VidsslError(f"--out {out}: use a .png, .mp4 or .gif file name")


def _parse_heads(text: str | None, k: int, num_heads: int):
    import torch

    if text is None:
        return None
    try:
        heads = [int(v) for v in text.split(",")]
    except ValueError:
        raise VidsslError(f"--heads {text!r}: expected comma-separated head numbers") from None
    if len(heads) != k or len(set(heads)) != k or not all(0 <= h < num_heads for h in heads):
        raise VidsslError(f"--heads {text!r}: give {k} different heads between 0 and {num_heads - 1} (one per object)")
    return torch.tensor(heads)


def run(args: argparse.Namespace) -> int:
    import torch

    from vidssl.data.video import read_frames
    from vidssl.hub import load_encoder
    from vidssl.models import Encoder
    from vidssl.ops.tracking import choose_heads
    from vidssl.viz.tracks import object_overlay, save_tracks_png, track_clip_picture, write_clip_video

    png, video = _output_paths(args.out)
    for name in ("frames", "stride", "size", "sinkhorn_iters"):
        if getattr(args, name) < 1:
            raise VidsslError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.start < 0:
        raise VidsslError(f"--start must be 0 or more, got {args.start}")
    if args.sinkhorn_eps <= 0:
        raise VidsslError(f"--sinkhorn-eps must be positive, got {args.sinkhorn_eps}")
    encoder = Encoder(load_encoder(args.weights, checkpoint_key=args.checkpoint_key)).eval()
    try:
        heads = _parse_heads(args.heads, args.objects, encoder.num_heads)
        if heads is None:
            heads = choose_heads(encoder.num_heads, args.objects, generator=torch.Generator().manual_seed(args.seed))
    except ValueError as e:
        raise VidsslError(f"--objects {args.objects}: {e}") from None
    indices = [args.start + t * args.stride for t in range(args.frames)]
    clip = torch.from_numpy(read_frames(args.video, indices))
    frames, masks, _ = track_clip_picture(
        encoder, clip, args.size, args.objects, args.sinkhorn_iters, args.sinkhorn_eps, "sample_mean",
        args.features, heads=heads,
    )
    title = f"{Path(args.video).name} frames {indices[0]}..{indices[-1]} step {args.stride}: heads {heads.tolist()}"
    save_tracks_png(png, frames, masks, title)
    write_clip_video(video, object_overlay(frames, masks), fps=args.fps)
    kept = masks.mean(axis=(0, 2, 3))
    print(f"wrote {png} and {video}: {args.objects} objects over {args.frames} frames; "
          f"kept area per object {', '.join(f'{k:.0%}' for k in kept)}")
    return 0
