"""DAVIS-2017 semi-supervised video object segmentation by label propagation (SPEC 4.3).

Frames are resized so the short side is `short_side` (480) and the long side is rounded
down to a multiple of 64 (DINO's rule), ImageNet-normalised, and encoded into last-layer
patch tokens. The first frame's ground truth, resized to the patch grid (nearest), is one-hot
encoded; each later frame takes its labels from the first frame plus the `n_last` (7)
previous frames' soft predictions by `vidssl.ops.propagation.propagate_labels` (window radius
12, top 5, temperature 0.1). The soft mask is upsampled x patch (bilinear), each channel is
min-max normalised, the argmax is resized back to the original size (nearest) and written as
an indexed PNG with the DAVIS palette; the first frame is written as its ground truth.

A sequence's features are extracted first (batched) and kept in float32 (2.4 MB per frame
for ViT-S/16 at 480p, 9.6 MB for ViT-S/8); the optional cache stores them per sequence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from vidssl.errors import VidsslError
from vidssl.eval.datasets import IMAGENET_MEAN, DatasetError, check_name, open_rgb
from vidssl.eval.davis_metrics import evaluate_sequence, summarize
from vidssl.eval.features import (EncoderLike, FeatureCache, as_vit, feature_key, patch_features, prepare_encoder,
                                  warn_non_finite)
from vidssl.eval.palette import read_label_png, write_indexed_png
from vidssl.eval.report import clean, warn
from vidssl.io import ensure_dir
from vidssl.ops.propagation import propagate_labels


@dataclass(frozen=True)
class DavisParams:
    short_side: int = 480
    long_multiple: int = 64
    n_last: int = 7
    radius: int = 12
    topk: int = 5
    temperature: float = 0.1


@dataclass(frozen=True)
class DavisSequence:
    name: str
    frames: list[Path]
    annotations: list[Path | None]  # None where the split has no ground truth for the frame


def read_davis(root: str | Path, split: str = "val", resolution: str = "480p") -> list[DavisSequence]:
    """Sequences of a DAVIS-2017 layout: JPEGImages/480p, Annotations/480p, ImageSets/2017/SPLIT.txt."""
    root = Path(root)
    listing = root / "ImageSets" / "2017" / f"{split}.txt"
    if not root.is_dir():
        raise DatasetError(f"DAVIS directory not found: {root}")
    check_name(split, "split", root)
    if not listing.is_file():
        raise DatasetError(f"{listing}: split file not found (expected the DAVIS-2017 layout ImageSets/2017/{split}.txt)")
    names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
    if not names:
        raise DatasetError(f"{listing}: lists no sequences")
    for name in names:
        check_name(name, "sequence name", listing)
    seqs = []
    for name in names:
        fdir = root / "JPEGImages" / resolution / name
        adir = root / "Annotations" / resolution / name
        frames = sorted(p for p in fdir.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not frames:
            raise DatasetError(f"{fdir}: no frames for sequence '{name}' listed in {listing}")
        annots = [adir / f"{f.stem}.png" for f in frames]
        if not annots[0].is_file():
            raise DatasetError(f"{annots[0]}: first-frame annotation of '{name}' is missing")
        seqs.append(DavisSequence(name, frames, [a if a.is_file() else None for a in annots]))
    return seqs


def working_size(h: int, w: int, short_side: int, long_multiple: int, patch: int) -> tuple[int, int]:
    """(h', w'): short side = short_side, long side scaled and rounded down to long_multiple."""
    if short_side % patch:
        raise VidsslError(f"--resolution {short_side} is not a multiple of the patch size {patch}")
    if h > w:
        tw, th = short_side, int((short_side * h / w) // long_multiple * long_multiple)
    else:
        th, tw = short_side, int((short_side * w / h) // long_multiple * long_multiple)
    if th < patch or tw < patch or th % patch or tw % patch:
        raise VidsslError(f"frame {w}x{h} gives a working size {tw}x{th} that the patch size {patch} does not tile")
    return th, tw


# DINO's DAVIS script normalises with a red std of 0.228, not ImageNet's 0.229 (SPEC 4.3).
DAVIS_STD = (0.228, 0.224, 0.225)


def _frame_tensor(path: Path, size: tuple[int, int]) -> torch.Tensor:
    img = open_rgb(path).resize((size[1], size[0]), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(DAVIS_STD)[:, None, None]
    return (x - mean) / std  # (3, h', w')


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(h, w) long -> (K, h, w) float."""
    return F.one_hot(labels.long(), num_classes).permute(2, 0, 1).float()


def min_max_per_channel(mask: torch.Tensor) -> torch.Tensor:
    """(K, H, W): channels whose maximum is positive are rescaled to [0, 1]; others kept."""
    lo = mask.amin(dim=(1, 2), keepdim=True)
    hi = mask.amax(dim=(1, 2), keepdim=True)
    scaled = (mask - lo) / (hi - lo).clamp_min(1e-12)
    return torch.where(hi > 0, scaled, mask)


@torch.no_grad()
def sequence_features(vit: nn.Module, seq: DavisSequence, size: tuple[int, int], batch_size: int = 8) -> torch.Tensor:
    """(T, D, h, w) float32 last-layer patch tokens of every frame at the working size."""
    device = next(vit.parameters()).device
    out = []
    for s in range(0, len(seq.frames), batch_size):
        x = torch.stack([_frame_tensor(p, size) for p in seq.frames[s : s + batch_size]]).to(device)
        out.append(patch_features(vit, x).float().cpu())
    return torch.cat(out)


def sequence_size(vit: nn.Module, seq: DavisSequence, params: DavisParams) -> tuple[int, int]:
    """Working size (h', w') of a sequence, from its first annotation's size."""
    vit = as_vit(vit)
    with Image.open(seq.annotations[0]) as im:
        W, H = im.size
    return working_size(H, W, params.short_side, params.long_multiple, vit.patch_embed.patch_size[0])


@torch.no_grad()
def segment_sequence(vit: nn.Module, seq: DavisSequence, params: DavisParams = DavisParams(),
                     feats: torch.Tensor | None = None) -> list[np.ndarray]:
    """Propagate the first-frame labels through the sequence; (H, W) uint8 maps, one per frame.
    `feats` (T, D, h, w) are the frames' patch features if already computed (else computed here)."""
    vit = as_vit(vit)
    device = next(vit.parameters()).device
    patch = vit.patch_embed.patch_size[0]
    first_gt = read_label_png(seq.annotations[0])
    H, W = first_gt.shape
    th, tw = working_size(H, W, params.short_side, params.long_multiple, patch)
    h, w = th // patch, tw // patch
    if feats is None:
        feats = sequence_features(vit, seq, (th, tw))
    if tuple(feats.shape[-2:]) != (h, w) or feats.shape[0] != len(seq.frames):
        raise ValueError(f"features {tuple(feats.shape)} do not fit {len(seq.frames)} frames on a {h}x{w} grid")
    first_labels = first_gt.copy()
    first_labels[first_labels == 255] = 0  # void is not an object to propagate
    small = np.array(Image.fromarray(first_labels).resize((w, h), Image.NEAREST))
    K = int(first_labels.max()) + 1
    first_seg = one_hot(torch.from_numpy(small), K).to(device)  # (K, h, w)
    first_feat = feats[0].to(device).float()
    queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=params.n_last)
    out = [first_gt]
    for t in tqdm(range(1, len(seq.frames)), desc=seq.name, disable=None, leave=False):
        f = feats[t].to(device).float()  # (D, h, w)
        ctx_f = torch.stack([first_feat] + [q[0] for q in queue])  # (C, D, h, w)
        ctx_l = torch.stack([first_seg] + [q[1] for q in queue])  # (C, K, h, w)
        seg = propagate_labels(f, ctx_f, ctx_l, topk=params.topk, temperature=params.temperature, radius=params.radius)
        if params.n_last > 0:
            queue.append((f, seg))
        up = F.interpolate(seg[None], scale_factor=patch, mode="bilinear", align_corners=False)[0]
        pred = min_max_per_channel(up).argmax(dim=0).to(torch.uint8).cpu().numpy()  # (th, tw)
        out.append(np.array(Image.fromarray(pred).resize((W, H), Image.NEAREST)))
    return out


def segment_and_score(
    vit: nn.Module, root: str | Path, split: str = "val", out_dir: str | Path | None = None,
    params: DavisParams = DavisParams(), sequences: Sequence[str] | None = None,
    cache: FeatureCache | None = None, weights_id: str = "", batch_size: int = 8,
) -> dict:
    """Segment every sequence of the split, write PNGs to out_dir/SEQ/, score J and F (the metrics
    only; `evaluate_davis` is the full evaluation).

    Sequences without ground truth for every frame are written but not scored; so are sequences
    whose first-frame annotation has no object (a warning names them): both are listed in
    'unscored_sequences' with the reason in 'unscored_reasons', and left out of every mean. With
    a `cache` (and the `weights_id` naming the weights), each sequence's features are stored once
    per working size, so other propagation settings reuse them."""
    seqs = read_davis(root, split)
    if sequences:
        unknown = sorted(set(sequences) - {s.name for s in seqs})
        if unknown:
            raise VidsslError(f"sequences not in the {split} split: {', '.join(unknown)}")
        seqs = [s for s in seqs if s.name in sequences]
    if out_dir is not None:
        ensure_dir(out_dir)
    per_seq: dict[str, dict[str, np.ndarray]] = {}
    unscored: dict[str, str] = {}
    for seq in tqdm(seqs, desc="DAVIS", disable=None):
        size = sequence_size(vit, seq, params)
        key = feature_key(weights_id, seq.frames, f"davis-bilinear-{size[0]}x{size[1]}", "patch-last")
        store = cache if cache is not None and weights_id else FeatureCache(None)
        feats = store.get_or_compute(key, lambda: {"features": sequence_features(vit, seq, size, batch_size)})
        warn_non_finite(feats["features"], f"frames of DAVIS sequence '{seq.name}'")
        pred = segment_sequence(vit, seq, params, feats["features"])
        if out_dir is not None:
            for frame, mask in zip(seq.frames, pred):
                write_indexed_png(Path(out_dir) / seq.name / f"{frame.stem}.png", mask)
        if any(a is None for a in seq.annotations):
            unscored[seq.name] = "no ground truth for every frame"
            continue
        first = pred[0][pred[0] != 255]  # the first prediction is the first annotation
        if not first.size or first.max() == 0:
            unscored[seq.name] = "first-frame annotation has no object"
            warn(f"DAVIS sequence '{seq.name}': first-frame annotation {seq.annotations[0]} is all background; "
                 "not scored and left out of the means")
            continue
        gts = [read_label_png(a) for a in seq.annotations]
        for a, g in zip(seq.annotations, gts):
            if g.shape != pred[0].shape:
                raise VidsslError(f"{a}: size {g.shape[1]}x{g.shape[0]} differs from the first annotation "
                                  f"{pred[0].shape[1]}x{pred[0].shape[0]}")
        per_seq[seq.name] = evaluate_sequence(np.stack(gts), np.stack(pred))
    if not per_seq:
        why = "; ".join(f"{n}: {r}" for n, r in unscored.items())
        raise VidsslError(f"no sequence of split '{split}' can be scored ({why}); nothing to score")
    result = summarize(per_seq)
    result["unscored_sequences"] = list(unscored)
    result["unscored_reasons"] = unscored
    return result


def evaluate_davis(
    encoder: EncoderLike,
    davis: str | Path,
    *,
    split: str = "val",
    out: str | Path | None = None,
    sequences: Sequence[str] | None = None,
    resolution: int = 480,
    long_multiple: int = 64,
    n_last: int = 7,
    radius: int = 12,
    topk: int = 5,
    temperature: float = 0.1,
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
) -> dict[str, Any]:
    """DINO's DAVIS-2017 label propagation of `encoder` (a model, or anything `load_encoder`
    accepts) on the DAVIS layout at `davis`; predicted masks go to `out`/SEQ/FRAME.png when given.
    Features are cached (in `cache_dir`/features) only when `cache_dir` is given: 2-10 MB per
    frame at 480p. Returns the plain dict that `vidssl eval davis --json` writes; the metrics hold
    'J&F-mean', 'J-mean', 'F-mean', recalls, per-sequence scores and the unscored sequences."""
    if n_last < 0 or topk < 1 or temperature <= 0:
        raise VidsslError("--n-last must be >= 0, --topk >= 1 and --temperature > 0")
    vit, name, wid = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                     weights_id=weights_id)
    params = DavisParams(resolution, long_multiple, n_last, radius, topk, temperature)
    store = FeatureCache.at(cache_dir) if cache_dir is not None and wid is not None else None
    metrics = segment_and_score(vit, davis, split, out, params, sequences, store, wid or "", batch_size)
    return clean({"eval": "davis", "weights": name, "davis": str(davis), "split": split,
                  "params": params.__dict__, "out": None if out is None else str(out), "metrics": metrics})
