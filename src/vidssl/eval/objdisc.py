"""Single-object discovery with LOST (Siméoni et al., BMVC 2021) and its CorLoc score.

LOST, written from the paper's description of the method:
  features   the keys of the last attention block for the patch tokens ([CLS] and other prefix
             tokens dropped), heads concatenated, F (N, D); no normalisation
  graph      A = F F^T; patches p, q are positively correlated when A_pq > 0 (strict: the
             same as >= 0 for real-valued keys; a patch is not counted as its own correlation)
  seed       p* = argmin_p deg(p), deg(p) = #{q != p : A_pq > 0} (ties: the lowest index)
  expansion  S = the seed plus, among the k patches of lowest degree (k = 100), those positively
             correlated with the seed (A_{p* q} > 0)
  box        mask m_q = [sum_{s in S} A_sq > 0]; the 4-connected component of m that holds the
             seed; its bounding box in patches, scaled by the patch size to image pixels
CorLoc = % of images whose box has IoU >= 0.5 with at least one ground-truth box.

Input (LOST): the image at its own resolution, ImageNet-normalised, zero-padded right and
bottom to multiples of the patch size (so the aspect and the scale are kept); the box is
clipped to the image. `max_side` optionally downsizes first (keeping the aspect), for speed;
boxes are mapped back to the original pixels.

Boxes are (x0, y0, x1, y1) pixel edges, half-open (a patch at column j spans [j*p, (j+1)*p)),
so IoU is the exact overlap of pixel sets. VOC XML's 1-based inclusive corners become
(xmin - 1, ymin - 1, xmax, ymax); COCO's (x, y, w, h) become (x, y, x + w, y + h).

Layouts (what is read, exactly):
  voc07, voc12  ROOT/ImageSets/Main/SPLIT.txt (ids; default trainval), ROOT/JPEGImages/ID.jpg,
                ROOT/Annotations/ID.xml: every <object><bndbox> xmin ymin xmax ymax; difficult
                and truncated objects count too unless `skip_difficult` (drops difficult=1)
  coco20k       ROOT/images/FILE, ROOT/annotations.json (COCO instances format: "images" with
                id and file_name, "annotations" with image_id, bbox [x, y, w, h], iscrowd),
                ROOT/images.txt (one file name per line, LOST's coco_20k_filenames.txt; a
                leading folder such as train2014/ is dropped). Crowd boxes (iscrowd=1) are not
                ground truth; a listed image without any other box is skipped with a warning.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from vidssl.errors import VidsslError
from vidssl.eval.datasets import IMAGENET_MEAN, IMAGENET_STD, DatasetError, check_name, open_rgb
from vidssl.eval.features import EncoderLike, FeatureCache, as_vit, feature_key, prepare_encoder
from vidssl.eval.report import clean, warn
from vidssl.io import ensure_dir, write_json

Layout = Literal["voc07", "voc12", "coco20k"]
LAYOUTS = ("voc07", "voc12", "coco20k")


# --------------------------------------------------------------------------- boxes and CorLoc


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes (half-open pixel edges); 0 for empty boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_iou(pred: Sequence[float], gts: Sequence[Sequence[float]]) -> float:
    return max((box_iou(pred, g) for g in gts), default=0.0)


def corloc(preds: Sequence[Sequence[float]], gts: Sequence[Sequence[Sequence[float]]], threshold: float = 0.5) -> float:
    """% of images whose predicted box has IoU >= threshold with any of its ground-truth boxes."""
    if len(preds) != len(gts):
        raise VidsslError(f"{len(preds)} predicted boxes for {len(gts)} images")
    if not preds:
        raise VidsslError("CorLoc of no images")
    hits = sum(best_iou(p, g) >= threshold for p, g in zip(preds, gts))
    return 100.0 * hits / len(preds)


# --------------------------------------------------------------------------- LOST


@dataclass(frozen=True)
class LostResult:
    seed: int  # flat patch index (row-major over the (h, w) grid)
    expanded: list[int]  # S: the seed and its positively correlated low-degree patches
    mask: np.ndarray  # (h, w) bool: the seed's connected component
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in patches, half-open


def lost(keys: torch.Tensor, grid: tuple[int, int], k: int = 100) -> LostResult:
    """LOST on one image's patch keys (N, D) laid out row-major on `grid` = (h, w)."""
    h, w = grid
    if keys.ndim != 2 or keys.shape[0] != h * w:
        raise VidsslError(f"LOST needs (h*w, D) keys for a {h}x{w} grid, got {tuple(keys.shape)}")
    if k < 1:
        raise VidsslError("--k must be at least 1")
    f = keys.double()
    A = f @ f.T
    positive = A > 0
    positive.fill_diagonal_(False)  # a patch is not its own correlation
    degree = positive.sum(1)
    order = torch.argsort(degree, stable=True)  # ascending degree, ties by index
    seed = int(order[0])
    candidates = order[:k]
    expanded = candidates[A[seed, candidates] > 0]  # A[seed, seed] = |f|^2 > 0 keeps the seed
    if not bool((expanded == seed).any()):  # an all-zero key: the seed alone
        expanded = torch.tensor([seed])
    score = A[expanded].sum(0).reshape(h, w)
    labels, _ = ndimage.label((score > 0).numpy())  # 4-connectivity, as LOST's scipy call
    sy, sx = divmod(seed, w)
    comp = labels == labels[sy, sx] if labels[sy, sx] > 0 else np.zeros((h, w), bool)
    comp[sy, sx] = True  # every s in S has A[s, seed] > 0, so only an all-zero seed key is outside the mask
    ys, xs = np.nonzero(comp)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return LostResult(seed, [int(i) for i in expanded], comp, box)


def last_block_keys(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last attention block's keys of the patch tokens, heads concatenated, (B, N, D).
    Read from timm's own forward with a hook on the last block's fused qkv projection (any timm
    ViT: extra prefix tokens, dynamic image size); the key norm (qk_norm models) is applied."""
    vit = as_vit(model)
    attn = vit.blocks[-1].attn
    got: list[torch.Tensor] = []
    handle = attn.qkv.register_forward_hook(lambda _m, _i, out: got.append(out))
    try:
        vit.forward_features(x)
    finally:
        handle.remove()
    qkv = got[-1]
    B, L, _ = qkv.shape
    k = qkv.reshape(B, L, 3, attn.num_heads, -1)[:, :, 1].transpose(1, 2)  # (B, heads, L, d_h)
    k = attn.k_norm(k)
    return k.transpose(1, 2).reshape(B, L, -1)[:, vit.num_prefix_tokens :]


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class BoxSample:
    name: str
    image: Path
    boxes: list[tuple[float, float, float, float]]  # ground truth (x0, y0, x1, y1)


def _xml_boxes(path: Path, skip_difficult: bool) -> list[tuple[float, float, float, float]]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{path}: cannot read the annotation XML ({e})") from None
    boxes = []
    for obj in root.iter("object"):
        if skip_difficult and (obj.findtext("difficult", "0").strip() == "1"):
            continue
        bb = obj.find("bndbox")
        if bb is None:
            raise DatasetError(f"{path}: an <object> without <bndbox>")
        try:
            x0, y0, x1, y1 = (float(bb.findtext(t, "")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise DatasetError(f"{path}: <bndbox> needs numeric xmin, ymin, xmax, ymax") from None
        boxes.append((x0 - 1.0, y0 - 1.0, x1, y1))  # 1-based inclusive -> half-open pixel edges
    return boxes


def read_voc_boxes(root: str | Path, split: str = "trainval", skip_difficult: bool = False) -> list[BoxSample]:
    from vidssl.eval.seg_data import voc_split

    listing, items = voc_split(Path(root), "Main", split, "Annotations", ".xml")
    out = []
    for name, img, xml in items:
        boxes = _xml_boxes(xml, skip_difficult)
        if not boxes:
            warn(f"{xml}: no ground-truth box; image {name} is left out of CorLoc")
            continue
        out.append(BoxSample(name, img, boxes))
    if not out:
        raise DatasetError(f"{listing}: lists no image with a ground-truth box")
    return out


def read_coco_boxes(root: str | Path, annotations: str | Path | None = None,
                    image_list: str | Path | None = None) -> list[BoxSample]:
    root = Path(root)
    ann_path = Path(annotations) if annotations else root / "annotations.json"
    list_path = Path(image_list) if image_list else root / "images.txt"
    for p, what in ((ann_path, "annotations JSON"), (list_path, "image list")):
        if not p.is_file():
            raise DatasetError(f"{p}: {what} not found (coco20k layout: ROOT/images/, ROOT/annotations.json, ROOT/images.txt)")
    try:
        ann = json.loads(ann_path.read_text())
        by_file = {Path(im["file_name"]).name: im["id"] for im in ann["images"]}
        boxes: dict[Any, list] = {}
        for a in ann["annotations"]:
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            boxes.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{ann_path}: not a COCO instances file with images[file_name, id] and "
                           f"annotations[image_id, bbox x,y,w,h] ({type(e).__name__}: {e})") from None
    out = []
    for line in list_path.read_text().splitlines():
        if not line.strip():
            continue
        name = check_name(Path(line.strip()).name, "image file", list_path)
        if name not in by_file:
            raise DatasetError(f"{list_path}: {name} is not among the images of {ann_path}")
        img = root / "images" / name
        if not img.is_file():
            raise DatasetError(f"{img}: listed in {list_path} but missing")
        gts = boxes.get(by_file[name], [])
        if not gts:
            warn(f"{ann_path}: no non-crowd box for {name}; it is left out of CorLoc")
            continue
        out.append(BoxSample(Path(name).stem, img, gts))
    if not out:
        raise DatasetError(f"{list_path}: lists no image with a ground-truth box")
    return out


def read_boxes(data: str | Path, layout: str, *, split: str = "trainval", skip_difficult: bool = False,
               annotations: str | Path | None = None, image_list: str | Path | None = None) -> list[BoxSample]:
    if layout in ("voc07", "voc12"):
        return read_voc_boxes(data, split, skip_difficult)
    if layout == "coco20k":
        return read_coco_boxes(data, annotations, image_list)
    raise VidsslError(f"--layout {layout}: valid layouts are {', '.join(LAYOUTS)}")


class PaddedImages(Dataset):
    """(image normalised and zero-padded to multiples of the patch, [scale, W, H]) per sample."""

    def __init__(self, samples: Sequence[BoxSample], patch: int, max_side: int | None) -> None:
        self.samples, self.patch, self.max_side = list(samples), patch, max_side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        im = open_rgb(self.samples[i].image)
        W, H = im.size
        scale = 1.0
        if self.max_side and max(W, H) > self.max_side:
            scale = self.max_side / max(W, H)
            im = im.resize((max(1, round(W * scale)), max(1, round(H * scale))), resample=3)  # bicubic
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
        p = self.patch
        h, w = x.shape[1:]
        padded = torch.zeros(3, math.ceil(h / p) * p, math.ceil(w / p) * p)
        padded[:, :h, :w] = x
        return padded, torch.tensor([scale, W, H], dtype=torch.float64)


@torch.no_grad()
def discover(vit: nn.Module, samples: Sequence[BoxSample], *, k: int = 100, max_side: int | None = None,
             num_workers: int = 0) -> torch.Tensor:
    """LOST's box for every sample, in original image pixels, (N, 4) float64."""
    patch = as_vit(vit).patch_embed.patch_size[0]
    device = next(vit.parameters()).device
    loader = DataLoader(PaddedImages(samples, patch, max_side), batch_size=1, shuffle=False, num_workers=num_workers)
    boxes = []
    try:
        for x, meta in tqdm(loader, desc="LOST", disable=None, leave=False):
            keys = last_block_keys(vit, x.to(device))[0].float().cpu()
            res = lost(keys, (x.shape[-2] // patch, x.shape[-1] // patch), k)
            scale, W, H = meta[0].tolist()
            x0, y0, x1, y1 = (v * patch / scale for v in res.box)
            boxes.append([min(x0, W), min(y0, H), min(x1, W), min(y1, H)])
    except VidsslError as e:  # from a worker, keep the last line of its traceback
        text = str(e).strip()
        raise VidsslError(text.splitlines()[-1].split("Error: ", 1)[-1] if "Traceback" in text else text) from None
    return torch.tensor(boxes, dtype=torch.float64)


def draw_boxes(samples: Sequence[BoxSample], preds: torch.Tensor, hits: Sequence[bool], out: Path) -> None:
    """out/NAME.jpg: ground-truth boxes in green, LOST's box in red (a hit) or orange (a miss)."""
    from PIL import ImageDraw

    ensure_dir(out)
    for s, box, hit in zip(samples, preds.tolist(), hits):
        im = open_rgb(s.image)
        d = ImageDraw.Draw(im)
        lw = max(2, round(max(im.size) / 200))
        for g in s.boxes:
            d.rectangle([g[0], g[1], g[2] - 1, g[3] - 1], outline=(0, 220, 0), width=lw)
        d.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(255, 0, 0) if hit else (255, 160, 0), width=lw)
        target = out / f"{check_name(s.name, 'image name', s.image)}.jpg"
        try:
            im.save(target, quality=90)
        except OSError as e:
            raise VidsslError(f"cannot write {target}: {e.strerror or e}") from None


def evaluate_objdisc(
    encoder: EncoderLike,
    data: str | Path,
    layout: Layout,
    *,
    split: str = "trainval",
    k: int = 100,
    max_side: int | None = None,
    skip_difficult: bool = False,
    annotations: str | Path | None = None,
    image_list: str | Path | None = None,
    iou_threshold: float = 0.5,
    out: str | Path | None = None,
    num_workers: int = 2,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    checkpoint_key: str = "teacher",
    seed: int = 0,
    device: str | None = None,
    weights_id: str | None = None,
) -> dict[str, Any]:
    """LOST single-object discovery with `encoder` (a model, or anything `load_encoder` accepts) on
    a VOC07/VOC12/COCO20k layout at `data`; CorLoc (%). With `out`, every image is drawn with its
    boxes as out/NAME.jpg and the boxes are written to out/predictions.json. The boxes are cached
    per (weights, files, input, k); the plain dict is what `vidssl eval objdisc --json` writes."""
    if layout not in LAYOUTS:
        raise VidsslError(f"--layout {layout}: valid layouts are {', '.join(LAYOUTS)}")
    if k < 1:
        raise VidsslError("--k must be at least 1")
    if max_side is not None and max_side < 1:
        raise VidsslError("--max-side must be a positive number of pixels")
    if not 0.0 < iou_threshold <= 1.0:
        raise VidsslError("--iou-threshold must be in (0, 1]")
    samples = read_boxes(data, layout, split=split, skip_difficult=skip_difficult, annotations=annotations,
                         image_list=image_list)
    vit, name, wid = prepare_encoder(encoder, checkpoint_key=checkpoint_key, seed=seed, device=device,
                                     weights_id=weights_id)
    key = feature_key(wid or "", [s.image for s in samples], f"lost-pad-max{max_side}", f"lost-k{k}-boxes")
    preds = FeatureCache.at(cache_dir, cache and wid is not None).get_or_compute(
        key, lambda: {"boxes": discover(vit, samples, k=k, max_side=max_side, num_workers=num_workers)})["boxes"]
    ious = [best_iou(p, s.boxes) for p, s in zip(preds.tolist(), samples)]
    hits = [v >= iou_threshold for v in ious]
    if out is not None:
        out = Path(out)
        draw_boxes(samples, preds, hits, out)
        write_json(out / "predictions.json", {s.name: {"box": p, "iou": v, "hit": h, "gt": [list(g) for g in s.boxes]}
                                              for s, p, v, h in zip(samples, preds.tolist(), ious, hits)})
    return clean({"eval": "objdisc", "weights": name, "data": str(data), "layout": layout,
                  "split": split if layout != "coco20k" else None, "k": k, "max_side": max_side,
                  "skip_difficult": skip_difficult, "iou_threshold": iou_threshold, "images": len(samples),
                  "out": None if out is None else str(out),
                  "metrics": {"CorLoc": corloc(preds.tolist(), [s.boxes for s in samples], iou_threshold),
                              "mean_best_IoU": 100.0 * float(np.mean(ious))}})
