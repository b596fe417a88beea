"""The first losses of the built-in default (DoRA) and of DINO on the same frames, pinned.

Recorded before the house moves (issue 9) and kept green through them; re-recorded when the
default's recipe changed (issue 10: BN head, tau_t 0.03, local crops 0.25-0.6, momentum 0.99;
then mimetic q/k init with tau_t back to 0.04; then bottleneck_dim 16).
A refactor that changes what a step computes (views, head, EMA, schedules, tracking, the loss)
moves these numbers. fp32 and deterministic, so the values depend only on the code, not on the
CPU's bf16 support.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidssl.config import load_config
from vidssl.data.sample import write_sample_video
from vidssl.engine.trainer import Trainer

PINNED = {
    "dora": [9.174578666687012, 8.954605102539062, 8.990227699279785],
    "dino": [9.846806526184082, 9.443440437316895, 9.204690933227539],
}
OVERRIDES = [
    "data.num_workers=0", "engine.precision=32-true", "engine.deterministic=true", "engine.accelerator=cpu",
    "engine.progress=false", "engine.log_every=1", "data.stream_window=16", "optim.steps_per_epoch=3",
]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pin") / "walk.mp4"
    write_sample_video(path, seed=5, num_frames=80)
    return path


@pytest.mark.parametrize("method", sorted(PINNED))
def test_default_first_losses_are_pinned(method, video, tmp_path):
    cfg = load_config("default", [*OVERRIDES, f"method.name={method}", f"data.videos=[{video}]"])
    Trainer(cfg, tmp_path / "run").fit(max_steps=3)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == pytest.approx(PINNED[method], rel=1e-5)
