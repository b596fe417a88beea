"""`vidssl show attention` and `vidssl show tracks`, and the pictures behind them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.cli.main import main
from vidssl.data.sample import write_sample_video
from vidssl.data.video import probe_video
from vidssl.hub import load_encoder
from vidssl.models import Encoder
from vidssl.viz.attention import cls_attention_maps, fit_to_patches, rgb_composite
from vidssl.viz.tracks import object_overlay, tracks_grid

WEIGHTS = "random:vit_tiny_patch16_224"  # 3 heads


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    write_sample_video(path, seed=7, num_frames=30)
    return path


def test_show_attention_on_an_image_and_a_video_frame(tmp_path: Path, video: Path, capsys) -> None:
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "att.png"
    assert main(["show", "attention", "--weights", WEIGHTS, "--image", str(image), "--size", "48", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    assert "3 heads" in capsys.readouterr().out
    out2 = tmp_path / "att_video.png"
    args = ["show", "attention", "--weights", WEIGHTS, "--video", str(video), "--frame", "3", "--size", "32",
            "--heads", "2,0,1", "--out", str(out2)]
    assert main(args) == 0 and out2.stat().st_size > 0


def test_show_attention_errors(tmp_path: Path, video: Path, capsys) -> None:
    n = probe_video(video).num_frames
    out = tmp_path / "x.png"
    assert main(["show", "attention", "--weights", WEIGHTS, "--video", str(video), "--frame", str(n), "--out", str(out)]) == 2
    assert f"{video} has {n} frames; frame {n} was asked for" in capsys.readouterr().err
    assert main(["show", "attention", "--weights", WEIGHTS, "--image", str(tmp_path / "none.png"), "--out", str(out)]) == 2
    assert "none.png: no such image file" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["show", "attention", "--weights", WEIGHTS, "--image", str(bad), "--out", str(out)]) == 2
    assert "bad.png: cannot be read as an image" in capsys.readouterr().err
    img = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert main(["show", "attention", "--weights", WEIGHTS, "--image", str(img), "--heads", "0,1,5", "--out", str(out)]) == 2
    assert "head 5 does not exist; this encoder has heads 0..2" in capsys.readouterr().err
    assert not out.exists()


def test_attention_maps_and_composite_are_the_encoders_cls_attention() -> None:
    enc = Encoder(load_encoder(WEIGHTS)).eval()
    image = fit_to_patches(torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8), 32, 16)
    assert tuple(image.shape) == (3, 32, 48)
    maps = cls_attention_maps(enc, image)
    from vidssl.data.transforms import normalize

    ref = enc.encode_with_last_attention(normalize(image)[None]).cls_attention[0]
    torch.testing.assert_close(maps, ref.reshape(3, 2, 3))
    rgb = rgb_composite(maps, (2, 0, 1), (32, 48))
    assert rgb.shape == (32, 48, 3) and rgb.dtype == np.uint8
    # red = head 2 stretched to [0, 255], nearest-upsampled: brightest patch of head 2 is 255 in red
    r, c = divmod(int(maps[2].argmax()), 3)
    assert rgb[r * 16 + 5, c * 16 + 5, 0] == 255
    r, c = divmod(int(maps[0].argmin()), 3)
    assert rgb[r * 16 + 5, c * 16 + 5, 1] == 0


def test_show_tracks_writes_grid_and_video(tmp_path: Path, video: Path, capsys) -> None:
    out = tmp_path / "tracks.gif"
    args = ["show", "tracks", "--weights", WEIGHTS, "--video", str(video), "--start", "2", "--frames", "3",
            "--stride", "4", "--size", "48", "--objects", "2", "--out", str(out)]
    assert main(args) == 0
    assert out.stat().st_size > 0 and out.with_suffix(".png").stat().st_size > 0
    with Image.open(out) as im:
        assert im.n_frames == 3
    assert "2 objects over 3 frames" in capsys.readouterr().out
    mp4 = tmp_path / "t.png"
    assert main([*args[:-2], "--heads", "1,2", "--out", str(mp4)]) == 0
    assert probe_video(tmp_path / "t.mp4").num_frames == 3


def test_show_tracks_errors(tmp_path: Path, video: Path, capsys) -> None:
    base = ["show", "tracks", "--weights", WEIGHTS, "--video", str(video), "--size", "32"]
    assert main([*base, "--objects", "4", "--out", str(tmp_path / "a.png")]) == 2
    assert "cannot track 4 objects with 3 attention heads" in capsys.readouterr().err
    assert main([*base, "--frames", "8", "--stride", "10", "--out", str(tmp_path / "a.png")]) == 2
    assert "has 30 frames; frame 70 was asked for" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "a.jpg")]) == 2
    assert "use a .png, .mp4 or .gif" in capsys.readouterr().err
    assert main([*base, "--objects", "2", "--heads", "1,1", "--out", str(tmp_path / "a.png")]) == 2
    assert "give 2 different heads" in capsys.readouterr().err


def test_grid_layout_and_overlay_colours() -> None:
    frames = np.full((2, 8, 8, 3), 100, np.uint8)
    masks = np.zeros((2, 2, 8, 8), bool)
    masks[:, 0, :4] = True  # object 0: top half
    masks[:, 1, :, :4] = True  # object 1: left half
    over = object_overlay(frames, masks)
    assert (over[:, 6, 6] == 35).all()  # outside every object: darkened
    assert over[0, 1, 6, 0] > over[0, 1, 6, 1]  # object 0 only: red tint (first colour)
    assert over[0, 6, 1, 1] > over[0, 6, 1, 0]  # object 1 only: green tint
    grid = tracks_grid(frames, masks)
    scale = 12  # 8 px frames are enlarged to at least 96 px
    assert grid.shape == ((8 * scale + 2) * 4 - 2, (8 * scale + 2) * 2 - 2, 3)  # rows: clip, 2 objects, all
