"""Pictures of the last layer's [CLS] attention: every head, and three heads as red, green, blue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidssl.errors import VidsslError, first_line


def fit_to_patches(image: torch.Tensor, short_side: int, patch_size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, H', W'): shorter side resized to short_side, then centre-cropped
    so both sides are multiples of the patch size (the whole frame stays in view)."""
    from torchvision.transforms.v2 import functional as TF

    image = TF.resize(image, short_side, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    h, w = image.shape[-2:]
    return TF.center_crop(image, [max(patch_size, h // patch_size * patch_size), max(patch_size, w // patch_size * patch_size)])


@torch.no_grad()
def cls_attention_maps(encoder: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """[CLS]->patch attention of the last block for each head, (h, H/p, W/p) float, rows summing to
    the attention mass on patches. image: uint8 (3, H, W), H and W multiples of the patch size."""
    from vidssl.data.transforms import normalize

    device = next(encoder.parameters()).device
    p = encoder.patch_size
    h, w = image.shape[-2:]
    x = normalize(image.to(device)).unsqueeze(0)
    out = encoder.encode_with_last_attention(x)
    return out.cls_attention[0].float().reshape(-1, h // p, w // p).cpu()


def _stretch(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1] on its own (min -> 0, max -> 1)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    return ((flat - lo[:, None]) / (hi - lo).clamp_min(1e-12)[:, None]).view_as(maps)


def rgb_composite(maps: torch.Tensor, heads: tuple[int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Three heads' maps as the red, green and blue channels, upsampled to size: uint8 (H, W, 3)."""
    n = maps.shape[0]
    bad = [h for h in heads if not 0 <= h < n]
    if bad:
        raise VidsslError(f"--heads: head {bad[0]} does not exist; this encoder has heads 0..{n - 1}")
    chosen = _stretch(maps[list(heads)])  # (3, h, w)
    up = F.interpolate(chosen[None], size=size, mode="nearest")[0]
    return (up.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_attention_figure(
    path: Path, image: torch.Tensor, maps: torch.Tensor, heads: tuple[int, int, int] = (0, 1, 2), title: str = ""
) -> Path:
    """One PNG: the input, each head's map (own colour scale), and the RGB composite of three heads.

    image: uint8 (3, H, W); maps: (h, H/p, W/p)."""
    from vidssl.viz.plots import plt, save_figure  # matplotlib (Agg) only when drawing

    H, W = image.shape[-2:]
    n = maps.shape[0]
    composite = rgb_composite(maps, heads, (H, W))
    panels = 2 + n
    cols = min(panels, 5)
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows * H / W + 0.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image.permute(1, 2, 0).numpy())
    axes.flat[0].set_title("input", fontsize=9)
    stretched = _stretch(maps)
    for i in range(n):
        ax = axes.flat[1 + i]
        ax.imshow(stretched[i].numpy(), cmap="inferno", interpolation="nearest", extent=(0, W, H, 0))
        ax.set_title(f"head {i}", fontsize=9)
    ax = axes.flat[1 + n]
    ax.imshow(composite)
    ax.set_title(f"heads {heads[0]}/{heads[1]}/{heads[2]} as R/G/B", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as uint8 (3, H, W) RGB; a clear error for a missing or unreadable file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise VidsslError(f"{p}: no such image file")
    try:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise VidsslError(f"{p}: cannot be read as an image ({type(e).__name__}: {first_line(e, 120)})") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
