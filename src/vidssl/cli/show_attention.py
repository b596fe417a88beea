"""`vidssl show attention`: the last layer's [CLS] attention of every head, and an RGB composite."""

from __future__ import annotations

import argparse

from vidssl.errors import VidsslError


def _heads(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated head numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated head numbers, got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attention",
        help="the last layer's [CLS] attention of every head on an image or a video frame",
        description=(
            "Draw the [CLS]->patch attention of every head of the encoder's last block on one image "
            "or one video frame, and a composite with three heads as red, green and blue."
        ),
    )
    p.add_argument("--weights", required=True, metavar="W",
                   help="encoder weights: a run directory, checkpoint, export (.safetensors), official "
                        "DINO/DoRA checkpoint, timm state dict, or random:MODEL_NAME")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="P", help="an image file (PNG, JPEG, ...)")
    src.add_argument("--video", metavar="V", help="a video file; the frame is chosen with --frame")
    p.add_argument("--frame", type=int, default=0, metavar="N", help="frame index in --video (default: 0)")
    p.add_argument("--size", type=int, default=224, metavar="S",
                   help="the shorter side is resized to S px, then both sides are cropped to multiples of "
                        "the patch size (default: 224)")
    p.add_argument("--heads", type=_heads, default=(0, 1, 2), metavar="A,B,C",
                   help="the three heads of the red/green/blue composite (default: 0,1,2)")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="which network of a training checkpoint to show (default: teacher)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="where to write the picture")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vidssl.data.video import read_frames
    from vidssl.hub import load_encoder
    from vidssl.models import Encoder
    from vidssl.viz.attention import (
        cls_attention_maps, fit_to_patches, read_image, save_attention_figure,
    )

    if args.size < 1:
        raise VidsslError(f"--size must be positive, got {args.size}")
    if args.image is None and args.frame != 0 and args.video is None:
        raise VidsslError("--frame needs --video")
    encoder = Encoder(load_encoder(args.weights, checkpoint_key=args.checkpoint_key)).eval()
    if args.image is not None:
        image, what = read_image(args.image), args.image
    else:
        image = torch.from_numpy(read_frames(args.video, [args.frame])[0]).permute(2, 0, 1)
        what = f"{args.video} frame {args.frame}"
    image = fit_to_patches(image, args.size, encoder.patch_size)
    maps = cls_attention_maps(encoder, image)
    if len(set(args.heads)) != 3 and maps.shape[0] >= 3:
        raise VidsslError(f"--heads: choose three different heads, got {args.heads}")
    out = save_attention_figure(args.out, image, maps, args.heads, title=f"{args.weights}: {what}")
    print(f"wrote {out} ({maps.shape[0]} heads, {image.shape[2]}x{image.shape[1]} px)")
    return 0
