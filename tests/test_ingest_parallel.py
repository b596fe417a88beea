"""Segment-parallel ingest: keyframe-aligned segments in separate processes give the store a
single pass gives, frame for frame, and a killed parallel ingest resumes where each segment stopped."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from vidssl.data import StoreError, VideoError
from vidssl.data.ingest import IngestOptions, ingest
from vidssl.data.ingest_parallel import plan_segments
from vidssl.data.sample import render_frames
from vidssl.data.store import open_store
from vidssl.data.writer import write_video

N, GOP = 600, 25
OPTIONS = dict(short_side=72, shard_frames=20, quality=90, min_segment_frames=100)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 24 s of the sample scene at 25 fps, keyframes every 25 frames; frames 280-339 repeat
    # frame 280 (a frozen run for the stretch detection)
    frames = render_frames(seed=4, num_frames=N)
    frames[281:340] = frames[280]
    return write_video(tmp_path_factory.mktemp("par") / "long.mp4", frames, fps=25, gop=GOP)


@pytest.fixture(scope="module")
def single(video, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "one.store"
    ingest([video], out, IngestOptions(**OPTIONS, jobs=1), progress=False)
    return out


def keyframes(path: Path) -> set[int]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {round(float(p.pts * s.time_base) * 25) for p in c.demux(s) if p.size and p.is_keyframe}


def assert_same_store(a_root: Path, b_root: Path) -> None:
    a, b = open_store(a_root), open_store(b_root)
    ma, mb = a.videos[0], b.videos[0]
    for key in ("num_frames", "fps", "width", "height", "lost", "errors", "stretches", "excluded", "header_frames"):
        assert ma[key] == mb[key], key
    np.testing.assert_array_equal(a.timestamps(0), b.timestamps(0))
    np.testing.assert_array_equal(a.stats(0), b.stats(0))  # the diff of each segment's first frame included
    ra, rb = a.reader(0), b.reader(0)
    for i in range(ma["num_frames"]):
        assert ra.read_bytes(i) == rb.read_bytes(i), f"frame {i}"


def test_the_plan_splits_at_keyframes(video):
    keys = keyframes(video)  # every 25 frames, and where x264 saw a scene cut (the end of the freeze)
    plan = plan_segments(video, 3, N, 100, output_order=False)
    # aimed at 600 / 3: each start is the last keyframe at or before its aim
    assert [s.start for s in plan] == [0] + [max(k for k in keys if k <= aim) for aim in (200, 400)]
    assert [s.end for s in plan] == [s.start for s in plan[1:]] + [None]
    # asked for more segments than min_frames allows: fewer, all at keyframes, none under min_frames
    starts = [s.start for s in plan_segments(video, 8, N, 150, output_order=False)]
    assert 1 < len(starts) <= 4 and set(starts) <= keys
    assert all(b - a >= 150 for a, b in zip(starts, starts[1:] + [N]))
    assert len(plan_segments(video, 4, N, 400, output_order=False)) == 1
    assert len(plan_segments(video, 4, N, 100, output_order=True)) == 1  # AVI-style numbering: one pass


def test_three_jobs_write_the_single_job_store_frame_for_frame(video, single, tmp_path):
    out = tmp_path / "three.store"
    reports = ingest([video], out, IngestOptions(**OPTIONS, jobs=3), progress=False)
    assert reports[0].num_frames == N and reports[0].lost == []
    files = {s["file"] for s in open_store(out).videos[0]["shards"]}
    assert {f.split("-")[0] for f in files} == {"seg000", "seg001", "seg002"}  # really three segments
    assert not list((out / "v000").glob("*.first.npy")) and not list((out / "v000").glob("*.idx.npy"))
    assert_same_store(out, single)  # the frozen run (in segment 1) is found as in one pass


CHILD = ("import sys; from vidssl.data.ingest import IngestOptions, ingest; "
         f"ingest([sys.argv[1]], sys.argv[2], IngestOptions(**{OPTIONS!r}, jobs=2), progress=False)")


def committed(vdir: Path) -> dict[str, list[dict]]:
    out = {}
    for p in vdir.glob("seg*.progress.json"):
        try:
            out[p.name] = json.loads(p.read_text())
        except ValueError:  # being replaced right now (written atomically: never torn, but may vanish)
            pass
    return out


def test_a_killed_parallel_ingest_resumes_every_segment(video, single, tmp_path):
    out = tmp_path / "killed.store"
    vdir = out / "v000"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(video), str(out)], start_new_session=True)
    deadline = time.monotonic() + 90
    try:
        # kill the whole process group (the ingest and its segment processes) once both segments
        # have committed a shard: mid-ingest, files half written
        while time.monotonic() < deadline and child.poll() is None:
            progs = committed(vdir)
            if len(progs) == 2 and all(len(p["shards"]) >= 1 for p in progs.values()):
                break
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -9, "the ingest finished before it could be killed"
    time.sleep(0.3)  # the segment processes die with the group
    before = committed(vdir)
    assert not all(p["done"] for p in before.values())
    kept = {s["file"]: (vdir / s["file"]).stat().st_mtime_ns for p in before.values() for s in p["shards"]}
    assert kept
    with pytest.raises(StoreError, match="ingest did not finish"):
        open_store(out)
    # the same call again: every segment continues after its last committed shard
    ingest([video], out, IngestOptions(**OPTIONS, jobs=2), progress=False)
    for name, mtime in kept.items():
        assert (vdir / name).stat().st_mtime_ns == mtime, f"{name} was rewritten, not kept"
    assert_same_store(out, single)


def test_one_command_per_video_then_one_to_write_the_manifest(video, tmp_path):
    """The SLURM-array recipe of docs/data.md (`vidssl ingest ... --part K`): parts in any order,
    then the same call without a part writes the manifest."""
    other = write_video(tmp_path / "short.mkv", render_frames(seed=5, num_frames=40), fps=25, gop=10)
    out = tmp_path / "array.store"
    both, opts = [video, other], IngestOptions(**OPTIONS, jobs=2)
    [r] = ingest(both, out, opts, progress=False, part=1)
    assert (r.name, r.num_frames) == ("short.mkv", 40)
    with pytest.raises(StoreError, match="ingest did not finish"):
        open_store(out)  # one part done, no manifest yet
    ingest(both, out, opts, progress=False, part=0)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("v*/video.json")}
    reports = ingest(both, out, opts, progress=False)  # every part done: only the manifest is written
    assert [(r.name, r.num_frames) for r in reports] == [("long.mp4", N), ("short.mkv", 40)]
    assert {p: p.stat().st_mtime_ns for p in out.glob("v*/video.json")} == stamps  # nothing decoded again
    assert [m["source"]["name"] for m in open_store(out).videos] == ["long.mp4", "short.mkv"]
    with pytest.raises(VideoError, match=r"--part 2 is outside the 2 video\(s\) given"):
        ingest(both, out, opts, progress=False, part=2)
