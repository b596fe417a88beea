"""J (region similarity) and F (boundary accuracy) as the DAVIS-2017 benchmark defines them.

* J = |pred ∩ gt| / |pred ∪ gt| over non-void pixels; 1 when both are empty.
* F: boundaries are one pixel thick — a pixel is on the boundary when its value differs from
  its right, lower or lower-right neighbour (neighbours outside the image are not compared).
  Void pixels are cleared from both masks first. A boundary pixel of one mask is matched when
  a boundary pixel of the other lies within a disk of radius ceil(0.008 x image diagonal)
  pixels (the benchmark's tolerance, 8 px at 480p). Precision = matched predicted / predicted
  boundary pixels, recall = matched true / true boundary pixels; an empty boundary on both
  sides is P = R = 1; only one empty side gives the other value 0 and this one 1.
  F = 2PR / (P + R), 0 when P + R = 0.
* Per sequence, each object's J and F are averaged over the frames between the first and
  the last (both excluded, as the benchmark does); J-mean / F-mean average over all objects
  of all sequences; J&F-mean is their average. J-recall is the fraction of frames with J > 0.5.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

BOUNDARY_TH = 0.008


def region_j(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    gt, pred = gt.astype(bool), pred.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    inter = np.count_nonzero(gt & pred & keep)
    union = np.count_nonzero((gt | pred) & keep)
    return 1.0 if union == 0 else inter / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where a pixel differs from its right, lower or lower-right neighbour."""
    m = mask.astype(bool)
    b = np.zeros_like(m)
    b[:, :-1] |= m[:, :-1] != m[:, 1:]
    b[:-1, :] |= m[:-1, :] != m[1:, :]
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return b


def disk(radius: int) -> np.ndarray:
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y) <= r * r


def boundary_tolerance(shape: tuple[int, int], th: float = BOUNDARY_TH) -> int:
    return int(th) if th >= 1 else int(math.ceil(th * math.hypot(shape[0], shape[1])))


def boundary_f(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, th: float = BOUNDARY_TH) -> float:
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    gt_b = boundary_map(gt.astype(bool) & keep)
    pr_b = boundary_map(pred.astype(bool) & keep)
    se = disk(boundary_tolerance(gt.shape, th))
    n_gt, n_pr = np.count_nonzero(gt_b), np.count_nonzero(pr_b)
    if n_gt == 0 and n_pr == 0:
        precision = recall = 1.0
    elif n_pr == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        gt_dil = ndimage.binary_dilation(gt_b, structure=se)
        pr_dil = ndimage.binary_dilation(pr_b, structure=se)
        precision = np.count_nonzero(pr_b & gt_dil) / n_pr
        recall = np.count_nonzero(gt_b & pr_dil) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def evaluate_sequence(gt: np.ndarray, pred: np.ndarray, num_objects: int | None = None) -> dict[str, np.ndarray]:
    """gt, pred: (T, H, W) label maps (255 void in gt). Returns {'J': (O, T'), 'F': (O, T')}
    over the scored frames (first and last excluded when T >= 3). Objects are 1..max id of
    the first ground-truth frame unless `num_objects` is given."""
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth {gt.shape}")
    first = gt[0][gt[0] != 255]
    n_obj = int(num_objects if num_objects is not None else (first.max() if first.size else 0))
    frames = range(1, gt.shape[0] - 1) if gt.shape[0] >= 3 else range(1, gt.shape[0])
    J = np.zeros((n_obj, len(frames)))
    Fm = np.zeros((n_obj, len(frames)))
    for ti, t in enumerate(frames):
        void = gt[t] == 255
        for o in range(n_obj):
            J[o, ti] = region_j(gt[t] == o + 1, pred[t] == o + 1, void)
            Fm[o, ti] = boundary_f(gt[t] == o + 1, pred[t] == o + 1, void)
    return {"J": J, "F": Fm}


def summarize(per_sequence: dict[str, dict[str, np.ndarray]]) -> dict:
    """Overall J&F-mean, J-mean, F-mean, recalls (in %), and per-sequence / per-object means."""
    j_obj, f_obj, seqs = [], [], {}
    for name, r in per_sequence.items():
        jm = [float(np.mean(row)) for row in r["J"]] if r["J"].shape[1] else [float("nan")] * r["J"].shape[0]
        fm = [float(np.mean(row)) for row in r["F"]] if r["F"].shape[1] else [float("nan")] * r["F"].shape[0]
        j_obj += [(m, float(np.mean(row > 0.5)) if row.size else float("nan")) for m, row in zip(jm, r["J"])]
        f_obj += [(m, float(np.mean(row > 0.5)) if row.size else float("nan")) for m, row in zip(fm, r["F"])]
        seqs[name] = {
            "J&F": 100 * (np.mean(jm) + np.mean(fm)) / 2 if jm else float("nan"),
            "J": 100 * float(np.mean(jm)) if jm else float("nan"),
            "F": 100 * float(np.mean(fm)) if fm else float("nan"),
            "objects_J": [100 * v for v in jm],
            "objects_F": [100 * v for v in fm],
        }
    j_mean = 100 * float(np.mean([m for m, _ in j_obj])) if j_obj else float("nan")
    f_mean = 100 * float(np.mean([m for m, _ in f_obj])) if f_obj else float("nan")
    return {
        "J&F-mean": (j_mean + f_mean) / 2,
        "J-mean": j_mean,
        "J-recall": 100 * float(np.mean([r for _, r in j_obj])) if j_obj else float("nan"),
        "F-mean": f_mean,
        "F-recall": 100 * float(np.mean([r for _, r in f_obj])) if f_obj else float("nan"),
        "objects": len(j_obj),
        "sequences": seqs,
    }
