"""Frames are indexed in presentation order, whatever the container: AVI with MPEG-4 part 2
B-frames (no presentation timestamps in the file), MP4 and MKV with H.264 B-frames. Each frame
carries its number as 6 black/white bars, so an order error names itself."""

import json
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from vidssl.data.ingest import IngestOptions, ingest
from vidssl.data.store import open_store
from vidssl.data.video import PyAVReader, TorchCodecReader

N, W, H, BITS = 48, 64, 48, 6
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")


def numbered(i: int) -> np.ndarray:
    f = np.full((H, W, 3), 40, np.uint8)
    for b in range(BITS):  # bar b (8 px wide, leaving 16 px of moving texture) is white if bit b is set
        if (i >> b) & 1:
            f[:, b * 8 : b * 8 + 8] = 230
    f[(i * 3) % H, 48:] = 255  # motion, so that P/B frames carry real residuals
    return f


def number_of(frame: np.ndarray) -> int:
    return sum(1 << b for b in range(BITS) if frame[:, b * 8 + 2 : b * 8 + 6].mean() > 135)


def write(path: Path, codec: str, fmt: str) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = 12
        s.codec_context.max_b_frames = 2
        if codec == "libx264":
            s.options = {"bframes": "2", "b-adapt": "0"}
        for i in range(N):
            for p in s.encode(av.VideoFrame.from_ndarray(numbered(i), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    types = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pict_type",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    assert "B" in types, f"{path.name}: encoder wrote no B-frames"  # else the test proves nothing
    return path


def ffmpeg_decode(path: Path) -> np.ndarray:
    """The reference: FFmpeg's own sequential decode, frame k = the k-th frame it outputs."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, H, W, 3)


@pytest.fixture(scope="module", params=[("mpeg4", "avi", "avi"), ("libx264", "mp4", "mp4"),
                                        ("libx264", "matroska", "mkv")], ids=["avi-mpeg4", "mp4-h264", "mkv-h264"])
def video(request, tmp_path_factory) -> Path:
    codec, fmt, ext = request.param
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV has no {codec} encoder")
    return write(tmp_path_factory.mktemp("fo") / f"bf.{ext}", codec, fmt)


def test_reference_decode_is_in_presentation_order(video):
    ref = ffmpeg_decode(video)
    assert [number_of(f) for f in ref] == list(range(N))


def test_reader_random_access_equals_ffmpeg_sequential(video):
    ref = ffmpeg_decode(video)
    reader = PyAVReader(video, seek_gap=5)
    got, missing = reader.read(list(range(40)))
    assert not missing
    for i in range(40):
        np.testing.assert_array_equal(got[i], ref[i])
    for idx in ([30, 31, 45], [3, 17], [0], [44, 47], [9, 25, 26]):  # backward and forward jumps
        got, missing = reader.read(idx)
        assert not missing, missing
        for i in idx:
            np.testing.assert_array_equal(got[i], ref[i], err_msg=f"{video.name}: frame {i}")
    reader.close()


def test_torchcodec_reader_gives_every_frame_ffmpeg_gives(video):
    """torchcodec alone loses the last frame of the B-frame AVI; the reader must not."""
    pytest.importorskip("torchcodec")
    ref = ffmpeg_decode(video)
    reader = TorchCodecReader(video)
    got, missing = reader.read(list(range(N)))
    reader.close()
    assert not missing, missing
    assert [number_of(got[i]) for i in range(N)] == [number_of(f) for f in ref] == list(range(N))


def test_ingest_stores_every_frame_in_order(video, tmp_path):
    ref = ffmpeg_decode(video)
    [rep] = ingest([video], tmp_path / "s.store", IngestOptions(short_side=None), progress=False)
    assert rep.num_frames == N and rep.lost == [] and rep.errors == []
    meta = json.loads((tmp_path / "s.store" / "store.json").read_text())["videos"][0]
    assert meta["excluded"] == []  # no phantom gaps splitting the clips
    assert meta["frame_order"] == ("output order" if video.suffix == ".avi" else "pts")
    if video.suffix == ".avi":
        assert any("output order" in line for line in rep.lines())
    store = open_store(tmp_path / "s.store")
    frames, missing = store.reader(0).read(list(range(N)))
    assert not missing
    for i in range(N):
        f = np.asarray(frames[i])
        assert number_of(f) == i
        assert np.abs(f.astype(int) - ref[i]).mean() < 8  # JPEG q90 of the same picture
