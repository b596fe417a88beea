"""`vidssl export RUN_DIR_OR_CHECKPOINT --out FILE.safetensors`: the teacher backbone for timm users."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a run's teacher backbone as a timm-compatible safetensors file",
        description=(
            "Export an encoder (run directory, checkpoint, official DINO/DoRA checkpoint, timm state "
            "dict) as a timm VisionTransformer state dict in safetensors; the metadata holds the timm "
            "model name, image size and patch size."
        ),
    )
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a vidssl run directory (with checkpoint.pt), a checkpoint file or any weights load_encoder accepts")
    p.add_argument("--out", required=True, metavar="FILE.safetensors", help="where to write the exported encoder")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="which network of a training checkpoint to export (default: teacher, the DINO protocol)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidssl.hub import export_encoder

    out = export_encoder(args.source, args.out, checkpoint_key=args.checkpoint_key)
    print(f"exported {args.source} [{args.checkpoint_key}] -> {out}")
    return 0
