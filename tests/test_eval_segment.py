"""`vidssl show segment`: one k-means over a whole video keeps cluster ids consistent through time."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from test_eval_fixtures import COLOURS
from vidssl.cli.main import main
from vidssl.eval.unsup_seg import match_and_score
from vidssl.viz.segment import segment_video


def _write_video(path: Path, n: int = 10, h: int = 64, w: int = 96) -> np.ndarray:
    frames = []
    y, x = np.mgrid[:h, :w]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for t in range(n):
            img = np.full((h, w, 3), 110, np.uint8)
            img[(y - 30) ** 2 + (x - 20 - 3 * t) ** 2 < 144] = COLOURS[1]
            img[18:40, 58 - 2 * t : 80 - 2 * t] = COLOURS[2]
            frames.append(img)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return np.stack(frames)


def test_one_kmeans_over_the_video_keeps_ids_through_time() -> None:
    g = torch.Generator().manual_seed(0)
    T, h, w = 6, 6, 8
    lab = torch.zeros(T, h, w, dtype=torch.long)
    for t in range(T):  # a square moving right over a background, a bar at the bottom
        lab[t, 1:4, t : t + 3] = 1
        lab[t, 5] = 2
    centres = 3 * torch.randn(3, 32, generator=g)
    feats = centres[lab].permute(0, 3, 1, 2) + 0.05 * torch.randn(T, 32, h, w, generator=g)
    ids = segment_video(feats, 3, (h, w))
    # a single matching for all frames (clip-wise) is perfect only if ids are consistent in time
    assert match_and_score(ids, lab.numpy()) == 1.0
    assert len({int(ids[t, 5, 0]) for t in range(T)}) == 1


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_show_segment_command(suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "shapes.mp4"
    _write_video(video)
    out = tmp_path / f"seg{suffix}"
    assert main(["show", "segment", "--weights", "random:vit_tiny_patch16_224", "--video", str(video), "-k", "3",
                 "--out", str(out), "--size", "32", "--strip-frames", "4"]) == 0
    assert "10 frames, k=3" in capsys.readouterr().out
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 10 and decoded[0].shape == (64, 96, 3)
    with Image.open(out.with_suffix(".png")) as strip:
        assert strip.size == (4 * 240, 320)  # 4 frames of 160 px height, frames above segmentations


def test_show_segment_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["show", "segment", "--weights", "random:vit_tiny_patch16_224", "-k", "3"]
    assert main([*base, "--video", str(tmp_path / "none.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "none.mp4: no such file" in capsys.readouterr().err
    (tmp_path / "text.mp4").write_text("hello")
    assert main([*base, "--video", str(tmp_path / "text.mp4"), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "text.mp4: cannot be opened as a video" in capsys.readouterr().err
    assert main([*base, "--video", str(tmp_path / "text.mp4"), "--out", str(tmp_path / "o.avi")]) == 2
    assert ".mp4 or .gif" in capsys.readouterr().err
