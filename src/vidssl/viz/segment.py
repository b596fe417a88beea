"""Whole-video k-means segmentation pictures (SPEC 6): one k-means over the patch features of
all frames, so a cluster keeps its colour through time; an MP4 or GIF and a PNG strip.

Patch tokens are standardised and reduced by PCA (50 dims) as in the k-means evaluation,
k-means is trained on the patch tokens of every frame, then each frame's reduced feature map
is upsampled (bilinear) to a quarter of the display size and every pixel is given its
nearest centroid, which draws smooth boundaries with the same colours.

Several encoders (`vidssl show segment --weights A --weights B`, the TimeT talk's "DINO vs
TimeT" picture): one k-means per encoder with the same k, then every row's clusters are given
the first row's colours by Hungarian matching of their space-time masks (`match_clusters`), and
the rows are stacked, one per encoder, each with its title.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy.optimize import linear_sum_assignment
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


# ------------------------------------------------------------------ several encoders, one picture
def label_iou(reference: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k, k) IoU of cluster i of `reference` with cluster j of `labels` over all frames and pixels
    (both label maps on the same (T, H', W') grid); 0 where both clusters are empty."""
    a, b = reference.reshape(-1).astype(np.int64), labels.reshape(-1).astype(np.int64)
    if a.shape != b.shape:
        raise ValueError(f"label maps on different grids: {reference.shape} and {labels.shape}")
    inter = np.bincount(a * k + b, minlength=k * k).reshape(k, k).astype(np.float64)
    union = np.bincount(a, minlength=k)[:, None] + np.bincount(b, minlength=k)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_clusters(reference: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The permutation `perm` (length k) that gives `perm[labels]` the colours of `reference`:
    Hungarian matching (scipy's linear_sum_assignment) maximising the summed IoU of matched clusters.

    Matching is on the clusters' space-time masks, not on their centres: every encoder has its
    own k-means in its own feature space (dims differ between, say, ViT-S and ViT-B, and even
    at equal dims two encoders' PCA bases are unrelated), so centre distances across encoders mean
    nothing, while two masks on the same pixels of the same frames are directly comparable."""
    iou = label_iou(reference, labels, k)
    ref_ids, own_ids = linear_sum_assignment(iou, maximize=True)
    perm = np.empty(k, dtype=np.int64)
    perm[own_ids] = ref_ids
    return perm


def segment_rows(label_rows: list[np.ndarray], k: int) -> tuple[list[np.ndarray], list[float]]:
    """Recolour rows 2.. to the first row's cluster ids; also the mean IoU of matched clusters
    (over clusters present in either map), a rough agreement score of each row with the first."""
    out, agreement = [label_rows[0]], [1.0]
    for labels in label_rows[1:]:
        perm = match_clusters(label_rows[0], labels, k)
        matched = perm[labels]
        out.append(matched)
        iou = np.diag(label_iou(label_rows[0], matched, k))
        present = np.union1d(np.unique(label_rows[0]), np.unique(matched))
        agreement.append(float(iou[present].mean()))
    return out, agreement


def _font(size: int):  # noqa: ANN202 - a PIL font
    from PIL import ImageFont
    from matplotlib import font_manager

    try:  # matplotlib ships DejaVu Sans, so this works without system fonts
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans", fallback_to_default=True), size)
    except OSError:
        return ImageFont.load_default()


def caption(image: np.ndarray, text: str, size: int | None = None) -> np.ndarray:
    """A copy of (H, W, 3) uint8 `image` with `text` on a dark box in the top-left corner."""
    from PIL import ImageDraw

    img = Image.fromarray(image)
    font = _font(size or max(10, image.shape[0] // 14))
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = draw.textbbox((6, 4), text, font=font)
    draw.rectangle((x0 - 4, y0 - 3, x1 + 4, y1 + 3), fill=(0, 0, 0))
    draw.text((6, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def stack_rows(rows: list[np.ndarray], names: list[str]) -> np.ndarray:
    """(T, n*H, W, 3): the rows' videos one above the other, each captioned with its name."""
    T = len(rows[0])
    return np.stack([np.concatenate([caption(r[t], name) for r, name in zip(rows, names)], axis=0) for t in range(T)])


def write_rows_strip(path: Path, frames: np.ndarray, rows: list[np.ndarray], names: list[str], n: int = 8,
                     height: int = 160, times: np.ndarray | None = None) -> None:
    """PNG: n evenly spaced frames on top, below them one row of segmentations per encoder, with a
    column of row titles on the left (and each frame's time above it when `times` is given)."""
    from PIL import ImageDraw

    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    H, W = frames.shape[1:3]
    w = max(1, round(W * height / H))

    def row(video: np.ndarray) -> np.ndarray:
        return np.concatenate([np.array(Image.fromarray(video[i]).resize((w, height))) for i in idx], axis=1)

    grid = np.concatenate([row(frames), *(row(r) for r in rows)], axis=0)
    font = _font(max(12, height // 8))
    titles = ["video", *names]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 16 + max(probe.textbbox((0, 0), t, font=font)[2] for t in titles)
    canvas = Image.new("RGB", (label_w + grid.shape[1], grid.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    for r, title in enumerate(titles):  # titles centred vertically on their row
        x0, y0, x1, y1 = draw.textbbox((0, 0), title, font=font)
        draw.text((8, r * height + (height - (y1 - y0)) // 2 - y0), title, fill=(0, 0, 0), font=font)
    if times is not None:
        small = _font(max(10, height // 12))
        for j, i in enumerate(idx):
            draw.text((label_w + j * w + 4, 3), f"{times[i]:.1f} s", fill=(255, 255, 255), font=small,
                      stroke_width=2, stroke_fill=(0, 0, 0))
    atomic_write(path, canvas.save)
