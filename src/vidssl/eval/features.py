"""Frozen-encoder features for the evaluations: image datasets, eval transforms, a feature cache.

Features depend on (weights, dataset files, transform, feature kind) only, so they are
computed once and cached on disk under a hash of those four; a second evaluation with other
classifier settings (k, temperature, epochs) reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from tqdm import tqdm

from vidssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vidssl.errors import VidsslError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDSSL_CACHE_DIR", Path.home() / ".cache" / "vidssl")) / "features"


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu. The CLI picks; library code follows the tensors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise VidsslError(f"--device {name}: {e}") from None


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class ImageFolderSet:
    """An ImageFolder layout: ROOT/CLASS/IMAGE. Classes sorted by name, as torchvision does."""

    root: Path
    classes: list[str]
    items: list[tuple[Path, int]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([c for _, c in self.items], dtype=torch.long)


def read_image_folder(root: str | Path) -> ImageFolderSet:
    root = Path(root)
    if not root.is_dir():
        raise VidsslError(f"image folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise VidsslError(f"{root}: no class sub-directories (expected the ImageFolder layout ROOT/CLASS/IMAGE)")
    items = []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                items.append((f, ci))
    if not items:
        raise VidsslError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class directories")
    return ImageFolderSet(root, classes, items)


def open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - a broken image is a user error naming the file
        raise VidsslError(f"{path}: cannot read image ({e})") from None


class ImageListDataset(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(open_rgb(self.paths[i])), i


def eval_transform(image_size: int = 224) -> T.Compose:
    """DINO's eval transform: Resize(256/224 x size, bicubic), CenterCrop(size), ImageNet norm."""
    return T.Compose([
        T.Resize(round(image_size * 256 / 224), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def train_transform(image_size: int = 224) -> T.Compose:
    """DINO's linear-probe train transform: RandomResizedCrop(size) + horizontal flip."""
    return T.Compose([
        T.RandomResizedCrop(image_size),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# --------------------------------------------------------------------------- feature functions


def as_vit(model: nn.Module) -> nn.Module:
    """The timm ViT inside a vidssl `Encoder` (its `.vit`), or the model itself.
    Evaluations accept either; they read timm's own calls (forward_features, patch_embed)."""
    return getattr(model, "vit", model)



def cls_features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[CLS] after the final norm (DINO k-NN), (B, D)."""
    return as_vit(vit).forward_features(x)[:, 0]


def last_blocks_features(vit: nn.Module, x: torch.Tensor, n_last_blocks: int = 4, avgpool: bool = False) -> torch.Tensor:
    """DINO linear-probe input: [CLS] of the last n blocks (each through the final norm),
    concatenated; with `avgpool`, the mean of the last block's patch tokens appended. (B, n*D[+D])."""
    inter = as_vit(vit).forward_intermediates(
        x, indices=n_last_blocks, return_prefix_tokens=True, norm=True, output_fmt="NLC", intermediates_only=True
    )  # list of (patches (B, N, D), prefix (B, P, D))
    out = torch.cat([prefix[:, 0] for _, prefix in inter], dim=-1)
    if avgpool:
        out = torch.cat([out, inter[-1][0].mean(dim=1)], dim=-1)
    return out


def patch_features(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Last-layer patch tokens after the final norm as a map, (B, D, h, w)."""
    vit = as_vit(vit)
    tokens = vit.forward_features(x)[:, vit.num_prefix_tokens :]  # (B, N, D)
    p = vit.patch_embed.patch_size[0]
    h, w = x.shape[-2] // p, x.shape[-1] // p
    return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)


@torch.no_grad()
def compute_features(
    vit: nn.Module,
    dataset: Dataset,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "features",
) -> torch.Tensor:
    """Run `fn(vit, images)` over the dataset in order; features on the CPU, float32, (len, ...)."""
    device = next(vit.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out: list[torch.Tensor] = []
    try:
        for x, _ in tqdm(loader, desc=desc, disable=None, leave=False):
            out.append(fn(vit, x.to(device)).float().cpu())
    except VidsslError as e:  # from a worker, the message carries the worker's traceback
        text = str(e).strip()
        if "Traceback" in text:
            text = text.splitlines()[-1].split("Error: ", 1)[-1]
        raise VidsslError(text) from None
    return torch.cat(out)


# --------------------------------------------------------------------------- cache


def files_fingerprint(paths: Sequence[Path]) -> str:
    """Hash of (path, size, mtime) of every file: a changed dataset is a new cache entry."""
    h = hashlib.sha1()
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class FeatureCache:
    """Tensors stored under a hash of a description dict; `None` directory disables caching."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    def path(self, key: dict) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        return self.directory / f"{digest}.pt"

    def get_or_compute(self, key: dict, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        path = self.path(key)
        if path is not None and path.is_file():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a corrupt cache entry is recomputed
                pass
        value = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            torch.save(value, tmp)
            tmp.replace(path)
        return value


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, p=2)


def cached_image_features(
    vit: nn.Module,
    weights_id: str,
    paths: Sequence[Path],
    transform: Callable[[Image.Image], torch.Tensor],
    transform_id: str,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    fn_id: str,
    cache: FeatureCache,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    desc: str = "features",
) -> torch.Tensor:
    """Features of a list of images, cached per (weights, files, transform, feature kind)."""
    key = {"weights": weights_id, "files": files_fingerprint(paths), "n": len(paths),
           "transform": transform_id, "features": fn_id}

    def compute() -> dict[str, torch.Tensor]:
        feats = compute_features(vit, ImageListDataset(paths, transform), fn, batch_size=batch_size,
                                 num_workers=num_workers, desc=desc)
        return {"features": feats}

    return cache.get_or_compute(key, compute)["features"]
