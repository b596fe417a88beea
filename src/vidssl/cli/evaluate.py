"""`vidssl eval knn|linear|davis|unsup-seg`: evaluate any encoder load_encoder accepts.

Each command parses its options, calls the library's `vidssl.eval.evaluate_*` (which loads the
weights strictly, computes and caches features and returns a plain dict), prints the headline
metrics as the last line and writes the dict as JSON with `--json FILE`. Warnings are one line each.
"""

from __future__ import annotations

import argparse


def add_common_options(p: argparse.ArgumentParser, cache: bool = True) -> None:
    """The options every `vidssl eval` command shares (weights, device, JSON; with `cache`, feature extraction)."""
    p.add_argument("--weights", required=True, metavar="W",
                   help="our .safetensors export, a run directory or checkpoint, an official DINO/DoRA "
                        "checkpoint, a timm state dict, or random:MODEL_NAME (e.g. random:vit_small_patch16_224)")
    p.add_argument("--checkpoint-key", default="teacher", choices=("teacher", "student"),
                   help="network to evaluate inside training checkpoints (default: teacher, the DINO protocol)")
    p.add_argument("--seed", type=int, default=0, help="seed of random:MODEL_NAME initialisation (default 0)")
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda:0 ...")
    p.add_argument("--json", metavar="FILE", help="also write every metric to this JSON file")
    if cache:
        p.add_argument("--batch-size", type=int, default=64, help="images per forward pass when extracting features (default 64)")
        p.add_argument("--num-workers", type=int, default=2, help="data-loader worker processes (default 2)")
        p.add_argument("--cache-dir", metavar="DIR",
                       help="cache root; features are stored in DIR/features (default: $VIDSSL_CACHE_DIR, else ~/.cache/vidssl)")
        p.add_argument("--no-cache", action="store_true", help="recompute features and do not store them")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("knn", help="weighted k-NN on [CLS] features (DINO protocol)",
                              description="Weighted k-NN classification (DINO protocol, SPEC 4.1) on ImageFolder layouts.")
    add_common_options(p)
    p.add_argument("--train", required=True, metavar="DIR", help="training images, ImageFolder layout DIR/CLASS/IMAGE")
    p.add_argument("--val", required=True, metavar="DIR", help="validation images, ImageFolder layout with the same classes")
    p.add_argument("--k", type=int, nargs="+", action="extend", help="numbers of neighbours (default 10 20 100 200)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(similarity / T) (default 0.07)")
    p.add_argument("--image-size", type=int, default=224,
                   help="center-crop size; images are first resized to size*256/224 (default 224)")
    p.set_defaults(func=run_knn)

    p = subparsers.add_parser("linear", help="linear probe on frozen features (DINO protocol, or fast on cached features)",
                              description="Linear probe (DINO protocol, SPEC 4.2). --mode full re-augments the images "
                                          "every epoch; --mode fast trains on cached center-crop features (CPU friendly).")
    add_common_options(p)
    p.add_argument("--train", required=True, metavar="DIR", help="training images, ImageFolder layout")
    p.add_argument("--val", required=True, metavar="DIR", help="validation images, ImageFolder layout with the same classes")
    p.add_argument("--mode", choices=("full", "fast"), default="full",
                   help="full: DINO's protocol with RandomResizedCrop+flip every epoch; fast: fixed cached features (default full)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--lr", type=float, default=0.01, help="base learning rate, scaled by train batch / 256 (default 0.01)")
    p.add_argument("--train-batch-size", type=int, default=256, help="classifier mini-batch size (default 256)")
    p.add_argument("--n-last-blocks", type=int, default=4, help="concatenate the [CLS] of the last n blocks (default 4)")
    p.add_argument("--avgpool", action="store_true", help="append the mean of the last block's patch tokens")
    p.add_argument("--image-size", type=int, default=224, help="crop size for train and val (default 224)")
    p.set_defaults(func=run_linear)

    p = subparsers.add_parser("davis", help="DAVIS-2017 video object segmentation by label propagation, J&F",
                              description="Semi-supervised VOS by label propagation (DINO protocol, SPEC 4.3) on the "
                                          "DAVIS-2017 layout; writes indexed PNGs and scores J and F itself.")
    add_common_options(p, cache=False)
    p.add_argument("--davis", required=True, metavar="DIR",
                   help="DAVIS-2017 root with JPEGImages/480p, Annotations/480p, ImageSets/2017/SPLIT.txt")
    p.add_argument("--split", default="val", help="split file under ImageSets/2017 (default val)")
    p.add_argument("--out", metavar="DIR", help="write the predicted masks here as DIR/SEQUENCE/FRAME.png")
    p.add_argument("--sequences", nargs="+", action="extend", metavar="NAME", help="evaluate only these sequences of the split")
    p.add_argument("--resolution", type=int, default=480, help="short side of the frames fed to the encoder (default 480)")
    p.add_argument("--long-multiple", type=int, default=64, help="the long side is rounded down to a multiple of this (default 64)")
    p.add_argument("--n-last", type=int, default=7, help="previous frames used as context besides the first (default 7)")
    p.add_argument("--radius", type=int, default=12, help="neighbourhood radius in patches; -1 for none (default 12)")
    p.add_argument("--topk", type=int, default=5, help="sources kept per target patch (default 5)")
    p.add_argument("--temperature", type=float, default=0.1, help="affinity exp(similarity / T) (default 0.1)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per forward pass (default 8)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache each sequence's features in DIR/features (off by default: 2-10 MB per frame at 480p)")
    p.set_defaults(func=run_davis)

    p = subparsers.add_parser("unsup-seg", help="unsupervised segmentation: k-means on patch features + matching, mIoU",
                              description="K-means on frozen patch features with Hungarian (or many-to-one) matching "
                                          "to ground truth (TimeT protocol, SPEC 4.5).")
    add_common_options(p)
    p.add_argument("--data", required=True, metavar="DIR", help="dataset root in the --layout")
    p.add_argument("--layout", required=True, choices=("voc", "davis"),
                   help="voc: JPEGImages, SegmentationClass, ImageSets/Segmentation; davis: the DAVIS-2017 layout")
    p.add_argument("--split", default="val", help="split file name without .txt (default val)")
    p.add_argument("--protocol", nargs="+", action="extend", choices=("frame", "clip", "dataset"),
                   help="k-means per frame, per clip (davis only) or over the dataset (default: voc frame dataset; davis frame clip)")
    p.add_argument("--num-clusters", type=int, help="K; default the number of ground-truth labels in the unit clustered")
    p.add_argument("--many-to-one", action="store_true", help="over-clustering: greedy cluster -> best-IoU class merging")
    p.add_argument("--precision-based", action="store_true", help="with --many-to-one, match by precision instead of IoU")
    p.add_argument("--input-size", type=int, default=224, help="images are resized to this square size (default 224)")
    p.add_argument("--eval-size", type=int, default=112, help="features upsampled and masks resized to this size (default 112)")
    p.add_argument("--clip-frames", type=int, default=0, help="davis: split sequences into clips of N frames (default 0: whole sequence)")
    p.add_argument("--kmeans-seed", type=int, default=1, help="faiss k-means seed (default 1)")
    p.set_defaults(func=run_unsup_seg)


# --------------------------------------------------------------------------- commands
# Each command passes its options to the library's evaluate_* and prints / writes what it returns.


def encoder_options(args: argparse.Namespace) -> dict:
    return dict(checkpoint_key=args.checkpoint_key, seed=args.seed, device=args.device)


def cache_options(args: argparse.Namespace) -> dict:
    return dict(batch_size=args.batch_size, num_workers=args.num_workers, cache=not args.no_cache,
                cache_dir=args.cache_dir)


def run_knn(args: argparse.Namespace) -> int:
    from vidssl.eval.knn import DEFAULT_KS, evaluate_knn
    from vidssl.eval.report import finish, one_line_warnings

    with one_line_warnings():
        args.k = args.k or list(DEFAULT_KS)  # not an argparse default: `extend` would add to it
        result = evaluate_knn(args.weights, args.train, args.val, k=args.k, temperature=args.temperature,
                              image_size=args.image_size, **cache_options(args), **encoder_options(args))
    metrics = result["metrics"]
    main_k = 20 if 20 in args.k else args.k[0]
    parts = " ".join(f"top1@{k}={metrics[f'top1@{k}']:.2f}" for k in args.k)
    finish(result, f"knn {args.weights}: top1@{main_k}={metrics[f'top1@{main_k}']:.2f} "
                   f"top5@{main_k}={metrics[f'top5@{main_k}']:.2f} | {parts}", args.json)
    return 0


def run_linear(args: argparse.Namespace) -> int:
    from vidssl.eval.linear import evaluate_linear
    from vidssl.eval.report import finish, one_line_warnings

    with one_line_warnings():
        result = evaluate_linear(args.weights, args.train, args.val, mode=args.mode, epochs=args.epochs, lr=args.lr,
                                 train_batch_size=args.train_batch_size, n_last_blocks=args.n_last_blocks,
                                 avgpool=args.avgpool, image_size=args.image_size, **cache_options(args), **encoder_options(args))
    metrics = result["metrics"]
    finish(result, f"linear[{args.mode}] {args.weights}: best top1={metrics['best_top1']:.2f} "
                   f"(epoch {int(metrics['best_epoch'])}) last top1={metrics['last_top1']:.2f} "
                   f"top5={metrics['last_top5']:.2f}", args.json)
    return 0


def format_number(value: float | None) -> str:
    return "nan" if value is None else f"{value:.2f}"


def run_davis(args: argparse.Namespace) -> int:
    from vidssl.eval.davis import evaluate_davis
    from vidssl.eval.report import finish, one_line_warnings

    with one_line_warnings():
        result = evaluate_davis(args.weights, args.davis, split=args.split, out=args.out, sequences=args.sequences,
                                resolution=args.resolution, long_multiple=args.long_multiple, n_last=args.n_last,
                                radius=args.radius, topk=args.topk, temperature=args.temperature,
                                batch_size=args.batch_size, cache_dir=args.cache_dir, **encoder_options(args))
    m = result["metrics"]
    unscored = f", {len(m['unscored_sequences'])} unscored" if m["unscored_sequences"] else ""
    finish(result, f"davis {args.weights}: J&F-mean={format_number(m['J&F-mean'])} J-mean={format_number(m['J-mean'])} "
                   f"F-mean={format_number(m['F-mean'])} ({len(m['sequences'])} sequences, {m['objects']} objects{unscored})",
           args.json)
    return 0


def run_unsup_seg(args: argparse.Namespace) -> int:
    from vidssl.eval.report import finish, one_line_warnings
    from vidssl.eval.unsup_seg import evaluate_unsup_seg

    with one_line_warnings():
        result = evaluate_unsup_seg(args.weights, args.data, args.layout, split=args.split, protocols=args.protocol,
                                    num_clusters=args.num_clusters, many_to_one=args.many_to_one,
                                    precision_based=args.precision_based, input_size=args.input_size,
                                    eval_size=args.eval_size, clip_frames=args.clip_frames,
                                    kmeans_seed=args.kmeans_seed, **cache_options(args), **encoder_options(args))
    metrics = result["metrics"]
    k = f"K={args.num_clusters}" if args.num_clusters else "K=#GT"
    parts = " ".join(f"{p}-wise mIoU={format_number(metrics[p]['mIoU'])}" for p in metrics)
    finish(result, f"unsup-seg {args.weights} ({args.layout}, {k}{', many-to-one' if args.many_to_one else ''}): {parts}",
           args.json)
    return 0
