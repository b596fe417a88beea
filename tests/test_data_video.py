"""Video readers: random access equals a plain sequential decode; bad files give one-line errors."""

from pathlib import Path

import av
import numpy as np
import pytest

from vidssl.config import DataConfig
from vidssl.data import VideoError, build_training_data
from vidssl.data.video import PyAVReader, open_reader, probe_video, resized_size
from vidssl.data.writer import moving_frames, write_video


def sequential_decode(path, size=None):
    """Reference: every frame in decode order, straight from PyAV, optionally resized the same way."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            if size:
                out.append(f.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA"))
            else:
                out.append(f.to_ndarray(format="rgb24"))
    return np.stack(out)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 150 frames, GOP 10, B-frames on (x264 default): seeking must land on the exact frame
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", moving_frames(150, 96, 64), fps=25, gop=10)


def test_probe(video):
    info = probe_video(video)
    assert (info.num_frames, info.fps, info.width, info.height) == (150, 25.0, 96, 64)


def test_pyav_random_access_equals_sequential_decode(video):
    ref = sequential_decode(video)
    reader = PyAVReader(video, seek_gap=15)
    rng = np.random.default_rng(0)
    for _ in range(6):  # forward jumps, backward jumps, near and far
        idx = sorted(rng.choice(150, size=5, replace=False).tolist())
        got, missing = reader.read(idx)
        assert not missing
        for i in idx:
            np.testing.assert_array_equal(got[i], ref[i])
    got, missing = reader.read([149])
    assert np.array_equal(got[149], ref[149])
    got, missing = reader.read([150, 151])
    assert set(missing) == {150, 151} and not got


def test_pyav_resize_matches_the_same_resize_of_a_sequential_decode(video):
    size = resized_size(96, 64, 32)
    assert size == (48, 32)
    reader = open_reader(video, "pyav", short_side=32)
    got, _ = reader.read([3, 77])
    ref = sequential_decode(video, size)
    assert np.array_equal(got[3], ref[3]) and np.array_equal(got[77], ref[77])


def test_torchcodec_reader_agrees_with_pyav(video):
    pytest.importorskip("torchcodec")
    ref = sequential_decode(video)
    try:
        reader = open_reader(video, "torchcodec")
    except VideoError as e:  # torchcodec present but its FFmpeg libraries are not
        pytest.skip(str(e))
    got, missing = reader.read([0, 42, 120, 149])
    assert not missing
    for i in (0, 42, 120, 149):
        np.testing.assert_array_equal(got[i], ref[i])


def test_bad_files_are_one_line_errors(tmp_path, video):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    cases = {
        tmp_path / "missing.mp4": "missing.mp4: no such file",
        empty: "empty.mp4: is an empty file",
        text: "notes.mp4: cannot be opened as a video",
        tmp_path: "is a directory",
    }
    for path, message in cases.items():
        with pytest.raises(VideoError, match=message) as e:
            probe_video(path)
        assert "\n" not in str(e.value)
    with pytest.raises(VideoError, match="unknown data.backend"):
        open_reader(video, "decord")


def test_video_shorter_than_one_clip(video):
    cfg = DataConfig(videos=[str(video)], frames_per_clip=8, frame_stride=60)
    with pytest.raises(VideoError.__mro__[1], match=r"clip.mp4 has 150 frames; a clip of T=8 at stride 60 needs 421"):
        build_training_data(cfg, None, seed=0)


class _Flagged:
    """A decoded frame that claims FFmpeg had to conceal damage in it."""

    is_corrupt = True

    def __init__(self, frame):
        self._frame = frame

    def __getattr__(self, name):
        return getattr(self._frame, name)


def test_a_corrupt_keyframe_after_every_seek_ends_in_bounded_seeks(tmp_path, monkeypatch):
    from vidssl.data.video import MAX_STEP_BACKS

    path = write_video(tmp_path / "bad.mp4", moving_frames(150, 96, 64), fps=25, gop=10)  # keyframes 0, 10, ...
    real_seek = PyAVReader._seek
    seeks = []

    def seek(self, index):
        # The worst case: every seek lands on the same keyframe (90) and it comes out corrupt.
        seeks.append(index)
        if len(seeks) > 20:
            raise AssertionError(f"endless step-back loop: seeks to {seeks[:8]} ...")
        real_seek(self, 100)
        frames = self._frames

        def first_flagged():
            yield _Flagged(next(frames))
            yield from frames

        self._frames = first_flagged()

    monkeypatch.setattr(PyAVReader, "_seek", seek)
    ref = sequential_decode(path)
    got, missing = PyAVReader(path).read([92, 95, 120])
    assert len(seeks) == 1 + MAX_STEP_BACKS
    assert seeks[1] > seeks[2] > seeks[3]  # each step-back aims further back
    for i in (92, 95):  # frames that depend on the corrupt keyframe are reported, not returned damaged
        assert missing[i].startswith("undecodable: frame 90 is corrupt after a seek")
    np.testing.assert_array_equal(got[120], ref[120])  # past the next clean keyframe all is well again
    # through the loader: the clip is refused with the file and the frame named
    seeks.clear()
    data = build_training_data(DataConfig(videos=[str(path)], frames_per_clip=2, frame_stride=3), None, seed=0)
    with pytest.raises(VideoError, match=r"^bad.mp4: frame 92: undecodable: frame 90 is corrupt"):
        data.read_clip(92)
    assert len(seeks) == 1 + MAX_STEP_BACKS
