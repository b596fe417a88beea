"""Frozen-encoder features for the evaluations: the encoder to evaluate, feature functions, the
on-disk feature cache and its one key function.

Features depend on (weights, dataset files, transform, feature kind) only, so they are
computed once and cached on disk under a hash of those four (`feature_key`); a second
evaluation with other classifier settings (k, temperature, epochs) reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vidssl.errors import VidsslError
from vidssl.eval.datasets import ImageListDataset
from vidssl.eval.report import warn
from vidssl.io import OutputError, atomic_write

# An encoder to evaluate: a timm ViT or a vidssl `Encoder`, or anything `vidssl.hub.load_encoder`
# accepts (an export, a run directory or checkpoint, an official checkpoint, `random:NAME`).
EncoderLike = Union[nn.Module, str, Path]


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


# --------------------------------------------------------------------------- the encoder


def prepare_encoder(
    encoder: EncoderLike, *, checkpoint_key: str = "teacher", seed: int = 0,
    device: str | torch.device | None = None, weights_id: str | None = None,
) -> tuple[nn.Module, str, str | None]:
    """(model, its name for results, its cache id or None) of anything an evaluation accepts.

    A path or `random:NAME` is loaded strictly by `vidssl.hub.load_encoder` (on `device`, default
    'auto') and cached under `describe_weights`; a module stays where it is unless `device` is
    given, and its features are cached only under an explicit `weights_id`. Non-finite
    parameters are a warning naming the weights."""
    if isinstance(encoder, nn.Module):
        model, name = encoder, f"module:{type(getattr(encoder, 'vit', encoder)).__name__}"
        if device is not None:
            model.to(resolve_device(str(device)))
    else:
        from vidssl.hub import describe_weights, load_encoder

        model = load_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed)
        model.to(resolve_device(str(device) if device is not None else "auto"))
        name = str(encoder)
        weights_id = weights_id or describe_weights(encoder, checkpoint_key, seed)
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    with torch.no_grad():  # one device sync, not one per tensor
        bad = int(sum((~torch.isfinite(p)).sum() for p in params)) if params else 0
    if bad:
        warn(f"weights {name}: {bad} of {total} parameters are not finite (NaN/inf); every feature will be meaningless")
    return model, name, weights_id


def check_patch_multiple(vit: nn.Module, size: int, option: str) -> None:
    patch = as_vit(vit).patch_embed.patch_size[0]
    if size % patch:
        raise VidsslError(f"{option} {size} is not a multiple of the patch size {patch}")


def warn_non_finite(features: torch.Tensor, what: str) -> None:
    """A warning when some of the (N, ...) features hold NaN/inf, naming the data they come from."""
    bad = int((~torch.isfinite(features.reshape(features.shape[0], -1))).any(dim=1).sum()) if len(features) else 0
    if bad:
        warn(f"{what}: {bad} of {len(features)} have non-finite features (NaN/inf); the scores are meaningless")


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


def feature_key(weights_id: str, files: Sequence[Path], transform_id: str, features_id: str) -> dict:
    """The one cache key of computed features: (weights, the files and their count, transform, feature kind)."""
    return {"weights": weights_id, "files": files_fingerprint(files), "n": len(files),
            "transform": transform_id, "features": features_id}


class FeatureCache:
    """Tensors stored under a hash of a description dict; `None` directory disables caching."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None

    @classmethod
    def at(cls, cache_dir: str | Path | None = None, enabled: bool = True) -> "FeatureCache":
        """The cache under `cache_dir`/features (default: $VIDSSL_CACHE_DIR, else ~/.cache/vidssl), or none."""
        if not enabled:
            return cls(None)
        return cls(Path(cache_dir) / "features" if cache_dir is not None else default_cache_dir())

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
            try:
                atomic_write(path, lambda tmp: torch.save(value, tmp))
            except OutputError as e:  # the features are computed; a cache that cannot be written is not fatal
                warn(f"{e}; continuing without caching (--no-cache skips the cache)")
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
    """Features of a list of images, cached per (weights, files, transform, feature kind); without a
    `weights_id` nothing is cached (two different models must never share an entry)."""
    key = feature_key(weights_id, paths, transform_id, fn_id)
    if not weights_id:
        cache = FeatureCache(None)

    def compute() -> dict[str, torch.Tensor]:
        feats = compute_features(vit, ImageListDataset(paths, transform), fn, batch_size=batch_size,
                                 num_workers=num_workers, desc=desc)
        return {"features": feats}

    return cache.get_or_compute(key, compute)["features"]
