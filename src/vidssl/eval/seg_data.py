"""Segmentation datasets for the k-means and linear-probe evaluations: PASCAL VOC, ADE20k and
DAVIS-2017 layouts.

VOC: ROOT/JPEGImages/ID.jpg, ROOT/SegmentationClass/ID.png (indexed, 255 void),
ROOT/ImageSets/Segmentation/SPLIT.txt. ADE20k (SceneParsing, ADEChallengeData2016):
ROOT/images/SPLIT/NAME.jpg and ROOT/annotations/SPLIT/NAME.png (grayscale, 0 = "other", 1..150
the classes), SPLIT training|validation; ROOT may also be the folder that holds
ADEChallengeData2016. DAVIS: see `vidssl.eval.davis.read_davis`; every frame
with an annotation is a sample and its sequence is its clip (or consecutive chunks of
`clip_frames` frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vidssl.eval.datasets import IMAGENET_MEAN, IMAGENET_STD, DatasetError, check_name, open_rgb
from vidssl.eval.davis import read_davis
from vidssl.eval.palette import read_label_png


@dataclass(frozen=True)
class SegSample:
    image: Path
    mask: Path
    clip: str  # the video a frame belongs to (its own name for independent images)


def voc_split(root: Path, task: str, split: str, annotations: str, suffix: str) -> tuple[Path, list[tuple[str, Path, Path]]]:
    """A VOC split listing (`ImageSets/TASK/SPLIT.txt`, first word of each line) -> (its path,
    [(id, JPEGImages/id.jpg, ANNOTATIONS/id SUFFIX)]), each file checked to exist."""
    check_name(split, "split", root)
    listing = root / "ImageSets" / task / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: split file not found (expected the VOC layout ImageSets/{task}/{split}.txt)")
    out = []
    for line in listing.read_text().splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name:
            continue
        check_name(name, "image id", listing)
        img, ann = root / "JPEGImages" / f"{name}.jpg", root / annotations / f"{name}{suffix}"
        for p in (img, ann):
            if not p.is_file():
                raise DatasetError(f"{p}: listed in {listing} but missing")
        out.append((name, img, ann))
    return listing, out


def read_voc(root: str | Path, split: str = "val") -> list[SegSample]:
    listing, items = voc_split(Path(root), "Segmentation", split, "SegmentationClass", ".png")
    out = [SegSample(img, mask, name) for name, img, mask in items]
    if not out:
        raise DatasetError(f"{listing}: lists no images")
    return out


ADE_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def ade20k_root(root: str | Path) -> Path:
    """The ADEChallengeData2016 folder: `root` itself or its child of that name."""
    root = Path(root)
    for cand in (root, root / "ADEChallengeData2016"):
        if (cand / "images").is_dir() and (cand / "annotations").is_dir():
            return cand
    raise DatasetError(f"{root}: not an ADE20k folder (expected ADEChallengeData2016/images|annotations/"
                       "training|validation)")


def read_ade20k(root: str | Path, split: str = "validation") -> list[SegSample]:
    """Every image of ROOT/images/SPLIT with its annotation ROOT/annotations/SPLIT/NAME.png, sorted by
    name. `split`: training | validation (train | val accepted)."""
    if split not in ADE_SPLITS:
        raise DatasetError(f"ADE20k split '{split}': valid splits are training, validation")
    base = ade20k_root(root)
    split = ADE_SPLITS[split]
    images, labels = base / "images" / split, base / "annotations" / split
    for d in (images, labels):
        if not d.is_dir():
            raise DatasetError(f"{d}: folder not found (expected the ADE20k layout images|annotations/{split})")
    out = []
    for img in sorted(p for p in images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()):
        mask = labels / f"{img.stem}.png"
        if not mask.is_file():
            raise DatasetError(f"{mask}: annotation of {img.name} is missing")
        out.append(SegSample(img, mask, img.stem))
    if not out:
        raise DatasetError(f"{images}: no images")
    return out


def read_davis_samples(root: str | Path, split: str = "val", clip_frames: int = 0) -> list[SegSample]:
    out = []
    for seq in read_davis(root, split):
        annotated = [(f, a) for f, a in zip(seq.frames, seq.annotations) if a is not None]
        for i, (f, a) in enumerate(annotated):
            clip = seq.name if clip_frames <= 0 else f"{seq.name}/{i // clip_frames}"
            out.append(SegSample(f, a, clip))
    return out


class SegImages(Dataset):
    """Images resized (bilinear) to input_size x input_size, ImageNet-normalised."""

    def __init__(self, samples: Sequence[SegSample], input_size: int) -> None:
        self.samples, self.size = list(samples), input_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = open_rgb(self.samples[i].image).resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        return (x - mean) / std, i


def load_mask(sample: SegSample, eval_size: int) -> np.ndarray:
    """(eval_size, eval_size) uint8 labels, nearest resize."""
    m = read_label_png(sample.mask)
    return np.array(Image.fromarray(m).resize((eval_size, eval_size), Image.NEAREST))
