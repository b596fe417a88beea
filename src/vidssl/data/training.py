"""The engine's entry point to data: `build_training_data(cfg, transform, seed=...)`.

Sources, in order of precedence: `cfg.store` (a frame store: constant-time random access, so
each epoch is a global shuffle), `cfg.videos` (video files read directly: each worker keeps one
reader per file and decodes forward through a block of `cfg.stream_window` neighbouring clips,
seeking once per block, never per clip), else the built-in sample video.

Batches are a pure function of (seed, epoch, rank, world size): the epoch plan is computed up
front, batch b holds plan items [b*B, (b+1)*B), and the transform of each sample runs under a
seed derived from (seed, epoch, rank, position). A resumed run (`start_batch > 0`) therefore
sees exactly the batches the uninterrupted run saw, whatever the number of workers.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vidssl.config import DataConfig
from vidssl.data.clips import ClipIndex, EpochPlan
from vidssl.data.errors import VideoError
from vidssl.data.video import open_reader, probe_video
from vidssl.errors import VidsslError

Transform = Callable[[Tensor], list[Tensor]]


@dataclass
class SourceSpec:
    """Picklable description of where frames come from; each process opens its own readers."""

    kind: str  # "videos" | "store"
    paths: list[str]
    backend: str = "pyav"
    short_side: int | None = None
    store: str | None = None
    key: str = field(default="", compare=False)

    def open_reader(self, video: int):
        if self.kind == "store":
            from vidssl.data.store import open_store

            return open_store(self.store, verify=False).reader(video)
        if os.path.isdir(self.paths[video]):  # a folder of JPEG frames (DAVIS / YouTube-VOS layout)
            from vidssl.data.frames import FrameFolderReader

            return FrameFolderReader(self.paths[video], self.short_side)
        return open_reader(self.paths[video], self.backend, self.short_side, threads=1)


_READERS: dict[tuple[str, int], Any] = {}
_INHERITED: list[Any] = []  # a forked child's copies of the parent's readers: never used nor freed


def _forget_parent_readers() -> None:
    # Freeing a decoder copied through fork can wait forever on threads that only exist in the
    # parent, so the child keeps the copies alive and opens its own readers.
    _INHERITED.extend(_READERS.values())
    _READERS.clear()


os.register_at_fork(after_in_child=_forget_parent_readers)


def _reader(spec: SourceSpec, video: int):
    """The persistent reader of `video` in this process (one per worker, kept across tasks)."""
    key = (spec.key, video)
    r = _READERS.get(key)
    if r is None:
        r = _READERS[key] = spec.open_reader(video)
    return r


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """The seed of one sample's transform: a hash of where it sits in the run."""
    return int(np.random.SeedSequence([seed, epoch, rank, position]).generate_state(1, np.uint64)[0] >> 1)


def run_transform(transform: Transform, clip: Tensor, seed: int) -> list[Tensor]:
    """`transform(clip)` with torch, numpy and `random` seeded by `seed`; global RNG states are
    restored afterwards so the caller's randomness is untouched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            return list(transform(clip))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def collate(samples: list[list[Tensor]], where: str) -> list[Tensor]:
    """[[view0, view1, ...] per sample] -> [view0 (B, ...), view1 (B, ...), ...]."""
    if not samples:
        return []
    n = len(samples[0])
    try:
        return [torch.stack([s[j] for s in samples]) for j in range(n)]
    except RuntimeError as e:
        raise VidsslError(f"{where}: clips of different sizes cannot be batched without a transform ({e})") from None


def stack_clips(clips: list[list[np.ndarray]], where: str) -> list[Tensor]:
    """Frames of B clips -> [uint8 (B, T, H, W, 3)], written once into one buffer."""
    if not clips:
        return []
    shapes = {f.shape for c in clips for f in c}
    if len(shapes) != 1:
        raise VidsslError(f"{where}: frames of different sizes {sorted(shapes)} cannot be batched without a transform")
    out = np.empty((len(clips), len(clips[0]), *shapes.pop()), dtype=np.uint8)
    for i, c in enumerate(clips):
        for t, f in enumerate(c):
            out[i, t] = f
    return [torch.from_numpy(out)]


class _EpochBatches(IterableDataset):
    """Yields (batch index, batch) for this worker's share of the tasks (groups of batches)."""

    def __init__(self, spec: SourceSpec, names: list[str], plan: EpochPlan, batch_size: int,
                 tasks: list[tuple[int, int]], transform: Transform | None, seed: int, epoch: int, rank: int):
        self.spec, self.names, self.plan, self.B = spec, names, plan, batch_size
        self.tasks, self.transform = tasks, transform
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for t, (b0, b1) in enumerate(self.tasks):
            if t % nw == wid:
                yield from self._task(b0, b1)

    def _task(self, b0: int, b1: int) -> Iterator[tuple[int, dict]]:
        lo, hi = b0 * self.B, b1 * self.B
        vids, frames = self.plan.videos[lo:hi], self.plan.frames[lo:hi]
        need: dict[int, set[int]] = defaultdict(set)
        for v, f in zip(vids.tolist(), frames.tolist()):
            need[v].update(f)
        got: dict[int, dict[int, np.ndarray]] = {}
        lost: dict[int, dict[int, str]] = {}
        for v in sorted(need):
            try:
                got[v], lost[v] = _reader(self.spec, v).read(sorted(need[v]))
            except VidsslError:
                raise
            except Exception as e:  # a reader that breaks entirely: all its frames are lost
                _INHERITED.append(_READERS.pop((self.spec.key, v), None))
                got[v], lost[v] = {}, {i: f"read error ({type(e).__name__}: {e})" for i in need[v]}
        for b in range(b0, b1):
            samples, skipped, kept_v, kept_f = [], [], [], []
            for pos in range(b * self.B, (b + 1) * self.B):
                v, fr = int(self.plan.videos[pos]), self.plan.frames[pos].tolist()
                bad = [i for i in fr if i not in got[v]]
                if bad:
                    why = lost[v].get(bad[0], "not decoded")
                    skipped.append(f"{self.names[v]}: frame {bad[0]}: {why}")
                    continue
                if self.transform is None:
                    samples.append([got[v][i] for i in fr])
                else:
                    clip = torch.from_numpy(np.stack([got[v][i] for i in fr]))  # (T, H, W, 3) uint8
                    samples.append(run_transform(self.transform, clip, sample_seed(self.seed, self.epoch, self.rank, pos)))
                kept_v.append(v)
                kept_f.append(fr)
            where = self.names[kept_v[0]] if kept_v else "batch"
            yield b, {
                "views": collate(samples, where) if self.transform is not None else stack_clips(samples, where),
                "skipped": skipped,
                "video": torch.tensor(kept_v, dtype=torch.long),
                "frames": torch.tensor(kept_f, dtype=torch.long).reshape(len(kept_f), self.plan.frames.shape[1]),
            }


def _first(batch: tuple[int, dict]) -> tuple[int, dict]:
    return batch


class TrainingData:
    """Clips for training: an index over the source, epoch plans and a loader (see module doc)."""

    def __init__(self, cfg: DataConfig, spec: SourceSpec, index: ClipIndex, transform: Transform | None,
                 seed: int, rank: int, world_size: int, random_access: bool, summary: str,
                 frame_sizes: list[tuple[int, int]]):
        self.cfg, self.spec, self.index, self.transform = cfg, spec, index, transform
        self.frame_sizes = frame_sizes  # (width, height) of each video's frames as decoded for training
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.random_access = random_access
        self._summary = summary
        self.num_clips: int = len(index)

    def batches_per_epoch(self, batch_size: int) -> int:
        """Batches of one epoch on this rank (all ranks get the same number; last partial dropped)."""
        return self.index.batches_per_epoch(batch_size, self.world_size)

    def epoch_plan(self, epoch: int, batch_size: int) -> EpochPlan:
        """This rank's clips of `epoch`, in batch order."""
        block = None if self.random_access else -(-max(batch_size, self.cfg.stream_window) // batch_size) * batch_size
        return self.index.epoch_plan(self.seed, epoch, batch_size, self.rank, self.world_size, block)

    def _tasks(self, batch_size: int, start_batch: int) -> list[tuple[int, int]]:
        nb = self.batches_per_epoch(batch_size)
        group = 1 if self.random_access else -(-max(batch_size, self.cfg.stream_window) // batch_size)
        tasks, b = [], start_batch
        while b < nb:
            end = min(nb, (b // group + 1) * group)
            tasks.append((b, end))
            b = end
        return tasks

    def loader(self, batch_size: int, num_workers: int, epoch: int, start_batch: int = 0) -> Iterable[dict]:
        """This rank's batches of `epoch` from `start_batch` on:
        {"views": [(B, ...) per transform output], "skipped": [one-line messages],
         "video": (B,) video ids, "frames": (B, T) frame indices}. Without a transform
        "views" is [uint8 clips (B, T, H, W, 3)]. Clips that fail to decode are dropped (the batch is
        smaller) and named in "skipped"; the loader only reports them: the run-wide count against
        `max_decode_errors` is the engine's, summed over all ranks, so that every rank stops together."""
        nb = self.batches_per_epoch(batch_size)
        if not 0 <= start_batch <= nb:
            raise VidsslError(f"start_batch={start_batch} is outside the epoch's {nb} batches")
        plan = self.epoch_plan(epoch, batch_size)
        tasks = self._tasks(batch_size, start_batch)
        dataset = _EpochBatches(self.spec, self.index.names, plan, batch_size, tasks, self.transform,
                                self.seed, epoch, self.rank)
        return _OrderedLoader(dataset, num_workers, start_batch, nb)

    def read_clip(self, clip_index: int) -> Tensor:
        """Clip `clip_index` of the canonical (unshuffled) index as uint8 (T, H, W, 3)."""
        v, frames = self.index.clip(clip_index)
        got, lost = _reader(self.spec, v).read(frames.tolist())
        bad = [i for i in frames.tolist() if i not in got]
        if bad:
            raise VideoError(f"{self.index.names[v]}: frame {bad[0]}: {lost.get(bad[0], 'not decoded')}")
        return torch.from_numpy(np.stack([got[i] for i in frames.tolist()]))

    def describe(self) -> str:
        """One line: source, frames, fps, clips and excluded stretches."""
        return self._summary


class _OrderedLoader:
    """Iterates a DataLoader over `_EpochBatches` and yields batches in index order."""

    def __init__(self, dataset: _EpochBatches, num_workers: int, first: int, end: int):
        self.dataset, self.num_workers = dataset, num_workers
        self.first, self.end = first, end

    def __len__(self) -> int:
        return self.end - self.first

    def __iter__(self) -> Iterator[dict]:
        if self.num_workers > 0:
            source: Iterable = DataLoader(
                self.dataset, batch_size=None, num_workers=min(self.num_workers, max(1, len(self.dataset.tasks))),
                collate_fn=_first, persistent_workers=False,
                # Its own generator: a DataLoader otherwise draws its workers' base seed from the
                # global RNG each time it starts, so a run resumed mid-epoch (one start fewer)
                # would train with another drop-path stream. Every sample seeds its own
                # augmentation, so the workers' seed does not matter.
                generator=torch.Generator().manual_seed(0),
            )
        else:
            source = self.dataset
        pending: dict[int, dict] = {}
        nxt = self.first
        for b, batch in source:
            pending[b] = batch
            while nxt in pending:
                yield pending.pop(nxt)
                nxt += 1


def build_training_data(cfg: DataConfig, transform: Transform | None, *, seed: int, rank: int = 0,
                        world_size: int = 1) -> TrainingData:
    """Training clips from `cfg.store`, else `cfg.videos`, else the built-in sample video."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise VidsslError(f"rank {rank} is not valid for world size {world_size}")
    if cfg.store:
        from vidssl.data.store import open_store

        store = open_store(cfg.store, verify=True)
        names = [m["source"]["name"] for m in store.videos]
        num_frames = [m["num_frames"] for m in store.videos]
        excluded = [[tuple(x) for x in m["excluded"]] for m in store.videos]
        fps = [m["fps"] for m in store.videos]
        sizes = [(m["width"], m["height"]) for m in store.videos]
        spec = SourceSpec("store", [], store=str(store.root), key=f"store:{store.root}")
        random_access, what = True, f"store {store.root}"
    else:
        paths = list(cfg.videos)
        if not paths:
            from vidssl.data.sample import sample_video_path

            paths = [str(sample_video_path())]
        from vidssl.data.frames import probe_frame_folder

        infos = [probe_frame_folder(p) if os.path.isdir(p) else probe_video(p, cfg.backend) for p in paths]
        # a frame folder is named by its path: DAVIS / YouTube-VOS folders repeat names across splits
        names = [i.path if os.path.isdir(i.path) else os.path.basename(i.path) for i in infos]
        num_frames = [i.num_frames for i in infos]
        excluded = [[] for _ in infos]
        fps = [i.fps for i in infos]
        from vidssl.data.video import resized_size

        sizes = [resized_size(i.width, i.height, cfg.video_short_side) for i in infos]
        spec = SourceSpec("videos", [i.path for i in infos], cfg.backend, cfg.video_short_side,
                          key=f"videos:{cfg.backend}:{cfg.video_short_side}:{'|'.join(i.path for i in infos)}")
        random_access = False
        what = "videos " + ", ".join(names) if cfg.videos else f"built-in sample {names[0]}"
    index = ClipIndex(num_frames, excluded, cfg.frames_per_clip, cfg.frame_stride, cfg.sampler,
                      names=names, weights=cfg.video_weights or None)
    excl = sum(len(e) for e in excluded)
    excl_frames = sum(b - a for e in excluded for a, b in e)
    per_video = "; ".join(
        f"{n}: {f} frames @ {r:g} fps, {w}x{h}" for n, f, r, (w, h) in zip(names, num_frames, fps, sizes)
    )
    summary = (
        f"{what} [{per_video}]; {len(index)} clips ({cfg.sampler}, T={cfg.frames_per_clip}, stride "
        f"{index.stride}); excluded stretches: {excl} ({excl_frames} frames); "
        + ("random access" if random_access else f"streaming, window {cfg.stream_window} clips, backend {cfg.backend}")
    )
    return TrainingData(cfg, spec, index, transform, seed, rank, world_size, random_access, summary, sizes)
