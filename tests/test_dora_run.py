"""A short DoRA run through the real engine and data layer on a generated video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidssl.config import load_config
from vidssl.data.sample import write_sample_video
from vidssl.engine.trainer import pretrain
from vidssl.viz.callbacks import training_pictures

TINY_DORA = [
    "method.name=dora", "method.num_objects=2", "aug.global_crops_number=1",
    "model.arch=vit_tiny", "model.patch_size=8", "model.out_dim=128", "model.hidden_dim=64", "model.bottleneck_dim=32",
    "aug.precrop_size=48", "aug.global_crop_size=32", "aug.local_crop_size=16", "aug.local_crops_number=2",
    "data.frames_per_clip=3", "data.frame_stride=4", "data.batch_size=2", "data.num_workers=0",
    "optim.epochs=2", "optim.steps_per_epoch=3", "optim.warmup_epochs=0", "optim.lr=0.05", "optim.min_lr=0.0005",
    "engine.progress=false", "engine.log_every=1", "engine.accelerator=cpu", "engine.precision=32-true",
    "method.track_pictures_every=1", "engine.checkpoint_every=1000",
]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    write_sample_video(path, seed=5, num_frames=60)
    return path


def test_dora_run_decreases_the_loss_and_writes_tracks_pictures(video: Path, tmp_path: Path) -> None:
    cfg = load_config(None, TINY_DORA + [f"data.videos=[{video}]"])
    run = tmp_path / "run"
    result = pretrain(cfg, run, callbacks=training_pictures(cfg))
    assert result["step"] == 6
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < losses[0] - 0.2, losses
    assert all(0 < r["mask_kept"] < 1 for r in rows)
    for epoch in (1, 2):
        png = run / "tracks" / f"epoch_{epoch:04d}.png"
        gif = run / "tracks" / f"epoch_{epoch:04d}.gif"
        assert png.stat().st_size > 0 and gif.stat().st_size > 0
        with Image.open(gif) as im:
            assert im.n_frames == 3  # one per clip frame
    grid = np.asarray(Image.open(run / "tracks" / "epoch_0002.png").convert("RGB"))
    assert grid.std() > 10  # a picture, not a blank canvas
