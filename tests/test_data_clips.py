"""Clip index and samplers: boundaries, excluded stretches, epochs, sharding, weights (SPEC 1.3, 5.2)."""

from collections import Counter

import numpy as np
import pytest

from vidssl.data.clips import ClipIndex, valid_segments
from vidssl.errors import VidsslError


def all_clips_by_brute_force(num_frames, excluded, T, s):
    """Independent formulation: every (video, start) whose frames stay inside one video and avoid
    every excluded frame and every split point."""
    out = set()
    for v, n in enumerate(num_frames):
        bad = set()
        cuts = set()
        for a, b in excluded[v]:
            bad.update(range(a, b))
            cuts.add(a)  # a clip may not run across [a, b), even an empty one
        for start in range(n):
            frames = [start + k * s for k in range(T)]
            if frames[-1] >= n or any(f in bad for f in frames):
                continue
            if any(start < c <= frames[-1] for c in cuts):
                continue
            out.add((v, start))
    return out


def test_valid_segments_cut_out_excluded_stretches():
    assert [(s.start, s.end) for s in valid_segments(0, 100, [(10, 20), (50, 50), (90, 120)])] == [
        (0, 10), (20, 50), (50, 90)]


@pytest.mark.parametrize("T,s", [(4, 5), (8, 3), (2, 1)])
def test_stride_clips_never_cross_files_or_excluded_stretches(T, s):
    num_frames = [60, 35, 80]
    excluded = [[(20, 24)], [], [(0, 5), (40, 40), (70, 80)]]
    index = ClipIndex(num_frames, excluded, T, s)
    got = {(v, int(f[0])) for v, f in (index.clip(i) for i in range(len(index)))}
    assert got == all_clips_by_brute_force(num_frames, excluded, T, s)
    assert len(got) == len(index)  # no clip twice
    v, f = index.clip(0)
    assert list(np.diff(f)) == [s] * (T - 1)


def test_every_start_visited_once_per_epoch_and_order_changes():
    index = ClipIndex([50, 40], [[], []], 4, 5)
    starts = []
    for epoch in (0, 1):
        plan = index.epoch_plan(seed=1, epoch=epoch, batch_size=1)
        pairs = list(zip(plan.videos.tolist(), plan.frames[:, 0].tolist()))
        assert Counter(pairs) == Counter({(v, int(index.clip(i)[1][0])): 1 for i in range(len(index)) for v in [index.clip(i)[0]]})
        starts.append(pairs)
    assert starts[0] != starts[1]
    again = index.epoch_plan(seed=1, epoch=0, batch_size=1)
    assert list(zip(again.videos.tolist(), again.frames[:, 0].tolist())) == starts[0]


@pytest.mark.parametrize("block", [None, 7])
def test_sharding_is_disjoint_and_equal(block):
    index = ClipIndex([103], [[]], 3, 2)  # 99 clips
    world, B = 3, 4
    plans = [index.epoch_plan(0, 2, B, rank=r, world_size=world, block=block) for r in range(world)]
    nb = index.batches_per_epoch(B, world)
    assert nb == 99 // (B * world)
    assert all(len(p) == nb * B for p in plans)
    sets = [set(p.frames[:, 0].tolist()) for p in plans]
    assert all(len(s) == nb * B for s in sets)  # no repeats inside a rank
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_stream_blocks_keep_neighbours_together():
    index = ClipIndex([400], [[]], 4, 5)  # 385 clips
    plan = index.epoch_plan(0, 0, batch_size=8, block=64)
    starts = plan.frames[:, 0]
    for k in range(0, 320, 64):  # every full block spans at most 64 consecutive starts
        block = starts[k : k + 64]
        assert block.max() - block.min() < 64
        assert len(set(block.tolist())) == 64
        assert not np.all(np.diff(block) > 0)  # shuffled inside


def test_weights_set_each_videos_share():
    index = ClipIndex([100, 100], [[], []], 2, 1, weights=[3.0, 1.0])
    plan = index.epoch_plan(0, 0, batch_size=1)
    share = (plan.videos == 0).mean()
    assert len(plan) == len(index)
    assert share == pytest.approx(0.75, abs=0.01)
    # video 0 needs 148 clips but has 99: it cycles through all of them before repeating any
    counts = Counter(plan.frames[plan.videos == 0][:, 0].tolist())
    assert set(counts.values()) <= {1, 2} and len(counts) == 99


def test_bad_weights_are_errors():
    with pytest.raises(VidsslError, match="video_weights has 1 values but there are 2 videos"):
        ClipIndex([100, 100], [[], []], 2, 1, weights=[1.0])


def test_timet_uniform_sorted_distinct_inside_one_stretch():
    index = ClipIndex([200, 90], [[(100, 120)], []], 4, 60, sampler="timet_uniform")
    assert len(index) == 100 // 4 + 80 // 4 + 90 // 4
    plan = index.epoch_plan(5, 0, batch_size=1)
    spread = []
    for v, f in zip(plan.videos.tolist(), plan.frames):
        assert np.all(np.diff(f) > 0)
        if v == 0:
            assert f[-1] < 100 or f[0] >= 120  # never across the excluded stretch
            assert f[-1] < 200
        else:
            assert f[-1] < 90
        spread.append(f[-1] - f[0])
    assert max(spread) > 50  # spread over the whole stretch, not a window
    other = index.epoch_plan(5, 1, batch_size=1)
    assert not np.array_equal(plan.frames, other.frames)


def test_timet_dense_is_consecutive_frames():
    index = ClipIndex([30], [[]], 4, 60, sampler="timet_dense")
    assert len(index) == 27
    assert index.clip(3)[1].tolist() == [3, 4, 5, 6]


def test_short_video_error_says_how_many_frames():
    with pytest.raises(VidsslError, match=r"x.mp4 has 40 frames; a clip of T=8 at stride 60 needs 421"):
        ClipIndex([40], [[]], 8, 60, names=["x.mp4"])
    with pytest.raises(VidsslError, match=r"has 500 frames \(480 of them in excluded stretches\)"):
        ClipIndex([500], [[(10, 490)]], 8, 60, names=["y.mp4"])


def test_too_few_clips_for_one_batch():
    index = ClipIndex([20], [[]], 2, 1)
    with pytest.raises(VidsslError, match="only 19 clips"):
        index.batches_per_epoch(16, 2)
