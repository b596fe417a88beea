"""`vidssl export RUN_DIR_OR_CHECKPOINT --out FILE.safetensors`: the teacher backbone for timm users."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    from vidssl.io import OutputError, writable_dir

    # Output problems first, before the encoder is loaded: a folder where the file should go, a
    # file where its folder should be, a read-only folder. (Bad export metadata in the source, such
    # as patch_size "0", is one line from vidssl.hub; the write itself is atomic there.)
    out = Path(args.out)
    if out.is_dir():
        raise OutputError(f"cannot write {out}: it is an existing folder, not a file; choose another --out")
    if out.suffix == ".safetensors":  # otherwise export_encoder says what the name must end in
        writable_dir(out.parent)
    out = export_encoder(args.source, out, checkpoint_key=args.checkpoint_key)
    print(f"exported {args.source} [{args.checkpoint_key}] -> {out}")
    return 0
