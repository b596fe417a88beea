"""k-NN (DINO protocol): equals a brute-force computation; the command runs on an ImageFolder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_eval_fixtures import write_image_folder
from vidssl.cli.main import main
from vidssl.eval.knn import knn_evaluate


def brute_force_knn(train: np.ndarray, labels: np.ndarray, query: np.ndarray, k: int, T: float, C: int) -> np.ndarray:
    """Plain loops: cosine similarity to every train vector, sort, vote exp(s/T); returns (Q, C) scores."""
    scores = np.zeros((len(query), C))
    for qi, q in enumerate(query):
        sims = [float(q @ t / (np.linalg.norm(q) * np.linalg.norm(t))) for t in train]
        order = sorted(range(len(train)), key=lambda i: -sims[i])[:k]
        for i in order:
            scores[qi, labels[i]] += np.exp(sims[i] / T)
    return scores


@pytest.mark.parametrize("T", [0.07, 0.5])
def test_knn_equals_brute_force(T: float) -> None:
    rng = np.random.default_rng(0)
    C = 7
    centres = rng.normal(size=(C, 16))
    ytr = rng.integers(0, C, 120)
    yva = rng.integers(0, C, 40)
    xtr = centres[ytr] + 1.5 * rng.normal(size=(120, 16))
    xva = centres[yva] + 1.5 * rng.normal(size=(40, 16))
    ks = (1, 5, 20, 100)
    got = knn_evaluate(torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr), torch.tensor(xva, dtype=torch.float32),
                       torch.tensor(yva), ks, T, C)
    for k in ks:
        scores = brute_force_knn(xtr, ytr, xva, k, T, C)
        ranked = np.argsort(-scores, axis=1, kind="stable")
        top1 = 100 * np.mean(ranked[:, 0] == yva)
        voted = [[c for c in ranked[i, :5] if scores[i, c] > 0] for i in range(len(yva))]
        top5 = 100 * np.mean([yva[i] in voted[i] for i in range(len(yva))])
        assert got[f"top1@{k}"] == pytest.approx(top1), k
        assert got[f"top5@{k}"] == pytest.approx(top5), k
    assert 0 < got["top1@20"] < 100  # the data is neither trivial nor hopeless


def test_knn_command_writes_json_and_headline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_image_folder(tmp_path / "train", 5, 0)
    val = write_image_folder(tmp_path / "val", 3, 1)
    cache = tmp_path / "cache"
    args = ["eval", "knn", "--weights", "random:vit_tiny_patch16_224", "--train", str(train), "--val", str(val),
            "--image-size", "32", "--k", "1", "5", "20", "--num-workers", "0", "--cache-dir", str(cache)]
    assert main(args + ["--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("knn random:vit_tiny_patch16_224: top1@20=")
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["n_train"] == 15 and first["n_val"] == 9
    assert set(first["metrics"]) == {f"top{t}@{k}" for t in (1, 5) for k in (1, 5, 20)}
    assert first["metrics"]["top5@20"] == 100.0  # 3 classes, 15 voters: the true one always has votes
    assert len(list((cache / "features").glob("*.pt"))) == 2  # train and val features cached
    # a second run reads the cache and agrees; a different temperature reuses it too
    assert main(args + ["--json", str(tmp_path / "b.json"), "--temperature", "0.5"]) == 0
    assert len(list((cache / "features").glob("*.pt"))) == 2
    assert main(args + ["--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["metrics"] == first["metrics"]


def test_knn_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_image_folder(tmp_path / "train", 1, 0)
    assert main(["eval", "knn", "--weights", "random:vit_tiny_patch16_224", "--train", str(train),
                 "--val", str(tmp_path / "missing")]) == 2
    assert "image folder not found" in capsys.readouterr().err
    assert main(["eval", "knn", "--weights", str(tmp_path / "w.pth"), "--train", str(train), "--val", str(train)]) == 2
    assert "weights not found" in capsys.readouterr().err
    assert main(["eval", "knn", "--weights", "random:vit_tiny_patch16_224", "--train", str(train), "--val", str(train),
                 "--image-size", "40", "--no-cache"]) == 2
    assert "not a multiple of the patch size 16" in capsys.readouterr().err


def test_broken_image_is_a_one_line_error_from_workers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_image_folder(tmp_path / "train", 2, 0)
    (train / "disks" / "broken.png").write_bytes(b"not a png")
    assert main(["eval", "knn", "--weights", "random:vit_tiny_patch16_224", "--train", str(train), "--val", str(train),
                 "--image-size", "32", "--num-workers", "1", "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.png: cannot read image" in err
