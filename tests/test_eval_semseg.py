"""Linear semantic segmentation probe: metrics against a hand-made confusion matrix, the VOC and ADE20k
layouts (ADE's label 0 ignored and labels shifted), fast and full modes on fixtures whose classes are
flat colours, the sliding window, the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_eval_fixtures import COLOURS, MeanColourViT, _background, _box, _disk, write_voc
from vidssl.cli.main import main
from vidssl.errors import VidsslError
from vidssl.eval.semseg import (LinearHead, confusion_matrix, evaluate_semseg, iou_scores, poly_warmup,
                                slide_logits, to_targets)
from vidssl.eval.seg_data import read_ade20k

FAST = dict(mode="fast", fast_size=64, iters=150, train_batch_size=4, lr=0.05, warmup_iters=5, num_workers=0)
FULL = dict(mode="full", crop_size=64, test_size=64, window=48, stride=32, iters=120, train_batch_size=4,
            lr=0.05, warmup_iters=5, num_workers=0)


def write_voc_splits(root: Path, n_train: int = 6, n_val: int = 4) -> Path:
    """VOC layout with disjoint train and val images (write_voc writes one val split)."""
    write_voc(root, n=n_val, seed=0)
    tmp = write_voc(root.parent / f"{root.name}_train", n=n_train, seed=1)
    names = []
    for i, line in enumerate((tmp / "ImageSets" / "Segmentation" / "val.txt").read_text().split()):
        name = f"2008_{i:06d}"
        shutil.copy(tmp / "JPEGImages" / f"{line}.jpg", root / "JPEGImages" / f"{name}.jpg")
        shutil.copy(tmp / "SegmentationClass" / f"{line}.png", root / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in names))
    return root


# ADE fixture classes (label values in the files): 1 grey background, 5 a red disk, 150 a blue box;
# a green band is labelled 0 ("other", void) and a red bar is labelled 0 too.
ADE_COLOURS = {1: (110, 110, 110), 5: COLOURS[1], 150: COLOURS[3]}


def write_ade20k(parent: Path, n_train: int = 6, n_val: int = 3, size: int = 64, seed: int = 0) -> Path:
    """ADEChallengeData2016/images|annotations/training|validation with grayscale label PNGs."""
    rng = np.random.default_rng(seed)
    root = parent / "ADEChallengeData2016"
    for split, n in (("training", n_train), ("validation", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = _background(rng, size, size)
            lab = np.ones((size, size), np.uint8)
            lab[_disk(size, size, rng.uniform(20, 44), rng.uniform(20, 44), rng.uniform(9, 13))] = 5
            lab[_box(size, size, int(rng.integers(2, 8)), int(rng.integers(2, 8)), 16)] = 150
            for c, colour in ADE_COLOURS.items():
                img[lab == c] = colour
            img[56:, :] = COLOURS[2]  # "other": a colour no class has
            lab[56:, :] = 0
            if split == "validation":  # red like class 5 but labelled "other": must not count as an error
                img[:, 60:] = COLOURS[1]
                lab[:, 60:] = 0
            name = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(img.astype(np.uint8)).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(lab, mode="L").save(root / "annotations" / split / f"{name}.png")
    return root


# --------------------------------------------------------------------------- metrics


def test_confusion_and_iou_by_hand() -> None:
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 2, 0, 0]])
    cm = confusion_matrix(pred, gt, num_classes=4)
    # rows gt, cols pred; the void pixel (pred 0) is not counted; class 3 never occurs
    expected = np.array([[1, 1, 1, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    s = iou_scores(cm)
    # IoU0 = 1/(3+2-1) = 1/4, IoU1 = 2/(2+3-2) = 2/3, IoU2 = 1/(2+2-1) = 1/3; class 3 absent -> not averaged
    assert s["per_class_IoU"] == pytest.approx({"0": 25.0, "1": 200 / 3, "2": 100 / 3})
    assert s["mIoU"] == pytest.approx(100 * (1 / 4 + 2 / 3 + 1 / 3) / 3)
    assert s["pixel_accuracy"] == pytest.approx(100 * 4 / 7) and s["classes_present"] == 3
    # ADE keys are the file's label values (index + 1)
    assert set(iou_scores(cm, first_label=1)["per_class_IoU"]) == {"1", "2", "3"}


def test_ade_targets_ignore_zero_and_shift() -> None:
    labels = np.array([0, 1, 2, 150, 151, 255], np.uint8)
    np.testing.assert_array_equal(to_targets(labels, "ade20k"), [255, 0, 1, 149, 255, 255])
    np.testing.assert_array_equal(to_targets(labels, "voc"), [0, 1, 2, 255, 255, 255])


def test_poly_warmup_schedule() -> None:
    assert poly_warmup(0, 100, 10) == pytest.approx(1e-6)
    assert poly_warmup(5, 100, 10) == pytest.approx(0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert poly_warmup(10, 100, 10) == pytest.approx(0.9) and poly_warmup(99, 100, 0) == pytest.approx(0.01)


def test_sliding_window_covers_every_pixel_once_averaged() -> None:
    """A head that outputs a constant map: the averaged logits are that constant everywhere, whatever
    the overlaps (a pixel missed or double counted would differ)."""
    vit = MeanColourViT(patch=8)
    head = LinearHead(4, 3).eval()
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    out = slide_logits(vit, head, torch.randn(3, 70, 101), window=48, stride=32, num_classes=3)
    assert out.shape == (3, 70, 101)
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 3.0])[:, None, None].expand(3, 70, 101))


# --------------------------------------------------------------------------- evaluations on fixtures


def test_fast_probe_voc_reaches_high_miou_and_caches(tmp_path: Path) -> None:
    voc = write_voc_splits(tmp_path / "voc")
    kw = dict(FAST, cache_dir=tmp_path / "c", weights_id="mean-colour")
    r = evaluate_semseg(MeanColourViT(patch=8), voc, "voc", **kw)
    m = r["metrics"]
    assert r["eval"] == "semseg" and r["train_images"] == 6 and r["val_images"] == 4 and r["num_classes"] == 21
    assert set(m["per_class_IoU"]) == {"0", "1", "3"}  # the classes present in the val annotations
    assert m["mIoU"] > 80, m
    assert len(list((tmp_path / "c" / "features").glob("*.pt"))) == 2  # train and val grids
    again = evaluate_semseg(MeanColourViT(patch=8), voc, "voc", **kw)
    assert again["metrics"]["mIoU"] == pytest.approx(m["mIoU"])


def test_full_probe_voc_runs_end_to_end(tmp_path: Path) -> None:
    voc = write_voc_splits(tmp_path / "voc")
    r = evaluate_semseg(MeanColourViT(patch=8), voc, "voc", **FULL)
    m = r["metrics"]
    assert r["mode"] == "full" and r["window"] == 48 and set(m["per_class_IoU"]) == {"0", "1", "3"}
    assert m["mIoU"] > 80, m


def test_ade20k_ignores_other_and_shifts_labels(tmp_path: Path) -> None:
    ade = write_ade20k(tmp_path)
    assert len(read_ade20k(tmp_path, "validation")) == 3 and len(read_ade20k(ade, "train")) == 6
    # patch 4: no void outline here, so boundaries inside 8-pixel patches would dominate the errors
    r = evaluate_semseg(MeanColourViT(patch=4), tmp_path, "ade20k", **dict(FAST, fast_label_size=32))
    m = r["metrics"]
    assert r["num_classes"] == 150 and r["val_split"] == "validation"
    # keyed by the files' label values: 150 is the last class (index 149), 0 is no class
    assert set(m["per_class_IoU"]) == {"1", "5", "150"}
    # the red "other" bar is predicted as class 5; scored, it would pull class 5's IoU down
    assert m["per_class_IoU"]["5"] > 80 and m["mIoU"] > 80, m


def test_bad_layout_and_folders_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(VidsslError, match="valid layouts are voc, ade20k"):
        evaluate_semseg(MeanColourViT(), tmp_path, "coco")
    with pytest.raises(VidsslError, match="not an ADE20k folder"):
        evaluate_semseg(MeanColourViT(), tmp_path, "ade20k")
    with pytest.raises(VidsslError, match="split file not found"):
        evaluate_semseg(MeanColourViT(), tmp_path, "voc")
    voc = write_voc(tmp_path / "voc", n=2)
    with pytest.raises(VidsslError, match="train.txt"):
        evaluate_semseg(MeanColourViT(), voc, "voc")
    with pytest.raises(VidsslError, match="--stride 64 must not exceed --window 32"):
        evaluate_semseg(MeanColourViT(), voc, "voc", val_split="val", train_split="val", window=32, stride=64)


def test_mask_of_another_size_is_an_error(tmp_path: Path) -> None:
    from vidssl.eval.palette import write_indexed_png

    voc = write_voc_splits(tmp_path / "voc", n_train=2, n_val=2)
    write_indexed_png(voc / "SegmentationClass" / "2008_000000.png", np.zeros((32, 48), np.uint8))
    with pytest.raises(VidsslError, match="2008_000000.png: size 48x32 differs from its image 64x64"):
        evaluate_semseg(MeanColourViT(), voc, "voc", **dict(FULL, iters=2, train_batch_size=2))


def test_semseg_command_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ade = write_ade20k(tmp_path, n_train=2, n_val=2)
    js = tmp_path / "r.json"
    assert main(["eval", "semseg", "--weights", "random:vit_tiny_patch16_224", "--data", str(ade),
                 "--layout", "ade20k", "--mode", "fast", "--fast-size", "64", "--iters", "5",
                 "--train-batch-size", "2", "--num-workers", "0", "--cache-dir", str(tmp_path / "c"),
                 "--device", "cpu", "--json", str(js)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("semseg[fast] random:vit_tiny_patch16_224 (ade20k validation, 2 images): mIoU=")
    r = json.loads(js.read_text())
    assert r["eval"] == "semseg" and 0 <= r["metrics"]["mIoU"] <= 100
    assert set(r["metrics"]["per_class_IoU"]) == {"1", "5", "150"}
    assert main(["eval", "semseg", "--weights", "random:vit_tiny_patch16_224", "--data", str(tmp_path / "none"),
                 "--layout", "ade20k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an ADE20k folder" in err[0]
