"""`vidssl show segment` with several --weights: one row per encoder, colours matched to the first row."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from vidssl.cli.main import main
from vidssl.data.writer import write_video
from vidssl.hub import export_encoder, load_encoder
from vidssl.viz.segment import label_iou, match_clusters, segment_rows

TINY = "random:vit_tiny_patch16_224"


def _video(path: Path, n: int = 8, h: int = 64, w: int = 96) -> Path:
    y, x = np.mgrid[:h, :w]
    frames = []
    for t in range(n):  # a disc moving right and a bar moving left on grey
        img = np.full((h, w, 3), 110, np.uint8)
        img[(y - 30) ** 2 + (x - 20 - 3 * t) ** 2 < 144] = (230, 40, 40)
        img[18:40, 58 - 2 * t : 80 - 2 * t] = (40, 200, 60)
        frames.append(img)
    return write_video(path, frames, fps=10)


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _seg(tmp_path: Path, video: Path, name: str, *weights_and_labels: str) -> Path:
    out = tmp_path / f"{name}.mp4"
    assert main(["show", "segment", *weights_and_labels, "--video", str(video), "-k", "3", "--out", str(out),
                 "--size", "32", "--strip-frames", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _video(tmp_path_factory.mktemp("v") / "shapes.mp4")


def _random_export(path: Path, seed: int) -> str:
    export_encoder(load_encoder(TINY, seed=seed), path)
    return str(path)


# ------------------------------------------------------------------ matching
def _brute_force(reference: np.ndarray, labels: np.ndarray, k: int) -> float:
    iou = label_iou(reference, labels, k)
    return max(sum(iou[p[j], j] for j in range(k)) for p in itertools.permutations(range(k)))


@pytest.mark.parametrize("seed", range(6))
def test_matching_is_the_best_permutation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 4
    reference = rng.integers(0, k, size=(3, 5, 6))
    relabel = rng.permutation(k)
    labels = relabel[reference]
    noisy = rng.random(reference.shape) < 0.3  # a third of the pixels disagree
    labels[noisy] = rng.integers(0, k, size=int(noisy.sum()))
    perm = match_clusters(reference, labels, k)
    assert sorted(perm.tolist()) == list(range(k))  # a permutation of the ids
    iou = label_iou(reference, labels, k)
    assert sum(iou[perm[j], j] for j in range(k)) == pytest.approx(_brute_force(reference, labels, k))
    clean = relabel[reference]  # a pure relabelling is undone exactly
    assert np.array_equal(match_clusters(reference, clean, k)[clean], reference)


def test_matching_handles_empty_clusters() -> None:
    reference = np.array([[0, 0, 1, 1, 2, 2]])
    labels = np.array([[3, 3, 0, 0, 0, 0]])  # cluster 1 and 2 unused, 0 covers two reference clusters
    perm = match_clusters(reference, labels, 4)
    assert sorted(perm.tolist()) == [0, 1, 2, 3]
    assert perm[3] == 0 and perm[0] in (1, 2)
    rows, agreement = segment_rows([reference, labels], 4)
    assert rows[0] is reference and agreement[0] == 1.0 and 0 < agreement[1] < 1


# ------------------------------------------------------------------ the command
def test_two_encoders_one_picture_with_two_rows(video: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    single = _seg(tmp_path, video, "single", "--weights", TINY)
    capsys.readouterr()
    a, b = _random_export(tmp_path / "a.safetensors", 1), _random_export(tmp_path / "b.safetensors", 2)
    double = _seg(tmp_path, video, "double", "--weights", a, "--weights", b)
    printed = capsys.readouterr().out
    assert "2 rows" in printed and "b: mean IoU" in printed  # default titles: the files' stems
    one, two = _decode(single), _decode(double)
    assert len(two) == len(one) == 8
    assert two.shape[1] == 2 * one.shape[1] and two.shape[2] == one.shape[2]
    with Image.open(single.with_suffix(".png")) as s1, Image.open(double.with_suffix(".png")) as s2:
        assert s1.size == (4 * 240, 320)  # unchanged single layout: frames above one segmentation row
        assert s2.size[1] == 3 * 160  # frames, then one row per encoder
        assert s2.size[0] > 4 * 240  # plus a column of row titles


def test_same_weights_twice_give_identical_rows_and_nargs_form(video: Path, tmp_path: Path) -> None:
    out = _seg(tmp_path, video, "same", "--weights", TINY, TINY, "--labels", "A", "B")
    frames = _decode(out)
    h = frames.shape[1] // 2
    top, bottom = frames[:, :h], frames[:, h:]
    body = slice(h // 2, None)  # below the row titles, which differ
    assert np.abs(top[:, body].astype(int) - bottom[:, body].astype(int)).mean() < 1  # codec noise only
    with Image.open(out.with_suffix(".png")) as strip:
        arr = np.asarray(strip.convert("RGB")).astype(int)
    assert np.array_equal(arr[160:320, 200:], arr[320:480, 200:])  # the two encoder rows, right of the titles


def test_different_widths_share_one_colour_set(video: Path, tmp_path: Path) -> None:
    # ViT-Ti (192-d) against ViT-S (384-d): centres cannot be compared, masks can
    out = _seg(tmp_path, video, "widths", "--weights", TINY, "random:vit_small_patch16_224", "--labels", "Ti", "S")
    assert _decode(out).shape[1] == 2 * 64


def test_labels_count_must_match(video: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["show", "segment", "--weights", TINY, TINY, "--labels", "only-one", "--video", str(video),
               "-k", "3", "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert rc == 2 and "--labels: 1 name(s) for 2 --weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()
