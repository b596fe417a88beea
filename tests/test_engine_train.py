"""The optimisation rules of the engine, checked on a real tiny run: lr scaling and warm-up, the
head's last layer frozen in epoch 0, fp16 gradients unscaled before clipping, no weight decay
on biases and norms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.amp.grad_scaler import OptState

from vidssl.config import load_config
from vidssl.data.sample import write_sample_video
from vidssl.engine import checkpoint as ckpt
from vidssl.engine import trainer as trainer_module
from vidssl.engine.trainer import Trainer

# 4 clips a step, 3 steps an epoch, 1 warm-up epoch, last layer frozen for 1 epoch
TINY = [
    "method.name=dino", "aug.global_crops_number=2", "model.arch=vit_tiny", "model.patch_size=16", "model.out_dim=128",
    "model.hidden_dim=64", "model.bottleneck_dim=32", "aug.global_crop_size=32", "aug.local_crop_size=16",
    "aug.local_crops_number=2", "data.frames_per_clip=1", "data.frame_stride=1", "data.batch_size=4",
    "data.num_workers=0", "data.stream_window=16", "optim.epochs=3", "optim.steps_per_epoch=3",
    "optim.warmup_epochs=1", "optim.freeze_last_layer=1", "optim.lr=0.05", "engine.progress=false",
    "engine.accelerator=cpu", "engine.precision=32-true", "engine.deterministic=true",
]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    write_sample_video(path, seed=3, num_frames=40)
    return path


def trainer(video: Path, out: Path, *extra: str, resume: bool = False) -> Trainer:
    return Trainer(load_config("default", [*TINY, f"data.videos=[{video}]", *extra]), out, resume=resume)


def last_layer(run_dir: Path) -> dict[str, torch.Tensor]:
    student = ckpt.load(run_dir)["student"]
    return {k: v for k, v in student.items() if k.startswith("head.last_layer.")}


def test_lr_reaches_base_times_batch_over_256_at_the_end_of_warm_up(video, tmp_path) -> None:
    t = trainer(video, tmp_path / "run")
    t._build()
    peak = 0.05 * 4 / 256  # optim.lr x total batch (4 clips x 1 process) / 256
    warmup_steps = 1 * t.steps_per_epoch  # warmup_epochs x steps per epoch
    assert t.schedules.lr(0) == 0.0
    assert t.schedules.lr(warmup_steps - 1) < peak
    assert t.schedules.lr(warmup_steps) == pytest.approx(peak, rel=1e-12)
    assert t.schedules.lr(t.total_steps) == pytest.approx(t.cfg.optim.min_lr)


def test_lr_scale_by_frames_counts_every_frame_as_an_image(video, tmp_path) -> None:
    t = trainer(video, tmp_path / "run", "data.frames_per_clip=2", "optim.lr_scale_by=frames")
    t._build()
    assert t.schedules.lr(t.steps_per_epoch) == pytest.approx(0.05 * 4 * 2 / 256, rel=1e-12)


def test_the_last_layer_stays_fixed_through_epoch_0_and_moves_in_epoch_1(video, tmp_path) -> None:
    fresh = trainer(video, tmp_path / "fresh")
    fresh._build()
    initial = {f"head.last_layer.{k}": v.clone() for k, v in fresh.method.student["head"].last_layer.state_dict().items()}
    trainer(video, tmp_path / "run").fit(max_steps=3)  # all of epoch 0
    after_epoch_0 = last_layer(tmp_path / "run")
    assert after_epoch_0.keys() == initial.keys()
    assert all(torch.equal(after_epoch_0[k], initial[k]) for k in initial)
    trainer(video, tmp_path / "run", resume=True).fit(max_steps=4)  # the first step of epoch 1
    moved = last_layer(tmp_path / "run")
    assert any(not torch.equal(moved[k], initial[k]) for k in initial)


def test_fp16_gradients_are_unscaled_before_clipping(video, tmp_path, monkeypatch) -> None:
    from lightning.fabric.plugins.precision import MixedPrecision

    t = trainer(video, tmp_path / "run", "optim.clip_grad=3.0")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    t.fabric._strategy.precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    stages = []
    real_clip = trainer_module.clip_gradients_per_tensor

    def recording_clip(module, max_norm):  # the real clipping, noting the scaler's stage first
        stages.append(scaler._per_optimizer_states[id(t.optimizer.optimizer)]["stage"])
        return real_clip(module, max_norm)

    monkeypatch.setattr(trainer_module, "clip_gradients_per_tensor", recording_clip)
    t.fit(max_steps=2)
    assert stages == [OptState.UNSCALED, OptState.UNSCALED]


def test_weight_decay_never_reaches_biases_and_norms(video, tmp_path) -> None:
    t = trainer(video, tmp_path / "run", "optim.weight_decay=0.5", "optim.weight_decay_end=0.5")
    t._build()
    t.step = t.steps_per_epoch  # past warm-up: lr > 0
    t._apply_schedules()
    named = dict(t.method.student.named_parameters())
    before = {n: p.detach().clone() for n, p in named.items()}
    for p in named.values():
        p.grad = torch.zeros_like(p)  # no gradient: AdamW's decoupled decay is the only change
    t.optimizer.step()
    for n, p in named.items():
        if not p.requires_grad:
            continue
        decays = p.ndim > 1 and not n.endswith(".bias")
        assert torch.equal(p, before[n]) != decays, n


def test_mean_upsampling_matches_the_crops_actually_drawn() -> None:
    from vidssl.data.transforms import RandomResizedCrop

    crop = RandomResizedCrop(300, (0.2, 1.0))
    torch.manual_seed(0)
    drawn = [crop.draw(288, 512) for _ in range(4000)]  # a 512x288 frame (16:9 at short side 288)
    empirical = sum(300 / (h * w) ** 0.5 for _, _, h, w in drawn) / len(drawn)
    assert crop.mean_upsampling(288, 512) == pytest.approx(empirical, rel=0.03)


def test_a_warning_when_frames_are_decoded_too_small_for_the_crop(tmp_path) -> None:
    from vidssl.data.writer import moving_frames, write_video

    small = write_video(tmp_path / "small.mp4", moving_frames(40, 24, 16), fps=25, gop=8)
    said: list[str] = []
    t = Trainer(load_config("default", [*TINY, f"data.videos=[{small}]", "optim.steps_per_epoch=1"]), tmp_path / "run")
    t._build()
    t._warn_if_upsampling(said.append)
    assert len(said) == 1 and "32 px crop enlarges the decoded frames (24x16) 2.2x" in said[0]
    said.clear()
    fine = Trainer(load_config("default", [*TINY, f"data.videos=[{small}]", "optim.steps_per_epoch=1",
                                           "aug.global_crop_size=16", "aug.local_crop_size=16"]), tmp_path / "run2")
    fine._build()
    fine._warn_if_upsampling(said.append)
    assert said == []
