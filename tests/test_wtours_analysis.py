"""`vidssl analyze` on generated videos whose answers are known: a lightness fade of a set
slope, hard cuts at set frames, a frozen stretch and a black tail at set frames."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from vidssl.cli.main import main
from vidssl.data.writer import moving_frames, write_video
from vidssl.wtours.analyze import AnalyzeOptions, analyze_input, auto_rates
from vidssl.wtours.lightness import mean_lightness
from vidssl.wtours.source import open_inputs

pytest.importorskip("scenedetect", reason="cut detection needs the `scenes` extra (PySceneDetect)")
from vidssl.wtours.cuts import CutDetector  # noqa: E402

W, H = 64, 48
CUT_FPS, CUT_FRAMES, CUTS_AT = 20, 140, (25, 60, 100)
FADE_FPS, FADE_SECONDS = 10, 10.0
# tail video: moving, frozen [30, 90), moving, black [120, 150) at 10 fps (6 s frozen, 3 s black)
TAIL_FPS, TAIL_FRAMES, FROZEN, BLACK_FROM = 10, 150, (30, 90), 120
SCENE_COLOURS = ((200, 60, 40), (40, 160, 220), (230, 220, 60), (90, 40, 160))


def cut_frames(n: int = CUT_FRAMES, cuts=CUTS_AT):
    """Smooth drifting patterns, one colour per shot: only the shot changes are cuts."""
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(n):
        shot = sum(i >= c for c in cuts)
        pattern = 0.5 + 0.5 * np.sin((xx + 0.5 * i) / 6.0 + shot) * np.cos(yy / 5.0 + shot)
        yield (np.array(SCENE_COLOURS[shot]) * (0.6 + 0.4 * pattern[..., None])).clip(0, 255).astype(np.uint8)


def srgb_of_lightness(l_star: float) -> float:
    """Inverse of CIE L* for a grey, written out here independently of the package: L* -> Y -> sRGB 0-255."""
    f = (l_star + 16.0) / 116.0
    y = f ** 3 if f > 6 / 29 else 3 * (6 / 29) ** 2 * (f - 4 / 29)
    v = 12.92 * y if y <= 0.0031308 else 1.055 * y ** (1 / 2.4) - 0.055
    return 255.0 * v


def fade_frames(l_from: float, l_to: float, fps: int = FADE_FPS, seconds: float = FADE_SECONDS):
    """Grey frames whose L* moves linearly from `l_from` to `l_to`, with a faint +-4 checker so
    they are not flat (flat frames count as blank)."""
    n = int(fps * seconds)
    checker = (np.indices((H, W)).sum(0) % 2 * 8 - 4)[..., None]
    for i in range(n):
        v = srgb_of_lightness(l_from + (l_to - l_from) * i / (n - 1))
        yield np.clip(np.round(v) + checker, 0, 255).astype(np.uint8).repeat(3, axis=2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wtours_videos")
    out = {"cuts": root / "cuts.mp4", "fade_up": root / "fade_up.mp4", "fade_down": root / "fade_down.mp4",
           "tail": root / "tail.mp4"}
    write_video(out["cuts"], cut_frames(), fps=CUT_FPS)
    write_video(out["fade_up"], fade_frames(30, 70), fps=FADE_FPS)
    write_video(out["fade_down"], fade_frames(70, 30), fps=FADE_FPS)
    write_video(out["tail"], moving_frames(TAIL_FRAMES, W, H, black_from=BLACK_FROM, frozen=FROZEN), fps=TAIL_FPS)
    return out


def _analyze(path: Path, **kw) -> dict:
    (inp,) = open_inputs(path)
    return analyze_input(inp, None, AnalyzeOptions(**kw), progress=False)


def test_lightness_is_cie_lstar() -> None:
    # reference values of CIE L* for sRGB colours (D65): black 0, white 100, grey 119 ~ 50.0, red 53.24
    for rgb, want in (((0, 0, 0), 0.0), ((255, 255, 255), 100.0), ((119, 119, 119), 50.02), ((255, 0, 0), 53.24)):
        assert mean_lightness(np.full((4, 4, 3), rgb, np.uint8)) == pytest.approx(want, abs=0.05)


@pytest.mark.parametrize("which, slope", [("fade_up", 240.0), ("fade_down", -240.0)])
def test_lightness_trend_of_a_fade(videos, which: str, slope: float) -> None:
    # 40 L* over 9.9 s between first and last frame: 242 L*/min
    slope = slope * FADE_SECONDS / (FADE_SECONDS - 1 / FADE_FPS)
    r = _analyze(videos[which], sample_fps=2.0, smooth_seconds=2.0)
    light = r["lightness"]
    assert len(light["times"]) == pytest.approx(FADE_SECONDS * 2, abs=1)  # sampled at the asked rate
    assert np.sign(light["trend_per_min"]) == np.sign(slope)
    assert light["trend_per_min"] == pytest.approx(slope, rel=0.05)
    assert light["range"] == pytest.approx(40.0, abs=2.0)
    # the smoothed rate of change has the fade's sign everywhere away from the ends
    rate = np.asarray(light["rate_per_min"])[3:-3]
    assert (np.sign(rate) == np.sign(slope)).all()
    assert r["cuts"]["count"] == 0  # a fade is no cut


def test_hard_cuts_found_within_one_frame(videos) -> None:
    r = _analyze(videos["cuts"])
    found = r["cuts"]["frames"]
    assert len(found) == len(CUTS_AT), found
    for want, got in zip(CUTS_AT, found):
        assert abs(got - want) <= 1, (want, found)
    assert r["cuts"]["per_hour"] == pytest.approx(3 / (CUT_FRAMES / CUT_FPS / 3600))
    assert r["cuts"]["times"][0] == pytest.approx(found[0] / CUT_FPS)


def test_cut_detector_takes_an_integer_frame_rate() -> None:
    # PySceneDetect 0.7 refuses an int fps in its timecodes: the detector must accept one
    d = CutDetector(CUT_FPS)
    for i, rgb in enumerate(cut_frames()):
        d.add(i, rgb)
    assert [abs(a - b) <= 1 for a, b in zip(d.finish(), CUTS_AT)] == [True] * 3


def test_black_tail_and_frozen_stretch_found_with_start_and_end(videos) -> None:
    r = _analyze(videos["tail"], change_bin_seconds=1.0)
    by_kind = {s["kind"]: s for s in r["stretches"]}
    assert set(by_kind) == {"frozen", "blank"}
    frozen, blank = by_kind["frozen"], by_kind["blank"]
    assert abs(frozen["start"] - FROZEN[0]) <= 1 and abs(frozen["end"] - FROZEN[1]) <= 1
    assert abs(blank["start"] - BLACK_FROM) <= 1 and blank["end"] == TAIL_FRAMES
    assert blank["start_s"] == pytest.approx(BLACK_FROM / TAIL_FPS, abs=0.11)
    assert blank["end_s"] == pytest.approx(TAIL_FRAMES / TAIL_FPS)
    # the binned change drops to ~0 inside both stretches and is well above it elsewhere
    ch = r["change"]
    mean = np.asarray([np.nan if v is None else v for v in ch["mean_abs_diff"]])
    assert ch["bin_seconds"] == 1.0 and len(mean) == TAIL_FRAMES // TAIL_FPS
    assert np.nanmax(mean[4:8]) < 0.25 and np.nanmax(mean[13:]) < 0.25
    assert np.nanmin(mean[:2]) > 5


def test_short_clips_get_finer_curves_long_walks_one_point_a_second(videos) -> None:
    assert auto_rates(2 * 3600, 60.0) == (1.0, 1.0)  # an hour-long walk: 1 sample and 1 s bins
    sample_fps, bin_s = auto_rates(15.0, 10.0)
    assert sample_fps == 10.0 and bin_s == pytest.approx(0.1)  # capped at one frame
    r = _analyze(videos["tail"])  # 15 s at 10 fps: every frame a lightness sample and a change bin
    assert len(r["lightness"]["values"]) == TAIL_FRAMES
    ch = r["change"]
    assert ch["bin_seconds"] == pytest.approx(0.1) and len(ch["mean_abs_diff"]) == TAIL_FRAMES
    assert ch["mean_abs_diff"][0] is None and None not in ch["mean_abs_diff"][1:]  # no bin left empty


def test_a_store_is_analysed_without_its_original(videos, tmp_path: Path) -> None:
    src = tmp_path / "walk.mp4"
    src.write_bytes(videos["tail"].read_bytes())
    store = tmp_path / "store"
    assert main(["ingest", str(src), "--out", str(store), "--short-side", "0", "--no-progress"]) == 0
    src.unlink()  # the store must be enough
    (inp,) = open_inputs(store)
    assert inp.kind == "store" and inp.name == "walk"
    r = analyze_input(inp, None, AnalyzeOptions(), progress=False)
    assert r["decoded_frames"] == TAIL_FRAMES
    by_kind = {s["kind"]: (s["start"], s["end"]) for s in r["stretches"]}
    assert abs(by_kind["frozen"][0] - FROZEN[0]) <= 1 and by_kind["blank"][1] == TAIL_FRAMES


def test_analyze_command_compares_inputs_and_counts_segments(videos, tmp_path: Path, capsys) -> None:
    out = tmp_path / "analysis"
    rc = main(["analyze", str(videos["tail"]), str(videos["cuts"]), "--out", str(out), "--no-progress",
               "--weights", "random:vit_tiny_patch16_224", "--size", "64", "--richness-frames", "6",
               "--clusters", "4", "--min-patches", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    for name in ("tail", "cuts"):
        assert (out / f"{name}.png").stat().st_size > 10_000
        r = json.loads((out / f"{name}.json").read_text())
        rich = r["richness"]
        assert len(rich["segments"]) == 6 and all(s >= 1 for s in rich["segments"])
        assert rich["frames"][0] == 0 and rich["frames"][-1] == r["header_frames"] - 1  # spread over the whole video
        assert rich["weights"] == "random:vit_tiny_patch16_224" and rich["grid"][0] >= 4
    assert (out / "comparison.png").stat().st_size > 20_000
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary] == ["tail", "cuts"]
    assert summary[1]["cuts_per_hour"] == pytest.approx(3 / (CUT_FRAMES / CUT_FPS / 3600))
    assert all(s["segments_per_frame"] >= 1 for s in summary)
    text = capsys.readouterr().out
    assert "comparison of 2 inputs" in text and "blank 12.0-15.0 s" in text


def test_analyze_errors_are_one_line(videos, tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o")]) == 2
    assert "none.mp4" in capsys.readouterr().err
    assert main(["analyze", str(videos["cuts"]), "--out", str(tmp_path / "o"), "--sample-fps", "0"]) == 2
    err = capsys.readouterr().err
    assert "--sample-fps must be positive" in err and len(err.strip().splitlines()) == 1


def test_missing_scenes_extra_is_named(videos, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "scenedetect", None)  # import fails as if not installed
    assert main(["analyze", str(videos["cuts"]), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "vidssl[scenes]" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o")  # failed before any work
