"""`vidssl eval semseg`: linear semantic segmentation probe on frozen patch tokens (VOC, ADE20k)."""

from __future__ import annotations

import argparse

from vidssl.cli.evaluate import add_common_options, cache_options, encoder_options, format_number


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "semseg", help="linear semantic segmentation on frozen patch tokens (VOC, ADE20k), mIoU",
        description="BN + 1x1-conv probe on the last layer's patch tokens (DINOv2's linear protocol): --mode full "
                    "trains on augmented 512 crops and scores by sliding-window inference; --mode fast trains "
                    "on cached token grids of resized images (CPU friendly). mIoU and per-class IoU on the "
                    "validation split.")
    add_common_options(p)
    p.add_argument("--data", required=True, metavar="DIR",
                   help="voc: root with JPEGImages, SegmentationClass, ImageSets/Segmentation; "
                        "ade20k: ADEChallengeData2016 (or its parent) with images|annotations/training|validation")
    p.add_argument("--layout", required=True, choices=("voc", "ade20k"), help="dataset layout")
    p.add_argument("--mode", choices=("full", "fast"), default="full",
                   help="full: augmented crops through the backbone every iteration, sliding-window inference; "
                        "fast: cached token grids at --fast-size (default full)")
    p.add_argument("--train-split", help="training split (default: voc train, ade20k training)")
    p.add_argument("--val-split", help="evaluation split (default: voc val, ade20k validation)")
    p.add_argument("--iters", type=int, default=4000, help="training iterations (default 4000; DINOv2 uses 40000)")
    p.add_argument("--train-batch-size", type=int, default=16, help="crops per iteration (default 16, DINOv2's)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    p.add_argument("--warmup-iters", type=int, default=150,
                   help="linear warm-up iterations before the poly decay (default 150; DINOv2: 1500 of 40000)")
    p.add_argument("--crop-size", type=int, default=512, help="full: training crop size (default 512)")
    p.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 2.0), metavar=("LOW", "HIGH"),
                   help="full: random rescale ratio range of the training images (default 0.5 2.0)")
    p.add_argument("--no-flip", action="store_true", help="full: no random horizontal flip")
    p.add_argument("--test-size", type=int, default=512,
                   help="full: validation images are rescaled to fit in 4*SIZE x SIZE (default 512)")
    p.add_argument("--window", type=int, default=512, help="full: sliding-window size (default 512)")
    p.add_argument("--stride", type=int, default=341, help="full: sliding-window stride (default 341)")
    p.add_argument("--fast-size", type=int, default=224, help="fast: images resized to this square size (default 224)")
    p.add_argument("--fast-label-size", type=int,
                   help="fast: training labels resized to this square size (default 4 x the token grid)")
    p.set_defaults(func=run_semseg)


def run_semseg(args: argparse.Namespace) -> int:
    from vidssl.eval.report import finish, one_line_warnings
    from vidssl.eval.semseg import evaluate_semseg

    with one_line_warnings():
        result = evaluate_semseg(
            args.weights, args.data, args.layout, mode=args.mode, train_split=args.train_split,
            val_split=args.val_split, iters=args.iters, train_batch_size=args.train_batch_size, lr=args.lr,
            weight_decay=args.weight_decay, warmup_iters=args.warmup_iters, crop_size=args.crop_size,
            scale_range=tuple(args.scale_range), flip=not args.no_flip, test_size=args.test_size,
            window=args.window, stride=args.stride, fast_size=args.fast_size,
            fast_label_size=args.fast_label_size, **cache_options(args), **encoder_options(args))
    m = result["metrics"]
    finish(result, f"semseg[{args.mode}] {args.weights} ({args.layout} {result['val_split']}, "
                   f"{result['val_images']} images): mIoU={format_number(m['mIoU'])} pixel-acc={format_number(m['pixel_accuracy'])} "
                   f"({m['classes_present']} classes)", args.json)
    return 0
