"""TimeT through the engine: EMA direction, frozen blocks, prototype norms, the loss falling, and
the clip-wise unsupervised segmentation mIoU of a tuned encoder against its start on a DAVIS fixture."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from test_eval_fixtures import write_davis
from vidssl.cli import pretrain as pretrain_cli
from vidssl.config import load_config
from vidssl.data.sample import write_sample_video
from vidssl.engine.callbacks import Callback
from vidssl.engine.trainer import Trainer
from vidssl.eval.unsup_seg import evaluate_unsup_seg
from vidssl.hub import export_encoder, load_encoder
from vidssl.methods import build_method
from vidssl.models import create_vit

TINY = [
    "model.arch=vit_tiny", "model.patch_size=8", "aug.global_crop_size=32", "data.batch_size=4",
    "data.num_workers=0", "engine.accelerator=cpu", "engine.precision=32-true", "engine.progress=false",
    "engine.log_every=1", "data.stream_window=16", "data.video_short_side=64",
    "method.timet_prototypes=10", "method.timet_head_dims=[64,32]",
]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("timet") / "walk.mp4"
    write_sample_video(path, seed=5, num_frames=120)
    return path


class Snapshots(Callback):
    """Student and teacher after every step (one step per epoch)."""

    def __init__(self) -> None:
        self.states: list[tuple[dict, dict]] = []

    def on_epoch_end(self, trainer) -> None:
        m = trainer.method
        self.states.append(({k: v.clone() for k, v in m.student.state_dict().items()},
                            {k: v.clone() for k, v in m.teacher.state_dict().items()}))


def run_pretrain(argv: list[str]) -> int:
    """`vidssl pretrain ARGV` through the command's own parser (the one module, not the whole CLI)."""
    parser = argparse.ArgumentParser()
    pretrain_cli.register(parser.add_subparsers())
    args = parser.parse_args(["pretrain", *argv])
    return args.func(args)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_ema_moves_teacher_towards_student_frozen_blocks_stay_and_prototypes_stay_unit(video: Path, tmp_path: Path) -> None:
    cfg = load_config("timet-vits16", [*TINY, f"data.videos=[{video}]", "optim.epochs=3", "optim.steps_per_epoch=1",
                                       "optim.lr=0.05", "optim.momentum_teacher=0.9"])
    torch.manual_seed(cfg.engine.seed)  # the trainer builds the method right after this seed
    start = build_method(cfg).student.state_dict()
    snaps = Snapshots()
    trainer = Trainer(cfg, tmp_path / "run", callbacks=[snaps])
    trainer.fit()
    momenta = [row["momentum"] for row in metrics(tmp_path / "run")]
    assert len(snaps.states) == 3 and momenta[0] == pytest.approx(0.9)
    trainable = {n for n, p in trainer.method.student.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.vit.blocks.11.") for n in trainable)
    teacher = start
    for (student_now, teacher_now), m in zip(snaps.states, momenta):
        for name, value in teacher_now.items():
            if name in trainable:
                want = m * teacher[name].double() + (1 - m) * student_now[name].double()
                torch.testing.assert_close(value.double(), want, atol=1e-6, rtol=1e-5)
            elif not name.startswith("prototypes."):
                assert torch.equal(value, start[name]), name  # frozen: bit-identical, teacher and student
                assert torch.equal(student_now[name], start[name]), name
        for net in (student_now, teacher_now):
            norms = net["prototypes.weight"].norm(dim=1)
            torch.testing.assert_close(norms, torch.ones_like(norms))
        teacher = teacher_now
    # the direction: the teacher went (1 - m) of the way to the student, not m (the official inversion)
    s1, t1 = snaps.states[0]
    w = "backbone.vit.blocks.11.mlp.fc1.weight"
    moved = (t1[w] - start[w]).norm() / (s1[w] - start[w]).norm()
    assert moved.item() == pytest.approx(1 - momenta[0], rel=1e-3)


def test_loss_falls_over_a_few_dozen_cpu_steps(video: Path, tmp_path: Path) -> None:
    cfg = load_config("timet-vits16", [*TINY, f"data.videos=[{video}]", "optim.epochs=10", "optim.steps_per_epoch=6",
                                       "optim.lr=0.05"])
    Trainer(cfg, tmp_path / "run").fit()
    losses = [row["loss"] for row in metrics(tmp_path / "run")]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)


def test_tuned_encoder_mIoU_on_davis_fixture_against_its_start(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    davis = write_davis(tmp_path / "davis", n_frames=12, names=("a", "b", "c"))
    torch.manual_seed(4)
    init = export_encoder(create_vit("vit_tiny", 8), tmp_path / "init.safetensors")
    folders = sorted(str(p) for p in (davis / "JPEGImages" / "480p").iterdir())
    run = tmp_path / "run"
    rc = run_pretrain(["timet-vits16", *[o for o in TINY if not o.startswith("model.")], "optim.epochs=8",
                       "optim.lr=0.05", "--init", str(init), "--out", str(run), "--frames", *folders])
    assert rc == 0
    out = capsys.readouterr().out
    assert "TimeT: loss" in out and "model.arch=vit_tiny, model.patch_size=8 (from the weights" in out
    tuned = load_encoder(run)
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, load_encoder(init).state_dict()[k])]
    assert changed and all(k.startswith(("blocks.10.", "blocks.11.")) for k in changed)

    def clip_miou(weights) -> dict:
        return evaluate_unsup_seg(weights, davis, "davis", protocols=["clip"], input_size=64, eval_size=32,
                                  num_workers=0, cache=False)

    before, after = clip_miou(init), clip_miou(run)
    for result in (before, after):
        assert result["images"] == 36  # every annotated frame of the fixture's files
        assert 0 < result["metrics"]["clip"]["mIoU"] <= 100  # percent
    assert after["metrics"]["clip"]["mIoU"] != before["metrics"]["clip"]["mIoU"]
    with capsys.disabled():
        print(f"\nTimeT on the DAVIS fixture: clip-wise mIoU {before['metrics']['clip']['mIoU']:.2f} (start) -> "
              f"{after['metrics']['clip']['mIoU']:.2f} (tuned)")


def test_validation_during_training_logs_plots_and_keeps_the_best(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    davis = write_davis(tmp_path / "davis", n_frames=8, names=("a", "b"))
    torch.manual_seed(4)
    init = export_encoder(create_vit("vit_tiny", 8), tmp_path / "init.safetensors")
    folders = sorted(str(p) for p in (davis / "JPEGImages" / "480p").iterdir())
    common = ["timet-vits16", *[o for o in TINY if not o.startswith("model.")], "optim.epochs=3",
              "optim.steps_per_epoch=1", "optim.lr=0.05", "--init", str(init), "--frames", *folders]
    assert run_pretrain([*common, "--out", str(tmp_path / "val"), "--val-davis", str(davis), "--val-every", "2",
                         "--val-size", "64"]) == 0
    val = tmp_path / "val"
    rows = [json.loads(line) for line in (val / "validation_davis.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [2]  # epochs 2 of 1..3 with --val-every 2
    assert (val / "validation_davis.png").stat().st_size > 0
    assert "validation epoch 2: clip mIoU" in capsys.readouterr().out
    # the kept encoder is the teacher that scored: evaluated again from its file, the same mIoU
    best = json.loads((val / "best_davis.json").read_text())
    again = evaluate_unsup_seg(val / "best_davis_encoder.safetensors", davis, "davis", protocols=["clip"],
                               input_size=64, eval_size=32, num_workers=0, cache=False)
    assert again["metrics"]["clip"]["mIoU"] == pytest.approx(best["clip_mIoU"], abs=1e-6)


def test_validation_leaves_the_global_rng_as_it_found_it(tmp_path: Path) -> None:
    """The feature loader draws a seed from torch's RNG; a resumed run must not depend on validation."""
    from types import SimpleNamespace

    from vidssl.models import Encoder
    from vidssl.viz.validation import SegmentationValidation

    davis = write_davis(tmp_path / "davis", n_frames=4, names=("a",))
    teacher = {"backbone": Encoder(create_vit("vit_tiny", 8))}
    trainer = SimpleNamespace(method=SimpleNamespace(teacher=teacher), epoch=1, step=1, run_dir=tmp_path)
    before = torch.get_rng_state()
    SegmentationValidation(davis, "davis", 1, 64, 32).on_epoch_end(trainer)
    assert torch.equal(before, torch.get_rng_state())
    assert (tmp_path / "best_davis_encoder.safetensors").is_file()


def test_validation_folder_that_is_not_a_dataset_is_one_line_before_training(tmp_path: Path) -> None:
    from vidssl.errors import VidsslError

    with pytest.raises(VidsslError, match="ImageSets|val"):
        run_pretrain(["timet-vits16", "--val-davis", str(tmp_path), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
