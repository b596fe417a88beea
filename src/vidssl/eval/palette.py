"""The DAVIS / PASCAL VOC colour palette for indexed PNG masks (label i -> RGB), built in.

Label i's colour spreads the bits of i over the high bits of R, G and B: bit 0 of i goes to
bit 7 of R, bit 1 to bit 7 of G, bit 2 to bit 7 of B, bit 3 to bit 6 of R, and so on.
So 0 is black, 1 dark red (128, 0, 0), 2 dark green, 3 olive, ..., 255 is used for void.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def davis_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        value, rgb = label, [0, 0, 0]
        bit = 7
        while value and bit >= 0:
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << bit
            value >>= 3
            bit -= 1
        pal[label] = rgb
    return pal


def write_indexed_png(path: str | Path, labels: np.ndarray) -> None:
    """Save a (H, W) label map as a palette ('P') PNG with the DAVIS colours (atomically, through
    `vidssl.io`: a failed write is a one-line OutputError naming the path)."""
    from vidssl.io import atomic_write

    if labels.max(initial=0) > 255 or labels.min(initial=0) < 0:
        raise ValueError("labels must be in 0..255 for an indexed PNG")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(davis_palette().reshape(-1).tolist())
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


def read_label_png(path: str | Path) -> np.ndarray:
    """(H, W) uint8 labels of an indexed ('P') or grayscale ('L') PNG. RGB masks are mapped
    back through the DAVIS palette (an unknown colour is an error naming the file)."""
    from vidssl.errors import VidsslError

    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.array(im if mode in ("P", "L") else im.convert("RGB"))
    except Exception as e:  # noqa: BLE001
        raise VidsslError(f"{path}: cannot read mask ({e})") from None
    if mode in ("P", "L"):
        return arr.astype(np.uint8)
    pal = davis_palette().astype(np.int64)
    code = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
    lut = {int((r << 16) | (g << 8) | b): i for i, (r, g, b) in reversed(list(enumerate(pal)))}
    out = np.zeros(code.shape, dtype=np.uint8)
    for c in np.unique(code):
        if int(c) not in lut:
            raise VidsslError(f"{path}: colour #{int(c):06x} is not in the DAVIS palette")
        out[code == c] = lut[int(c)]
    return out
