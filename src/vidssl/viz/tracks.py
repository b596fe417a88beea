"""Pictures of the objects DoRA's tracker follows through a clip: a PNG grid and an MP4/GIF.

The grid has one column per frame; the first row is the clip, then one row per object (the
frame with everything but the object's kept patches darkened, the object tinted in its
colour), and a last row with all objects coloured at once. The video shows that last row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidssl.data.writer import write_video
from vidssl.errors import VidsslError

# Distinct, colour-blind friendly-ish colours; objects beyond the list reuse them in order.
OBJECT_COLOURS = np.array(
    [
        (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
        (245, 130, 48), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
    ],
    dtype=np.float32,
)


def _colours(k: int) -> np.ndarray:
    return OBJECT_COLOURS[np.arange(k) % len(OBJECT_COLOURS)]  # (k, 3)


def _as_numpy(frames: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    m = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {f.shape}")
    if m.ndim != 4 or m.shape[0] != f.shape[0] or m.shape[2:] != f.shape[1:3]:
        raise ValueError(f"masks must be (T, k, H, W) matching frames {f.shape}, got {m.shape}")
    return f.astype(np.float32), m.astype(bool)


def object_overlay(frames: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """All objects at once: kept pixels tinted with their object's colour (mixed where objects
    overlap), the rest darkened. frames uint8 (T, H, W, 3), masks bool (T, k, H, W) -> uint8 (T, H, W, 3)."""
    f, m = _as_numpy(frames, masks)
    cols = _colours(m.shape[1])  # (k, 3)
    count = m.sum(axis=1, keepdims=True).transpose(0, 2, 3, 1).astype(np.float32)  # (T, H, W, 1)
    tint = np.einsum("tkhw,kc->thwc", m.astype(np.float32), cols) / np.maximum(count, 1)
    out = np.where(count > 0, (1 - alpha) * f + alpha * tint, 0.35 * f)
    return out.clip(0, 255).astype(np.uint8)


def single_object(frames: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """One object: its kept pixels lightly tinted, everything else darkened. (T, H, W, 3) uint8."""
    m = mask[..., None]
    out = np.where(m, (1 - alpha) * frames + alpha * colour, 0.2 * frames)
    return out.clip(0, 255).astype(np.uint8)


def tracks_grid(frames: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, title: str = "") -> np.ndarray:
    """(frames x objects) picture as one uint8 RGB array (rows: clip, object 1..k, all objects)."""
    f, m = _as_numpy(frames, masks)
    T, k = m.shape[:2]
    rows = [f.astype(np.uint8)]
    cols = _colours(k)
    rows += [single_object(f, m[:, i], cols[i]) for i in range(k)]
    rows.append(object_overlay(f, m))
    H, W = f.shape[1:3]
    scale = max(1, int(np.ceil(96 / H)))  # small training crops are enlarged so they can be seen
    gap = 2
    grid = np.full(((H * scale + gap) * len(rows) - gap, (W * scale + gap) * T - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for t in range(T):
            tile = row[t].repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = r * (H * scale + gap), t * (W * scale + gap)
            grid[y : y + H * scale, x : x + W * scale] = tile
            if 0 < r <= k:  # a coloured bar on the left of each object row
                grid[y : y + H * scale, x : x + max(2, scale)] = cols[r - 1]
    return grid


def save_tracks_png(path: Path, frames: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, title: str = "") -> Path:
    """Write the grid with row labels with matplotlib."""
    from vidssl.viz.plots import plt, save_figure  # matplotlib (Agg) only when drawing

    grid = tracks_grid(frames, masks)
    k = np.asarray(masks.shape)[1]
    h, w = grid.shape[:2]
    fig_w = min(24.0, max(6.0, w / 80))
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * h / w + 0.6))
    ax.imshow(grid, interpolation="nearest")
    n_rows = k + 2
    ax.set_yticks([(i + 0.5) * h / n_rows for i in range(n_rows)])
    ax.set_yticklabels(["clip"] + [f"object {i + 1}" for i in range(k)] + ["all"])
    T = masks.shape[0]
    ax.set_xticks([(t + 0.5) * w / T for t in range(T)])
    ax.set_xticklabels([f"t={t}" for t in range(T)])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def write_clip_video(path: Path, frames: np.ndarray, fps: float = 4.0, min_size: int = 256) -> Path:
    """uint8 (T, H, W, 3) -> .mp4 (H.264) or .gif, enlarged (pixels repeated) to at least min_size."""
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise VidsslError(f"{path}: unsupported video format '{path.suffix}'; use .mp4 or .gif")
    frames = np.asarray(frames, dtype=np.uint8)
    scale = max(1, int(np.ceil(min_size / min(frames.shape[1:3]))))
    return write_video(path, frames.repeat(scale, axis=1).repeat(scale, axis=2), fps=fps)


def center_square(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, size, size): shorter side resized to size, centre crop."""
    from torchvision.transforms.v2 import functional as TF

    frames = clip.permute(0, 3, 1, 2)
    frames = TF.resize(frames, size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(frames, [size, size])


@torch.no_grad()
def track_clip_picture(
    encoder: torch.nn.Module,
    clip: torch.Tensor,
    size: int,
    k: int,
    iters: int = 30,
    eps: float = 0.05,
    threshold: str = "sample_mean",
    features: str = "attention_output",
    heads: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, "object"]:
    """Track k objects through one clip with an encoder, for pictures.

    clip uint8 (T, H, W, 3). Returns (frames uint8 (T, S, S, 3), pixel masks bool (T, k, S, S),
    the `Tracks`). Heads default to a fixed draw (seed 0) so successive pictures are comparable;
    the global RNG is not touched (training resumes exactly).
    """
    from vidssl.data.transforms import normalize
    from vidssl.ops.tracking import choose_heads, patch_masks_to_pixels, track_clips

    device = next(encoder.parameters()).device
    p = encoder.patch_size
    size = max(p, size // p * p)
    frames = center_square(clip, size)  # (T, 3, S, S) uint8
    if heads is None:
        heads = choose_heads(encoder.num_heads, k, generator=torch.Generator().manual_seed(0))
    x = normalize(frames.to(device)).unsqueeze(0)  # (1, T, 3, S, S)
    tracks, _ = track_clips(encoder, x, k, iters, eps, threshold, features, heads=heads)  # type: ignore[arg-type]
    pix = patch_masks_to_pixels(tracks.masks[0], (size // p, size // p), p)  # (T, k, S, S)
    return frames.permute(0, 2, 3, 1).numpy(), pix.cpu().numpy(), tracks
