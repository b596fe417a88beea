"""The library entry points: each `vidssl.eval.evaluate_*` returns exactly the dict that
`vidssl eval ... --json` writes for the same inputs, accepts a module as well as a weights
string, and gets real numbers right on data with a known answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_eval_fixtures import COLOURS, MeanColourViT, write_davis, write_image_folder, write_voc
from vidssl.cli.main import main

TINY = "random:vit_tiny_patch16_224"


def _cli_json(tmp_path: Path, args: list[str]) -> dict:
    js = tmp_path / "cli.json"
    assert main([*args, "--json", str(js)]) == 0
    return json.loads(js.read_text())


def _colour_folder(root: Path, per_class: int, seed: int) -> Path:
    """ImageFolder whose classes are the object colours: separable by a mean-colour feature."""
    rng = np.random.default_rng(seed)
    for label, rgb in COLOURS.items():
        (root / f"colour{label}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.clip(np.array(rgb, np.float32) + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"colour{label}" / f"{i:03d}.png")
    return root


def test_import_is_light_and_lazy() -> None:
    code = ("import sys; from vidssl.eval import evaluate_knn; "
            "assert 'vidssl.eval.davis' not in sys.modules and 'vidssl.eval.linear' not in sys.modules; "
            "bad = [m for m in sys.modules if m.startswith(('vidssl.engine', 'vidssl.methods', 'vidssl.cli'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_evaluate_knn_equals_the_command_and_separates_colours(tmp_path: Path) -> None:
    from vidssl.eval import evaluate_knn

    train, val = write_image_folder(tmp_path / "train", 4, 0), write_image_folder(tmp_path / "val", 2, 1)
    cache = tmp_path / "cache"
    written = _cli_json(tmp_path, ["eval", "knn", "--weights", TINY, "--train", str(train), "--val", str(val),
                                   "--image-size", "32", "--k", "1", "5", "20", "--num-workers", "0",
                                   "--cache-dir", str(cache)])
    got = evaluate_knn(TINY, train, val, k=(1, 5, 20), image_size=32, num_workers=0, cache_dir=cache)
    assert got == written
    assert json.loads(json.dumps(got)) == got  # plain JSON values
    # a module works too (not cached: a module has no weights id), and the numbers are real
    tr, va = _colour_folder(tmp_path / "ctrain", 5, 0), _colour_folder(tmp_path / "cval", 3, 1)
    r = evaluate_knn(MeanColourViT(8), tr, va, k=(1, 5), image_size=32, num_workers=0, cache_dir=tmp_path / "c2")
    assert r["weights"] == "module:MeanColourViT" and r["n_train"] == 15 and r["n_val"] == 9
    assert r["metrics"]["top1@1"] == 100.0 and r["metrics"]["top1@5"] == 100.0
    assert not (tmp_path / "c2").exists()


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_evaluate_linear_equals_the_command(mode: str, tmp_path: Path) -> None:
    from vidssl.eval import evaluate_linear

    train, val = write_image_folder(tmp_path / "train", 3, 0), write_image_folder(tmp_path / "val", 2, 1)
    written = _cli_json(tmp_path, ["eval", "linear", "--weights", TINY, "--train", str(train), "--val", str(val),
                                   "--mode", mode, "--epochs", "2", "--image-size", "32", "--num-workers", "0",
                                   "--train-batch-size", "4", "--no-cache"])
    got = evaluate_linear(TINY, train, val, mode=mode, epochs=2, image_size=32, num_workers=0,
                          train_batch_size=4, cache=False)
    assert got == written and got["metrics"]["epochs"] == 2


def test_evaluate_davis_equals_the_command_and_tracks_objects(tmp_path: Path) -> None:
    from vidssl.eval import evaluate_davis

    root = write_davis(tmp_path / "davis", n_frames=4, names=("a", "b"))
    written = _cli_json(tmp_path, ["eval", "davis", "--weights", TINY, "--davis", str(root), "--resolution", "64",
                                   "--out", str(tmp_path / "cli_out")])
    got = evaluate_davis(TINY, root, resolution=64, out=tmp_path / "cli_out")
    assert got == written
    assert got["params"]["n_last"] == 7 and got["metrics"]["unscored_sequences"] == []
    r = evaluate_davis(MeanColourViT(4), write_davis(tmp_path / "d2", n_frames=6), resolution=64,
                       long_multiple=32, radius=4, out=tmp_path / "masks")
    assert r["metrics"]["J-mean"] > 80 and r["metrics"]["objects"] == 2
    assert len(list((tmp_path / "masks" / "shapes").glob("*.png"))) == 6


def test_evaluate_unsup_seg_equals_the_command(tmp_path: Path) -> None:
    from vidssl.eval import evaluate_unsup_seg

    voc = write_voc(tmp_path / "voc", n=3)
    common = ["--input-size", "32", "--eval-size", "32", "--num-workers", "0", "--cache-dir", str(tmp_path / "c")]
    written = _cli_json(tmp_path, ["eval", "unsup-seg", "--weights", TINY, "--data", str(voc), "--layout", "voc",
                                   *common])
    got = evaluate_unsup_seg(TINY, voc, "voc", input_size=32, eval_size=32, num_workers=0, cache_dir=tmp_path / "c")
    assert got == written and set(got["metrics"]) == {"frame", "dataset"}
    # the colour encoder segments the fixture's disks and boxes almost perfectly, frame by frame
    r = evaluate_unsup_seg(MeanColourViT(4), voc, "voc", protocols=["frame"], input_size=64, eval_size=64,
                           num_workers=0)
    assert r["metrics"]["frame"]["mIoU"] > 80
