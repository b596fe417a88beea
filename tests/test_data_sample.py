"""The built-in sample video: deterministic, cached atomically, something to track."""

import numpy as np
import pytest

from vidssl.config import DataConfig
from vidssl.data import build_training_data, sample_video_path
from vidssl.data.sample import FPS, HEIGHT, NUM_FRAMES, SAMPLE_VERSION, WIDTH, render_frames, render_labelled
from vidssl.data.video import probe_video


def test_rendering_is_deterministic_in_the_seed_and_moves():
    a, b, c = render_frames(0, 40), render_frames(0, 40), render_frames(1, 40)
    assert a.shape == (40, HEIGHT, WIDTH, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    step = np.abs(a[1:].astype(int) - a[:-1]).mean(axis=(1, 2, 3))
    assert (step > 0.5).all()  # every frame moves (camera pan + objects)
    assert a.std() > 15  # textured, not flat


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("cache")
    mp.setenv("VIDSSL_CACHE", str(d))
    yield d
    mp.undo()


def test_sample_is_generated_once_and_cached(cache):
    (cache / f".sample-v{SAMPLE_VERSION}-seed0.mp4.stale.part").write_bytes(b"half a file")  # a crashed attempt
    path = sample_video_path()
    assert path.parent == cache and path.is_file()
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height, info.codec) == (NUM_FRAMES, FPS, WIDTH, HEIGHT, "h264")
    mtime = path.stat().st_mtime_ns
    assert sample_video_path() == path and path.stat().st_mtime_ns == mtime  # not regenerated
    assert not [p for p in cache.iterdir() if p.suffix == ".part" and "stale" not in p.name]  # no new leftovers


def test_an_empty_cached_file_is_not_taken_as_complete(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSSL_CACHE", str(tmp_path))
    (tmp_path / f"sample-v{SAMPLE_VERSION}-seed0.mp4").write_bytes(b"")
    path = sample_video_path()
    assert probe_video(path).num_frames == NUM_FRAMES
    assert path.read_bytes() == (cache / f"sample-v{SAMPLE_VERSION}-seed0.mp4").read_bytes()  # same bytes from the same seed


def test_default_data_is_the_sample(cache):
    data = build_training_data(DataConfig(frames_per_clip=4, frame_stride=5), None, seed=0)
    assert data.describe().startswith(f"built-in sample sample-v{SAMPLE_VERSION}-seed0.mp4")
    assert data.num_clips == NUM_FRAMES - 15
    clip = data.read_clip(100)
    assert clip.shape == (4, HEIGHT, WIDTH, 3)


def test_labels_line_up_with_the_rendered_objects():
    """Labelled pixels are the objects' pixels: re-render without the objects' sprites is not
    possible from outside, so check that every object label covers pixels that differ from the
    same frame's backdrop-only neighbourhood, and that labels move with the frames."""
    from vidssl.data.sample import _Scene

    scene = _Scene(0)
    for t in (NUM_FRAMES + 10, NUM_FRAMES + 200, 300):
        frame, labels = scene.render(t)
        frames, label_stack = render_labelled(0, t, 1)
        assert np.array_equal(frames[0], frame) and np.array_equal(label_stack[0], labels)
        saved = [o["sprite"] for o in scene.objs]
        for o in scene.objs:  # paint every object pure black: exactly the labelled pixels turn black
            o["sprite"] = np.zeros_like(o["sprite"])
        dark, same_labels = scene.render(t)
        for o, sprite in zip(scene.objs, saved):
            o["sprite"] = sprite
        assert np.array_equal(same_labels, labels)
        assert labels.max() > 0
        assert (dark[labels > 0] == 0).all()
        assert (dark[labels == 0] == frame[labels == 0]).all()
