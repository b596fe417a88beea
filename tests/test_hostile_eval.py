"""Hostile but realistic input to the evaluations (issue 17, eval parts): names from dataset files
that escape the output folder, outputs that cannot be written, a DAVIS sequence with nothing to
track, empty classes, non-finite weights. Each gives one line (an error with exit 2, or a
warning) naming the file or the sequence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from test_eval_fixtures import write_davis, write_image_folder, write_voc
from vidssl.cli.main import main
from vidssl.eval.palette import read_label_png, write_indexed_png

TINY = "random:vit_tiny_patch16_224"
DAVIS_ARGS = ["--weights", TINY, "--resolution", "64"]
KNN_ARGS = ["--weights", TINY, "--image-size", "32", "--k", "1", "5", "--num-workers", "0", "--no-cache"]


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("name", ["../escape", "../../../escape", "ABSOLUTE", "sub/seq", "..", "a\\b"])
def test_davis_sequence_name_escaping_the_output_is_an_error(name: str, tmp_path: Path, capsys) -> None:
    root = write_davis(tmp_path / "data" / "davis", n_frames=3)
    name = str(tmp_path / "abs_escape") if name == "ABSOLUTE" else name
    for kind in ("JPEGImages", "Annotations"):  # the sequence's files exist: only the name check can stop it
        shutil.copytree(root / kind / "480p" / "shapes", root / kind / "480p" / name, dirs_exist_ok=True)
    listing = root / "ImageSets" / "2017" / "val.txt"
    listing.write_text(f"shapes\n{name}\n")
    out = tmp_path / "data" / "out" / "masks"
    before = sorted(tmp_path.rglob("*"))
    assert main(["eval", "davis", *DAVIS_ARGS, "--davis", str(root), "--out", str(out)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("vidssl: error: ") and str(listing) in err and repr(name) in err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside the output or outside it


def test_voc_image_id_escaping_is_an_error(tmp_path: Path, capsys) -> None:
    voc = write_voc(tmp_path / "voc", n=2)
    listing = voc / "ImageSets" / "Segmentation" / "val.txt"
    listing.write_text("2007_000000\n../JPEGImages/2007_000001\n")
    assert main(["eval", "unsup-seg", "--weights", TINY, "--data", str(voc), "--layout", "voc",
                 "--input-size", "32", "--eval-size", "32", "--num-workers", "0", "--no-cache"]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(listing) in err and "'../JPEGImages/2007_000001'" in err and "image id" in err


def test_class_folder_with_a_separator_is_an_error(tmp_path: Path, capsys) -> None:
    train = write_image_folder(tmp_path / "train", 1, 0)
    (train / "boxes").rename(train / "a\\boxes")
    assert main(["eval", "knn", *KNN_ARGS, "--train", str(train), "--val", str(train)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert str(train) in err and "class folder" in err and "boxes" in err


def test_json_that_cannot_be_written_prints_results_then_one_line(tmp_path: Path, capsys) -> None:
    train = write_image_folder(tmp_path / "train", 2, 0)
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected")
    target = blocker / "knn.json"
    assert main(["eval", "knn", *KNN_ARGS, "--train", str(train), "--val", str(train), "--json", str(target)]) == 2
    cap = capsys.readouterr()
    err = _one_line(cap.err)
    assert err.startswith("vidssl: error: cannot write ") and str(blocker) in err
    out = cap.out.strip().splitlines()
    assert out[-1].startswith(f"knn {TINY}: top1@1=")  # the headline, after the full results
    shown = json.loads("\n".join(out[:-1]))
    assert shown["eval"] == "knn" and set(shown["metrics"]) == {"top1@1", "top5@1", "top1@5", "top5@5"}
    assert blocker.read_text() == "a file where a folder is expected"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_davis_out_that_is_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    root = write_davis(tmp_path / "davis", n_frames=3)
    out = tmp_path / "masks"
    out.write_text("")
    assert main(["eval", "davis", *DAVIS_ARGS, "--davis", str(root), "--out", str(out)]) == 2
    err = _one_line(capsys.readouterr().err)
    assert "cannot write" in err and str(out) in err


def _blank_first_frame(root: Path, name: str) -> Path:
    first = root / "Annotations" / "480p" / name / "00000.png"
    write_indexed_png(first, read_label_png(first) * 0)
    return first


def test_davis_sequence_with_an_all_background_first_frame_is_unscored(tmp_path: Path, capsys) -> None:
    root = write_davis(tmp_path / "davis", n_frames=4, names=("a", "b"))
    first = _blank_first_frame(root, "b")
    js, alone = tmp_path / "d.json", tmp_path / "a.json"
    assert main(["eval", "davis", *DAVIS_ARGS, "--davis", str(root), "--json", str(js)]) == 0
    cap = capsys.readouterr()
    err = _one_line(cap.err)
    assert err.startswith("vidssl: warning: ") and "'b'" in err and str(first) in err
    assert "1 unscored" in cap.out.strip().splitlines()[-1]
    m = json.loads(js.read_text())["metrics"]
    assert m["unscored_sequences"] == ["b"] and "no object" in m["unscored_reasons"]["b"]
    assert set(m["sequences"]) == {"a"} and m["objects"] == 2
    assert main(["eval", "davis", *DAVIS_ARGS, "--davis", str(root), "--sequences", "a", "--json", str(alone)]) == 0
    capsys.readouterr()
    assert m["J&F-mean"] == json.loads(alone.read_text())["metrics"]["J&F-mean"]  # a number, b left out
    # only sequences without objects: one-line error, not NaN
    _blank_first_frame(root, "a")
    assert main(["eval", "davis", *DAVIS_ARGS, "--davis", str(root)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("vidssl: error: no sequence") and "a: first-frame" in lines[-1]


@pytest.mark.parametrize("command", ["knn", "linear"])
def test_empty_train_class_is_a_warning(command: str, tmp_path: Path, capsys) -> None:
    train, val = write_image_folder(tmp_path / "train", 2, 0), write_image_folder(tmp_path / "val", 1, 1)
    (train / "zebras").mkdir()
    (val / "zebras").mkdir()
    write_image_folder(tmp_path / "more", 1, 2)
    (tmp_path / "more" / "boxes" / "img000.png").rename(val / "zebras" / "img000.png")
    extra = ["--epochs", "1", "--mode", "fast", "--train-batch-size", "4"] if command == "linear" else []
    args = ["eval", command, *KNN_ARGS, "--train", str(train), "--val", str(val), *extra]
    if command == "linear":
        args.remove("--k"), args.remove("1"), args.remove("5")
    assert main(args) == 0
    err = _one_line(capsys.readouterr().err)
    assert err.startswith("vidssl: warning: ") and str(train / "zebras") in err and "no images" in err


def test_non_finite_weights_are_a_warning(tmp_path: Path, capsys) -> None:
    from vidssl.hub import export_encoder, load_encoder

    vit = load_encoder(TINY)
    with torch.no_grad():
        vit.norm.weight[0] = float("nan")  # every feature gets one NaN coordinate
    weights = export_encoder(vit, tmp_path / "nan.safetensors")
    train = write_image_folder(tmp_path / "train", 1, 0)
    assert main(["eval", "knn", *[a if a != TINY else str(weights) for a in KNN_ARGS],
                 "--train", str(train), "--val", str(train)]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(ln.startswith("vidssl: warning: ") for ln in lines)
    assert str(weights) in lines[0] and "1 of" in lines[0] and "not finite" in lines[0]
    assert any("non-finite features" in ln and str(train) in ln for ln in lines[1:])
