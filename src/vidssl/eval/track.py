"""Single-object tracking on the GOT-10k layout with a training-free tracker on frozen patch features,
scored with GOT-10k's AO, SR0.5 and SR0.75.

Layout read (GOT-10k's own): DATA/[SPLIT/]SEQUENCE/ holds the frames (00000001.jpg, ... sorted
by name; .jpg/.jpeg/.png) and groundtruth.txt, one `x,y,w,h` box per line (left, top, width,
height in pixels; commas, or whitespace). `list.txt` in the split folder, when present, names the
sequences in order (else every sub-folder with a groundtruth.txt, sorted). `cover.label` (one
visible-ratio class 0-8 per frame, GOT-10k val) is optional: frames with cover 0 are left out of
the score, as the toolkit does. A sequence whose groundtruth.txt holds one line only (the test
split, where the rest is withheld) is tracked and written, not scored; any other line count
than 1 or the number of frames is an error.

Tracker (per sequence; the first line of groundtruth.txt initialises it):
- Scale: every crop is resized so that the target's geometric-mean side is `box_patches`
  patches; a crop covers `search_factor` x that side around the last centre, i.e. a square of
  S = round(box_patches * search_factor) patches. Out-of-frame pixels are the mean colour.
- Template: the patch features of the first crop inside the box (th x tw patches, the box's
  aspect ratio), L2-normalised per patch.
- Search: the crops at `num_scales` (3) scales step^-1, 1, step^1 go through the encoder as one
  batch; the response is the mean cosine of the template and every th x tw window of the
  normalised search features (a conv2d), upsampled (bicubic, x`response_upsample`), blended
  with a Hann window (`window_influence`) that favours small motions; non-unit scales are
  multiplied by `scale_penalty`. The best peak gives the new centre (its displacement in the
  crop, mapped back to the frame) and the size moves towards that scale by `scale_lr`.
- Update: when the chosen peak's raw mean cosine is >= `update_threshold`, the template becomes
  (1 - update_rate) * template + update_rate * (the features under the peak), renormalised.
  The centre stays in the frame and the size within [0.2, 5] x the initial one (SiamFC's clamp).

Metrics (got-10k/toolkit, experiments/got10k.py and utils/metrics.py): IoU of the predicted and
ground-truth boxes after both are clipped to the frame, eps in the union, clipped to [0, 1];
the first frame is excluded; frames with cover 0 are excluded. The toolkit's overall numbers
pool the frames of every sequence: AO = mean IoU over all those frames, SR_t = fraction of
them with IoU > t (strictly). Those are "AO", "SR0.5", "SR0.75"; the mean over sequences of
each sequence's numbers is reported as well ("sequence_mean"), and every sequence's own.

Results are written as the toolkit writes them: OUT/SEQ/SEQ_001.txt (one `x,y,w,h` line per
frame, `%.3f`, the first line the initial box) and OUT/SEQ/SEQ_time.txt (seconds per frame).
The tracker is deterministic, so one repetition is written. Features depend on where the
tracker looks, so nothing is cached.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from vidssl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vidssl.errors import VidsslError
from vidssl.eval.datasets import DatasetError, check_name, open_rgb
from vidssl.eval.features import EncoderLike, as_vit, patch_features, prepare_encoder, warn_non_finite
from vidssl.eval.report import clean, warn
from vidssl.io import ensure_dir, write_text

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
THRESHOLDS = (0.5, 0.75)


# --------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class TrackSequence:
    name: str
    frames: list[Path]
    boxes: np.ndarray  # (1, 4) or (len(frames), 4) x, y, w, h
    cover: np.ndarray | None  # (len(frames),) visible-ratio classes, or None

    @property
    def scorable(self) -> bool:
        return len(self.boxes) == len(self.frames) and len(self.frames) > 1


def read_boxes(path: Path) -> np.ndarray:
    """(N, 4) float boxes of a groundtruth.txt; a one-line error naming the file and line."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        try:
            row = [float(v) for v in parts]
        except ValueError:
            row = []
        if len(row) != 4 or not all(math.isfinite(v) for v in row):
            raise DatasetError(f"{path}: line {i} is not a box x,y,w,h ({line.strip()[:60]!r})")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: no boxes (expected one x,y,w,h line per frame)")
    boxes = np.asarray(rows, dtype=np.float64)
    if boxes[0, 2] <= 0 or boxes[0, 3] <= 0:
        raise DatasetError(f"{path}: the first box {boxes[0].tolist()} has no area; it cannot initialise the tracker")
    return boxes


def _split_dir(root: Path, split: str | None) -> Path:
    if not root.is_dir():
        raise DatasetError(f"GOT-10k directory not found: {root}")
    if split:
        check_name(split, "split", root)
        if not (root / split).is_dir():
            raise DatasetError(f"{root}: no split folder '{split}' (expected DIR/{split}/SEQUENCE/groundtruth.txt)")
        return root / split
    if (root / "list.txt").is_file() or any((d / "groundtruth.txt").is_file() for d in root.iterdir() if d.is_dir()):
        return root
    if (root / "val").is_dir():
        return root / "val"
    raise DatasetError(f"{root}: not a GOT-10k split folder (expected SEQUENCE/groundtruth.txt with the frames, "
                       "an optional list.txt, or a val/ folder)")


def read_got10k(root: str | Path, split: str | None = None) -> list[TrackSequence]:
    """Sequences of a GOT-10k split folder (DATA/SEQ/ or DATA/SPLIT/SEQ/, see the module doc)."""
    base = _split_dir(Path(root), split)
    listing = base / "list.txt"
    if listing.is_file():
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        if not names:
            raise DatasetError(f"{listing}: lists no sequences")
        for n in names:
            check_name(n, "sequence name", listing)
    else:
        names = sorted(d.name for d in base.iterdir() if d.is_dir() and (d / "groundtruth.txt").is_file())
        if not names:
            raise DatasetError(f"{base}: no sequence folders with a groundtruth.txt")
    seqs = []
    for name in names:
        d = base / name
        if not d.is_dir():
            raise DatasetError(f"{d}: sequence '{name}' listed in {listing} not found")
        frames = sorted(p for p in d.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        if not frames:
            raise DatasetError(f"{d}: no frames (expected 00000001.jpg, ...)")
        gt = d / "groundtruth.txt"
        if not gt.is_file():
            raise DatasetError(f"{gt}: missing (the first line x,y,w,h initialises the tracker)")
        boxes = read_boxes(gt)
        if len(boxes) not in (1, len(frames)):
            raise DatasetError(f"{gt}: {len(boxes)} boxes for {len(frames)} frames (expected one per frame, "
                               "or the first only)")
        cover = None
        cover_file = d / "cover.label"
        if cover_file.is_file():
            try:
                cover = np.loadtxt(cover_file, dtype=np.float64, ndmin=1)
            except ValueError as e:
                raise DatasetError(f"{cover_file}: not one number per frame ({e})") from None
            if len(cover) != len(frames):
                warn(f"{cover_file}: {len(cover)} values for {len(frames)} frames; ignored (every frame is scored)")
                cover = None
        seqs.append(TrackSequence(name, frames, boxes, cover))
    return seqs


# --------------------------------------------------------------------------- metrics (GOT-10k toolkit)


def box_iou(pred: np.ndarray, gt: np.ndarray, bound: tuple[float, float] | None = None) -> np.ndarray:
    """IoU of (N, 4) x,y,w,h boxes, both clipped to the frame (W, H) first as the toolkit does."""
    a, b = np.array(pred, dtype=np.float64).reshape(-1, 4), np.array(gt, dtype=np.float64).reshape(-1, 4)
    if a.shape != b.shape:
        raise ValueError(f"{a.shape} boxes against {b.shape}")
    if bound is not None:
        for r in (a, b):
            r[:, 0] = np.clip(r[:, 0], 0, bound[0])
            r[:, 1] = np.clip(r[:, 1], 0, bound[1])
            r[:, 2] = np.clip(r[:, 2], 0, bound[0] - r[:, 0])
            r[:, 3] = np.clip(r[:, 3], 0, bound[1] - r[:, 1])
    iw = np.maximum(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0)
    ih = np.maximum(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def sequence_ious(pred: np.ndarray, gt: np.ndarray, bound: tuple[float, float] | None = None,
                  cover: np.ndarray | None = None) -> np.ndarray:
    """IoUs of the frames the toolkit scores: every frame but the first, where cover > 0."""
    ious = box_iou(pred[1:], gt[1:], bound)
    if cover is not None:
        ious = ious[np.asarray(cover)[1:] > 0]
    return ious


def _scores(ious: np.ndarray) -> dict[str, float]:
    out = {"AO": 100.0 * float(np.mean(ious)) if len(ious) else float("nan")}
    for t in THRESHOLDS:
        out[f"SR{t:g}"] = 100.0 * float(np.mean(ious > t)) if len(ious) else float("nan")
    return out


def summarize(per_seq: dict[str, np.ndarray]) -> dict[str, Any]:
    """AO / SR0.5 / SR0.75 in percent: pooled over every scored frame (the toolkit's overall numbers),
    the mean of the per-sequence numbers ('sequence_mean'), and each sequence's own."""
    kept = {k: v for k, v in per_seq.items() if len(v)}
    pooled = _scores(np.concatenate(list(kept.values())) if kept else np.zeros(0))
    seq = {k: {**_scores(v), "frames": len(v)} for k, v in per_seq.items()}
    mean = {m: float(np.mean([s[m] for k, s in seq.items() if k in kept])) if kept else float("nan")
            for m in pooled}
    return {**pooled, "sequence_mean": mean, "frames": int(sum(len(v) for v in per_seq.values())),
            "per_sequence": seq}


# --------------------------------------------------------------------------- the tracker


@dataclass(frozen=True)
class TrackParams:
    box_patches: float = 6.0
    search_factor: float = 4.0
    template_context: float = 0.5
    num_scales: int = 3
    scale_step: float = 1.04
    scale_penalty: float = 0.985
    scale_lr: float = 0.5
    window_influence: float = 0.25
    response_upsample: int = 4
    update_threshold: float = 0.6
    update_rate: float = 0.1
    min_size_factor: float = 0.2
    max_size_factor: float = 5.0

    def check(self) -> None:
        if self.box_patches <= 0 or self.search_factor < 1 or self.template_context < 0:
            raise VidsslError("--box-patches must be > 0, --search-factor >= 1 and --template-context >= 0")
        if self.num_scales < 1 or self.num_scales % 2 == 0 or self.scale_step < 1:
            raise VidsslError("--num-scales must be odd and >= 1, and --scale-step >= 1")
        if not 0 <= self.update_rate <= 1 or not 0 <= self.window_influence <= 1 or not 0 <= self.scale_lr <= 1:
            raise VidsslError("--update-rate, --window-influence and the scale rate must lie in [0, 1]")
        if self.response_upsample < 1:
            raise VidsslError("--response-upsample must be >= 1")

    @property
    def search_patches(self) -> int:
        return max(3, round(self.box_patches * self.search_factor))


def frame_tensor(path: Path) -> torch.Tensor:
    """(3, H, W) ImageNet-normalised frame, so the zero padding of crops is the mean colour."""
    img = open_rgb(path)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def crop_resized(frame: torch.Tensor, cx: float, cy: float, side: float, out: int) -> tuple[torch.Tensor, float, float, float]:
    """The square of `side` frame pixels centred at (cx, cy), resized (antialiased) to out x out,
    zero outside the frame. Only the part inside the frame is resized, so memory stays at the frame
    size for huge crops. Returns (crop, its true centre x, y, its true side) after rounding to pixels."""
    _, H, W = frame.shape
    n = max(1, int(round(side)))
    x0, y0 = int(round(cx - n / 2)), int(round(cy - n / 2))
    x1, y1 = x0 + n, y0 + n
    canvas = torch.zeros(frame.shape[0], out, out, dtype=frame.dtype)
    vx0, vy0, vx1, vy1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    r = out / n
    ox0, oy0 = int(round((vx0 - x0) * r)), int(round((vy0 - y0) * r))
    ox1, oy1 = int(round((vx1 - x0) * r)), int(round((vy1 - y0) * r))
    if vx1 > vx0 and vy1 > vy0 and ox1 > ox0 and oy1 > oy0:
        region = frame[:, vy0:vy1, vx0:vx1][None]
        canvas[:, oy0:oy1, ox0:ox1] = F.interpolate(region, size=(oy1 - oy0, ox1 - ox0), mode="bilinear",
                                                    align_corners=False, antialias=True)[0]
    return canvas, (x0 + x1) / 2, (y0 + y1) / 2, float(n)


def _hann(h: int, w: int) -> torch.Tensor:
    return torch.outer(torch.hann_window(h + 2, periodic=False)[1:-1], torch.hann_window(w + 2, periodic=False)[1:-1])


FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, S, S) normalised -> (B, D, S/p, S/p)


class PatchTracker:
    """The training-free tracker of the module doc. `features` maps a batch of normalised crops to
    patch feature maps; `patch` is the encoder's patch size in pixels."""

    def __init__(self, features: FeatureFn, patch: int, params: TrackParams = TrackParams()) -> None:
        params.check()
        self.features, self.patch, self.p = features, patch, params
        self.S = params.search_patches
        k = params.num_scales // 2
        self.scales = [params.scale_step ** i for i in range(-k, k + 1)]

    def _side(self, w: float, h: float) -> float:
        """Frame pixels covered by a crop for a target of size w x h."""
        return math.sqrt(w * h) * self.S / self.p.box_patches

    def _maps(self, frame: torch.Tensor, side: float, scales: Sequence[float]) -> tuple[torch.Tensor, list]:
        crops, geo = [], []
        for s in scales:
            c, gx, gy, n = crop_resized(frame, self.cx, self.cy, side * s, self.S * self.patch)
            crops.append(c)
            geo.append((gx, gy, n))
        with torch.no_grad():
            feats = self.features(torch.stack(crops)).float().cpu()
        if tuple(feats.shape[-2:]) != (self.S, self.S):
            raise ValueError(f"features {tuple(feats.shape)} are not a {self.S}x{self.S} patch grid")
        return F.normalize(feats, dim=1), geo

    def init(self, frame: torch.Tensor, box: Sequence[float]) -> None:
        x, y, w, h = (float(v) for v in box)
        self.cx, self.cy, self.w, self.h = x + w / 2, y + h / 2, w, h
        self.w0, self.h0 = w, h
        side = self._side(w, h)
        px = self.S * self.patch / side  # crop pixels per frame pixel
        ctx = self.p.template_context * math.sqrt(w * h)  # context around the box, as SiamFC's exemplar
        self.tw = int(min(self.S - 1, max(1, round((w + ctx) * px / self.patch))))
        self.th = int(min(self.S - 1, max(1, round((h + ctx) * px / self.patch))))
        self.oy, self.ox = (self.S - self.th) // 2, (self.S - self.tw) // 2  # the template's window in the crop
        feats, _ = self._maps(frame, side, [1.0])
        self.template = feats[0, :, self.oy : self.oy + self.th, self.ox : self.ox + self.tw].clone()
        warn_non_finite(self.template[None], "the first frame's template")
        self.last_score = 1.0

    def update(self, frame: torch.Tensor) -> np.ndarray:
        """The box (x, y, w, h) in the next frame."""
        p = self.p
        side = self._side(self.w, self.h)
        feats, geo = self._maps(frame, side, self.scales)
        resp = F.conv2d(feats, self.template[None])[:, 0] / (self.th * self.tw)  # (K, ny, nx) mean cosine
        ny, nx = resp.shape[-2:]
        u = p.response_upsample
        if u > 1 and (ny > 1 or nx > 1):
            up = F.interpolate(resp[:, None], size=((ny - 1) * u + 1, (nx - 1) * u + 1), mode="bicubic",
                               align_corners=True)[:, 0]
        else:
            up, u = resp, 1
        window = _hann(*up.shape[-2:])
        # min-max over all scales (as SiamFC normalises its response) so the window's weight does not
        # depend on the encoder's cosine range: patch features are often all alike (cosines near 1)
        lo, hi = float(up.min()), float(up.max())
        norm = (up - lo) / max(hi - lo, 1e-6)
        best = None
        for k, s in enumerate(self.scales):
            score = (1 - p.window_influence) * norm[k] + p.window_influence * window
            if s != 1.0:
                score = score * p.scale_penalty
            idx = int(torch.argmax(score))
            val = float(score.reshape(-1)[idx])
            if best is None or val > best[0]:
                best = (val, k, idx // score.shape[1], idx % score.shape[1])
        _, k, iy, ix = best
        raw = float(up[k, iy, ix].clamp(-1, 1))  # bicubic may overshoot a cosine
        gx, gy, n = geo[k]
        to_frame = n / (self.S * self.patch)  # frame pixels per crop pixel at this scale
        dy, dx = (iy / u - self.oy) * self.patch * to_frame, (ix / u - self.ox) * self.patch * to_frame
        _, H, W = frame.shape
        self.cx = float(np.clip(gx + dx, 0, W))
        self.cy = float(np.clip(gy + dy, 0, H))
        grow = 1 - p.scale_lr + p.scale_lr * self.scales[k]
        self.w = float(np.clip(self.w * grow, p.min_size_factor * self.w0, p.max_size_factor * self.w0))
        self.h = float(np.clip(self.h * grow, p.min_size_factor * self.h0, p.max_size_factor * self.h0))
        if raw >= p.update_threshold and p.update_rate > 0:  # confident: blend in what is under the peak
            ty, tx = int(round(iy / u)), int(round(ix / u))
            new = feats[k, :, ty : ty + self.th, tx : tx + self.tw]
            self.template = F.normalize((1 - p.update_rate) * self.template + p.update_rate * new, dim=0)
        self.last_score = raw
        return np.array([self.cx - self.w / 2, self.cy - self.h / 2, self.w, self.h])


def track_sequence(tracker: PatchTracker, seq: TrackSequence) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(boxes (T, 4) with the initial box first, seconds per frame (T,), the first frame's (W, H))."""
    boxes, times = [seq.boxes[0].copy()], []
    t0 = time.perf_counter()
    first = frame_tensor(seq.frames[0])
    tracker.init(first, seq.boxes[0])
    times.append(time.perf_counter() - t0)
    for path in tqdm(seq.frames[1:], desc=seq.name, disable=None, leave=False):
        t0 = time.perf_counter()
        boxes.append(tracker.update(frame_tensor(path)))
        times.append(time.perf_counter() - t0)
    return np.stack(boxes), np.asarray(times), (int(first.shape[2]), int(first.shape[1]))


def write_results(out: str | Path, name: str, boxes: np.ndarray, times: np.ndarray) -> Path:
    """OUT/NAME/NAME_001.txt and NAME_time.txt, as the GOT-10k toolkit writes and reads them."""
    d = ensure_dir(Path(out) / name)
    write_text(d / f"{name}_001.txt", "".join(",".join(f"{v:.3f}" for v in b) + "\n" for b in boxes))
    write_text(d / f"{name}_time.txt", "".join(f"{t:.8f}\n" for t in times))
    return d


def vit_feature_fn(vit: nn.Module) -> tuple[FeatureFn, int]:
    """(crops -> last-layer patch token maps on the model's device, the patch size)."""
    device = next(vit.parameters()).device
    patch = as_vit(vit).patch_embed.patch_size[0]
    return (lambda x: patch_features(vit, x.to(device))), int(patch)


# --------------------------------------------------------------------------- the evaluation


def evaluate_track(
    encoder: EncoderLike,
    data: str | Path,
    *,
    split: str | None = None,
    out: str | Path | None = None,
    sequences: Sequence[str] | None = None,
    params: TrackParams | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
    **tracker_options: Any,
) -> dict[str, Any]:
    """Track every sequence of the GOT-10k layout at `data` with the patch-feature tracker of
    `encoder` (a model, or anything `load_encoder` accepts) and score AO, SR0.5, SR0.75 (percent).
    Tracker settings: a `TrackParams` or its fields as keywords (box_patches=6, ...). With `out`,
    boxes and times are written in the toolkit's result format. Returns the plain dict that
    `vidssl eval track --json` writes."""
    try:
        params = params or TrackParams(**tracker_options)
    except TypeError as e:
        raise VidsslError(f"unknown tracker setting: {e}") from None
    params.check()
    seqs = read_got10k(data, split)
    if sequences:
        unknown = sorted(set(sequences) - {s.name for s in seqs})
        if unknown:
            raise VidsslError(f"sequences not in {data}: {', '.join(unknown)}")
        seqs = [s for s in seqs if s.name in set(sequences)]
    if out is None and not any(s.scorable for s in seqs):
        raise VidsslError(f"{data}: no sequence has ground truth for every frame; nothing to score "
                          "(give --out to write the results for the evaluation server)")
    vit, name, _ = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                   weights_id=weights_id)
    fn, patch = vit_feature_fn(vit)
    tracker = PatchTracker(fn, patch, params)
    per_seq: dict[str, np.ndarray] = {}
    unscored: list[str] = []
    total_time, total_frames = 0.0, 0
    for seq in tqdm(seqs, desc="GOT-10k", disable=None):
        boxes, times, size = track_sequence(tracker, seq)
        total_time, total_frames = total_time + float(times[1:].sum()), total_frames + len(times) - 1
        if out is not None:
            write_results(out, seq.name, boxes, times)
        if not seq.scorable:
            unscored.append(seq.name)
            continue
        per_seq[seq.name] = sequence_ious(boxes, seq.boxes, size, seq.cover)
    metrics: dict[str, Any] = summarize(per_seq) if per_seq else {"AO": None, "SR0.5": None, "SR0.75": None}
    if not per_seq:
        warn(f"{data}: no sequence has ground truth for every frame; results written to {out}, nothing scored")
    metrics["sequences"] = len(per_seq)
    metrics["unscored_sequences"] = unscored
    metrics["fps"] = total_frames / total_time if total_time > 0 else None
    return clean({"eval": "track", "weights": name, "data": str(data), "split": split, "layout": "got10k",
                  "params": asdict(params), "out": None if out is None else str(out), "metrics": metrics})
