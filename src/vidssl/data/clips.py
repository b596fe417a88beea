"""Which clips exist and in what order an epoch visits them.

A clip is (video id, T sorted frame indices). `ClipIndex` knows every video's frame count and
excluded (blank/frozen) stretches, so no clip crosses a file boundary or an excluded stretch.
Samplers (SPEC 1.3, 5.2 item 1):
  - "stride": DoRA's sampler; every frame is a start, frames start + s*[0..T-1];
  - "timet_dense": TimeT_clean, T consecutive frames from every start (stride 1);
  - "timet_uniform": TimeT, T distinct sorted frames drawn uniformly over one valid stretch.
An epoch plan is a pure function of (seed, epoch): its order is either a global shuffle
(random-access sources) or shuffled blocks of nearby clips (streaming sources), then it is
sharded so every rank gets a disjoint share and the same number of batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidssl.errors import VidsslError

SAMPLERS = ("stride", "timet_dense", "timet_uniform")


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of video `video` that clips may use."""

    video: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


def valid_segments(video: int, num_frames: int, excluded: list[tuple[int, int]]) -> list[Segment]:
    """[0, num_frames) minus the excluded [a, b) stretches."""
    segs, pos = [], 0
    for a, b in sorted(excluded):
        a, b = max(a, 0), min(b, num_frames)
        if a > pos:
            segs.append(Segment(video, pos, a))
        pos = max(pos, b)
    if pos < num_frames:
        segs.append(Segment(video, pos, num_frames))
    return segs


@dataclass
class EpochPlan:
    """This rank's clips for one epoch, in order: video ids (N,) and frame indices (N, T)."""

    videos: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.videos)


class ClipIndex:
    """Every clip of every video for one sampler; maps clip ids to (video, frames)."""

    def __init__(self, num_frames: list[int], excluded: list[list[tuple[int, int]]], frames_per_clip: int,
                 stride: int, sampler: str = "stride", names: list[str] | None = None,
                 weights: list[float] | None = None):
        if sampler not in SAMPLERS:
            raise VidsslError(f"data.sampler: {sampler!r} is not allowed; valid values: {', '.join(SAMPLERS)}")
        self.T = frames_per_clip
        self.sampler = sampler
        self.stride = 1 if sampler == "timet_dense" else stride
        self.names = names or [f"video {i}" for i in range(len(num_frames))]
        self.num_frames = list(num_frames)
        self.excluded = [list(e) for e in excluded]
        if weights:
            if len(weights) != len(num_frames):
                raise VidsslError(
                    f"data.video_weights has {len(weights)} values but there are {len(num_frames)} videos"
                )
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise VidsslError(f"data.video_weights must be non-negative and not all zero, got {weights}")
        self.weights = list(weights) if weights else None
        self.segments = [s for v, n in enumerate(num_frames) for s in valid_segments(v, n, self.excluded[v])]
        span = self.span
        if sampler == "timet_uniform":
            counts = [len(s) // self.T if len(s) >= self.T else 0 for s in self.segments]
        else:
            counts = [max(0, len(s) - span + 1) for s in self.segments]
        self.seg_counts = np.array(counts, dtype=np.int64)
        self.seg_offsets = np.concatenate([[0], np.cumsum(self.seg_counts)]).astype(np.int64)
        for v, n in enumerate(num_frames):
            if self.video_clip_count(v) == 0:
                need = self.T if sampler == "timet_uniform" else span
                ex = sum(min(b, n) - max(a, 0) for a, b in self.excluded[v] if b > a)
                extra = f" ({ex} of them in excluded stretches)" if ex else ""
                raise VidsslError(
                    f"{self.names[v]} has {n} frames{extra}; a clip of T={self.T} at stride "
                    f"{self.stride} needs {need}"
                )

    @property
    def span(self) -> int:
        """Frames one stride clip covers: (T - 1) * s + 1."""
        return (self.T - 1) * self.stride + 1

    def __len__(self) -> int:
        return int(self.seg_offsets[-1])

    def video_clip_count(self, video: int) -> int:
        return int(sum(c for s, c in zip(self.segments, self.seg_counts) if s.video == video))

    def clip(self, clip_id: int, rng: np.random.Generator | None = None) -> tuple[int, np.ndarray]:
        """(video, frames (T,)) of clip `clip_id`. For timet_uniform the frames are drawn with `rng`
        (fixed seed 0 if none) inside the clip's stretch."""
        if not 0 <= clip_id < len(self):
            raise IndexError(f"clip {clip_id} out of range (0..{len(self) - 1})")
        k = int(np.searchsorted(self.seg_offsets, clip_id, side="right") - 1)
        seg = self.segments[k]
        if self.sampler == "timet_uniform":
            rng = rng or np.random.default_rng(clip_id)
            frames = np.sort(rng.choice(len(seg), size=self.T, replace=False)) + seg.start
            return seg.video, frames.astype(np.int64)
        start = seg.start + clip_id - int(self.seg_offsets[k])
        return seg.video, start + self.stride * np.arange(self.T, dtype=np.int64)

    # ------------------------------------------------------------------ epochs

    def epoch_clip_ids(self, rng: np.random.Generator) -> np.ndarray:
        """Clip ids of one epoch in canonical (time) order. Without weights every clip once;
        with weights video v gets round(N * w_v / sum(w)) clips, drawn without replacement
        while it has enough and cycling through fresh permutations when it does not."""
        n = len(self)
        if not self.weights:
            return np.arange(n, dtype=np.int64)
        w = np.asarray(self.weights, dtype=np.float64)
        quota = np.floor(n * w / w.sum()).astype(np.int64)
        quota[np.argmax(w)] += n - quota.sum()
        ids = []
        for v in range(len(self.num_frames)):
            own = np.concatenate([
                np.arange(self.seg_offsets[k], self.seg_offsets[k + 1])
                for k, s in enumerate(self.segments) if s.video == v
            ])
            reps = [rng.permutation(own) for _ in range(int(-(-quota[v] // len(own))))]
            ids.append(np.sort(np.concatenate(reps)[: quota[v]]) if reps else own[:0])
        return np.concatenate(ids).astype(np.int64)

    def epoch_plan(self, seed: int, epoch: int, batch_size: int, rank: int = 0, world_size: int = 1,
                   block: int | None = None) -> EpochPlan:
        """This rank's clips of `epoch`. `block=None`: a global shuffle. `block=K`: the time-ordered
        clips are cut into blocks of K neighbours, the blocks are shuffled and so is each block
        (for streaming readers that decode forward). Rank r takes the r-th run of
        batches_per_epoch * batch_size items of that order: disjoint, equal shares; the fewer than
        world_size * batch_size clips left over are dropped (drop_last)."""
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        ids = self.epoch_clip_ids(rng)
        if block is None:
            order = ids[rng.permutation(len(ids))]
        else:
            blocks = [ids[i : i + block] for i in range(0, len(ids), block)]
            chosen = rng.permutation(len(blocks))
            # full blocks first so they stay aligned with the reader's tasks; short ones (the end
            # of a video) last
            chosen = [b for b in chosen if len(blocks[b]) == block] + [b for b in chosen if len(blocks[b]) < block]
            order = np.concatenate([blocks[b][rng.permutation(len(blocks[b]))] for b in chosen])
        need = self.batches_per_epoch(batch_size, world_size) * batch_size
        mine = order[rank * need : (rank + 1) * need]  # disjoint, equal shares; the rest is dropped
        if self.sampler == "timet_uniform":
            clip_rng = np.random.default_rng([seed, epoch, rank, 0xC11B])
            videos = np.empty(need, dtype=np.int64)
            frames = np.empty((need, self.T), dtype=np.int64)
            for i, cid in enumerate(mine):
                videos[i], frames[i] = self.clip(int(cid), clip_rng)
            return EpochPlan(videos, frames)
        k = np.searchsorted(self.seg_offsets, mine, side="right") - 1
        seg_start = np.array([s.start for s in self.segments], dtype=np.int64)
        seg_video = np.array([s.video for s in self.segments], dtype=np.int64)
        starts = seg_start[k] + mine - self.seg_offsets[k]
        frames = starts[:, None] + self.stride * np.arange(self.T, dtype=np.int64)[None, :]
        return EpochPlan(seg_video[k], frames)

    def batches_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Per rank, drop_last: floor(clips / (batch_size * world_size))."""
        n = len(self) // (batch_size * world_size)
        if n == 0:
            raise VidsslError(
                f"only {len(self)} clips in the data but one step needs data.batch_size={batch_size} "
                f"x {world_size} process(es); use a smaller batch or more video"
            )
        return n
