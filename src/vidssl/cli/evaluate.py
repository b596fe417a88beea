"""`vidssl eval knn|linear|davis|unsup-seg`: evaluate any encoder load_encoder accepts.

Each command loads the weights strictly, computes (and caches) features, prints its
headline metrics as the last line and writes everything as JSON with `--json FILE`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vidssl.errors import VidsslError

if TYPE_CHECKING:
    import torch


def _common(p: argparse.ArgumentParser, cache: bool = True) -> None:
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
    _common(p)
    p.add_argument("--train", required=True, metavar="DIR", help="training images, ImageFolder layout DIR/CLASS/IMAGE")
    p.add_argument("--val", required=True, metavar="DIR", help="validation images, ImageFolder layout with the same classes")
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200], help="numbers of neighbours (default 10 20 100 200)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(similarity / T) (default 0.07)")
    p.add_argument("--image-size", type=int, default=224,
                   help="center-crop size; images are first resized to size*256/224 (default 224)")
    p.set_defaults(func=run_knn)

    p = subparsers.add_parser("linear", help="linear probe on frozen features (DINO protocol, or fast on cached features)",
                              description="Linear probe (DINO protocol, SPEC 4.2). --mode full re-augments the images "
                                          "every epoch; --mode fast trains on cached center-crop features (CPU friendly).")
    _common(p)
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
    _common(p, cache=False)
    p.add_argument("--davis", required=True, metavar="DIR",
                   help="DAVIS-2017 root with JPEGImages/480p, Annotations/480p, ImageSets/2017/SPLIT.txt")
    p.add_argument("--split", default="val", help="split file under ImageSets/2017 (default val)")
    p.add_argument("--out", metavar="DIR", help="write the predicted masks here as DIR/SEQUENCE/FRAME.png")
    p.add_argument("--sequences", nargs="+", metavar="NAME", help="evaluate only these sequences of the split")
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
    _common(p)
    p.add_argument("--data", required=True, metavar="DIR", help="dataset root in the --layout")
    p.add_argument("--layout", required=True, choices=("voc", "davis"),
                   help="voc: JPEGImages, SegmentationClass, ImageSets/Segmentation; davis: the DAVIS-2017 layout")
    p.add_argument("--split", default="val", help="split file name without .txt (default val)")
    p.add_argument("--protocol", nargs="+", choices=("frame", "clip", "dataset"),
                   help="k-means per frame, per clip (davis only) or over the dataset (default: voc frame dataset; davis frame clip)")
    p.add_argument("--num-clusters", type=int, help="K; default the number of ground-truth labels in the unit clustered")
    p.add_argument("--many-to-one", action="store_true", help="over-clustering: greedy cluster -> best-IoU class merging")
    p.add_argument("--precision-based", action="store_true", help="with --many-to-one, match by precision instead of IoU")
    p.add_argument("--input-size", type=int, default=224, help="images are resized to this square size (default 224)")
    p.add_argument("--eval-size", type=int, default=112, help="features upsampled and masks resized to this size (default 112)")
    p.add_argument("--clip-frames", type=int, default=0, help="davis: split sequences into clips of N frames (default 0: whole sequence)")
    p.add_argument("--kmeans-seed", type=int, default=1, help="faiss k-means seed (default 1)")
    p.set_defaults(func=run_unsup_seg)


# --------------------------------------------------------------------------- shared


def _load(args: argparse.Namespace):
    from vidssl.eval.features import resolve_device
    from vidssl.hub import describe_weights, load_encoder

    vit = load_encoder(args.weights, checkpoint_key=args.checkpoint_key, seed=args.seed)
    vit.to(resolve_device(args.device))
    return vit, describe_weights(args.weights, args.checkpoint_key, args.seed)


def _cache(args: argparse.Namespace):
    from vidssl.eval.features import FeatureCache, default_cache_dir

    if args.no_cache:
        return FeatureCache(None)
    return FeatureCache(Path(args.cache_dir) / "features" if args.cache_dir else default_cache_dir())


def _check_patch(vit, size: int, option: str) -> None:
    patch = vit.patch_embed.patch_size[0]
    if size % patch:
        raise VidsslError(f"{option} {size} is not a multiple of the patch size {patch}")


def _classes(args: argparse.Namespace):
    from vidssl.eval.features import read_image_folder

    train, val = read_image_folder(args.train), read_image_folder(args.val)
    if train.classes != val.classes:
        raise VidsslError(f"{args.val}: classes {val.classes} differ from {args.train}: {train.classes}")
    return train, val


# --------------------------------------------------------------------------- commands


def run_knn(args: argparse.Namespace) -> int:
    from vidssl.eval.features import cached_image_features, cls_features, eval_transform
    from vidssl.eval.knn import knn_evaluate
    from vidssl.eval.report import finish

    if any(k < 1 for k in args.k) or args.temperature <= 0:
        raise VidsslError("--k values must be >= 1 and --temperature > 0")
    train, val = _classes(args)
    vit, wid = _load(args)
    _check_patch(vit, args.image_size, "--image-size")
    cache, tf = _cache(args), eval_transform(args.image_size)
    tid = f"dino-eval-{args.image_size}"
    common = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    ftr = cached_image_features(vit, wid, [p for p, _ in train.items], tf, tid, cls_features, "cls", cache, desc="train features", **common)
    fva = cached_image_features(vit, wid, [p for p, _ in val.items], tf, tid, cls_features, "cls", cache, desc="val features", **common)
    metrics = knn_evaluate(ftr, train.labels, fva, val.labels, args.k, args.temperature, len(train.classes))
    result = {"eval": "knn", "weights": args.weights, "train": str(args.train), "val": str(args.val),
              "temperature": args.temperature, "image_size": args.image_size,
              "n_train": len(train.items), "n_val": len(val.items), "metrics": metrics}
    main_k = 20 if 20 in args.k else args.k[0]
    parts = " ".join(f"top1@{k}={metrics[f'top1@{k}']:.2f}" for k in args.k)
    finish(result, f"knn {args.weights}: top1@{main_k}={metrics[f'top1@{main_k}']:.2f} "
                   f"top5@{main_k}={metrics[f'top5@{main_k}']:.2f} | {parts}", args.json)
    return 0


def run_linear(args: argparse.Namespace) -> int:
    from functools import partial

    import torch
    from torch.utils.data import DataLoader

    from vidssl.eval.features import (ImageListDataset, cached_image_features, eval_transform,
                                      last_blocks_features, train_transform)
    from vidssl.eval.linear import linear_probe_full, linear_probe_on_features
    from vidssl.eval.report import finish

    if args.epochs < 1 or args.n_last_blocks < 1 or args.train_batch_size < 1:
        raise VidsslError("--epochs, --n-last-blocks and --train-batch-size must be at least 1")
    train, val = _classes(args)
    vit, wid = _load(args)
    _check_patch(vit, args.image_size, "--image-size")
    if args.n_last_blocks > len(vit.blocks):
        raise VidsslError(f"--n-last-blocks {args.n_last_blocks} exceeds the {len(vit.blocks)} blocks of the model")
    cache, tf = _cache(args), eval_transform(args.image_size)
    tid = f"dino-eval-{args.image_size}"
    fn = partial(last_blocks_features, n_last_blocks=args.n_last_blocks, avgpool=args.avgpool)
    fid = f"last{args.n_last_blocks}cls{'+avg' if args.avgpool else ''}"
    common = dict(batch_size=args.batch_size, num_workers=args.num_workers)
    fva = cached_image_features(vit, wid, [p for p, _ in val.items], tf, tid, fn, fid, cache, desc="val features", **common)
    n_classes = len(train.classes)
    hp = dict(epochs=args.epochs, batch_size=args.train_batch_size, base_lr=args.lr, seed=args.seed)
    device = next(vit.parameters()).device
    if args.mode == "fast":
        ftr = cached_image_features(vit, wid, [p for p, _ in train.items], tf, tid, fn, fid, cache, desc="train features", **common)
        metrics = linear_probe_on_features(ftr.to(device), train.labels.to(device), fva.to(device),
                                           val.labels.to(device), n_classes, **hp)
    else:
        ds = ImageListDataset([p for p, _ in train.items], train_transform(args.image_size))
        labels = train.labels

        def loader(epoch: int):
            g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
            for x, i in DataLoader(ds, batch_size=args.train_batch_size, shuffle=True, generator=g,
                                   num_workers=args.num_workers):
                yield x.to(device), labels[i].to(device)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)  # the augmentations draw from the global RNG
            metrics = linear_probe_full(lambda x: fn(vit, x).float(), loader, fva.shape[1], fva.to(device),
                                        val.labels.to(device), n_classes, **hp)
    result = {"eval": "linear", "mode": args.mode, "weights": args.weights, "train": str(args.train),
              "val": str(args.val), "n_last_blocks": args.n_last_blocks, "avgpool": args.avgpool,
              "image_size": args.image_size, "metrics": metrics}
    finish(result, f"linear[{args.mode}] {args.weights}: best top1={metrics['best_top1']:.2f} "
                   f"(epoch {int(metrics['best_epoch'])}) last top1={metrics['last_top1']:.2f} "
                   f"top5={metrics['last_top5']:.2f}", args.json)
    return 0


def run_davis(args: argparse.Namespace) -> int:
    from vidssl.eval.davis import DavisParams, evaluate_davis
    from vidssl.eval.report import finish

    if args.n_last < 0 or args.topk < 1 or args.temperature <= 0:
        raise VidsslError("--n-last must be >= 0, --topk >= 1 and --temperature > 0")
    from vidssl.eval.features import FeatureCache

    vit, wid = _load(args)
    params = DavisParams(args.resolution, args.long_multiple, args.n_last, args.radius, args.topk, args.temperature)
    cache = FeatureCache(Path(args.cache_dir) / "features") if args.cache_dir else None
    metrics = evaluate_davis(vit, args.davis, args.split, args.out, params, args.sequences, cache, wid, args.batch_size)
    result = {"eval": "davis", "weights": args.weights, "davis": str(args.davis), "split": args.split,
              "params": params.__dict__, "out": args.out, "metrics": metrics}
    finish(result, f"davis {args.weights}: J&F-mean={metrics['J&F-mean']:.2f} J-mean={metrics['J-mean']:.2f} "
                   f"F-mean={metrics['F-mean']:.2f} ({len(metrics['sequences'])} sequences, {metrics['objects']} objects)",
           args.json)
    return 0


def run_unsup_seg(args: argparse.Namespace) -> int:
    from vidssl.eval.features import files_fingerprint, compute_features, patch_features
    from vidssl.eval.report import finish
    from vidssl.eval.seg_data import SegImages, load_mask, read_davis_samples, read_voc
    from vidssl.eval.unsup_seg import evaluate_clusters

    protocols = args.protocol or (["frame", "dataset"] if args.layout == "voc" else ["frame", "clip"])
    if "clip" in protocols and args.layout != "davis":
        raise VidsslError("--protocol clip needs video clips: use --layout davis")
    if args.num_clusters is not None and args.num_clusters < 1:
        raise VidsslError("--num-clusters must be at least 1")
    if args.precision_based and not args.many_to_one:
        raise VidsslError("--precision-based only applies with --many-to-one")
    samples = read_voc(args.data, args.split) if args.layout == "voc" else read_davis_samples(args.data, args.split, args.clip_frames)
    vit, wid = _load(args)
    _check_patch(vit, args.input_size, "--input-size")
    key = {"weights": wid, "files": files_fingerprint([s.image for s in samples]), "n": len(samples),
           "transform": f"square-bilinear-{args.input_size}", "features": "patch-last"}

    def compute() -> dict[str, torch.Tensor]:
        feats = compute_features(vit, SegImages(samples, args.input_size), patch_features,
                                 batch_size=args.batch_size, num_workers=args.num_workers, desc="patch features")
        return {"features": feats.half()}  # (N, D, h, w), half precision to keep the cache small

    feats = _cache(args).get_or_compute(key, compute)["features"].float()
    gts = [load_mask(s, args.eval_size) for s in samples]
    groups = [s.clip for s in samples]
    metrics = {}
    for protocol in protocols:
        metrics[protocol] = evaluate_clusters(list(feats), gts, groups, protocol, num_clusters=args.num_clusters,
                                              many_to_one=args.many_to_one, precision_based=args.precision_based,
                                              seed=args.kmeans_seed)
    result = {"eval": "unsup-seg", "weights": args.weights, "data": str(args.data), "layout": args.layout,
              "split": args.split, "num_clusters": args.num_clusters, "many_to_one": args.many_to_one,
              "precision_based": args.precision_based, "input_size": args.input_size, "eval_size": args.eval_size,
              "images": len(samples), "metrics": metrics}
    k = f"K={args.num_clusters}" if args.num_clusters else "K=#GT"
    parts = " ".join(f"{p}-wise mIoU={metrics[p]['mIoU']:.2f}" for p in protocols)
    finish(result, f"unsup-seg {args.weights} ({args.layout}, {k}{', many-to-one' if args.many_to_one else ''}): {parts}",
           args.json)
    return 0

