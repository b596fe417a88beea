"""LOST object discovery and CorLoc (vidssl.eval.objdisc): boxes and CorLoc against hand-made
boxes, LOST's steps on a hand-made key matrix, VOC07/COCO20k fixtures with an oracle encoder
(a real timm ViT whose last-block keys say whether a patch is on the object), the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.errors import VidsslError
from vidssl.eval.objdisc import (BoxSample, PaddedImages, best_iou, box_iou, corloc, evaluate_objdisc,
                                 last_block_keys, lost, read_boxes)

# --------------------------------------------------------------------------- fixtures


def _scene(rng: np.random.Generator, w: int, h: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """A dark noisy background with one bright rectangle at box (x0, y0, x1, y1), half-open."""
    img = rng.integers(10, 60, size=(h, w, 3)).astype(np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = rng.integers(215, 255, size=(y1 - y0, x1 - x0, 3))
    return img


def _xml(name: str, objects: list[tuple[tuple[int, int, int, int], int]]) -> str:
    """VOC XML; boxes given half-open 0-based are written 1-based inclusive, as VOC does."""
    objs = "".join(f"<object><name>thing</name><difficult>{d}</difficult><bndbox><xmin>{x0 + 1}</xmin>"
                   f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                   for (x0, y0, x1, y1), d in objects)
    return f"<annotation><filename>{name}.jpg</filename>{objs}</annotation>"


# (image size, object box) of the fixture; sides multiples of 16 so the oracle sees no padding
SCENES = [((128, 96), (20, 14, 70, 60)), ((96, 128), (40, 60, 90, 120)), ((112, 112), (8, 50, 50, 100)),
          ((144, 80), (90, 8, 140, 56))]


def write_voc_boxes(root: Path, scenes=SCENES, seed: int = 0, split: str = "trainval") -> list[tuple[int, int, int, int]]:
    """VOC07 detection layout: JPEGImages/ID.jpg, Annotations/ID.xml, ImageSets/Main/SPLIT.txt.
    Returns each image's object box. The first image also has a tiny difficult object."""
    rng = np.random.default_rng(seed)
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    names = []
    for i, ((w, h), box) in enumerate(scenes):
        name = f"{i:06d}"
        names.append(name)
        Image.fromarray(_scene(rng, w, h, box)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        objects = [(box, 0)] + ([((0, 0, 4, 4), 1)] if i == 0 else [])
        (root / "Annotations" / f"{name}.xml").write_text(_xml(name, objects))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return [b for _, b in scenes]


def write_coco(root: Path, scenes=SCENES, seed: int = 1) -> None:
    """COCO20k layout: images/, annotations.json (COCO instances, bbox x,y,w,h), images.txt with
    LOST's train2014/ prefix. One crowd box per image (ignored) and one image with only a crowd box."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns, lines = [], [], []
    for i, ((w, h), (x0, y0, x1, y1)) in enumerate(scenes + [((64, 64), (0, 0, 32, 32))]):
        fname = f"COCO_train2014_{i:012d}.jpg"
        Image.fromarray(_scene(rng, w, h, (x0, y0, x1, y1))).save(root / "images" / fname, quality=95)
        images.append({"id": 100 + i, "file_name": fname, "width": w, "height": h})
        anns.append({"id": 2 * i, "image_id": 100 + i, "bbox": [0, 0, w, h], "iscrowd": 1, "category_id": 1})
        if i < len(scenes):
            anns.append({"id": 2 * i + 1, "image_id": 100 + i, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                         "category_id": 1})
        lines.append(f"train2014/{fname}")
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    (root / "images.txt").write_text("\n".join(lines) + "\n")


def oracle_vit() -> torch.nn.Module:
    """A real one-block timm ViT whose patch keys are +-(sqrt2, -sqrt2, 0, 0): + on bright
    (object) patches, - on dark (background) ones. The patch embedding takes the mean of the
    normalised pixels (channel 0) and its negative (channel 1), positions are zero, the last
    block's LayerNorm maps (a, -a, 0, 0) to sign(a) (sqrt2, -sqrt2, 0, 0) and W_k is the identity."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=4, depth=1, num_heads=1, num_classes=0,
                            dynamic_img_size=True)
    with torch.no_grad():
        for p in vit.parameters():
            p.zero_()
        w = vit.patch_embed.proj.weight  # (4, 3, 16, 16)
        w[0] = 1.0 / (3 * 16 * 16)
        w[1] = -1.0 / (3 * 16 * 16)
        for ln in (vit.blocks[0].norm1, vit.blocks[0].norm2, vit.norm):
            ln.weight.fill_(1.0)
        vit.blocks[0].attn.qkv.weight[4:8] = torch.eye(4)
    return vit.eval()


# --------------------------------------------------------------------------- boxes and CorLoc


def test_box_iou_and_corloc_by_hand() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no pixel
    assert box_iou((0, 0, 10, 10), (2, 2, 6, 6)) == pytest.approx(16 / 100)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert best_iou((0, 0, 10, 10), [(50, 50, 60, 60), (0, 0, 10, 20)]) == pytest.approx(0.5)
    preds = [(0, 0, 10, 10), (0, 0, 10, 10), (0, 0, 10, 10)]
    gts = [[(0, 0, 10, 20)],  # IoU exactly 0.5: a hit (>=)
           [(30, 30, 40, 40), (1, 1, 11, 11)],  # the second box: 81/119 = 0.68
           [(0, 0, 10, 21)]]  # 100/210 < 0.5: a miss
    assert corloc(preds, gts) == pytest.approx(200 / 3)
    assert corloc(preds, gts, threshold=0.7) == 0.0
    with pytest.raises(VidsslError, match="2 predicted boxes for 3 images"):
        corloc(preds[:2], gts)


# --------------------------------------------------------------------------- LOST's steps


def test_lost_on_a_hand_made_key_matrix() -> None:
    """5x5 grid. Background e0 (18 patches, degree 17), object A e1 on the 2x2 block at rows 0-1,
    cols 3-4 (degree 3), object B e2 on three patches (degree 2): (2,1) alone and (4,3), (4,4)
    together. Seed: lowest degree, ties by index -> (2,1) = patch 11. Expansion: B's three
    patches. Mask: B's patches; the seed's component is (2,1) alone -> box x 1..2, y 2..3."""
    e = torch.eye(3)
    keys = e[0].repeat(25, 1)
    for i in (3, 4, 8, 9):
        keys[i] = e[1]
    for i in (11, 23, 24):
        keys[i] = e[2]
    r = lost(keys * 2.0, (5, 5), k=100)
    assert r.seed == 11
    assert sorted(r.expanded) == [11, 23, 24]
    assert r.mask.sum() == 1 and r.mask[2, 1]
    assert r.box == (1, 2, 2, 3)
    # k=1: only the seed is expanded; same component here
    assert lost(keys, (5, 5), k=1).expanded == [11]
    # B made connected, (3,4), (4,3), (4,4): the seed (3,4) = patch 19, one 3-patch component
    keys2 = keys.clone()
    keys2[11] = e[0]
    keys2[19] = e[2]
    r2 = lost(keys2, (5, 5))
    assert r2.seed == 19 and r2.box == (3, 3, 5, 5) and r2.mask.sum() == 3
    with pytest.raises(VidsslError, match="5x5 grid"):
        lost(keys[:20], (5, 5))


def test_last_block_keys_match_the_encoder_and_pad() -> None:
    from vidssl.models.encoder import Encoder
    from vidssl.models.vit import create_vit

    vit = create_vit("vit_tiny").eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        k = last_block_keys(vit, x)
        ref = Encoder(vit).encode_with_last_attention(x).k  # (B, heads, L, d_h)
    assert k.shape == (1, 15, 192)
    assert torch.allclose(k, ref.transpose(1, 2).reshape(1, -1, 192)[:, 1:], atol=1e-5)
    # a vidssl Encoder works too (its .vit)
    with torch.no_grad():
        assert torch.equal(last_block_keys(Encoder(vit), x), k)


def test_padded_images_keep_aspect(tmp_path: Path) -> None:
    Image.fromarray(np.full((70, 100, 3), 200, np.uint8)).save(tmp_path / "a.png")
    ds = PaddedImages([BoxSample("a", tmp_path / "a.png", [(0, 0, 1, 1)])], 16, None)
    x, meta = ds[0]
    assert x.shape == (3, 80, 112) and meta.tolist() == [1.0, 100, 70]
    assert x[:, 70:].abs().max() == 0 and x[:, :, 100:].abs().max() == 0 and x[:, :70, :100].abs().min() > 0
    x, meta = PaddedImages(ds.samples, 16, 50)[0]
    assert x.shape == (3, 48, 64) and meta[0].item() == pytest.approx(0.5)  # 50x35 padded


# --------------------------------------------------------------------------- layouts and end to end


def test_voc_layout_reads_boxes(tmp_path: Path) -> None:
    boxes = write_voc_boxes(tmp_path / "voc")
    s = read_boxes(tmp_path / "voc", "voc07")
    assert [x.name for x in s] == ["000000", "000001", "000002", "000003"]
    assert s[0].boxes == [tuple(float(v) for v in boxes[0]), (0.0, 0.0, 4.0, 4.0)]  # difficult objects kept by default
    assert read_boxes(tmp_path / "voc", "voc12", skip_difficult=True)[0].boxes == [tuple(float(v) for v in boxes[0])]


def test_oracle_reaches_corloc_100_on_voc07(tmp_path: Path) -> None:
    write_voc_boxes(tmp_path / "voc")
    r = evaluate_objdisc(oracle_vit(), tmp_path / "voc", "voc07", num_workers=0, out=tmp_path / "out")
    assert r["eval"] == "objdisc" and r["images"] == 4
    assert r["metrics"]["CorLoc"] == 100.0
    pred = json.loads((tmp_path / "out" / "predictions.json").read_text())
    # image 0: object x 20..70, y 14..60; a patch is on it when more than about half of it is bright:
    # columns 1-3 (16..64 px), rows 1-3 (16..64 px) -> IoU 44*44 / (48*48 + 50*46 - 44*44) = 0.7256
    assert pred["000000"]["box"] == [16, 16, 64, 64] and pred["000000"]["iou"] == pytest.approx(1936 / 2668)
    assert all(v["hit"] for v in pred.values())
    for name in pred:
        with Image.open(tmp_path / "out" / f"{name}.jpg") as im:
            a = np.asarray(im.convert("RGB")).astype(int)
        assert ((a[..., 1] > 180) & (a[..., 0] < 80)).sum() > 50  # green ground truth drawn
        assert ((a[..., 0] > 200) & (a[..., 1] < 80) & (a[..., 2] < 80)).sum() > 50  # red hit box drawn
    # downsizing: an object on the 32-px grid of a 256x192 image, halved, is on the patch grid;
    # the box found at half size, mapped back, is the ground truth exactly
    write_voc_boxes(tmp_path / "big", scenes=[((256, 192), (64, 32, 160, 128))])
    r2 = evaluate_objdisc(oracle_vit(), tmp_path / "big", "voc07", num_workers=0, max_side=128, out=tmp_path / "o2")
    assert r2["metrics"]["CorLoc"] == 100.0
    assert json.loads((tmp_path / "o2" / "predictions.json").read_text())["000000"]["box"] == [64, 32, 160, 128]


def test_a_wrong_seed_is_a_miss(tmp_path: Path) -> None:
    """LOST reads degrees only, so flipping every key's sign changes nothing; an object larger
    than the background is not the minority, the seed lands on the background and the box misses."""
    write_voc_boxes(tmp_path / "voc", scenes=[((128, 96), (20, 14, 70, 60))])
    vit = oracle_vit()
    with torch.no_grad():
        vit.patch_embed.proj.weight.neg_()  # keys now + on the background
    r = evaluate_objdisc(vit, tmp_path / "voc", "voc07", num_workers=0)
    assert r["metrics"]["CorLoc"] == 100.0
    write_voc_boxes(tmp_path / "big", scenes=[((128, 96), (0, 0, 96, 96))])  # object covers 3/4 of the patches
    r = evaluate_objdisc(oracle_vit(), tmp_path / "big", "voc07", num_workers=0)
    assert r["metrics"]["CorLoc"] == 0.0  # the minority (background strip) is found instead


def test_coco20k_layout_and_oracle(tmp_path: Path) -> None:
    write_coco(tmp_path / "coco")
    with pytest.warns(UserWarning, match="no non-crowd box for COCO_train2014_000000000004.jpg"):
        s = read_boxes(tmp_path / "coco", "coco20k")
    assert len(s) == 4 and s[1].boxes == [(40.0, 60.0, 90.0, 120.0)]  # x,y,w,h -> x0,y0,x1,y1; crowd dropped
    with pytest.warns(UserWarning):
        r = evaluate_objdisc(oracle_vit(), tmp_path / "coco", "coco20k", num_workers=0)
    assert r["metrics"]["CorLoc"] == 100.0 and r["images"] == 4


def test_random_vit_tiny_runs(tmp_path: Path) -> None:
    write_voc_boxes(tmp_path / "voc", scenes=[((100, 70), (10, 10, 60, 50)), ((64, 90), (5, 30, 50, 80))])
    cache = tmp_path / "cache"
    r = evaluate_objdisc("random:vit_tiny_patch16_224", tmp_path / "voc", "voc07", num_workers=0, cache_dir=cache,
                         device="cpu")
    assert 0.0 <= r["metrics"]["CorLoc"] <= 100.0 and r["images"] == 2
    assert len(list((cache / "features").glob("*.pt"))) == 1
    r2 = evaluate_objdisc("random:vit_tiny_patch16_224", tmp_path / "voc", "voc07", num_workers=0, cache_dir=cache,
                          device="cpu")
    assert r2["metrics"] == r["metrics"]


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_one_line_errors(tmp_path: Path) -> None:
    vit = oracle_vit()
    with pytest.raises(VidsslError, match="split file not found") as e:
        evaluate_objdisc(vit, tmp_path / "nothing", "voc07")
    _one_line(e)
    root = tmp_path / "voc"
    write_voc_boxes(root)
    for kw, msg in (({"layout": "voc2007"}, "valid layouts are voc07, voc12, coco20k"), ({"k": 0}, "--k must be"),
                    ({"max_side": 0}, "--max-side"), ({"split": "../x"}, "not a plain name")):
        args = {"layout": "voc07", **kw}
        with pytest.raises(VidsslError, match=msg) as e:
            evaluate_objdisc(vit, root, **args)
        _one_line(e)
    (root / "Annotations" / "000001.xml").write_text("<annotation><object>")
    with pytest.raises(VidsslError, match="000001.xml: cannot read the annotation XML") as e:
        read_boxes(root, "voc07")
    _one_line(e)
    (root / "Annotations" / "000001.xml").unlink()
    with pytest.raises(VidsslError, match="000001.xml: listed in") as e:
        read_boxes(root, "voc07")
    coco = tmp_path / "coco"
    write_coco(coco)
    (coco / "images.txt").write_text("COCO_train2014_999.jpg\n")
    with pytest.raises(VidsslError, match="COCO_train2014_999.jpg is not among the images") as e:
        read_boxes(coco, "coco20k")
    (coco / "annotations.json").write_text('{"images": []}')
    with pytest.raises(VidsslError, match="not a COCO instances file") as e:
        read_boxes(coco, "coco20k")
    _one_line(e)


def test_cli_json_and_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vidssl.cli.main import main

    write_voc_boxes(tmp_path / "voc", scenes=SCENES[:2])
    js, out = tmp_path / "r.json", tmp_path / "boxes"
    common = ["--weights", "random:vit_tiny_patch16_224", "--num-workers", "0", "--no-cache", "--device", "cpu"]
    assert main(["eval", "objdisc", "--data", str(tmp_path / "voc"), "--layout", "voc07", *common,
                 "--json", str(js), "--out", str(out), "--max-side", "96"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("objdisc random:vit_tiny_patch16_224 (voc07, 2 images): CorLoc=")
    r = json.loads(js.read_text())
    assert r["eval"] == "objdisc" and r["max_side"] == 96 and set(r["metrics"]) == {"CorLoc", "mean_best_IoU"}
    assert sorted(p.name for p in out.iterdir()) == ["000000.jpg", "000001.jpg", "predictions.json"]
    assert main(["eval", "objdisc", "--data", str(tmp_path / "none"), "--layout", "voc12", *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidssl: error:") and "split file not found" in err[0]
