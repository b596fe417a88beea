"""Weighted k-NN classification on frozen [CLS] features: DINO's protocol (SPEC 4.1).

Cosine similarity (L2-normalised features, inner product, faiss), the k nearest training
features vote for their class with weight exp(similarity / T), T = 0.07; top-1 and top-5
accuracy for each k in {10, 20, 100, 200}. DINO reports k = 20.

Top-5 counts only classes that received at least one vote (DINO narrows to min(5, k)
predictions; with k >= 5 but fewer than 5 voted classes its order among zero scores is
arbitrary, here such classes never count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from vidssl.errors import VidsslError
from vidssl.eval.datasets import eval_transform, eval_transform_id, read_train_val
from vidssl.eval.features import (EncoderLike, FeatureCache, cached_image_features, check_patch_multiple,
                                  cls_features, prepare_encoder, warn_non_finite)
from vidssl.eval.report import clean

DEFAULT_KS = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07


def nearest_neighbours(train: torch.Tensor, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine top-k by faiss: (similarities (Q, k) descending, indices (Q, k))."""
    train_n = F.normalize(train.float(), dim=-1).numpy().astype(np.float32, copy=False)
    query_n = F.normalize(query.float(), dim=-1).numpy().astype(np.float32, copy=False)
    index = faiss.IndexFlatIP(train_n.shape[1])
    index.add(np.ascontiguousarray(train_n))
    sims, idx = index.search(np.ascontiguousarray(query_n), k)
    return torch.from_numpy(sims), torch.from_numpy(idx).long()


def knn_scores(
    sims: torch.Tensor, idx: torch.Tensor, train_labels: torch.Tensor, num_classes: int, k: int, temperature: float
) -> torch.Tensor:
    """Class scores (Q, C) from the first k neighbours: sum of exp(sim / T) per class."""
    weights = (sims[:, :k] / temperature).exp()  # (Q, k)
    labels = train_labels[idx[:, :k]]  # (Q, k)
    scores = torch.zeros(sims.shape[0], num_classes, dtype=weights.dtype)
    return scores.scatter_add_(1, labels, weights)


def knn_evaluate(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
) -> dict[str, float]:
    """{'top1@k': %, 'top5@k': %} for every k (k larger than the train set is clipped to it)."""
    num_classes = int(num_classes or int(max(train_labels.max(), val_labels.max())) + 1)
    kmax = min(max(ks), train_features.shape[0])
    sims, idx = nearest_neighbours(train_features, val_features, kmax)
    out: dict[str, float] = {}
    for k in ks:
        scores = knn_scores(sims, idx, train_labels, num_classes, min(k, kmax), temperature)
        vals, top = scores.topk(min(5, num_classes), dim=1)  # (Q, 5)
        hit = (top == val_labels[:, None]) & (vals > 0)  # a class without votes is not a prediction
        out[f"top1@{k}"] = 100.0 * hit[:, 0].float().mean().item()
        out[f"top5@{k}"] = 100.0 * hit.any(dim=1).float().mean().item()
    return out


def evaluate_knn(
    encoder: EncoderLike,
    train: str | Path,
    val: str | Path,
    *,
    k: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    image_size: int = 224,
    batch_size: int = 64,
    num_workers: int = 2,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
) -> dict[str, Any]:
    """DINO's weighted k-NN of `encoder` (a model, or anything `load_encoder` accepts) trained on the
    ImageFolder `train`, scored on `val`. Features are cached in `cache_dir`/features (default
    $VIDSSL_CACHE_DIR or ~/.cache/vidssl) unless `cache=False`. Returns the plain dict that
    `vidssl eval knn --json` writes: {'eval', 'weights', ..., 'metrics': {'top1@K': %, 'top5@K': %}}."""
    ks = [int(v) for v in k]
    if not ks or any(v < 1 for v in ks) or temperature <= 0:
        raise VidsslError("--k values must be >= 1 and --temperature > 0")
    tr, va = read_train_val(train, val)
    vit, name, wid = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                     weights_id=weights_id)
    check_patch_multiple(vit, image_size, "--image-size")
    store = FeatureCache.at(cache_dir, cache and wid is not None)
    tf, tid = eval_transform(image_size), eval_transform_id(image_size)
    common = dict(batch_size=batch_size, num_workers=num_workers)
    feats = {}
    for role, data in (("train", tr), ("val", va)):
        feats[role] = cached_image_features(vit, wid or "", data.paths, tf, tid, cls_features, "cls", store,
                                            desc=f"{role} features", **common)
        warn_non_finite(feats[role], f"{role} images in {data.root}")
    metrics = knn_evaluate(feats["train"], tr.labels, feats["val"], va.labels, ks, temperature, len(tr.classes))
    return clean({"eval": "knn", "weights": name, "train": str(train), "val": str(val),
                  "temperature": temperature, "image_size": image_size,
                  "n_train": len(tr.items), "n_val": len(va.items), "metrics": metrics})
