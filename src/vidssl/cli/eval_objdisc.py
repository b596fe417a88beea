"""`vidssl eval objdisc`: LOST single-object discovery from the last block's keys, CorLoc."""

from __future__ import annotations

import argparse

from vidssl.cli.evaluate import add_common_options, encoder_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("objdisc", help="single-object discovery (LOST on the last block's keys), CorLoc",
                              description="LOST single-object discovery (Simeoni et al. 2021): the seed patch with the "
                                          "fewest positive key correlations, its expansion, the box of its connected "
                                          "component; CorLoc = %% of images with IoU >= 0.5 to a ground-truth box.")
    add_common_options(p, cache=False)
    p.add_argument("--data", required=True, metavar="DIR", help="dataset root in the --layout")
    p.add_argument("--layout", required=True, choices=("voc07", "voc12", "coco20k"),
                   help="voc07/voc12: JPEGImages, Annotations/*.xml, ImageSets/Main/SPLIT.txt; "
                        "coco20k: images/, annotations.json (COCO instances), images.txt (file names)")
    p.add_argument("--split", default="trainval", help="voc: split file under ImageSets/Main without .txt (default trainval)")
    p.add_argument("--annotations", metavar="FILE", help="coco20k: COCO instances JSON (default DIR/annotations.json)")
    p.add_argument("--image-list", metavar="FILE", help="coco20k: one image file name per line (default DIR/images.txt)")
    p.add_argument("--k", type=int, default=100, help="expansion: the k lowest-degree patches considered (default 100, LOST)")
    p.add_argument("--max-side", type=int, metavar="PX",
                   help="downsize images whose long side exceeds PX, keeping the aspect (default: full resolution, LOST)")
    p.add_argument("--skip-difficult", action="store_true", help="voc: drop objects marked difficult from the ground truth")
    p.add_argument("--iou-threshold", type=float, default=0.5, help="a box is correct at IoU >= this (default 0.5)")
    p.add_argument("--out", metavar="DIR", help="draw predicted (red/orange) and ground-truth (green) boxes as DIR/NAME.jpg")
    p.add_argument("--num-workers", type=int, default=2, help="data-loader worker processes (default 2)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache root; the boxes are stored in DIR/features (default: $VIDSSL_CACHE_DIR, else ~/.cache/vidssl)")
    p.add_argument("--no-cache", action="store_true", help="recompute the boxes and do not store them")
    p.set_defaults(func=run_objdisc)


def run_objdisc(args: argparse.Namespace) -> int:
    from vidssl.eval.objdisc import evaluate_objdisc
    from vidssl.eval.report import finish, one_line_warnings

    with one_line_warnings():
        result = evaluate_objdisc(args.weights, args.data, args.layout, split=args.split, k=args.k,
                                  max_side=args.max_side, skip_difficult=args.skip_difficult,
                                  annotations=args.annotations, image_list=args.image_list,
                                  iou_threshold=args.iou_threshold, out=args.out, num_workers=args.num_workers,
                                  cache=not args.no_cache, cache_dir=args.cache_dir, **encoder_options(args))
    m = result["metrics"]
    finish(result, f"objdisc {args.weights} ({args.layout}, {result['images']} images): CorLoc={m['CorLoc']:.2f} "
                   f"mean best IoU={m['mean_best_IoU']:.2f}", args.json)
    return 0
