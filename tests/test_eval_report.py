"""`vidssl eval report`: a suite of evaluations for several encoders. Its numbers are those of the
evaluations called directly (and their features the same cache entries), a failing evaluation
fills its cells with its error while the others go on, and a bad suite is one line up front."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from test_eval_fixtures import write_image_folder, write_voc
from vidssl.cli.main import main
from vidssl.errors import VidsslError

TINY, SMALL = "random:vit_tiny_patch16_224", "random:vit_small_patch16_224"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_data")
    return {"train": write_image_folder(root / "train", 3, 0), "val": write_image_folder(root / "val", 2, 1),
            "voc": write_voc(root / "voc", n=4, size=48)}


def _knn_args(data: dict[str, Path], **extra) -> dict:
    return {"train": str(data["train"]), "val": str(data["val"]), "image_size": 32, "k": [1, 5], "num_workers": 0,
            **extra}


def _seg_args(data: dict[str, Path]) -> dict:
    return {"data": str(data["voc"]), "layout": "voc", "input_size": 32, "eval_size": 32, "num_workers": 0}


def _write_suite(path: Path, items: list) -> Path:
    path.write_text(yaml.safe_dump(items))
    return path


def test_report_equals_the_evaluations_called_directly(data, tmp_path: Path, capsys, monkeypatch) -> None:
    from vidssl.eval import evaluate_knn, evaluate_unsup_seg

    suite = _write_suite(tmp_path / "suite.yaml", [
        {"eval": "knn", "args": _knn_args(data)},  # headline: top1@1 (no k = 20)
        {"eval": "unsup-seg", "name": "voc-seg", "args": _seg_args(data)},
    ])
    cache, out = tmp_path / "cache", tmp_path / "out"
    assert main(["eval", "report", "--weights", TINY, "--weights", SMALL, "--suite", str(suite), "--out", str(out),
                 "--cache-dir", str(cache)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("report: 2 evaluations x 2 encoders, 4/4 succeeded -> ")

    # the direct calls read the report's cache entries: computing a feature now would fail
    def no_compute(*a, **k):
        raise AssertionError("features recomputed: the report did not share the cache")

    monkeypatch.setattr("vidssl.eval.features.compute_features", no_compute)
    monkeypatch.setattr("vidssl.eval.unsup_seg.compute_features", no_compute)
    direct = {w: {"knn": evaluate_knn(w, **_knn_args(data), cache_dir=cache),
                  "voc-seg": evaluate_unsup_seg(w, **_seg_args(data), cache_dir=cache)} for w in (TINY, SMALL)}

    rep = json.loads((out / "report.json").read_text())
    assert rep["weights"] == [TINY, SMALL] and rep["errors"] == {}
    for w in (TINY, SMALL):
        assert rep["results"]["knn"][w] == direct[w]["knn"]
        assert rep["results"]["voc-seg"][w] == direct[w]["voc-seg"]
    expected = [("knn", "top1@1", lambda r: r["knn"]["metrics"]["top1@1"]),
                ("voc-seg", "frame/mIoU", lambda r: r["voc-seg"]["metrics"]["frame"]["mIoU"]),
                ("voc-seg", "dataset/mIoU", lambda r: r["voc-seg"]["metrics"]["dataset"]["mIoU"])]
    assert [(r["evaluation"], r["metric"]) for r in rep["table"]] == [(e, m) for e, m, _ in expected]
    md = (out / "report.md").read_text()
    for row, (name, key, get) in zip(rep["table"], expected):
        vals = {w: get(direct[w]) for w in (TINY, SMALL)}
        assert row["values"] == vals
        assert row["best"] == [w for w in (TINY, SMALL) if vals[w] == max(vals.values())]
        cells = [f"**{vals[w]:.2f}**" if w in row["best"] else f"{vals[w]:.2f}" for w in (TINY, SMALL)]
        assert f"| {name} | {key} | {cells[0]} | {cells[1]} |" in md
    assert f"- `{TINY}`" in md and "`knn`(" in md  # the encoders and the suite are listed
    with Image.open(out / "report.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and np.asarray(im.convert("L")).std() > 0


def _boom(encoder, data):  # an evaluation that crashes with a non-vidssl exception
    raise RuntimeError("kernel exploded\nsecond line")


def test_a_failing_evaluation_is_reported_in_its_cells_and_the_rest_runs(data, tmp_path: Path, monkeypatch) -> None:
    from vidssl.eval import evaluate_unsup_seg
    from vidssl.eval import suite as S

    monkeypatch.setitem(S.EVALS, "track", S.EvalSpec("test_eval_report:_boom", ("data",), lambda a: ["AO"]))
    monkeypatch.setitem(S.EVALS, "objdisc", S.EvalSpec("vidssl.eval.no_such_module:evaluate_objdisc",
                                                       ("data", "layout"), lambda a: ["CorLoc"]))
    items = S.parse_suite([
        {"eval": "knn", "name": "bad-path", "args": _knn_args(data, train=str(tmp_path / "missing"))},
        {"eval": "track", "args": {"data": "x"}},
        {"eval": "objdisc", "args": {"data": "x", "layout": "voc07"}},  # module absent: checked at run time
        {"eval": "unsup-seg", "args": _seg_args(data)},
    ], "suite")
    report = S.run_suite([TINY], items, cache=False, progress=False)
    assert set(report.errors) == {"bad-path", "track", "objdisc"}
    assert report.errors["bad-path"][TINY] == f"image folder not found: {tmp_path / 'missing'}"
    assert report.errors["track"][TINY] == "RuntimeError: kernel exploded"
    assert report.errors["objdisc"][TINY].startswith("ModuleNotFoundError: No module named 'vidssl.eval.no_such")
    direct = evaluate_unsup_seg(TINY, **_seg_args(data), cache=False)
    assert report.results["unsup-seg"][TINY] == direct

    paths = S.write_report(report, tmp_path / "out")
    md = paths["md"].read_text()
    assert f"| bad-path | top1@1 | error: image folder not found: {tmp_path / 'missing'} |" in md
    assert "| track | AO | error: RuntimeError: kernel exploded |" in md
    assert f"| unsup-seg | frame/mIoU | {direct['metrics']['frame']['mIoU']:.2f} |" in md  # one encoder: no bold
    rep = json.loads(paths["json"].read_text())
    assert rep["errors"]["track"] == {TINY: "RuntimeError: kernel exploded"}
    assert rep["table"][0]["values"] == {TINY: None}
    assert paths["png"].stat().st_size > 0

    # a metric key the result lacks is that cell's error, listing the keys it has
    items = S.parse_suite([{"eval": "unsup-seg", "args": _seg_args(data), "metrics": ["frame/mIoU", "nope"]}], "s")
    report = S.run_suite([TINY], items, cache=False, progress=False)
    rows = report.rows()
    assert rows[0]["values"][TINY] == direct["metrics"]["frame"]["mIoU"]
    assert rows[1]["errors"][TINY].startswith("no metric 'nope' in the result; available: frame/mIoU, frame/units")


def test_cli_exit_status_with_a_failed_cell(data, tmp_path: Path, capsys) -> None:
    suite = _write_suite(tmp_path / "s.yaml", [{"eval": "knn", "args": _knn_args(data, val=str(tmp_path / "no"))}])
    assert main(["eval", "report", "--weights", TINY, "--suite", str(suite), "--out", str(tmp_path / "o"),
                 "--no-cache"]) == 1
    out = capsys.readouterr().out
    assert "error: image folder not found" in out and "0/1 succeeded" in out.splitlines()[-1]
    assert (tmp_path / "o" / "report.md").exists() and (tmp_path / "o" / "report.png").exists()


@pytest.mark.parametrize("items, message", [
    ({"eval": "knn"}, "a suite is a non-empty YAML list"),
    ([], "a suite is a non-empty YAML list"),
    (["knn"], "evaluation 1: expected a mapping"),
    ([{"eval": "knnn", "args": {}}], "evaluation 1: eval 'knnn' is not one of knn, linear, davis, unsup-seg"),
    ([{"eval": "knn", "args": {"train": "a"}}], "evaluation 1 (knn): missing args: val"),
    ([{"eval": "unsup-seg", "args": {"data": "a"}}], "evaluation 1 (unsup-seg): missing args: layout"),
    ([{"eval": "knn", "args": {"train": "a", "val": "b", "kk": 3}}], "evaluation 1 (knn): unknown args kk; valid: "),
    ([{"eval": "knn", "arg": {}}], "evaluation 1: unknown keys arg; valid: eval, name, args, metrics"),
    ([{"eval": "knn", "args": ["a"]}], "args must be a mapping"),
    ([{"eval": "knn", "args": {"train": "a", "val": "b", "weights_id": "x"}}], "args weights_id are set by the"),
    ([{"eval": "knn", "args": {"train": "a", "val": "b"}, "metrics": "top1@20"}], "metrics must be a non-empty list"),
    ([{"eval": "davis", "args": {"davis": "a"}}, {"eval": "davis", "name": "davis", "args": {"davis": "b"}}],
     "evaluation 2 (davis): name 'davis' is used by another evaluation"),
])
def test_suite_errors_are_one_line(items, message: str, tmp_path: Path, capsys) -> None:
    from vidssl.eval.suite import load_suite

    path = _write_suite(tmp_path / "bad.yaml", items)
    with pytest.raises(VidsslError) as e:
        load_suite(path)
    assert message in str(e.value) and str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)
    assert main(["eval", "report", "--weights", TINY, "--suite", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()  # checked before anything runs


def test_unreadable_suites_and_repeated_evaluations(tmp_path: Path) -> None:
    from vidssl.eval.suite import load_suite, parse_suite, run_suite

    bad = tmp_path / "bad.yaml"
    bad.write_text("- eval: knn\n  args: {train: [\n")
    with pytest.raises(VidsslError, match=r"not valid YAML") as e:
        load_suite(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(VidsslError, match="suite .*nope.yaml: "):
        load_suite(tmp_path / "nope.yaml")
    items = parse_suite([{"eval": "davis", "args": {"davis": "a"}}, {"eval": "davis", "args": {"davis": "b"}}])
    assert [i.name for i in items] == ["davis", "davis#2"] and items[0].metrics == ["J&F-mean"]
    with pytest.raises(VidsslError, match="given twice"):
        run_suite([TINY, TINY], items)
