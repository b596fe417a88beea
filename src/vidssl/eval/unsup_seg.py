"""Unsupervised semantic segmentation by k-means on frozen patch features (TimeT's protocol, SPEC 4.5).

Features: last-layer patch tokens (final norm) of images resized to `input_size`, standardised
and reduced to 50 dims by PCA, bilinearly upsampled to the evaluation resolution, clustered
with faiss k-means (niter 50, nredo 5, seed 1). Ground truth is resized to the evaluation
resolution (nearest); the void label 255 is ignored in every count.

Protocols: `frame` (one k-means and one matching per image), `clip` (one per clip of a
video, so cluster ids must be consistent through time), `dataset` (one over all images).
K defaults to the number of ground-truth labels present in the unit clustered.

Matching: Hungarian on 1 - IoU (scipy), clusters left unmatched become label 0 (background),
or, for over-clustering (`many_to_one`), each cluster goes to the class with its highest IoU
(or precision TP/(TP+FP)). mIoU = mean IoU over the ground-truth classes present.

Choice: the standardisation and PCA are fitted on the patch tokens, then applied before the
upsampling. Both are affine and bilinear upsampling is an average, so this equals fitting on
the upsampled pixels up to the (small) weighting of the fit statistics, and keeps memory at
patch resolution for dataset-wise runs. K-means trains on at most `max_train_points` pixels
(a seeded, equal share of every image, as faiss would subsample itself) and then assigns
every pixel, one image at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from vidssl.errors import VidsslError
from vidssl.eval.features import (EncoderLike, FeatureCache, check_patch_multiple, compute_features, feature_key,
                                  patch_features, prepare_encoder, warn_non_finite)
from vidssl.eval.report import clean
from vidssl.eval.seg_data import SegImages, load_mask, read_davis_samples, read_voc

VOID = 255


# --------------------------------------------------------------------------- metrics


def confusion(pred: np.ndarray, gt: np.ndarray, ignore: int = VOID) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts (G, P), gt classes (G,), pred ids (P,)) over non-void pixels."""
    keep = gt != ignore
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    gts, gi = np.unique(g, return_inverse=True)
    prs, pi = np.unique(p, return_inverse=True)
    counts = np.bincount(gi * len(prs) + pi, minlength=len(gts) * len(prs)).reshape(len(gts), len(prs))
    return counts, gts, prs


def iou_matrix(counts: np.ndarray) -> np.ndarray:
    tp = counts.astype(np.float64)
    union = tp.sum(1, keepdims=True) + tp.sum(0, keepdims=True) - tp
    return np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)


def miou_of_mapping(pred: np.ndarray, gt: np.ndarray, mapping: dict[int, int], ignore: int = VOID,
                    default: int = 0) -> tuple[float, dict[int, float]]:
    """mIoU over the GT classes present after relabelling clusters with `mapping` (others -> default)."""
    keep = gt != ignore
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    lut_keys = np.array(sorted(mapping), dtype=np.int64)
    mapped = np.full(p.shape, default, dtype=np.int64)
    if len(lut_keys):
        pos = np.searchsorted(lut_keys, p).clip(0, len(lut_keys) - 1)
        hit = lut_keys[pos] == p
        vals = np.array([mapping[int(k)] for k in lut_keys], dtype=np.int64)
        mapped[hit] = vals[pos[hit]]
    ious = {}
    for c in np.unique(g):
        tp = np.count_nonzero((g == c) & (mapped == c))
        fp = np.count_nonzero((g != c) & (mapped == c))
        fn = np.count_nonzero((g == c) & (mapped != c))
        ious[int(c)] = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return (float(np.mean(list(ious.values()))) if ious else float("nan")), ious


def hungarian_mapping(pred: np.ndarray, gt: np.ndarray, ignore: int = VOID) -> dict[int, int]:
    """One-to-one cluster -> class assignment maximising the summed IoU."""
    counts, gts, prs = confusion(pred, gt, ignore)
    rows, cols = linear_sum_assignment(1.0 - iou_matrix(counts))
    return {int(prs[c]): int(gts[r]) for r, c in zip(rows, cols)}


def many_to_one_mapping(pred: np.ndarray, gt: np.ndarray, precision_based: bool = False,
                        ignore: int = VOID) -> dict[int, int]:
    """Each cluster -> the class with its highest IoU (or precision TP/(TP+FP))."""
    counts, gts, prs = confusion(pred, gt, ignore)
    if precision_based:
        col = counts.sum(0, keepdims=True).astype(np.float64)
        score = np.divide(counts, col, out=np.zeros(counts.shape), where=col > 0)
    else:
        score = iou_matrix(counts)
    return {int(p): int(gts[score[:, j].argmax()]) for j, p in enumerate(prs)}


def match_and_score(pred: np.ndarray, gt: np.ndarray, many_to_one: bool = False,
                    precision_based: bool = False, ignore: int = VOID) -> float:
    """mIoU of cluster ids `pred` against classes `gt` (any shapes, same size)."""
    pred, gt = np.asarray(pred).reshape(-1), np.asarray(gt).reshape(-1)
    if not np.any(gt != ignore):
        return float("nan")
    mapping = (many_to_one_mapping(pred, gt, precision_based, ignore) if many_to_one
               else hungarian_mapping(pred, gt, ignore))
    return miou_of_mapping(pred, gt, mapping, ignore)[0]


# --------------------------------------------------------------------------- clustering


def standardize_pca(x: np.ndarray, dim: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine map fitted on x (N, D): returns (A (D, d), b (d,), transformed x (N, d)).
    StandardScaler, then a projection on the `dim` leading eigenvectors of the covariance
    (PCA, as faiss.PCAMatrix computes it); no reduction when D <= dim."""
    x = x.astype(np.float32)
    mean = x.mean(0, dtype=np.float64)
    std = x.std(0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    D = x.shape[1]
    if D <= dim:
        A = np.diag(1.0 / std)
        b = -mean / std
    else:
        z = (x - mean.astype(np.float32)) / std.astype(np.float32)
        cov = (z.T.astype(np.float64) @ z.astype(np.float64)) / max(1, len(z))
        evals, evecs = np.linalg.eigh(cov)  # ascending
        P = evecs[:, ::-1][:, :dim]  # (D, dim) leading components
        A = P / std[:, None]
        b = -(mean / std) @ P
    A, b = A.astype(np.float32), b.astype(np.float32)
    return A, b, x @ A + b


def kmeans(x: np.ndarray, k: int, *, niter: int = 50, nredo: int = 5, seed: int = 1,
           max_train_points: int = 500_000) -> np.ndarray:
    """faiss k-means on (N, d); returns the centroids (k, d)."""
    n = x.shape[0]
    if n < k:
        raise VidsslError(f"k-means with K={k} needs at least {k} points, got {n}")
    train = x
    if n > max_train_points:
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, max_train_points, replace=False)]
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=False,
                      verbose=False, max_points_per_centroid=max(256, len(train) // k + 1))
    km.train(np.ascontiguousarray(train, dtype=np.float32))
    return km.centroids


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    return index.search(np.ascontiguousarray(x, dtype=np.float32), 1)[1][:, 0]


def cluster_maps(maps: Sequence[torch.Tensor], k: int, eval_size: tuple[int, int], *, pca_dim: int = 50,
                 seed: int = 1, niter: int = 50, nredo: int = 5, max_train_points: int = 500_000) -> list[np.ndarray]:
    """One k-means over every pixel of the feature maps (each (D, h, w)) upsampled to eval_size.
    Returns one (H, W) int cluster map per input map. Memory stays at patch resolution plus
    at most `max_train_points` pixels: maps are upsampled one at a time."""
    tokens = np.concatenate([m.reshape(m.shape[0], -1).T.numpy() for m in maps])  # (sum h*w, D)
    A, b, _ = standardize_pca(tokens, pca_dim)
    At, bt = torch.from_numpy(A), torch.from_numpy(b)

    def pixels(m: torch.Tensor) -> np.ndarray:  # (H*W, d) reduced, then upsampled
        red = (m.reshape(m.shape[0], -1).T.float() @ At + bt).T.reshape(-1, *m.shape[1:])  # (d, h, w)
        up = F.interpolate(red[None], size=eval_size, mode="bilinear", align_corners=False)[0]
        return up.reshape(up.shape[0], -1).T.numpy()

    n_pix = eval_size[0] * eval_size[1]
    if n_pix * len(maps) <= max_train_points:
        kept = [pixels(m) for m in maps]
        train = np.concatenate(kept)
    else:  # a seeded, equal share of every map's pixels
        kept = None
        rng = np.random.default_rng(seed)
        share = max(1, max_train_points // len(maps))
        train = np.concatenate([pixels(m)[rng.choice(n_pix, min(share, n_pix), replace=False)] for m in maps])
    cent = kmeans(train, k, niter=niter, nredo=nredo, seed=seed, max_train_points=len(train))
    return [assign(kept[i] if kept is not None else pixels(m), cent).reshape(eval_size) for i, m in enumerate(maps)]


# --------------------------------------------------------------------------- protocols


Protocol = Literal["frame", "clip", "dataset"]


def _num_labels(gts: Sequence[np.ndarray]) -> int:
    labels = np.unique(np.concatenate([g.reshape(-1) for g in gts]))
    return int(np.count_nonzero(labels != VOID))


def evaluate_clusters(
    maps: Sequence[torch.Tensor],
    gts: Sequence[np.ndarray],
    groups: Sequence[str],
    protocol: Protocol,
    *,
    num_clusters: int | None = None,
    many_to_one: bool = False,
    precision_based: bool = False,
    seed: int = 1,
    pca_dim: int = 50,
) -> dict[str, float]:
    """mIoU (%) of the chosen protocol. maps: (D, h, w) features; gts: (H, W) labels at the eval size;
    groups: the clip of each sample (used by the clip protocol)."""
    if protocol == "frame":
        units = [[i] for i in range(len(maps))]
    elif protocol == "clip":
        order: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            order.setdefault(g, []).append(i)
        units = list(order.values())
    elif protocol == "dataset":
        units = [list(range(len(maps)))]
    else:
        raise VidsslError(f"unknown protocol '{protocol}'; valid: frame, clip, dataset")
    scores = []
    for unit in units:
        unit_gts = [gts[i] for i in unit]
        k = num_clusters or _num_labels(unit_gts)
        if k < 1:
            continue
        size = unit_gts[0].shape
        preds = cluster_maps([maps[i] for i in unit], k, size, pca_dim=pca_dim, seed=seed)
        score = match_and_score(np.stack(preds), np.stack(unit_gts), many_to_one, precision_based)
        if not np.isnan(score):
            scores.append(score)
    if not scores:
        raise VidsslError("no image with non-void ground truth to score")
    return {"mIoU": 100.0 * float(np.mean(scores)), "units": float(len(scores))}


def evaluate_unsup_seg(
    encoder: EncoderLike,
    data: str | Path,
    layout: Literal["voc", "davis"],
    *,
    split: str = "val",
    protocols: Sequence[Protocol] | None = None,
    num_clusters: int | None = None,
    many_to_one: bool = False,
    precision_based: bool = False,
    input_size: int = 224,
    eval_size: int = 112,
    clip_frames: int = 0,
    kmeans_seed: int = 1,
    batch_size: int = 64,
    num_workers: int = 2,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
) -> dict[str, Any]:
    """TimeT's k-means segmentation of `encoder` (a model, or anything `load_encoder` accepts) on a
    VOC or DAVIS layout at `data`. `protocols` default: voc frame + dataset, davis frame + clip.
    Returns the plain dict that `vidssl eval unsup-seg --json` writes (mIoU per protocol)."""
    if layout not in ("voc", "davis"):
        raise VidsslError(f"--layout {layout}: valid layouts are voc, davis")
    protocols = list(protocols or (["frame", "dataset"] if layout == "voc" else ["frame", "clip"]))
    if "clip" in protocols and layout != "davis":
        raise VidsslError("--protocol clip needs video clips: use --layout davis")
    if num_clusters is not None and num_clusters < 1:
        raise VidsslError("--num-clusters must be at least 1")
    if precision_based and not many_to_one:
        raise VidsslError("--precision-based only applies with --many-to-one")
    samples = read_voc(data, split) if layout == "voc" else read_davis_samples(data, split, clip_frames)
    vit, name, wid = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                     weights_id=weights_id)
    check_patch_multiple(vit, input_size, "--input-size")
    key = feature_key(wid or "", [s.image for s in samples], f"square-bilinear-{input_size}", "patch-last")

    def compute() -> dict[str, torch.Tensor]:
        feats = compute_features(vit, SegImages(samples, input_size), patch_features,
                                 batch_size=batch_size, num_workers=num_workers, desc="patch features")
        return {"features": feats.half()}  # (N, D, h, w), half precision to keep the cache small

    feats = FeatureCache.at(cache_dir, cache and wid is not None).get_or_compute(key, compute)["features"].float()
    warn_non_finite(feats, f"images of {data}")
    gts = [load_mask(s, eval_size) for s in samples]
    groups = [s.clip for s in samples]
    metrics = {}
    for protocol in protocols:
        metrics[protocol] = evaluate_clusters(list(feats), gts, groups, protocol, num_clusters=num_clusters,
                                              many_to_one=many_to_one, precision_based=precision_based,
                                              seed=kmeans_seed)
    return clean({"eval": "unsup-seg", "weights": name, "data": str(data), "layout": layout,
                  "split": split, "num_clusters": num_clusters, "many_to_one": many_to_one,
                  "precision_based": precision_based, "input_size": input_size, "eval_size": eval_size,
                  "images": len(samples), "metrics": metrics})
