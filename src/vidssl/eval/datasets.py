"""Image datasets and eval transforms: the ImageFolder layout, image reading, DINO's transforms,
and the check that a name read from a dataset file stays a plain name.

Names that come from a dataset (a DAVIS sequence from the split file, a VOC image id, a class
folder) end up in output paths (`--out DIR/SEQ/FRAME.png`), so each one is checked: a name
that would leave its folder (`../x`, an absolute path, a path separator) is a one-line error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from vidssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vidssl.errors import VidsslError
from vidssl.eval.report import warn

if TYPE_CHECKING:
    from torchvision import transforms as T

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class DatasetError(VidsslError):
    """A dataset file or layout is unusable (a missing file, a name that escapes its folder)."""


def check_name(name: str, what: str, source: str | Path) -> str:
    """`name` (read from `source`) if it is a plain file or folder name, else a DatasetError:
    no path separators, not '.', '..', empty, absolute or containing NUL."""
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if (not name or name in (".", "..") or any(s in name for s in seps) or "\0" in name
            or os.path.isabs(name) or Path(name).drive):
        raise DatasetError(f"{source}: {what} {name!r} is not a plain name (no '/', '\\', '..' or absolute "
                           "paths); it would read or write outside the dataset and output folders")
    return name


# --------------------------------------------------------------------------- ImageFolder


@dataclass(frozen=True)
class ImageFolderSet:
    """An ImageFolder layout: ROOT/CLASS/IMAGE. Classes sorted by name, as torchvision does."""

    root: Path
    classes: list[str]
    items: list[tuple[Path, int]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([c for _, c in self.items], dtype=torch.long)

    @property
    def paths(self) -> list[Path]:
        return [p for p, _ in self.items]

    def empty_classes(self) -> list[str]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)) if self.items else torch.zeros(len(self.classes))
        return [c for c, n in zip(self.classes, counts.tolist()) if n == 0]


def read_image_folder(root: str | Path) -> ImageFolderSet:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for c in classes:
        check_name(c, "class folder", root)
    if not classes:
        raise DatasetError(f"{root}: no class sub-directories (expected the ImageFolder layout ROOT/CLASS/IMAGE)")
    items = []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                items.append((f, ci))
    if not items:
        raise DatasetError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class directories")
    return ImageFolderSet(root, classes, items)


def read_train_val(train: str | Path, val: str | Path) -> tuple[ImageFolderSet, ImageFolderSet]:
    """Train and val ImageFolders with the same classes; a warning for each train class without images."""
    tr, va = read_image_folder(train), read_image_folder(val)
    if tr.classes != va.classes:
        raise DatasetError(f"{val}: classes {va.classes} differ from {train}: {tr.classes}")
    for c in tr.empty_classes():
        warn(f"{tr.root / c}: train class '{c}' has no images; its validation images can never be classified correctly")
    return tr, va


def open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - a broken image is a user error naming the file
        raise DatasetError(f"{path}: cannot read image ({e})") from None


class ImageListDataset(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_rgb(self.paths[i])), i


# --------------------------------------------------------------------------- transforms


def eval_transform(image_size: int = 224) -> T.Compose:
    """DINO's eval transform: Resize(256/224 x size, bicubic), CenterCrop(size), ImageNet norm."""
    from torchvision import transforms as T  # here, not at the top: importing torchvision takes a second

    return T.Compose([
        T.Resize(round(image_size * 256 / 224), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform_id(image_size: int) -> str:
    """The cache name of `eval_transform(image_size)`."""
    return f"dino-eval-{image_size}"


def train_transform(image_size: int = 224) -> T.Compose:
    """DINO's linear-probe train transform: RandomResizedCrop(size) + horizontal flip."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(image_size),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "DatasetError", "ImageFolderSet", "ImageListDataset",
           "check_name", "eval_transform", "eval_transform_id", "open_rgb", "read_image_folder", "read_train_val",
           "train_transform"]
