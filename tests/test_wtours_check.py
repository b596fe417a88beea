"""`vidssl wtours list` and `vidssl wtours check`: a folder with a generated video renamed to a
manifest entry's source id, a fake manifest, and the ingest command the check prints."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from vidssl.cli.main import main
from vidssl.data.writer import moving_frames, write_video
from vidssl.wtours.manifest import WALKING_TOURS, match_entry

FPS, FRAMES, FROZEN, BLACK_FROM = 10, 150, (30, 90), 120  # 15 s: frozen 3-9 s, black 12-15 s

MANIFEST = [
    {"city": "Venice", "source_id": "fGX0Te6pFvk", "duration_s": 3600, "width": 3840, "height": 2160, "fps": 60},
    {"city": "Atlantis", "source_id": "atlantis123", "duration_s": 15, "width": 64, "height": 48, "fps": 10},
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("downloads")
    (root / "videos" / "clips").mkdir(parents=True)
    made = root / "generated.mp4"
    write_video(made, moving_frames(FRAMES, 64, 48, black_from=BLACK_FROM, frozen=FROZEN), fps=FPS)
    made.rename(root / "videos" / "clips" / "fGX0Te6pFvk.mp4")  # renamed to Venice's source id
    write_video(root / "holiday.mp4", moving_frames(30, 64, 48, seed=1), fps=FPS)  # no entry matches
    manifest = root.parent / f"{root.name}-manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    return root, manifest


def test_check_reports_mismatches_and_problems_as_json(folder, capsys) -> None:
    root, manifest = folder
    assert main(["wtours", "check", str(root), "--manifest", str(manifest), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    venice, atlantis = result["videos"]
    assert venice["present"] and not atlantis["present"]
    (f,) = venice["files"]
    assert f["path"].endswith("fGX0Te6pFvk.mp4") and f["city"] == "Venice"
    assert f["probed"]["frames"] == FRAMES and f["probed"]["fps"] == FPS
    text = " | ".join(f["mismatches"])
    assert "64x48, manifest 3840x2160" in text and "10.000 fps, manifest 60 fps" in text
    assert "header duration 0:00:15, manifest 1:00:00" in text
    problems = {p["kind"]: p for p in f["problems"]}
    assert set(problems) == {"frozen stretch", "blank tail"}
    assert abs(problems["frozen stretch"]["start"] - FROZEN[0]) <= 1
    assert abs(problems["frozen stretch"]["end"] - FROZEN[1]) <= 1
    assert abs(problems["blank tail"]["start"] - BLACK_FROM) <= 1 and problems["blank tail"]["end"] == FRAMES
    assert f["command"].startswith("vidssl ingest ") and f["path"] in f["command"]
    (other,) = result["unmatched"]
    assert other["path"].endswith("holiday.mp4") and other["mismatches"] == [] and other["problems"] == []


def test_check_text_report_and_json_file(folder, tmp_path: Path, capsys) -> None:
    root, manifest = folder
    out = tmp_path / "report.json"
    assert main(["wtours", "check", str(root), "--manifest", str(manifest), "--json", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "1 of 2 manifest videos present" in text
    assert "Atlantis (atlantis123): missing" in text
    assert "mismatch: resolution 64x48" in text and "problem: blank tail: frames 12" in text
    assert "fix: vidssl ingest" in text and "1 video file(s) match no manifest entry" in text
    assert json.loads(out.read_text())["videos"][0]["present"]


def test_printed_ingest_command_keeps_the_stretches_out(folder, tmp_path: Path, monkeypatch, capsys) -> None:
    root, manifest = folder
    assert main(["wtours", "check", str(root), "--manifest", str(manifest), "--json", "--no-progress"]) == 0
    command = json.loads(capsys.readouterr().out)["videos"][0]["files"][0]["command"]
    argv = shlex.split(command)
    assert argv[:2] == ["vidssl", "ingest"]
    monkeypatch.chdir(tmp_path)  # the command writes stores/<city> under the working folder
    assert main(argv[1:] + ["--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "150 frames stored, 90 in excluded stretches" in text
    assert (tmp_path / "stores" / "venice").is_dir()


def test_check_metadata_only_and_truncated_file(folder, tmp_path: Path, capsys) -> None:
    root, _ = folder
    data = (root / "videos" / "clips" / "fGX0Te6pFvk.mp4").read_bytes()
    cut = tmp_path / "dl" / "Venice.mp4"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) * 6 // 10])  # a download cut short: the header promises more
    assert main(["wtours", "check", str(cut.parent), "--json", "--no-progress"]) == 0
    venice = next(v for v in json.loads(capsys.readouterr().out)["videos"] if v["city"] == "Venice")
    (f,) = venice["files"]
    kinds = [p["kind"] for p in f["problems"]]
    assert "duration" in kinds, f["problems"]
    short = next(p for p in f["problems"] if p["kind"] == "duration")
    assert short["end"] == FRAMES and short["start"] < FRAMES * 0.8
    assert f["decodable"]["frames"] < FRAMES
    # built-in manifest: 4K / 60 fps / 1:50:00 expected for Venice
    assert any("manifest 3840x2160" in m for m in f["mismatches"])
    assert any("manifest 1:50:00" in m for m in f["mismatches"])
    assert main(["wtours", "check", str(cut.parent), "--json", "--no-content"]) == 0
    f = next(v for v in json.loads(capsys.readouterr().out)["videos"] if v["city"] == "Venice")["files"][0]
    assert f["problems"] == [] and "decodable" not in f and f["mismatches"]


def test_check_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["wtours", "check", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps([{"city": "X"}]))
    assert main(["wtours", "check", str(tmp_path), "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "lacks source_id" in err and len(err.strip().splitlines()) == 1
    assert main(["wtours", "check", str(tmp_path), "--frozen-seconds", "0"]) == 2
    assert "--frozen-seconds must be positive" in capsys.readouterr().err


def test_an_unreadable_file_is_reported_not_fatal(tmp_path: Path, capsys) -> None:
    (tmp_path / "Zurich.mp4").write_text("not a video")
    assert main(["wtours", "check", str(tmp_path), "--no-progress"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "Zurich.mp4" in l)
    assert line.strip().startswith(f"{tmp_path / 'Zurich.mp4'}: cannot be opened as a video")  # the path once
    assert main(["wtours", "check", str(tmp_path), "--json", "--no-progress"]) == 0
    zurich = next(v for v in json.loads(capsys.readouterr().out)["videos"] if v["city"] == "Zurich")
    assert zurich["present"] and zurich["files"][0]["problems"][0]["kind"] == "unreadable"
    assert zurich["files"][0]["command"] is None


def test_list_names_the_ten_videos(capsys) -> None:
    assert main(["wtours", "list"]) == 0
    text = capsys.readouterr().out
    for e in WALKING_TOURS:
        assert e.source_id in text and e.city in text
    assert "figshare" in text and "shawshankvkt/Walking_Tours" in text and "23 h" in text
    assert main(["wtours", "list", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["videos"]) == 10 and {v["licence"] for v in d["videos"]} == {"CC-BY-4.0"}
    venice = next(v for v in d["videos"] if v["city"] == "Venice")
    assert venice["duration_s"] == 110 * 60 and venice["fps"] == 60


@pytest.mark.parametrize("rel, city", [
    ("videos/Kuala_Lampur/walk.mp4", "Kuala Lumpur"),
    ("Walking Tour - Chiang Mai 4K.mp4", "Chiang Mai"),
    ("dl/_NmYvuEILw4.webm", "Zurich"),
    ("wildlife_safari.mp4", "Wildlife"),
    ("my_walk.mp4", None),
])
def test_files_match_by_city_alias_or_id(rel: str, city: str | None, tmp_path: Path) -> None:
    e = match_entry(tmp_path / rel, tmp_path, WALKING_TOURS)
    assert (e.city if e else None) == city
