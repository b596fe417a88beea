"""The built-in sample's ground truth, and scoring an encoder on it in seconds.

The sample generator knows where every object is. From frames past the end of the sample video
(the same motion continued, so never trained on) this writes:
- `davis/`: DAVIS-2017 layout (JPEGImages/480p, Annotations/480p, ImageSets/2017/val.txt), a few
  short sequences in which the same objects stay in view, labels 1..n per sequence;
- `objects/train|val/object_II/`: ImageFolder crops of each object (train from the sample video's
  own frames, val from the held-out frames), for k-NN by object identity.
`score_encoder` runs the library's own label propagation (at the sample's size, not 480p) and
k-NN on them, and clip-wise unsupervised segmentation (TimeT's k-means protocol) of the
DAVIS-layout sequences.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch.nn as nn
from PIL import Image

from vidssl.data.sample import HEIGHT, NUM_FRAMES, NUM_OBJECTS, SAMPLE_VERSION, WIDTH, render_labelled
from vidssl.eval.datasets import eval_transform, eval_transform_id, read_image_folder
from vidssl.eval.davis import DavisParams, segment_and_score
from vidssl.eval.features import FeatureCache, cached_image_features, cls_features
from vidssl.eval.knn import knn_evaluate
from vidssl.eval.palette import write_indexed_png
from vidssl.eval.unsup_seg import evaluate_unsup_seg
from vidssl.io import atomic_write, write_json, write_text

HELD_OUT = 480  # frames rendered past the video's end
SEQUENCE_LENGTH = 24
MAX_SEQUENCES = 4
MIN_PIXELS = 60  # an object smaller than this in some frame does not count as in view
CROP_SIZE = 48
KNN_IMAGE_SIZE = 64
DAVIS_PARAMS = DavisParams(short_side=HEIGHT)  # the sample's own size: seconds on a CPU
UNSUP_INPUT_SIZE = 128  # square, as the protocol resizes; a multiple of patch sizes 8 and 16
UNSUP_EVAL_SIZE = 48  # a third of the sample's height: k-means in about a second per sequence
DONE = "complete.json"


def ground_truth_dir(cache: Path, seed: int = 0) -> Path:
    return cache / f"sample-v{SAMPLE_VERSION}-seed{seed}-truth"


def _in_view(labels: np.ndarray) -> frozenset[int]:
    counts = np.bincount(labels.ravel(), minlength=NUM_OBJECTS + 1)
    return frozenset(int(i) for i in np.flatnonzero(counts >= MIN_PIXELS) if i > 0)


def _sequences(labels: np.ndarray) -> list[int]:
    """Start indices of non-overlapping windows in which the same >= 2 objects stay in view and
    no other object shows (so the first frame names every object of the window)."""
    seen = [_in_view(m) for m in labels]
    present = [frozenset(int(i) for i in np.unique(m) if i > 0) for m in labels]
    starts, t = [], 0
    while t + SEQUENCE_LENGTH <= len(labels) and len(starts) < MAX_SEQUENCES:
        window = range(t, t + SEQUENCE_LENGTH)
        if len(seen[t]) >= 2 and all(seen[i] == seen[t] and present[i] == seen[t] for i in window):
            starts.append(t)
            t += SEQUENCE_LENGTH
        else:
            t += 1
    return starts


def _crops(frames: np.ndarray, labels: np.ndarray, root: Path, every: int, tag: str) -> int:
    """Bounding-box crops (4 px margin) of every object well in view, every `every`-th frame."""
    n = 0
    for t in range(0, len(frames), every):
        for obj in _in_view(labels[t]):
            ys, xs = np.nonzero(labels[t] == obj)
            if ys.max() - ys.min() < 12 or xs.max() - xs.min() < 12:
                continue
            y0, y1 = max(0, ys.min() - 4), min(HEIGHT, ys.max() + 5)
            x0, x1 = max(0, xs.min() - 4), min(WIDTH, xs.max() + 5)
            crop = Image.fromarray(frames[t, y0:y1, x0:x1]).resize((CROP_SIZE, CROP_SIZE), Image.BILINEAR)
            atomic_write(root / f"object_{obj:02d}" / f"{tag}{t:05d}.png", lambda tmp: crop.save(tmp, format="PNG"))
            n += 1
    return n


def write_ground_truth(root: Path, seed: int = 0) -> dict:
    """Write the DAVIS-layout masks and ImageFolder crops under `root` (once; later calls read the summary)."""
    root = Path(root)
    done = root / DONE
    if done.is_file():
        return json.loads(done.read_text())
    frames, labels = render_labelled(seed, NUM_FRAMES, HELD_OUT)
    davis = root / "davis"
    names = []
    for s in _sequences(labels):
        name = f"sample{s + NUM_FRAMES:05d}"
        objs = sorted(_in_view(labels[s]))
        remap = np.zeros(NUM_OBJECTS + 1, np.uint8)
        remap[objs] = np.arange(1, len(objs) + 1)
        for i in range(SEQUENCE_LENGTH):
            frame = Image.fromarray(frames[s + i])
            atomic_write(davis / "JPEGImages" / "480p" / name / f"{i:05d}.png", lambda tmp: frame.save(tmp, format="PNG"))
            write_indexed_png(davis / "Annotations" / "480p" / name / f"{i:05d}.png", remap[labels[s + i]])
        names.append(name)
    write_text(davis / "ImageSets" / "2017" / "val.txt", "".join(n + "\n" for n in names))
    train_frames, train_labels = render_labelled(seed, 0, NUM_FRAMES)
    summary = {
        "sequences": names,
        "train_crops": _crops(train_frames, train_labels, root / "objects" / "train", 10, "f"),
        "val_crops": _crops(frames, labels, root / "objects" / "val", 6, "h"),
    }
    write_json(done, summary, indent=None)
    return summary


def score_encoder(vit: nn.Module, root: Path, weights_id: str = "", cache: FeatureCache | None = None) -> dict[str, float]:
    """{'J&F': %, 'knn_top1': %, 'unsup_mIoU': %} of an encoder on the sample's ground truth: label
    propagation, k-NN at k = 20, and k-means of each sequence's patch features with one matching
    per sequence (the clip protocol, K = the labels present), the mean mIoU over sequences."""
    root = Path(root)
    cache = cache or FeatureCache(None)
    davis = segment_and_score(vit, root / "davis", params=DAVIS_PARAMS, cache=cache, weights_id=weights_id)
    train, val = read_image_folder(root / "objects" / "train"), read_image_folder(root / "objects" / "val")
    tf, tid = eval_transform(KNN_IMAGE_SIZE), eval_transform_id(KNN_IMAGE_SIZE)
    feats = [cached_image_features(vit, weights_id, [p for p, _ in s.items], tf, tid, cls_features, "cls", cache)
             for s in (train, val)]
    knn = knn_evaluate(feats[0], train.labels, feats[1], val.labels, ks=(20,), num_classes=len(train.classes))
    seg = evaluate_unsup_seg(vit, root / "davis", "davis", protocols=["clip"], input_size=UNSUP_INPUT_SIZE,
                             eval_size=UNSUP_EVAL_SIZE, num_workers=0, cache=False)
    return {"J&F": davis["J&F-mean"], "knn_top1": knn["top1@20"], "unsup_mIoU": seg["metrics"]["clip"]["mIoU"]}
