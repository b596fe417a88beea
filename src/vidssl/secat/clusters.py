"""Image features from the frozen encoder (cached by the evaluations' one feature cache) and the
k-means that turns an unlabelled pool into pseudo-classes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vidssl.errors import VidsslError
from vidssl.eval.datasets import IMAGE_EXTENSIONS, eval_transform, eval_transform_id
from vidssl.eval.features import FeatureCache, as_vit, cached_image_features, check_patch_multiple
from vidssl.eval.unsup_seg import assign, kmeans

FEATURES_ID = "secat-cls+meanpatch"


def image_tokens(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[CLS] and the mean of the patch tokens after the final norm, concatenated: (B, 2D). The
    mapper reads both (what the image is, and what fills it); k-means uses the [CLS] half."""
    vit = as_vit(vit)
    tokens = vit.forward_features(x)  # (B, P + N, D)
    return torch.cat([tokens[:, 0], tokens[:, vit.num_prefix_tokens:].mean(dim=1)], dim=-1)


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    """Every image under the folders (recursively, sorted; labels, if any, are ignored)."""
    paths: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise VidsslError(f"--images {root}: no such folder")
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not found:
            raise VidsslError(f"--images {root}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += found
    return paths


def encode_images(vit: nn.Module, weights_id: str, paths: Sequence[Path], image_size: int, cache: FeatureCache,
                  batch_size: int = 64, desc: str = "image features") -> torch.Tensor:
    """(N, 2D) `image_tokens` of every image at DINO's eval transform, cached per (weights, files, size)."""
    check_patch_multiple(vit, image_size, "--image-size")
    return cached_image_features(vit, weights_id, list(paths), eval_transform(image_size), eval_transform_id(image_size),
                                 image_tokens, FEATURES_ID, cache, batch_size=batch_size, num_workers=0, desc=desc)


def cluster_features(features: torch.Tensor, k: int, seed: int = 1, niter: int = 50, nredo: int = 3) -> np.ndarray:
    """Cluster id (N,) of every image: faiss k-means with K=`k` on the L2-normalised [CLS] half
    (the cosine geometry DINO's k-NN uses)."""
    if k < 2:
        raise VidsslError(f"--clusters must be at least 2 (got {k})")
    cls = F.normalize(features[:, : features.shape[1] // 2].float(), dim=-1).numpy()
    if len(cls) < 2 * k:
        raise VidsslError(f"{len(cls)} images for K={k} clusters: a 1-shot episode needs 2 images per cluster; "
                          "give more images or lower --clusters")
    centroids = kmeans(cls, k, niter=niter, nredo=nredo, seed=seed)
    return assign(cls, centroids).astype(np.int64)
