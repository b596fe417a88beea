"""Small datasets in the real on-disk layouts, written by the tests (ImageFolder, DAVIS-2017, VOC),
and a tiny real encoder whose patch features are the patch's mean colour.

The layout readers are tested here too, so a broken fixture shows up as a failing test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from vidssl.errors import VidsslError
from vidssl.eval.palette import davis_palette, read_label_png, write_indexed_png

# Distinct object colours (RGB) and a grey textured background.
COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 3: (50, 70, 230)}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.full((h, w, 3), 110, np.float32)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255)


def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _box(h: int, w: int, y0: int, x0: int, size: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[max(0, y0) : y0 + size, max(0, x0) : x0 + size] = True
    return m


def write_image_folder(root: Path, per_class: int, seed: int) -> Path:
    """3 classes that differ visibly by shape: boxes, disks, horizontal stripes, each drawn in a
    random one of 3 colours on a noisy grey background."""
    rng = np.random.default_rng(seed)
    size = 48
    for cls in ("boxes", "disks", "stripes"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _background(rng, size, size)
            colour = COLOURS[int(rng.integers(1, 4))]  # colour does not tell the class; shape does
            if cls == "disks":
                m = _disk(size, size, rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(9, 14))
            elif cls == "stripes":
                period = int(rng.integers(6, 10))
                m = np.zeros((size, size), bool)
                m[(np.arange(size) // (period // 2)) % 2 == 0] = True
            else:
                m = _box(size, size, int(rng.integers(4, 20)), int(rng.integers(4, 20)), int(rng.integers(16, 24)))
            img[m] = colour
            Image.fromarray(img.astype(np.uint8)).save(root / cls / f"img{i:03d}.png")
    return root


def write_davis(root: Path, n_frames: int = 6, h: int = 64, w: int = 96, seed: int = 0,
                names: tuple[str, ...] = ("shapes",)) -> Path:
    """DAVIS-2017 layout: one or more sequences of a red disk (id 1) and a green box (id 2)
    moving over a noisy background; indexed ground-truth PNGs for every frame."""
    rng = np.random.default_rng(seed)
    for s, name in enumerate(names):
        fdir = root / "JPEGImages" / "480p" / name
        adir = root / "Annotations" / "480p" / name
        fdir.mkdir(parents=True, exist_ok=True)
        for t in range(n_frames):
            img = _background(rng, h, w)
            lab = np.zeros((h, w), np.uint8)
            disk = _disk(h, w, 30 + s * 2, 22 + 3 * t, 12)
            box = _box(h, w, 18, 58 - 2 * t, 22)
            lab[disk] = 1
            lab[box] = 2  # the box occludes the disk where they meet
            for obj in (1, 2):
                img[lab == obj] = COLOURS[obj]
            Image.fromarray(img.astype(np.uint8)).save(fdir / f"{t:05d}.jpg", quality=95)
            write_indexed_png(adir / f"{t:05d}.png", lab)
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def write_voc(root: Path, n: int = 4, size: int = 64, seed: int = 0) -> Path:
    """VOC layout: images with a disk (class 1) and/or a box (class 3); a 2-pixel void (255)
    outline around every object, as VOC draws it."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        img = _background(rng, size, size)
        lab = np.zeros((size, size), np.uint8)
        disk = _disk(size, size, rng.uniform(18, 46), rng.uniform(18, 46), rng.uniform(9, 14))
        lab[disk] = 1
        if i % 2 == 0:
            box = _box(size, size, int(rng.integers(2, 10)), int(rng.integers(2, 10)), 16)
            box &= ~ndimage.binary_dilation(disk, iterations=3)
            lab[box] = 3
        objects = lab > 0
        outline = ndimage.binary_dilation(objects, iterations=2) & ~objects
        for c, colour in ((1, COLOURS[1]), (3, COLOURS[3])):
            img[lab == c] = colour
        lab[outline] = 255
        name = f"2007_{i:06d}"
        names.append(name)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        write_indexed_png(root / "SegmentationClass" / f"{name}.png", lab)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in names))
    return root


class MeanColourViT(nn.Module):
    """A real (non-learned) encoder with the timm ViT surface the evals use: each patch token is
    its mean colour (3 values) embedded as a sharp one-hot over 3 reference colours plus grey, so
    patches of the same object have near-identical features. Tokens: [CLS] + patches."""

    num_prefix_tokens = 1

    def __init__(self, patch: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.patch_size = (patch, patch)
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None]
        refs = torch.tensor([[110, 110, 110], *COLOURS.values()], dtype=torch.float32).T / 255.0  # (3, 4)
        self.register_buffer("refs", (refs - mean) / std)  # normalised reference colours
        self.scale = nn.Parameter(torch.tensor(20.0), requires_grad=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_embed.patch_size[0]
        m = F.avg_pool2d(x, p)  # (B, 3, h, w)
        B, _, h, w = m.shape
        d = ((m.reshape(B, 3, -1, 1) - self.refs[None, :, None, :]) ** 2).sum(1)  # (B, N, 4)
        tokens = torch.softmax(-self.scale * d, dim=-1)  # (B, N, 4)
        return torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)


# --------------------------------------------------------------------------- tests of the fixtures


def test_image_folder_fixture_reads(tmp_path: Path) -> None:
    from vidssl.eval.datasets import read_image_folder

    s = read_image_folder(write_image_folder(tmp_path / "train", 2, 0))
    assert s.classes == ["boxes", "disks", "stripes"]
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidsslError, match="no class sub-directories"):
        read_image_folder(tmp_path / "empty")
    with pytest.raises(VidsslError, match="not found"):
        read_image_folder(tmp_path / "nope")


def test_davis_fixture_reads_and_errors(tmp_path: Path) -> None:
    from vidssl.eval.davis import read_davis

    root = write_davis(tmp_path / "davis", n_frames=3)
    (seq,) = read_davis(root)
    assert seq.name == "shapes" and len(seq.frames) == 3 and all(a is not None for a in seq.annotations)
    lab = read_label_png(seq.annotations[0])
    assert set(np.unique(lab)) == {0, 1, 2}
    with Image.open(seq.annotations[0]) as im:  # indexed PNG with the DAVIS palette
        assert im.mode == "P"
        assert np.array_equal(np.array(im.getpalette()[: 3 * 4]).reshape(4, 3), davis_palette(4))
    with pytest.raises(VidsslError, match="split file not found"):
        read_davis(root, split="test-dev")
    (root / "ImageSets" / "2017" / "val.txt").write_text("shapes\nmissing_seq\n")
    with pytest.raises(VidsslError, match="missing_seq"):
        read_davis(root)


def test_davis_palette_known_colours() -> None:
    pal = davis_palette()
    # the PASCAL/DAVIS colour map: black, dark red, dark green, olive, navy, ... ; 8 -> (64, 0, 0)
    assert pal[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert pal[8].tolist() == [64, 0, 0]
    assert pal[255].tolist() == [224, 224, 192]


def test_voc_fixture_reads(tmp_path: Path) -> None:
    from vidssl.eval.seg_data import read_voc

    root = write_voc(tmp_path / "voc", n=2)
    samples = read_voc(root)
    assert [s.clip for s in samples] == ["2007_000000", "2007_000001"]
    lab = read_label_png(samples[0].mask)
    assert {0, 1, 3, 255} <= set(np.unique(lab).tolist())
    (root / "SegmentationClass" / "2007_000001.png").unlink()
    with pytest.raises(VidsslError, match="2007_000001.png"):
        read_voc(root)
