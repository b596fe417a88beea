"""Segmentation datasets for the k-means evaluation: PASCAL VOC and DAVIS-2017 layouts.

VOC: ROOT/JPEGImages/ID.jpg, ROOT/SegmentationClass/ID.png (indexed, 255 void),
ROOT/ImageSets/Segmentation/SPLIT.txt. DAVIS: see `vidssl.eval.davis.read_davis`; every frame
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


def read_voc(root: str | Path, split: str = "val") -> list[SegSample]:
    root = Path(root)
    check_name(split, "split", root)
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"{listing}: split file not found (expected the VOC layout ImageSets/Segmentation/{split}.txt)")
    out = []
    for name in (n.strip() for n in listing.read_text().splitlines()):
        if not name:
            continue
        check_name(name, "image id", listing)
        img, mask = root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png"
        for p in (img, mask):
            if not p.is_file():
                raise DatasetError(f"{p}: listed in {listing} but missing")
        out.append(SegSample(img, mask, name))
    if not out:
        raise DatasetError(f"{listing}: lists no images")
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
