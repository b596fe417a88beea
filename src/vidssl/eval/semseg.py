"""Linear semantic segmentation on frozen patch tokens: PASCAL VOC 2012 and ADE20k (issue 13).

The readout is DINOv2's "linear" head (dinov2/eval/segmentation configs `*_linear_config.py`,
mmseg BNHead): BatchNorm + a 1x1 convolution on the last layer's patch tokens (after the
final norm), logits upsampled bilinearly to the label size, cross-entropy with the void label
ignored. The backbone is frozen and in eval mode. Values and their sources (docs/evaluation.md):

* train pipeline (mmseg ADE20k / VOC-aug config that DINOv2 and iBOT use): rescale so the image
  fits in (4 x crop, crop) x r with r ~ U(0.5, 2.0), random crop `crop_size` (512) that retries
  up to 10 times while one class covers more than 75% of it (`cat_max_ratio`), horizontal flip
  p = 0.5, pad to the crop (image with the mean colour, labels with void). PhotoMetricDistortion
  is not applied.
* optimiser: AdamW lr 1e-3, weight decay 1e-4, betas (0.9, 0.999); poly schedule (power 1) with
  a linear warm-up from 1e-6 x lr; batch 16 (DINOv2: 8 GPUs x 2). DINOv2 trains 40,000
  iterations with a 1,500-iteration warm-up; the default here is 4,000 iterations and a
  150-iteration warm-up (the same 3.75% share), a tenth of the schedule, so one run of a ViT-S
  fits in minutes on one GPU. `iters=40000, warmup_iters=1500` is DINOv2's schedule.
* inference (`full`): the image is rescaled to fit in (4 x 512, 512) keeping its aspect, sliding
  windows of 512 with stride 341, logits averaged where windows overlap, resized bilinearly to
  the annotation's size, argmax.
* `fast`: every image is resized once to `fast_size` x `fast_size` (default 224, bilinear), its
  token grid computed and cached (the same entry as `vidssl eval unsup-seg` at that size); the
  head trains on the cached grids with labels resized (nearest) to `fast_label_size` (default
  4 x the grid), without augmentation. Validation upsamples each image's logits to its own
  annotation size. Numbers are lower than `full` (no augmentation, coarse grids).

Metrics: a confusion matrix over every non-void pixel of the validation split at the
annotation's own resolution; IoU_c = TP / (TP + FP + FN) for every class present in the ground
truth, mIoU their mean (as mmseg's nanmean when every class occurs in the split, which holds for
the full VOC and ADE20k val sets), pixel accuracy. Classes are keyed by their label value in the
annotation files (VOC 0..20, ADE20k 1..150).

Layouts: VOC (21 classes, 255 void; splits train / val of ImageSets/Segmentation) and ADE20k
(150 classes; label 0 "other" is void, labels 1..150 become 0..149: mmseg's reduce_zero_label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vidssl.errors import VidsslError
from vidssl.eval.datasets import IMAGENET_MEAN, IMAGENET_STD, open_rgb
from vidssl.eval.features import (EncoderLike, FeatureCache, as_vit, compute_features, feature_key, patch_features,
                                  prepare_encoder, warn_non_finite)
from vidssl.eval.palette import read_label_png
from vidssl.eval.report import clean
from vidssl.eval.seg_data import SegImages, SegSample, read_ade20k, read_voc

VOID = 255

# classes, default train / val split, the label value of class index 0 in the files
LAYOUTS: dict[str, dict[str, Any]] = {
    "voc": {"num_classes": 21, "train": "train", "val": "val", "first_label": 0},
    "ade20k": {"num_classes": 150, "train": "training", "val": "validation", "first_label": 1},
}


# --------------------------------------------------------------------------- data


def check_layout(layout: str) -> dict[str, Any]:
    if layout not in LAYOUTS:
        raise VidsslError(f"--layout {layout}: valid layouts are {', '.join(LAYOUTS)}")
    return LAYOUTS[layout]


def read_split(data: str | Path, layout: str, split: str) -> list[SegSample]:
    check_layout(layout)
    return read_voc(data, split) if layout == "voc" else read_ade20k(data, split)


def to_targets(labels: np.ndarray, layout: str) -> np.ndarray:
    """Training targets (class indices 0..C-1, VOID elsewhere) of the labels read from a file.
    ADE20k: 0 ("other") -> void, 1..150 -> 0..149. Values outside the classes are void."""
    spec = check_layout(layout)
    t = labels.astype(np.int64) - spec["first_label"]
    if spec["first_label"]:
        t[labels == 0] = VOID
    t[(t < 0) | (t >= spec["num_classes"])] = VOID
    return t.astype(np.uint8)


def load_targets(sample: SegSample, layout: str) -> np.ndarray:
    return to_targets(read_label_png(sample.mask), layout)


def image_and_targets(sample: SegSample, layout: str) -> tuple[Image.Image, np.ndarray]:
    img, lab = open_rgb(sample.image), load_targets(sample, layout)
    if lab.shape != (img.height, img.width):
        raise VidsslError(f"{sample.mask}: size {lab.shape[1]}x{lab.shape[0]} differs from its image "
                          f"{img.width}x{img.height}")
    return img, lab


def _normalise(img: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def fit_size(w: int, h: int, short: float, long: float) -> tuple[int, int]:
    """(w, h) scaled, keeping the aspect, to fit in long x short (mmseg Resize keep_ratio)."""
    s = min(long / max(w, h), short / min(w, h))
    return max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))


class TrainCrops(Dataset):
    """`length` augmented crops: item k is sample order[k] with augmentations drawn from a generator
    seeded by (seed, k), so the stream is the same for any number of workers."""

    def __init__(self, samples: Sequence[SegSample], layout: str, crop: int, scale: tuple[float, float],
                 flip: bool, length: int, seed: int) -> None:
        self.samples, self.layout, self.crop = list(samples), layout, crop
        self.scale, self.flip, self.seed = scale, flip, seed
        rng = np.random.default_rng([seed, 1])
        reps = -(-length // len(self.samples))
        self.order = np.concatenate([rng.permutation(len(self.samples)) for _ in range(reps)])[:length]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples[int(self.order[k])]
        rng = np.random.default_rng([self.seed, 2, k])
        img, lab = image_and_targets(s, self.layout)
        r = rng.uniform(*self.scale)
        w, h = fit_size(img.width, img.height, self.crop * r, 4 * self.crop * r)
        img = np.asarray(img.resize((w, h), Image.BILINEAR))
        lab = np.asarray(Image.fromarray(lab).resize((w, h), Image.NEAREST))
        ch, cw = min(self.crop, h), min(self.crop, w)
        for _ in range(10):  # mmseg RandomCrop cat_max_ratio=0.75
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            cl = lab[y0:y0 + ch, x0:x0 + cw]
            counts = np.bincount(cl[cl != VOID].ravel(), minlength=1)
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < 0.75:
                break
        im, cl = img[y0:y0 + ch, x0:x0 + cw], cl
        if self.flip and rng.random() < 0.5:
            im, cl = im[:, ::-1], cl[:, ::-1]
        x = torch.zeros(3, self.crop, self.crop)  # zero after normalisation = the mean colour
        y = torch.full((self.crop, self.crop), VOID, dtype=torch.long)
        x[:, :ch, :cw] = _normalise(Image.fromarray(np.ascontiguousarray(im)))
        y[:ch, :cw] = torch.from_numpy(np.ascontiguousarray(cl).astype(np.int64))
        return x, y


# --------------------------------------------------------------------------- model


class LinearHead(nn.Module):
    """BN + 1x1 convolution on a (B, D, h, w) token grid (mmseg BNHead with one input; N(0, 0.01), bias 0)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, num_classes, 1)
        nn.init.normal_(self.conv.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(tokens))


def token_grid(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Last-layer patch tokens (B, D, h, w) of images padded (bottom / right, the mean colour) to a
    multiple of the patch size."""
    p = as_vit(vit).patch_embed.patch_size[0]
    ph, pw = (-x.shape[-2]) % p, (-x.shape[-1]) % p
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return patch_features(vit, x)


def grid_logits(head: nn.Module, tokens: torch.Tensor, size: tuple[int, int], patch: int) -> torch.Tensor:
    """Head logits upsampled (bilinear) to the padded input and cropped to `size`, (B, C, H, W)."""
    logits = head(tokens)
    up = F.interpolate(logits, size=(tokens.shape[-2] * patch, tokens.shape[-1] * patch), mode="bilinear",
                       align_corners=False)
    return up[..., : size[0], : size[1]]


def _device_of(module: nn.Module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- metrics


def confusion_matrix(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int,
                     ignore: int = VOID) -> np.ndarray:
    """(C, C) int64 counts, rows ground truth, columns prediction, over pixels whose target is a class."""
    p = torch.as_tensor(np.asarray(pred) if not isinstance(pred, torch.Tensor) else pred).reshape(-1).long().cpu()
    t = torch.as_tensor(np.asarray(target) if not isinstance(target, torch.Tensor) else target).reshape(-1).long().cpu()
    keep = (t != ignore) & (t >= 0) & (t < num_classes)
    idx = t[keep] * num_classes + p[keep].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).numpy()


def iou_scores(cm: np.ndarray, first_label: int = 0) -> dict[str, Any]:
    """mIoU (%) over the classes present in the ground truth, their IoU (%) keyed by label value,
    pixel accuracy (%)."""
    cm = cm.astype(np.float64)
    tp, gt, pr = np.diag(cm), cm.sum(1), cm.sum(0)
    present = np.flatnonzero(gt > 0)
    iou = tp[present] / (gt[present] + pr[present] - tp[present])
    per = {str(int(c) + first_label): 100.0 * float(v) for c, v in zip(present, iou)}
    total = cm.sum()
    return {"mIoU": 100.0 * float(iou.mean()) if len(iou) else float("nan"), "per_class_IoU": per,
            "pixel_accuracy": 100.0 * float(tp.sum() / total) if total else float("nan"),
            "classes_present": len(present)}


# --------------------------------------------------------------------------- training


def poly_warmup(it: int, iters: int, warmup: int, ratio: float = 1e-6) -> float:
    """mmseg's poly (power 1, min 0) with a linear warm-up from ratio x lr: the lr factor at `it`."""
    factor = 1.0 - it / iters
    if it < warmup:
        factor *= 1.0 - (1.0 - it / warmup) * (1.0 - ratio)
    return factor


def train_head(head: nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], patch: int, *, iters: int,
               lr: float, weight_decay: float, warmup_iters: int, stretch: bool = False,
               desc: str = "semseg probe") -> dict[str, float]:
    """AdamW on cross-entropy (void ignored) for `iters` batches of (tokens (B, D, h, w), targets (B, H, W)).
    Logits are upsampled to the (padded) input and cropped to the targets, or with `stretch`
    (fast mode: targets resized to their own size) resized to the targets' size."""
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: poly_warmup(it, iters, warmup_iters))
    head.train()
    losses: list[float] = []
    bar = tqdm(range(iters), desc=desc, disable=None, leave=False)
    for _ in bar:
        tokens, target = next(batches)
        if stretch:
            logits = F.interpolate(head(tokens), size=target.shape[-2:], mode="bilinear", align_corners=False)
        else:
            logits = grid_logits(head, tokens, target.shape[-2:], patch)
        if (target == VOID).all():
            loss = logits.sum() * 0.0  # an all-void crop teaches nothing (cross-entropy would be NaN)
        else:
            loss = F.cross_entropy(logits, target, ignore_index=VOID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    head.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"final_loss": float(np.mean(tail))}


def _head_for(dim: int, num_classes: int, seed: int, device: torch.device) -> LinearHead:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LinearHead(dim, num_classes).to(device)


# --------------------------------------------------------------------------- inference


@torch.no_grad()
def slide_logits(vit: nn.Module, head: nn.Module, x: torch.Tensor, window: int, stride: int,
                 num_classes: int) -> torch.Tensor:
    """(C, H, W) logits of one normalised image (3, H, W): windows of `window` (clipped to the image)
    every `stride` pixels, the last one flush with the border, logits averaged where they overlap."""
    _, H, W = x.shape
    wh, ww = min(window, H), min(window, W)
    ys = sorted({min(i * stride, H - wh) for i in range(max(H - wh + stride - 1, 0) // stride + 1)})
    xs = sorted({min(j * stride, W - ww) for j in range(max(W - ww + stride - 1, 0) // stride + 1)})
    boxes = [(y, xx) for y in ys for xx in xs]
    crops = torch.stack([x[:, y:y + wh, xx:xx + ww] for y, xx in boxes])
    patch = as_vit(vit).patch_embed.patch_size[0]
    logits = grid_logits(head, token_grid(vit, crops).float(), (wh, ww), patch)
    acc = torch.zeros(num_classes, H, W, device=logits.device)
    count = torch.zeros(1, H, W, device=logits.device)
    for (y, xx), lg in zip(boxes, logits):
        acc[:, y:y + wh, xx:xx + ww] += lg
        count[:, y:y + wh, xx:xx + ww] += 1
    return acc / count


def _score_logits(cm: np.ndarray, logits: torch.Tensor, target: np.ndarray, num_classes: int) -> None:
    """Add one image: logits (C, h, w) resized to the target's size, argmax, into `cm`."""
    up = F.interpolate(logits[None], size=target.shape, mode="bilinear", align_corners=False)[0]
    cm += confusion_matrix(up.argmax(0).cpu(), torch.from_numpy(target.astype(np.int64)), num_classes)


# --------------------------------------------------------------------------- the evaluation


def evaluate_semseg(
    encoder: EncoderLike,
    data: str | Path,
    layout: Literal["voc", "ade20k"],
    *,
    mode: Literal["full", "fast"] = "full",
    train_split: str | None = None,
    val_split: str | None = None,
    iters: int = 4000,
    train_batch_size: int = 16,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_iters: int = 150,
    crop_size: int = 512,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    test_size: int = 512,
    window: int = 512,
    stride: int = 341,
    fast_size: int = 224,
    fast_label_size: int | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
) -> dict[str, Any]:
    """Linear segmentation probe of `encoder` (a model, or anything `load_encoder` accepts) on the VOC
    or ADE20k layout at `data`: trained on `train_split`, scored on `val_split` (defaults: VOC
    train / val, ADE20k training / validation). `seed` seeds `random:NAME`, the head and the crops.
    Returns the plain dict that `vidssl eval semseg --json` writes: metrics mIoU, per_class_IoU
    (keyed by label value), pixel_accuracy."""
    spec = check_layout(layout)
    if mode not in ("full", "fast"):
        raise VidsslError(f"--mode {mode}: valid modes are full, fast")
    for value, option in ((iters, "--iters"), (train_batch_size, "--train-batch-size"), (crop_size, "--crop-size"),
                          (test_size, "--test-size"), (window, "--window"), (stride, "--stride"),
                          (fast_size, "--fast-size")):
        if value < 1:
            raise VidsslError(f"{option} must be at least 1, got {value}")
    if warmup_iters < 0 or lr <= 0 or weight_decay < 0:
        raise VidsslError("--warmup-iters and --weight-decay must be >= 0 and --lr > 0")
    if stride > window:
        raise VidsslError(f"--stride {stride} must not exceed --window {window} (pixels would be skipped)")
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise VidsslError(f"--scale-range {lo} {hi}: need 0 < low <= high")
    train_split, val_split = train_split or spec["train"], val_split or spec["val"]
    train_samples, val_samples = read_split(data, layout, train_split), read_split(data, layout, val_split)
    vit, name, wid = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                     weights_id=weights_id)
    vit.eval()
    dev = _device_of(vit)
    patch = as_vit(vit).patch_embed.patch_size[0]
    C = spec["num_classes"]
    cm = np.zeros((C, C), dtype=np.int64)
    hp = dict(iters=iters, lr=lr, weight_decay=weight_decay, warmup_iters=warmup_iters)
    if mode == "fast":
        if fast_size % patch:
            raise VidsslError(f"--fast-size {fast_size} is not a multiple of the patch size {patch}")
        grid = fast_size // patch
        label_size = fast_label_size or 4 * grid
        store = FeatureCache.at(cache_dir, cache and wid is not None)

        def grids(samples: list[SegSample], what: str) -> torch.Tensor:
            key = feature_key(wid or "", [s.image for s in samples], f"square-bilinear-{fast_size}", "patch-last")

            def compute() -> dict[str, torch.Tensor]:  # the same entry as unsup-seg's at this size
                feats = compute_features(vit, SegImages(samples, fast_size), patch_features, batch_size=batch_size,
                                         num_workers=num_workers, desc=f"{what} patch features")
                return {"features": feats.half()}

            feats = store.get_or_compute(key, compute)["features"]
            warn_non_finite(feats, f"{what} images of {data}")
            return feats

        ftr = grids(train_samples, "train")
        targets = torch.from_numpy(np.stack([
            np.array(Image.fromarray(load_targets(s, layout)).resize((label_size, label_size), Image.NEAREST))
            for s in tqdm(train_samples, desc="train labels", disable=None, leave=False)]))  # uint8: small in memory
        g = torch.Generator().manual_seed(seed)

        def fast_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            while True:
                for sel in torch.randperm(len(ftr), generator=g).split(train_batch_size):
                    yield ftr[sel].float().to(dev), targets[sel].long().to(dev)

        head = _head_for(ftr.shape[1], C, seed, dev)
        fit = train_head(head, fast_batches(), patch, stretch=True, **hp)
        fva = grids(val_samples, "val")
        with torch.no_grad():
            for s, f in tqdm(list(zip(val_samples, fva)), desc="semseg val", disable=None, leave=False):
                _score_logits(cm, head(f[None].float().to(dev))[0], load_targets(s, layout), C)
        extra = {"fast_size": fast_size, "fast_label_size": label_size}
    else:
        crops = TrainCrops(train_samples, layout, crop_size, (lo, hi), flip, iters * train_batch_size, seed)
        loader = DataLoader(crops, batch_size=train_batch_size, shuffle=False, num_workers=num_workers,
                            drop_last=False)
        dim = None

        def full_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x, y in loader:
                with torch.no_grad():
                    tokens = token_grid(vit, x.to(dev)).float()
                yield tokens, y.to(dev)

        stream = full_batches()
        first = next(stream)
        dim = first[0].shape[1]
        head = _head_for(dim, C, seed, dev)

        def chained() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            yield first
            yield from stream

        fit = train_head(head, chained(), patch, **hp)
        with torch.no_grad():
            for s in tqdm(val_samples, desc="semseg val (sliding window)", disable=None, leave=False):
                img, target = image_and_targets(s, layout)
                w, h = fit_size(img.width, img.height, test_size, 4 * test_size)
                x = _normalise(img.resize((w, h), Image.BILINEAR)).to(dev)
                _score_logits(cm, slide_logits(vit, head, x, window, stride, C), target, C)
        extra = {"crop_size": crop_size, "scale_range": [lo, hi], "flip": flip, "test_size": test_size,
                 "window": window, "stride": stride}
    metrics = iou_scores(cm, spec["first_label"])
    if metrics["classes_present"] == 0:
        raise VidsslError(f"{data}: the {val_split} annotations hold no labelled pixel to score")
    metrics["final_loss"] = fit["final_loss"]
    return clean({"eval": "semseg", "mode": mode, "weights": name, "data": str(data), "layout": layout,
                  "train_split": train_split, "val_split": val_split, "num_classes": C,
                  "train_images": len(train_samples), "val_images": len(val_samples), "iters": iters,
                  "train_batch_size": train_batch_size, "lr": lr, "weight_decay": weight_decay,
                  "warmup_iters": warmup_iters, **extra, "metrics": metrics})
