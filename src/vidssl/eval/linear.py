"""Linear probe on a frozen encoder: DINO's protocol (SPEC 4.2) and a fast mode on cached features.

Input: [CLS] of the last `n_last_blocks` blocks through the final norm, concatenated
(optionally the mean of the last block's patch tokens appended; DINO interleaves them, which
only changes the order of the coordinates). Linear layer N(0, 0.01), bias 0; SGD momentum 0.9,
weight decay 0, lr = base_lr x batch / 256, cosine annealing to 0 over the epochs, stepped per
epoch; validation every epoch; the reported number is the best top-1 over epochs, with the
last epoch's next to it.

* `full` (DINO): every epoch the train images are re-augmented (RandomResizedCrop + flip) and
  passed through the frozen backbone.
* `fast` (CPU): train and val features are computed once with the eval transform, cached,
  and the classifier is trained on them. No augmentation, so numbers are a little lower.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from vidssl.errors import VidsslError
from vidssl.eval.datasets import (ImageListDataset, eval_transform, eval_transform_id, read_train_val,
                                  train_transform)
from vidssl.eval.features import (EncoderLike, FeatureCache, as_vit, cached_image_features, check_patch_multiple,
                                  last_blocks_features, prepare_encoder, warn_non_finite)
from vidssl.eval.report import clean


def make_classifier(dim: int, num_classes: int) -> nn.Linear:
    layer = nn.Linear(dim, num_classes)
    nn.init.normal_(layer.weight, mean=0.0, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(top-1 %, top-5 %) of logits (N, C) against labels (N,)."""
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hit = top == labels[:, None]
    return 100.0 * hit[:, 0].float().mean().item(), 100.0 * hit.any(dim=1).float().mean().item()


def _train(
    dim: int,
    num_classes: int,
    epochs: int,
    batch_size: int,
    base_lr: float,
    train_epoch_batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    seed: int,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        clf = make_classifier(dim, num_classes)
    device = val_features.device
    clf.to(device)
    lr = base_lr * batch_size / 256.0
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=0.0)
    best = {"top1": -1.0, "top5": 0.0, "epoch": -1}
    last = (0.0, 0.0)
    for epoch in tqdm(range(epochs), desc="linear probe", disable=None, leave=False):
        clf.train()
        for x, y in train_epoch_batches(epoch):
            loss = F.cross_entropy(clf(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        clf.eval()
        with torch.no_grad():
            last = accuracy(clf(val_features), val_labels)
        if last[0] > best["top1"]:
            best = {"top1": last[0], "top5": last[1], "epoch": epoch}
    return {
        "best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": float(best["epoch"] + 1),
        "last_top1": last[0], "last_top5": last[1], "epochs": float(epochs), "lr": lr,
    }


def linear_probe_on_features(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    base_lr: float = 0.01,
    seed: int = 0,
) -> dict[str, float]:
    """Fast mode: train the linear layer on fixed features (N, dim); shuffled mini-batches."""
    g = torch.Generator().manual_seed(seed + 1)

    def batches(epoch: int):
        order = torch.randperm(train_features.shape[0], generator=g)
        for s in range(0, len(order), batch_size):
            sel = order[s : s + batch_size]
            yield train_features[sel], train_labels[sel]

    return _train(train_features.shape[1], num_classes, epochs, batch_size, base_lr, batches,
                  val_features, val_labels, seed)


def linear_probe_full(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    train_loader_for_epoch: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    dim: int,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    base_lr: float = 0.01,
    seed: int = 0,
) -> dict[str, float]:
    """DINO mode: each epoch re-augments the images; `feature_fn` runs the frozen backbone."""

    def batches(epoch: int):
        for x, y in train_loader_for_epoch(epoch):
            with torch.no_grad():
                f = feature_fn(x)
            yield f, y.to(f.device)

    return _train(dim, num_classes, epochs, batch_size, base_lr, batches, val_features, val_labels, seed)


def evaluate_linear(
    encoder: EncoderLike,
    train: str | Path,
    val: str | Path,
    *,
    mode: Literal["full", "fast"] = "full",
    epochs: int = 100,
    lr: float = 0.01,
    train_batch_size: int = 256,
    n_last_blocks: int = 4,
    avgpool: bool = False,
    image_size: int = 224,
    batch_size: int = 64,
    num_workers: int = 2,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
) -> dict[str, Any]:
    """DINO's linear probe of `encoder` (a model, or anything `load_encoder` accepts) on ImageFolder
    `train` / `val`. `mode='full'` re-augments the train images every epoch (DINO); `'fast'` trains on
    cached center-crop features. `seed` seeds `random:NAME`, the classifier and the data order.
    Returns the plain dict that `vidssl eval linear --json` writes."""
    if mode not in ("full", "fast"):
        raise VidsslError(f"--mode {mode}: valid modes are full, fast")
    if epochs < 1 or n_last_blocks < 1 or train_batch_size < 1:
        raise VidsslError("--epochs, --n-last-blocks and --train-batch-size must be at least 1")
    tr, va = read_train_val(train, val)
    vit, name, wid = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                     weights_id=weights_id)
    check_patch_multiple(vit, image_size, "--image-size")
    blocks = len(as_vit(vit).blocks)
    if n_last_blocks > blocks:
        raise VidsslError(f"--n-last-blocks {n_last_blocks} exceeds the {blocks} blocks of the model")
    store = FeatureCache.at(cache_dir, cache and wid is not None)
    tf, tid = eval_transform(image_size), eval_transform_id(image_size)
    fn = partial(last_blocks_features, n_last_blocks=n_last_blocks, avgpool=avgpool)
    fid = f"last{n_last_blocks}cls{'+avg' if avgpool else ''}"
    common = dict(batch_size=batch_size, num_workers=num_workers)
    fva = cached_image_features(vit, wid or "", va.paths, tf, tid, fn, fid, store, desc="val features", **common)
    warn_non_finite(fva, f"val images in {va.root}")
    n_classes = len(tr.classes)
    hp = dict(epochs=epochs, batch_size=train_batch_size, base_lr=lr, seed=seed)
    dev = next(vit.parameters()).device
    if mode == "fast":
        ftr = cached_image_features(vit, wid or "", tr.paths, tf, tid, fn, fid, store, desc="train features", **common)
        warn_non_finite(ftr, f"train images in {tr.root}")
        metrics = linear_probe_on_features(ftr.to(dev), tr.labels.to(dev), fva.to(dev), va.labels.to(dev),
                                           n_classes, **hp)
    else:
        ds = ImageListDataset(tr.paths, train_transform(image_size))
        labels = tr.labels

        def loader(epoch: int):
            g = torch.Generator().manual_seed(seed * 1000 + epoch)
            for x, i in DataLoader(ds, batch_size=train_batch_size, shuffle=True, generator=g,
                                   num_workers=num_workers):
                yield x.to(dev), labels[i].to(dev)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the augmentations draw from the global RNG
            metrics = linear_probe_full(lambda x: fn(vit, x).float(), loader, fva.shape[1], fva.to(dev),
                                        va.labels.to(dev), n_classes, **hp)
    return clean({"eval": "linear", "mode": mode, "weights": name, "train": str(train), "val": str(val),
                  "n_last_blocks": n_last_blocks, "avgpool": avgpool, "image_size": image_size, "metrics": metrics})
