"""The engine contract: build_training_data / TrainingData.loader over video files."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidssl.config import DataConfig
from vidssl.data import build_training_data
from vidssl.data.writer import moving_frames, write_video


def sequential_decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("videos")
    return [
        write_video(d / "a.mp4", moving_frames(90, 64, 48, seed=1), fps=25, gop=8),
        write_video(d / "b.mkv", moving_frames(60, 64, 48, seed=2), fps=25, gop=8),
    ]


def jitter(clip: torch.Tensor) -> list[torch.Tensor]:
    """A stand-in transform with randomness from torch, numpy and random: two views."""
    import random

    x = clip.permute(0, 3, 1, 2).float() / 255  # (T, 3, H, W)
    i = int(torch.randint(0, 16, ()).item())
    j = int(np.random.randint(0, 16)) + random.randint(0, 3)
    return [x[:, :, i : i + 32, j : j + 32] * (1 + 0.1 * torch.rand(1)), x[0, :, :16, :16]]


def cfg_for(videos, **kw) -> DataConfig:
    base = dict(videos=[str(v) for v in videos], frames_per_clip=3, frame_stride=4, stream_window=16)
    base.update(kw)
    return DataConfig(**base)


def test_clips_hold_the_right_frames_and_never_cross_files(videos):
    data = build_training_data(cfg_for(videos), None, seed=0)
    ref = [sequential_decode(v) for v in videos]
    assert data.num_clips == (90 - 8) + (60 - 8)
    assert data.batches_per_epoch(4) == data.num_clips // 4
    seen = set()
    for batch in data.loader(4, 0, epoch=0):
        clips = batch["views"][0]
        assert clips.dtype == torch.uint8 and clips.shape[1:] == (3, 48, 64, 3)
        for clip, v, frames in zip(clips, batch["video"].tolist(), batch["frames"].tolist()):
            assert frames[-1] < len(ref[v]) and np.diff(frames).tolist() == [4, 4]
            np.testing.assert_array_equal(clip.numpy(), ref[v][frames])
            seen.add((v, frames[0]))
        assert batch["skipped"] == []
    assert len(seen) == data.batches_per_epoch(4) * 4  # no clip twice in an epoch


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_any_batch_sees_the_same_batches(videos, workers):
    data = build_training_data(cfg_for(videos), jitter, seed=7)
    full = list(data.loader(4, 0, epoch=3))
    assert len(full) == data.batches_per_epoch(4)
    for start in (0, 5, len(full) - 1):
        tail = list(data.loader(4, workers, epoch=3, start_batch=start))
        assert len(tail) == len(full) - start
        for a, b in zip(full[start:], tail):
            assert torch.equal(a["frames"], b["frames"])
            for va, vb in zip(a["views"], b["views"]):
                assert torch.equal(va, vb)
    other = list(data.loader(4, 0, epoch=4))
    assert not torch.equal(full[0]["frames"], other[0]["frames"])  # shuffled each epoch


def test_transform_randomness_is_per_sample_and_leaves_global_rng_alone(videos):
    data = build_training_data(cfg_for(videos), jitter, seed=1)
    torch.manual_seed(123)
    np.random.seed(5)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(5)
    batch = next(iter(data.loader(8, 0, epoch=0)))
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_np)
    gains = batch["views"][0].flatten(1).mean(1)
    assert len(set(gains.tolist())) == 8  # each sample drew its own numbers
    assert batch["views"][0].shape == (8, 3, 3, 32, 32) and batch["views"][1].shape == (8, 3, 16, 16)


def test_ranks_get_disjoint_equal_shares(videos):
    shares = []
    for rank in range(2):
        data = build_training_data(cfg_for(videos), None, seed=0, rank=rank, world_size=2)
        batches = list(data.loader(4, 0, epoch=1))
        assert len(batches) == data.num_clips // 8
        shares.append({(v, f[0]) for b in batches for v, f in zip(b["video"].tolist(), b["frames"].tolist())})
    assert len(shares[0]) == len(shares[1]) == data.num_clips // 8 * 4
    assert not shares[0] & shares[1]


def test_weights_favour_a_video(videos):
    data = build_training_data(cfg_for(videos, video_weights=[1.0, 4.0]), None, seed=0)
    vids = torch.cat([b["video"] for b in data.loader(4, 0, epoch=0)])
    assert (vids == 1).float().mean().item() == pytest.approx(0.8, abs=0.05)


def test_truncated_video_skips_clips_and_stops_past_the_limit(tmp_path):
    good = write_video(tmp_path / "whole.mp4", moving_frames(120, 64, 48), fps=25, gop=8)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    cfg = DataConfig(videos=[str(cut)], frames_per_clip=2, frame_stride=2, stream_window=32, max_decode_errors=10_000)
    td = build_training_data(cfg, None, seed=0)
    assert td.num_clips == 120 - 2  # the header still promises 120 frames
    skipped, kept = [], 0
    for batch in td.loader(8, 0, epoch=0):
        skipped += batch["skipped"]
        kept += len(batch["views"][0]) if batch["views"] else 0
        if batch["views"]:
            assert int(batch["frames"].max()) < 110
    assert kept > 20 and len(skipped) > 20 and kept + len(skipped) == td.batches_per_epoch(8) * 8
    assert all(s.startswith("cut.mp4: frame ") for s in skipped)
    cfg.max_decode_errors = 3  # the limit is the engine's (tests/test_decode_errors.py): the loader only reports
    assert sum(len(b["skipped"]) for b in build_training_data(cfg, None, seed=0).loader(8, 2, epoch=0)) > 3


def test_read_clip_and_describe(videos):
    data = build_training_data(cfg_for(videos), None, seed=0)
    ref = sequential_decode(videos[1])
    clip = data.read_clip(82 + 5)  # clip 5 of the second video
    np.testing.assert_array_equal(clip.numpy(), ref[[5, 9, 13]])
    text = data.describe()
    assert "a.mp4: 90 frames @ 25 fps, 64x48" in text and "b.mkv: 60 frames" in text and "134 clips" in text
    assert "\n" not in text


def test_torchcodec_backend_gives_the_same_clips(videos):
    pytest.importorskip("torchcodec")
    from vidssl.data import VideoError

    try:
        data = build_training_data(cfg_for(videos[:1], backend="torchcodec"), None, seed=0)
    except VideoError as e:  # torchcodec installed but FFmpeg's shared libraries are not (apt-get install ffmpeg)
        pytest.skip(str(e))
    ref = sequential_decode(videos[0])
    batch = next(iter(data.loader(4, 0, epoch=0)))
    for clip, frames in zip(batch["views"][0], batch["frames"].tolist()):
        np.testing.assert_array_equal(clip.numpy(), ref[frames])


def test_streaming_seeks_at_most_once_per_block(videos, monkeypatch):
    from vidssl.data.video import PyAVReader

    real_seek, real_read = PyAVReader._seek, PyAVReader.read
    seeks_per_read: list[int] = []
    seeks = [0]

    def seek(self, index):
        seeks[0] += 1
        real_seek(self, index)

    def read(self, indices):
        before = seeks[0]
        out = real_read(self, indices)
        seeks_per_read.append(seeks[0] - before)
        return out

    monkeypatch.setattr(PyAVReader, "_seek", seek)
    monkeypatch.setattr(PyAVReader, "read", read)
    # one video: 82 clips, blocks of 16 neighbouring clips (4 batches of 4), shuffled inside
    data = build_training_data(cfg_for(videos[:1]), None, seed=3)
    tasks = data._tasks(4, 0)
    assert len(tasks) == 5 and all(b1 - b0 == 4 for b0, b1 in tasks)
    batches = list(data.loader(4, 0, epoch=0))
    assert len(batches) == 20 and all(b["skipped"] == [] for b in batches)
    # a block is decoded in one forward pass: one read, at most one seek (never one per clip)
    assert len(seeks_per_read) == len(tasks)
    assert max(seeks_per_read) <= 1 and seeks[0] <= len(tasks)
    assert sum(seeks_per_read) >= 1  # blocks come in shuffled order, so some block needs its seek
