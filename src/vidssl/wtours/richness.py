"""Object richness: how many distinct segments a frame holds, from over-clustered patch features
of any encoder. An unsupervised proxy of the paper's objects-per-frame count (the paper does not
say which detector it used, SPEC §2): the patch tokens of the sampled frames of one input are
standardised, reduced by PCA and clustered by k-means into more clusters than a frame holds
objects; a segment is a 4-connected region of one cluster on the patch grid, and regions smaller
than `min_patches` are noise, not counted."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage

from vidssl.eval.unsup_seg import assign, kmeans, standardize_pca
from vidssl.viz.segment import video_patch_features


def count_segments(labels: np.ndarray, min_patches: int) -> int:
    """Connected regions (4-neighbour) of equal label, of at least `min_patches` cells, in (h, w)."""
    total = 0
    for c in np.unique(labels):
        regions, n = ndimage.label(labels == c)
        if n:
            sizes = np.bincount(regions.ravel())[1:]
            total += int((sizes >= min_patches).sum())
    return total


def cluster_patch_grid(feats: torch.Tensor, k: int, seed: int = 1, pca_dim: int = 50) -> np.ndarray:
    """(T, D, h, w) patch features -> (T, h, w) cluster ids of one k-means over every patch."""
    T, D, h, w = feats.shape
    tokens = feats.permute(0, 2, 3, 1).reshape(-1, D).numpy()
    _, _, reduced = standardize_pca(tokens, pca_dim)
    k = min(k, len(reduced))
    centroids = kmeans(reduced, k, seed=seed)
    return assign(reduced, centroids).reshape(T, h, w)


def richness(vit: nn.Module, frames: np.ndarray, clusters: int = 24, min_patches: int = 3,
             short_side: int = 224, batch_size: int = 8) -> tuple[list[int], tuple[int, int]]:
    """Segments per frame of uint8 (T, H, W, 3) frames, and the patch grid (h, w)."""
    feats = video_patch_features(vit, frames, short_side=short_side, batch_size=batch_size)
    grid = cluster_patch_grid(feats, clusters)
    return [count_segments(g, min_patches) for g in grid], tuple(grid.shape[1:])
