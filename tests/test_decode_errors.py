"""The run-wide decode-error limit: the engine stops with one line naming the file and the frame,
and with several processes every rank takes that decision at the same batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidssl.config import DataConfig, load_config
from vidssl.data import DecodeLimitError, build_training_data
from vidssl.data.sample import write_sample_video
from vidssl.engine.trainer import Trainer
from vidssl.errors import VidsslError

from test_pretrain import TINY_RUN

# the tiny DINO run of test_pretrain, one epoch long enough to meet the damaged half of the video
TINY = [*TINY_RUN, "optim.epochs=1", "optim.steps_per_epoch=15", "optim.warmup_epochs=0",
        "method.track_pictures_every=1000"]


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory) -> Path:
    """60 frames whose second half is cut off: the header still promises 60."""
    d = tmp_path_factory.mktemp("cut")
    whole = d / "whole.mp4"
    write_sample_video(whole, seed=2, num_frames=60)
    cut = d / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


def test_the_run_skips_empty_batches_then_stops_past_the_limit(cut_video, tmp_path, monkeypatch):
    seen = []  # (clips skipped, batch empty, steps trained so far) per batch
    real_count = Trainer._count_decode_errors

    def count(self, skipped, empty=False):
        seen.append((len(skipped), empty, self.step))
        return real_count(self, skipped, empty)

    monkeypatch.setattr(Trainer, "_count_decode_errors", count)
    # With seed 1 the batches skip 2, 2, 1, 2, 0, 0, 0, 0 clips (steps on the partial batches), then
    # 4, 4 (two empty batches: 15 errors) and 4 more (19 > 17): the stop. Steps cost seconds on a CPU.
    cfg = load_config("default", [*TINY, f"data.videos=[{cut_video}]", "data.max_decode_errors=17", "engine.seed=1"])
    trainer = Trainer(cfg, tmp_path / "run")
    with pytest.raises(VidsslError) as e:
        trainer.fit()
    message = str(e.value)
    assert isinstance(e.value, DecodeLimitError)  # the engine's run-wide count
    total = sum(n for n, _, _ in seen)
    assert "\n" not in message
    assert message.startswith(f"{total} clips failed to decode (limit data.max_decode_errors=17); last: cut.mp4: frame ")
    assert total - seen[-1][0] <= 17 < total  # it stopped at the first batch past the limit
    assert trainer.decode_errors == total  # the counter the checkpoint saves
    # batches whose clips all failed were passed over (no step, no crash) and training went on
    assert any(empty for _, empty, _ in seen[:-1]) and trainer.step > 0
    assert trainer.step == sum(1 for _, empty, _ in seen[:-1] if not empty)


class TwoRanks:
    """A Fabric stand-in for rank 0 of two: all_reduce adds what the other rank reported
    (clips skipped, batch empty)."""

    world_size, device = 2, torch.device("cpu")

    def __init__(self, other: list[tuple[int, int]]):
        self.other, self.calls = list(other), 0

    def all_reduce(self, t, reduce_op):
        assert reduce_op == "sum"
        self.calls += 1
        return t + torch.tensor(self.other.pop(0), dtype=t.dtype)


def rank0(limit: int, other: list[tuple[int, int]]) -> Trainer:
    trainer = Trainer.__new__(Trainer)  # only what _count_decode_errors uses
    trainer.cfg = load_config("default", [f"data.max_decode_errors={limit}"])
    trainer.decode_errors, trainer._last_decode_error, trainer.fabric = 0, "", TwoRanks(other)
    return trainer


def test_every_rank_decides_the_same_at_the_same_batch():
    trainer = rank0(5, other=[(0, 0), (3, 0), (0, 1), (3, 0)])
    assert trainer._count_decode_errors([]) is False  # nothing anywhere: still a collective call
    assert trainer._count_decode_errors(["a.mp4: frame 7: decode error"]) is False
    assert trainer.decode_errors == 4  # 1 here + 3 there: both ranks hold the same count
    # the other rank's batch has no clip left: this rank skips the step with it
    assert trainer._count_decode_errors([]) is True
    # no error here, 3 there: both ranks pass the limit at this batch and stop
    with pytest.raises(VidsslError, match=r"^7 clips failed .*=5\); last: a.mp4: frame 7: decode error$"):
        trainer._count_decode_errors([])
    assert trainer.fabric.calls == 4
    other = rank0(5, other=[(6, 1)])  # a rank that saw no error itself says where to look
    with pytest.raises(VidsslError, match="last: on another process"):
        other._count_decode_errors([])


def test_the_loader_only_reports_skips(cut_video):
    """The run-wide count is the engine's (test above): a loader of any rank never stops on its own,
    even past data.max_decode_errors, and names every skipped clip."""
    cfg = DataConfig(videos=[str(cut_video)], frames_per_clip=1, frame_stride=1, stream_window=16, max_decode_errors=0)
    for rank, world in ((0, 1), (0, 2)):
        skipped = [s for b in build_training_data(cfg, None, seed=0, rank=rank, world_size=world).loader(4, 0, epoch=0)
                   for s in b["skipped"]]
        assert len(skipped) > 1 and all(s.startswith("cut.mp4: frame ") for s in skipped)
