"""GOT-10k tracking: the toolkit's metrics against hand-computed overlaps, the tracker's logic with an
oracle texture encoder on a generated moving textured square, the layout reader, the result files
and the command, on a GOT-10k fixture written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from vidssl.errors import VidsslError
from vidssl.eval.track import (PatchTracker, TrackParams, TrackSequence, box_iou, evaluate_track, read_got10k,
                               sequence_ious, summarize, track_sequence)

# --------------------------------------------------------------------------- a GOT-10k fixture


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(h, w, 3) in [0, 1]: random values on a coarse grid, bilinearly upsampled (a smooth texture)."""
    coarse = torch.from_numpy(rng.random((1, 3, h // cell + 2, w // cell + 2), dtype=np.float32))
    up = F.interpolate(coarse, size=(h + 2 * cell, w + 2 * cell), mode="bilinear", align_corners=False)
    return up[0, :, cell : cell + h, cell : cell + w].permute(1, 2, 0).numpy()


def moving_square(n_frames: int = 20, size: int = 160, seed: int = 0, side0: float = 32, side1: float = 40,
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames (uint8 HxWx3) of a square with a fine red/yellow checker texture moving on a smooth
    blue-green background, and its true x,y,w,h boxes. The square moves along a curve (up to
    9 px a frame at size 160, a quarter of its side) and grows from side0 to side1; its texture moves with it."""
    rng = np.random.default_rng(seed)
    bg = _smooth_noise(rng, size, size, 12) * np.array([0.2, 0.6, 0.8]) + np.array([0.0, 0.2, 0.1])
    tex_n = 64
    yy, xx = np.mgrid[:tex_n, :tex_n]
    checker = ((yy // 4 + xx // 4) % 2).astype(np.float32)
    tex = np.stack([0.9 - 0.1 * checker, 0.2 + 0.6 * checker, 0.1 + 0.05 * checker], -1)
    tex = np.clip(tex + rng.normal(0, 0.04, tex.shape), 0, 1).astype(np.float32)
    frames, boxes = [], []
    for t in range(n_frames):
        a = t / max(1, n_frames - 1)
        side = side0 + (side1 - side0) * a
        cx = size * (0.28 + 0.44 * a)
        cy = size * (0.5 + 0.175 * np.sin(2.5 * a * np.pi))
        x0, y0 = cx - side / 2, cy - side / 2
        img = bg.copy()
        s = int(round(side))
        xi, yi = int(round(x0)), int(round(y0))
        patch = F.interpolate(torch.from_numpy(tex).permute(2, 0, 1)[None], size=(s, s), mode="nearest")[0]
        img[yi : yi + s, xi : xi + s] = patch.permute(1, 2, 0).numpy()
        frames.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
        boxes.append([xi, yi, s, s])
    return frames, np.asarray(boxes, dtype=np.float64)


def write_got10k(root: Path, n_seq: int = 2, n_frames: int = 8, size: int = 96, partial: bool = True,
                 with_list: bool = True) -> Path:
    """DIR/val/GOT-10k_Val_00000N/ with 00000001.jpg... and groundtruth.txt (every frame), a cover.label,
    plus (with `partial`) one sequence whose groundtruth.txt holds the first line only, as in the test
    split; list.txt names them. Returns DIR/val."""
    split = root / "val"
    names = []
    for i in range(n_seq + int(partial)):
        name = f"GOT-10k_Val_{i + 1:06d}"
        d = split / name
        d.mkdir(parents=True)
        frames, boxes = moving_square(n_frames, size, seed=i, side0=size / 4, side1=size / 4 + 4)
        for t, f in enumerate(frames):
            Image.fromarray(f).save(d / f"{t + 1:08d}.jpg", quality=95)
        rows = boxes[:1] if i == n_seq else boxes
        (d / "groundtruth.txt").write_text("".join(",".join(f"{v:.4f}" for v in b) + "\n" for b in rows))
        (d / "cover.label").write_text("".join("8\n" for _ in frames))
        names.append(name)
    if with_list:
        (split / "list.txt").write_text("".join(f"{n}\n" for n in names))
    return split


class TextureEncoder(nn.Module):
    """An oracle with the timm ViT surface the evals use: each patch token is the patch's mean colour
    plus the mean absolute response of a fixed random 3x3 conv (local texture energy). It knows
    nothing about objects; it only encodes what the pixels look like, so tracking with it tests the
    tracker's logic apart from feature quality."""

    num_prefix_tokens = 0

    def __init__(self, patch: int = 8, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.patch_size = (patch, patch)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(channels, 3, 3, 3, generator=g))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_embed.patch_size[0]
        energy = F.avg_pool2d(F.conv2d(x, self.weight, padding=1).abs(), p)
        colour = F.avg_pool2d(x, p)
        maps = torch.cat([colour, energy / 4], dim=1)  # (B, 3 + C, h, w)
        return maps.flatten(2).transpose(1, 2)


def _sequence(frames: list[np.ndarray], boxes: np.ndarray, tmp: Path) -> TrackSequence:
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, f in enumerate(frames):
        paths.append(tmp / f"{t + 1:08d}.png")
        Image.fromarray(f).save(paths[-1])
    return TrackSequence(tmp.name, paths, boxes, None)


# --------------------------------------------------------------------------- metrics


def test_box_iou_hand_computed() -> None:
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 10, 10]], float)
    pred = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]], float)
    # identical; half overlap: 50 / (100 + 100 - 50); disjoint; quarter: 25 / 175
    np.testing.assert_allclose(box_iou(pred, gt), [1.0, 50 / 150, 0.0, 25 / 175], atol=1e-9)
    # the toolkit clips both boxes to the frame first: a prediction spilling out of a 12x12 frame
    np.testing.assert_allclose(box_iou([[6, 0, 10, 10]], [[6, 0, 6, 10]], bound=(12, 12)), [1.0], atol=1e-9)


def test_ao_sr_pool_frames_and_skip_the_first() -> None:
    gt = np.array([[0, 0, 10, 10]] * 4, float)
    a = sequence_ious(np.array([[50, 50, 1, 1], [0, 0, 10, 10], [5, 0, 10, 10], [2, 0, 10, 10]], float), gt)
    b = sequence_ious(np.array([[0, 0, 10, 10], [50, 50, 1, 1]], float), gt[:2])
    np.testing.assert_allclose(a, [1.0, 1 / 3, 80 / 120], atol=1e-9)  # frame 0 (a miss) is not scored
    np.testing.assert_allclose(b, [0.0], atol=1e-9)
    s = summarize({"a": a, "b": b})
    pooled = np.array([1.0, 1 / 3, 2 / 3, 0.0])  # the toolkit concatenates every sequence's frames
    assert s["AO"] == pytest.approx(100 * pooled.mean())
    assert s["SR0.5"] == pytest.approx(50.0)  # 1.0 and 0.667 exceed 0.5
    assert s["SR0.75"] == pytest.approx(25.0)
    assert s["sequence_mean"]["AO"] == pytest.approx(100 * ((2 / 3) + 0.0) / 2)
    assert s["per_sequence"]["a"]["SR0.5"] == pytest.approx(200 / 3)
    assert s["frames"] == 4
    # SR uses a strict '>': an IoU of exactly 0.5 is not a success
    assert summarize({"c": np.array([0.5])})["SR0.5"] == 0.0
    # frames with cover 0 (target invisible) are not scored
    cov = sequence_ious(np.array([[0, 0, 10, 10]] * 3, float), gt[:3] + [[0, 0, 0, 0], [30, 0, 0, 0], [0, 0, 0, 0]],
                        cover=np.array([8, 0, 3]))
    np.testing.assert_allclose(cov, [1.0], atol=1e-9)


# --------------------------------------------------------------------------- the tracker's logic


def test_oracle_texture_features_track_the_square(tmp_path: Path) -> None:
    frames, boxes = moving_square(24)
    seq = _sequence(frames, boxes, tmp_path / "sq")
    enc = TextureEncoder().eval()
    tracker = PatchTracker(lambda x: _maps(enc, x), 8, TrackParams(box_patches=4, search_factor=3))
    pred, times, size = track_sequence(tracker, seq)
    ious = sequence_ious(pred, boxes, size)
    assert ious.mean() >= 0.7, ious.round(2)
    # not trivially: staying at the first box loses the square
    assert sequence_ious(np.repeat(boxes[:1], len(boxes), 0), boxes, size).mean() < 0.3
    assert pred.shape == boxes.shape and len(times) == len(boxes)
    assert size == (160, 160)


def _maps(enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from vidssl.eval.features import patch_features

    return patch_features(enc, x)


def test_tracker_without_motion_model_is_what_tracks(tmp_path: Path) -> None:
    """With features that cannot tell the square from the background (constant), the same tracker fails:
    the AO above comes from the correlation, not from the window or the scale search."""
    frames, boxes = moving_square(24)
    seq = _sequence(frames, boxes, tmp_path / "sq")
    tracker = PatchTracker(lambda x: torch.ones(x.shape[0], 4, x.shape[2] // 8, x.shape[3] // 8), 8,
                           TrackParams(box_patches=4, search_factor=3))
    pred, _, size = track_sequence(tracker, seq)
    assert sequence_ious(pred, boxes, size).mean() < 0.4


# --------------------------------------------------------------------------- the layout, end to end, the command

SMALL = dict(box_patches=2, search_factor=3)  # 96 px crops for a /16 encoder: fast on one core


def test_layout_reader(tmp_path: Path) -> None:
    split = write_got10k(tmp_path / "got")
    seqs = read_got10k(tmp_path / "got")  # the root: val/ is found
    assert [s.name for s in seqs] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002", "GOT-10k_Val_000003"]
    assert [s.scorable for s in seqs] == [True, True, False]  # the third holds the first line only
    assert len(seqs[0].frames) == 8 and seqs[0].frames[0].name == "00000001.jpg"
    assert seqs[0].boxes.shape == (8, 4) and seqs[2].boxes.shape == (1, 4)
    assert seqs[0].cover is not None and len(seqs[0].cover) == 8
    assert [s.name for s in read_got10k(split)] == [s.name for s in seqs]  # the split folder itself
    assert [s.name for s in read_got10k(tmp_path / "got", "val")] == [s.name for s in seqs]
    (split / "list.txt").unlink()  # without list.txt: every folder with a groundtruth.txt, sorted
    assert len(read_got10k(split)) == 3


@pytest.mark.parametrize("breakage, message", [
    ("missing", "GOT-10k directory not found"),
    ("empty", "not a GOT-10k split folder"),
    ("bad-line", "line 2 is not a box x,y,w,h"),
    ("count", "5 boxes for 8 frames"),
    ("no-area", "has no area"),
    ("listed", "not found"),
    ("escape", "not a plain name"),
    ("split", "no split folder 'test'"),
])
def test_bad_folders_are_one_line_errors(tmp_path: Path, breakage: str, message: str) -> None:
    root = tmp_path / "got"
    split = write_got10k(root, n_seq=1, partial=False)
    gt = split / "GOT-10k_Val_000001" / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    split_arg = None
    if breakage == "missing":
        root = tmp_path / "nope"
    elif breakage == "empty":
        root = tmp_path / "empty"
        root.mkdir()
    elif breakage == "bad-line":
        gt.write_text("\n".join([lines[0], "1,2,three,4", *lines[2:]]) + "\n")
    elif breakage == "count":
        gt.write_text("\n".join(lines[:5]) + "\n")
    elif breakage == "no-area":
        gt.write_text("\n".join(["10,10,0,5", *lines[1:]]) + "\n")
    elif breakage == "listed":
        (split / "list.txt").write_text("GOT-10k_Val_000001\nGOT-10k_Val_000099\n")
    elif breakage == "escape":
        (split / "list.txt").write_text("../GOT-10k_Val_000001\n")
    elif breakage == "split":
        split_arg = "test"
    with pytest.raises(VidsslError, match=message) as e:
        read_got10k(root, split_arg)
    assert "\n" not in str(e.value)


def test_random_vit_end_to_end_writes_toolkit_results(tmp_path: Path) -> None:
    write_got10k(tmp_path / "got")
    out = tmp_path / "results"
    r = evaluate_track("random:vit_tiny_patch16_224", tmp_path / "got", out=out, device="cpu", **SMALL)
    m = r["metrics"]
    assert r["eval"] == "track" and r["weights"] == "random:vit_tiny_patch16_224"
    assert m["sequences"] == 2 and m["unscored_sequences"] == ["GOT-10k_Val_000003"] and m["frames"] == 14
    for key in ("AO", "SR0.5", "SR0.75"):
        assert 0.0 <= m[key] <= 100.0
    assert m["SR0.75"] <= m["SR0.5"]
    json.dumps(r)  # plain JSON
    # the toolkit's result format: one x,y,w,h line per frame (initial box first), a time per frame
    for i in (1, 2, 3):
        name = f"GOT-10k_Val_{i:06d}"
        boxes = np.loadtxt(out / name / f"{name}_001.txt", delimiter=",")
        times = np.loadtxt(out / name / f"{name}_time.txt", delimiter=",")
        assert boxes.shape == (8, 4) and times.shape == (8,) and (times > 0).all()
        gt = np.loadtxt(tmp_path / "got" / "val" / name / "groundtruth.txt", delimiter=",", ndmin=2)
        np.testing.assert_allclose(boxes[0], gt[0], atol=1e-3)
    # the metrics are the toolkit's, recomputed from the written files
    ious = []
    for i in (1, 2):
        name = f"GOT-10k_Val_{i:06d}"
        boxes = np.loadtxt(out / name / f"{name}_001.txt", delimiter=",")
        gt = np.loadtxt(tmp_path / "got" / "val" / name / "groundtruth.txt", delimiter=",")
        ious.append(box_iou(boxes[1:], gt[1:], (96, 96)))
    assert m["AO"] == pytest.approx(100 * np.concatenate(ious).mean(), abs=1e-3)


def test_nothing_to_score(tmp_path: Path) -> None:
    split = write_got10k(tmp_path / "got", n_seq=0)  # only the first-line-only sequence
    with pytest.raises(VidsslError, match="nothing to score"):
        evaluate_track("random:vit_tiny_patch16_224", split, device="cpu", **SMALL)
    with pytest.warns(UserWarning, match="nothing scored"):
        r = evaluate_track("random:vit_tiny_patch16_224", split, out=tmp_path / "o", device="cpu", **SMALL)
    assert r["metrics"]["AO"] is None and (tmp_path / "o" / "GOT-10k_Val_000001" / "GOT-10k_Val_000001_001.txt").is_file()


def test_track_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vidssl.cli.main import main

    write_got10k(tmp_path / "got", n_seq=1, n_frames=5)
    base = ["eval", "track", "--weights", "random:vit_tiny_patch16_224", "--data", str(tmp_path / "got"),
            "--device", "cpu", "--box-patches", "2", "--search-factor", "3"]
    assert main([*base, "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "res")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("track random:vit_tiny_patch16_224: AO=") and "SR0.75=" in last and "1 unscored" in last
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["metrics"]["sequences"] == 1 and r["params"]["box_patches"] == 2
    assert (tmp_path / "res" / "GOT-10k_Val_000001" / "GOT-10k_Val_000001_time.txt").is_file()
    assert main([*base[:-4], "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "GOT-10k directory not found" in err and len(err.splitlines()) == 1
    assert main([*base, "--num-scales", "2"]) == 2
    assert "--num-scales must be odd" in capsys.readouterr().err
