"""Unsupervised k-means segmentation: matching against brute force, void handling, clustering, the command."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_eval_fixtures import write_davis, write_voc
from vidssl.cli.main import main
from vidssl.eval.unsup_seg import (cluster_maps, evaluate_clusters, match_and_score, standardize_pca)


def plain_miou(pred: np.ndarray, gt: np.ndarray, mapping: dict[int, int]) -> float:
    """Relabel clusters (unmapped -> 0) and average TP/(TP+FP+FN) over the GT classes present; 255 ignored."""
    keep = gt != 255
    mapped = np.array([mapping.get(int(p), 0) for p in pred[keep]])
    g = gt[keep]
    ious = []
    for c in sorted(set(g.tolist())):
        tp = np.sum((g == c) & (mapped == c))
        fp = np.sum((g != c) & (mapped == c))
        fn = np.sum((g == c) & (mapped != c))
        ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious))


def plain_iou(pred: np.ndarray, gt: np.ndarray, p: int, c: int) -> float:
    keep = gt != 255
    a, b = pred[keep] == p, gt[keep] == c
    return np.sum(a & b) / np.sum(a | b)


def _noisy_labels(rng: np.random.Generator, n_gt: int, k: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    gt = rng.integers(0, n_gt, n)
    perm = rng.permutation(k)
    pred = np.where(rng.random(n) < 0.6, perm[gt % k], rng.integers(0, k, n))  # informative but noisy
    gt[rng.random(n) < 0.1] = 255
    return pred, gt


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_equals_brute_force_over_permutations(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 4
    pred, gt = _noisy_labels(rng, k, k)
    classes = sorted(set(gt.tolist()) - {255})
    best = max(plain_miou(pred, gt, dict(zip(perm, classes))) for perm in itertools.permutations(range(k)))
    assert 100 * match_and_score(pred, gt) == pytest.approx(100 * best)


def test_hungarian_with_more_clusters_than_classes() -> None:
    rng = np.random.default_rng(7)
    pred, gt = _noisy_labels(rng, 3, 5)
    classes = sorted(set(gt.tolist()) - {255})
    # brute force: the injective class -> cluster map with the largest summed IoU; the rest -> background 0
    best = max(itertools.permutations(range(5), 3),
               key=lambda cl: sum(plain_iou(pred, gt, p, c) for p, c in zip(cl, classes)))
    expected = plain_miou(pred, gt, dict(zip(best, classes)))
    assert match_and_score(pred, gt) == pytest.approx(expected)


@pytest.mark.parametrize("precision_based", [False, True])
def test_many_to_one_equals_greedy(precision_based: bool) -> None:
    rng = np.random.default_rng(3)
    pred, gt = _noisy_labels(rng, 3, 9)
    classes = sorted(set(gt.tolist()) - {255})
    keep = gt != 255
    mapping = {}
    for p in range(9):
        if precision_based:
            scores = [np.sum((pred[keep] == p) & (gt[keep] == c)) / np.sum(pred[keep] == p) for c in classes]
        else:
            scores = [plain_iou(pred, gt, p, c) for c in classes]
        mapping[p] = classes[int(np.argmax(scores))]
    expected = plain_miou(pred, gt, mapping)
    assert match_and_score(pred, gt, many_to_one=True, precision_based=precision_based) == pytest.approx(expected)
    # over-clustering can only help relative to one-to-one matching here
    assert expected >= match_and_score(pred, gt) - 1e-9


def test_void_pixels_are_ignored() -> None:
    rng = np.random.default_rng(1)
    pred, gt = _noisy_labels(rng, 3, 3)
    other = pred.copy()
    other[gt == 255] = rng.integers(0, 3, int(np.sum(gt == 255)))
    assert match_and_score(pred, gt) == match_and_score(other, gt)
    perfect = gt.copy()
    perfect[gt == 255] = 1
    assert match_and_score((perfect + 1) % 3, gt) == 1.0  # cluster ids are arbitrary


def test_standardize_pca_is_the_affine_map_it_returns() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(500, 80)) @ rng.normal(size=(80, 80))).astype(np.float32) + 5
    A, b, y = standardize_pca(x, 10)
    assert y.shape == (500, 10)
    np.testing.assert_allclose(x @ A + b, y, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-3)
    var = y.var(0)
    assert np.all(np.diff(var) <= 1e-3)  # leading components first
    cov = np.cov(y.T)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-2 * var.max())
    z = (x - x.mean(0)) / x.std(0)  # PCA keeps the 10 largest variances of the standardised data
    top = np.sort(np.linalg.svd(z, compute_uv=False) ** 2 / 500)[::-1][:10]
    np.testing.assert_allclose(np.sort(var)[::-1], top, rtol=1e-3)


def test_cluster_maps_separates_distinct_features() -> None:
    g = torch.Generator().manual_seed(0)
    lab = torch.zeros(2, 8, 8, dtype=torch.long)
    lab[0, :4] = 1
    lab[1, :, 4:] = 2
    centres = torch.randn(3, 24, generator=g) * 4
    maps = [centres[l].permute(2, 0, 1) + 0.1 * torch.randn(24, 8, 8, generator=g) for l in lab]
    preds = cluster_maps(maps, 3, (8, 8))
    assert match_and_score(np.stack(preds), lab.numpy()) == 1.0
    # one k-means over both maps: the shared class (0) has the same cluster id in both
    assert preds[0][7, 0] == preds[1][0, 0]
    r = evaluate_clusters(maps, list(lab.numpy()), ["a", "a"], "clip")
    assert r["mIoU"] == 100.0 and r["units"] == 1


def test_unsup_seg_command_voc_and_davis(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    voc = write_voc(tmp_path / "voc", n=3)
    js = tmp_path / "v.json"
    common = ["--weights", "random:vit_tiny_patch16_224", "--input-size", "32", "--eval-size", "32",
              "--num-workers", "0", "--cache-dir", str(tmp_path / "c")]
    assert main(["eval", "unsup-seg", "--data", str(voc), "--layout", "voc", *common, "--json", str(js)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("unsup-seg random:vit_tiny_patch16_224 (voc, K=#GT): frame-wise mIoU=")
    r = json.loads(js.read_text())
    assert set(r["metrics"]) == {"frame", "dataset"} and r["metrics"]["frame"]["units"] == 3
    assert all(0 <= m["mIoU"] <= 100 for m in r["metrics"].values())
    davis = write_davis(tmp_path / "davis", n_frames=4, names=("a", "b"))
    assert main(["eval", "unsup-seg", "--data", str(davis), "--layout", "davis", *common, "--protocol", "clip",
                 "--num-clusters", "6", "--many-to-one", "--json", str(js)]) == 0
    r = json.loads(js.read_text())
    assert r["metrics"]["clip"]["units"] == 2 and r["many_to_one"]
    capsys.readouterr()
    assert main(["eval", "unsup-seg", "--data", str(voc), "--layout", "voc", *common, "--protocol", "clip"]) == 2
    assert "--layout davis" in capsys.readouterr().err


def test_subsampled_kmeans_still_assigns_every_pixel() -> None:
    g = torch.Generator().manual_seed(1)
    lab = torch.zeros(4, 8, 8, dtype=torch.long)
    lab[:, :, 4:] = 1
    lab[:, 6:] = 2
    centres = torch.randn(3, 24, generator=g) * 4
    maps = [centres[l].permute(2, 0, 1) + 0.1 * torch.randn(24, 8, 8, generator=g) for l in lab]
    full = cluster_maps(maps, 3, (16, 16))
    sampled = cluster_maps(maps, 3, (16, 16), max_train_points=60)  # 15 of 256 pixels per map for training
    gt = np.stack([np.kron(l.numpy(), np.ones((2, 2), int)) for l in lab])
    assert match_and_score(np.stack(sampled), gt) == pytest.approx(match_and_score(np.stack(full), gt), abs=0.02)
    assert match_and_score(np.stack(sampled), gt) > 0.9
