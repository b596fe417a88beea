"""Whole-video k-means segmentation pictures (SPEC 6): one k-means over the patch features of
all frames, so a cluster keeps its colour through time; an MP4 or GIF and a PNG strip.

Patch tokens are standardised and reduced by PCA (50 dims) as in the k-means evaluation,
k-means is trained on the patch tokens of every frame, then each frame's reduced feature map
is upsampled (bilinear) to a quarter of the display size and every pixel is given its
nearest centroid, which draws smooth boundaries with the same colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from vidssl.io import atomic_write
from vidssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vidssl.eval.features import as_vit, patch_features
from vidssl.eval.unsup_seg import assign, kmeans, standardize_pca


def input_size(h: int, w: int, short_side: int, patch: int) -> tuple[int, int]:
    """Short side -> short_side, aspect kept, both rounded down to the patch size."""
    s = short_side / min(h, w)
    th, tw = max(patch, int(h * s) // patch * patch), max(patch, int(w * s) // patch * patch)
    return th, tw


@torch.no_grad()
def video_patch_features(vit: nn.Module, frames: np.ndarray, short_side: int = 224, batch_size: int = 8) -> torch.Tensor:
    """(T, D, h, w) last-layer patch tokens of every frame."""
    vit = as_vit(vit)
    device = next(vit.parameters()).device
    patch = vit.patch_embed.patch_size[0]
    th, tw = input_size(frames.shape[1], frames.shape[2], short_side, patch)
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    out = []
    for s in tqdm(range(0, len(frames), batch_size), desc="features", disable=None, leave=False):
        x = torch.from_numpy(frames[s : s + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        out.append(patch_features(vit, (x - mean) / std).float().cpu())
    return torch.cat(out)


def segment_video(feats: torch.Tensor, k: int, out_size: tuple[int, int], *, seed: int = 1, pca_dim: int = 50) -> np.ndarray:
    """One k-means over all patches of all frames; (T, H', W') cluster ids at out_size."""
    T, D, h, w = feats.shape
    tokens = feats.permute(0, 2, 3, 1).reshape(-1, D).numpy()
    A, b, reduced = standardize_pca(tokens, pca_dim)
    cent = kmeans(reduced, k, seed=seed)
    At, bt = torch.from_numpy(A), torch.from_numpy(b)
    labels = []
    for t in range(T):
        red = (feats[t].reshape(D, -1).T @ At + bt).T.reshape(-1, h, w)
        up = F.interpolate(red[None], size=out_size, mode="bilinear", align_corners=False)[0]
        labels.append(assign(up.reshape(up.shape[0], -1).T.numpy(), cent).reshape(out_size))
    return np.stack(labels)


def cluster_colours(k: int) -> np.ndarray:
    """(k, 3) uint8 distinct colours (tab10 / tab20 / hsv)."""
    import matplotlib

    if k <= 20:
        cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
        rgb = [cmap(i)[:3] for i in range(k)]  # listed colormaps take the integer index
    else:
        rgb = [matplotlib.colormaps["hsv"](i / k)[:3] for i in range(k)]
    return (np.array(rgb) * 255).astype(np.uint8)


def overlay(frames: np.ndarray, labels: np.ndarray, k: int, alpha: float = 0.55) -> np.ndarray:
    """(T, H, W, 3) uint8: frames blended with their cluster colours (nearest upsampling)."""
    T, H, W, _ = frames.shape
    colours = cluster_colours(k)
    out = np.empty_like(frames)
    for t in range(T):
        lab = np.array(Image.fromarray(labels[t].astype(np.uint8)).resize((W, H), Image.NEAREST))
        out[t] = (alpha * colours[lab] + (1 - alpha) * frames[t]).astype(np.uint8)
    return out


def write_strip(path: Path, frames: np.ndarray, blended: np.ndarray, n: int = 8, height: int = 160) -> None:
    """PNG: n evenly spaced frames on top, their segmentations below."""
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    H, W = frames.shape[1:3]
    w = max(1, round(W * height / H))
    top = np.concatenate([np.array(Image.fromarray(frames[i]).resize((w, height))) for i in idx], axis=1)
    bottom = np.concatenate([np.array(Image.fromarray(blended[i]).resize((w, height))) for i in idx], axis=1)
    strip = Image.fromarray(np.concatenate([top, bottom], axis=0))
    atomic_write(path, strip.save)
