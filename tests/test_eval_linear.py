"""Linear probe: DINO's input features, training on fixed features, both command modes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_eval_fixtures import write_image_folder
from vidssl.cli.main import main
from vidssl.eval.features import last_blocks_features
from vidssl.eval.linear import linear_probe_on_features, make_classifier
from vidssl.hub import load_encoder


def test_last_blocks_features_match_manual_forward() -> None:
    vit = load_encoder("random:vit_tiny_patch16_224")
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        outs = []
        for blk in vit.blocks:
            t = blk(t)
            outs.append(t)
        expected = torch.cat([vit.norm(o)[:, 0] for o in outs[-4:]], dim=-1)
        got = last_blocks_features(vit, x, 4)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        with_avg = last_blocks_features(vit, x, 1, avgpool=True)
        torch.testing.assert_close(with_avg, torch.cat([vit.norm(outs[-1])[:, 0], vit.norm(outs[-1])[:, 1:].mean(1)], -1),
                                   rtol=1e-5, atol=1e-5)
    assert got.shape == (2, 4 * 192)


def test_classifier_init_is_dino() -> None:
    torch.manual_seed(0)
    layer = make_classifier(2000, 50)
    assert torch.all(layer.bias == 0)
    assert layer.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_probe_learns_separable_and_not_random_labels() -> None:
    g = torch.Generator().manual_seed(0)
    C, D = 5, 32
    centres = 3 * torch.randn(C, D, generator=g)
    ytr, yva = torch.randint(0, C, (200,), generator=g), torch.randint(0, C, (100,), generator=g)
    xtr = centres[ytr] + 0.5 * torch.randn(200, D, generator=g)
    xva = centres[yva] + 0.5 * torch.randn(100, D, generator=g)
    m = linear_probe_on_features(xtr, ytr, xva, yva, C, epochs=10, batch_size=32, base_lr=0.5)
    assert m["best_top1"] == 100.0 and m["last_top1"] == 100.0
    assert m["lr"] == pytest.approx(0.5 * 32 / 256)
    # labels unrelated to the features: validation stays near chance (20 %)
    shuffled = linear_probe_on_features(xtr, ytr[torch.randperm(200, generator=g)], xva, yva, C,
                                        epochs=10, batch_size=32, base_lr=0.5)
    assert shuffled["last_top1"] < 50.0
    # deterministic for a seed
    again = linear_probe_on_features(xtr, ytr, xva, yva, C, epochs=3, batch_size=32, base_lr=0.05, seed=3)
    assert again == linear_probe_on_features(xtr, ytr, xva, yva, C, epochs=3, batch_size=32, base_lr=0.05, seed=3)


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_linear_command(mode: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_image_folder(tmp_path / "train", 4, 0)
    val = write_image_folder(tmp_path / "val", 2, 1)
    js = tmp_path / "lin.json"
    assert main(["eval", "linear", "--weights", "random:vit_tiny_patch16_224", "--train", str(train), "--val", str(val),
                 "--mode", mode, "--epochs", "3", "--image-size", "32", "--num-workers", "0",
                 "--train-batch-size", "8", "--cache-dir", str(tmp_path / "c"), "--json", str(js)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"linear[{mode}] random:vit_tiny_patch16_224: best top1=")
    r = json.loads(js.read_text())
    assert r["mode"] == mode and r["n_last_blocks"] == 4 and r["metrics"]["epochs"] == 3
    assert 0 <= r["metrics"]["last_top1"] <= r["metrics"]["best_top1"] <= 100
    assert 1 <= r["metrics"]["best_epoch"] <= 3
