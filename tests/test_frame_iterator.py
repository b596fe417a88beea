"""The one decode loop (`video.FrameIterator`, `video.iter_frames`): the frames it yields are the
frames FFmpeg's own sequential decode gives and the frames the readers and ingest return, on
B-frame files of three containers and on damaged files (cut short, bytes overwritten)."""

import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from vidssl.data.video import FrameIterator, PyAVReader, iter_frames
from vidssl.data.writer import moving_frames, write_video

from test_frame_order import N, ffmpeg_decode, number_of
from test_frame_order import video as bframes  # noqa: F401 - the same B-frame files (a fixture)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")


def test_one_pass_is_ffmpegs_decode_and_the_readers(bframes):
    ref = ffmpeg_decode(bframes)
    frames = list(iter_frames(bframes))
    assert [i for i, _ in frames] == list(range(N))
    for i, f in frames:
        np.testing.assert_array_equal(f, ref[i], err_msg=f"{bframes.name}: frame {i}")
    got, missing = PyAVReader(bframes).read(list(range(N)))
    assert not missing and all(np.array_equal(got[i], ref[i]) for i in range(N))
    pytest.importorskip("torchcodec")
    # torchcodec converts colours itself (not swscale): the frames are the same pictures
    assert [number_of(f) for _, f in iter_frames(bframes, backend="torchcodec")] == list(range(N))


def keyframe_pts(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(round(float(p.pts * s.time_base) * 25), p.pts) for p in c.demux(s) if p.size and p.is_keyframe]


def test_a_pass_from_a_keyframe_gives_the_frames_of_a_whole_pass(bframes):
    """What segment-parallel ingest relies on; AVI (no timestamps) decodes from frame 0 instead."""
    ref = ffmpeg_decode(bframes)
    index, pts = [k for k in keyframe_pts(bframes) if k[0] > 0][1]  # the third keyframe
    it = FrameIterator(bframes)
    it.seek_pts(pts)
    seen = [(d.index, d.frame.to_ndarray(format="rgb24")) for d in it if not d.corrupt]
    first = index if not it.output_order else 0
    assert [i for i, _ in seen if i >= first] == list(range(first, N))
    for i, f in seen:
        np.testing.assert_array_equal(f, ref[i])
    # a start in the middle through the public iterator: the same frames, none before it
    assert [i for i, _ in iter_frames(bframes, start=30)] == list(range(30, N))


def old_ingest_loop(path: Path) -> dict[int, tuple[np.ndarray, bool]]:
    """Today's ingest decode, written out by hand: demux, decode each packet, skip packets that
    fail, number frames by their time -> {index: (rgb, corrupt)}."""
    out = {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps, start = float(s.average_rate), float((s.start_time or 0) * s.time_base)
        try:
            for packet in c.demux(s):
                try:
                    frames = packet.decode()
                except Exception:
                    continue
                for f in frames:
                    out[round((float(f.time) - start) * fps)] = (f.to_ndarray(format="rgb24"), f.is_corrupt)
        except Exception:
            pass
    return out


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("damaged")
    whole = write_video(d / "whole.mkv", moving_frames(200, 96, 64), fps=25, gop=10)
    data = bytearray(whole.read_bytes())
    cut = d / "cut.mkv"
    cut.write_bytes(bytes(data[: int(len(data) * 0.6)]))
    a = len(data) // 3
    data[a : a + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    overwritten = d / "overwritten.mkv"
    overwritten.write_bytes(bytes(data))
    return {"whole": whole, "cut": cut, "overwritten": overwritten}


@pytest.mark.parametrize("case", ["cut", "overwritten"])
def test_damaged_files_give_the_frames_of_the_old_loops(damaged, case):
    path = damaged[case]
    ref = old_ingest_loop(path)
    assert 60 < len(ref) < 200  # frames were really lost
    # one decoder thread, as in the reference: how FFmpeg conceals damage may depend on the threading
    it = FrameIterator(path, threads=1)
    seen = {d.index: (d.frame.to_ndarray(format="rgb24"), d.corrupt) for d in it}
    assert sorted(seen) == sorted(ref)
    # FFmpeg's concealment of damage may read buffers whose content varies from run to run, so
    # pixels are compared in the groups of pictures (gop=10 above) the damage did not reach
    damaged_gops = {i // 10 for i in range(200) if i not in ref or ref[i][1]}
    for i, (f, corrupt) in seen.items():
        assert corrupt == ref[i][1], i
        if i // 10 not in damaged_gops:
            np.testing.assert_array_equal(f, ref[i][0], err_msg=f"frame {i}")
    # the reader returns the clean ones and names why each other frame is missing
    got, missing = PyAVReader(path, threads=1).read(list(range(200)))
    assert sorted(got) == sorted(i for i, (_, c) in ref.items() if not c)
    assert all(np.array_equal(got[i], ref[i][0]) for i in got if i // 10 not in damaged_gops)
    assert set(missing) == set(range(200)) - set(got)
    reasons = set(missing.values())
    assert all(r.startswith(("past the last decodable frame", "frame not in the stream", "decode error",
                             "decoded with errors")) for r in reasons), reasons
    if case == "cut":
        assert missing[199].startswith("past the last decodable frame")
    if case == "cut":  # iter_frames (threaded) leaves out what did not decode, keeps the rest in place
        assert [i for i, _ in iter_frames(path)] == sorted(got)


def test_ffmpeg_decodes_the_cut_file_as_the_iterator_does(damaged):
    """An independent reference for the cut file: FFmpeg's command-line decode."""
    raw = subprocess.run(["ffmpeg", "-v", "quiet", "-i", str(damaged["cut"]), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-"], capture_output=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 64, 96, 3)
    frames = list(iter_frames(damaged["cut"]))
    assert [i for i, _ in frames] == list(range(len(ref)))
    assert all(np.array_equal(f, ref[i]) for i, f in frames)


@pytest.fixture(scope="module")
def program_stream(tmp_path_factory) -> Path:
    """MPEG-2 in an MPEG program stream (DVD, TV recordings): its seeks land one GOP late."""
    from vidssl.data.sample import render_frames

    return write_video(tmp_path_factory.mktemp("ps") / "tv.mpg", render_frames(seed=1, num_frames=120), fps=25,
                       codec="mpeg2video", gop=12, format="mpeg")


def test_a_seek_that_lands_late_steps_back(program_stream):
    ref = dict(iter_frames(program_stream))
    assert sorted(ref) == list(range(120))
    it = FrameIterator(program_stream)
    it._seek(37)  # the keyframe at or before frame 36 is frame 36 ...
    late = it.next_frame().index
    assert late > 36  # ... and the container lands past it (the case handled, not assumed)
    reader = PyAVReader(program_stream, seek_gap=5)
    for idx in ([100], [36], [3, 4], [60], [0], [119], [13, 90]):  # backward and far forward jumps
        got, missing = reader.read(idx)
        assert not missing, (idx, missing)
        assert all(np.array_equal(got[i], ref[i]) for i in idx)


def test_segments_of_a_program_stream_give_the_single_pass_store(program_stream, tmp_path):
    from vidssl.data.ingest import IngestOptions, ingest

    from test_ingest_parallel import assert_same_store

    opts = dict(short_side=None, shard_frames=20, min_segment_frames=30)
    ingest([program_stream], tmp_path / "one", IngestOptions(**opts, jobs=1), progress=False)
    ingest([program_stream], tmp_path / "three", IngestOptions(**opts, jobs=3), progress=False)
    assert len({s["file"].split("-")[0] for s in json.loads((tmp_path / "three" / "store.json").read_text())
                ["videos"][0]["shards"]}) == 3
    assert_same_store(tmp_path / "three", tmp_path / "one")
