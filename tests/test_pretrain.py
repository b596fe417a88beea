"""`vidssl pretrain` end to end on a generated video: run directory, exact resume after a kill,
non-finite loss, bad input, two-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vidssl.config import load_config
from vidssl.data.sample import write_sample_video
from vidssl.engine import checkpoint as ckpt
from vidssl.engine.trainer import NonFiniteLoss, Trainer
from vidssl.errors import VidsslError

TINY_RUN = [
    "method.name=dino", "aug.global_crops_number=2",
    "model.arch=vit_tiny", "model.patch_size=16", "model.out_dim=128", "model.hidden_dim=64", "model.bottleneck_dim=32",
    "aug.global_crop_size=32", "aug.local_crop_size=16", "aug.local_crops_number=2",
    "data.frames_per_clip=1", "data.frame_stride=1", "data.batch_size=4", "data.num_workers=0", "data.stream_window=16",
    "optim.epochs=3", "optim.steps_per_epoch=3", "optim.warmup_epochs=1",
    "engine.progress=false", "engine.log_every=1", "engine.deterministic=true", "engine.accelerator=cpu",
]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "walk.mp4"
    write_sample_video(path, seed=3, num_frames=60)
    return path


def vidssl(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vidssl", *args], capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"vidssl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def networks(run_dir: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(run_dir / ckpt.CHECKPOINT_NAME, weights_only=True)
    out = {f"student.{k}": v for k, v in payload["student"].items()}
    out.update({f"teacher.{k}": v for k, v in payload["teacher"].items()})
    out.update({f"method.{k}": v for k, v in payload["method_state"].items()})
    return out


def test_run_directory_contents(video, tmp_path):
    out = tmp_path / "run"
    proc = vidssl("pretrain", "default", "--video", str(video), "--out", str(out), "--steps", "4", *TINY_RUN)
    assert "final loss" in proc.stdout
    assert load_config(str(out / "config.yaml")).data.videos == [str(video)]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all({"loss", "lr", "weight_decay", "momentum", "clips_per_s"} <= r.keys() for r in rows)
    assert rows[0]["lr"] == 0.0 and rows[1]["lr"] > 0  # warm-up starts at zero
    assert (out / "loss.png").stat().st_size > 0
    assert list((out / "tensorboard").iterdir())
    payload = torch.load(out / "checkpoint.pt", weights_only=True)  # no pickled objects
    assert payload["step"] == 4 and payload["epoch"] == 1 and payload["batch_in_epoch"] == 1
    assert payload["method_state"]["loss.center"].abs().sum() > 0


def test_pretrain_from_an_ingested_store(video, tmp_path):
    store = tmp_path / "store"
    vidssl("ingest", str(video), "--out", str(store), "--short-side", "64", "--no-progress")
    out = tmp_path / "run"
    proc = vidssl("pretrain", "default", "--store", str(store), "--out", str(out), "--steps", "2", *TINY_RUN)
    assert f"store {store}" in proc.stderr + proc.stdout
    cfg = load_config(str(out / "config.yaml"))
    assert cfg.data.store == str(store) and cfg.data.videos == []
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2


# The default's own code paths: DoRA, loader workers, the streaming window (issue 11: a
# DataLoader drew its workers' seed from the global RNG, so a resumed run drifted by 1e-3).
DORA_WORKERS = [
    "data.num_workers=2", "data.batch_size=2", "optim.epochs=3", "optim.steps_per_epoch=3",
    "engine.progress=false", "engine.log_every=1", "engine.deterministic=true", "engine.accelerator=cpu",
    "engine.precision=32-true",
]


@pytest.mark.parametrize("source, overrides", [("video", TINY_RUN), ("video", DORA_WORKERS), ("store", DORA_WORKERS)],
                         ids=["dino-no-workers", "dora-workers-stream", "dora-workers-store"])
def test_killed_run_resumes_exactly(source, overrides, video, tmp_path):
    """A run SIGKILLed after its first checkpoint and resumed ends bit-identical to an
    uninterrupted run (crossing an epoch boundary and the last-layer freeze)."""
    if source == "store":
        vidssl("ingest", str(video), "--out", str(tmp_path / "store"), "--short-side", "64", "--no-progress")
        data = ["--store", str(tmp_path / "store")]
    else:
        data = ["--video", str(video)]
    args = ["default", *data, *overrides, "engine.checkpoint_every=2"]
    full = tmp_path / "full"
    vidssl("pretrain", *args, "--out", str(full), "--steps", "7")

    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "vidssl", "pretrain", *args, "--out", str(cut), "--steps", "7"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    interrupted_at = torch.load(cut / "checkpoint.pt", weights_only=True)["step"]
    assert interrupted_at < 7, "the run finished before it could be killed"

    vidssl("pretrain", "--out", str(cut), "--resume", "--steps", "7")
    a, b = networks(full), networks(cut)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"
    steps = [json.loads(line)["step"] for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 8))  # one log, no duplicated steps


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_checkpoints_and_says_how_to_resume(sig, code, video, tmp_path):
    """SLURM's SIGTERM (or Ctrl-C) ends the step, saves, exits 128+signal with a last line that
    says where it stopped and how to go on, never "done"."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vidssl", "pretrain", "default", "--video", str(video), "--out",
                             str(out), *TINY_RUN, "optim.epochs=100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr[-2000:]
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert stdout.strip().splitlines()[-1] == (
        f"stopped at step {step}; checkpoint saved; resume with: vidssl pretrain --out {out} --resume")
    assert "done" not in stdout


def test_video_paths_are_taken_as_given(video, tmp_path):
    """Backslashes and both quote characters in a file name reach the reader untouched."""
    odd = tmp_path / "it's a \\ \"walk\".mp4"
    odd.write_bytes(video.read_bytes())
    out = tmp_path / "run"
    vidssl("pretrain", "default", "--video", str(odd), "--out", str(out), "--steps", "1", *TINY_RUN)
    assert load_config(str(out / "config.yaml")).data.videos == [str(odd)]


def test_repeated_video_flags_accumulate(video, tmp_path):
    """`--video a --video b` trains on both (argparse alone would keep only the last)."""
    other = tmp_path / "other.mp4"
    write_sample_video(other, seed=4, num_frames=40)
    out = tmp_path / "run"
    proc = vidssl("pretrain", "default", "--video", str(video), "--video", str(other), "--out", str(out), "--steps", "1",
                  *TINY_RUN)
    assert load_config(str(out / "config.yaml")).data.videos == [str(video), str(other)]
    start = next(line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("vidssl pretrain:"))
    assert f"{video.name}: 60 frames" in start and f"{other.name}: 40 frames" in start


def test_steps_per_epoch_capped_in_the_default_and_named_elsewhere(video, tmp_path):
    """The default preset trains on a short video (one pass per epoch, said at the start);
    without the cap the error names the value that fits."""
    short = ["optim.steps_per_epoch=1000", f"data.videos=[{video}]"]
    trainer = Trainer(load_config("default", [*TINY_RUN, *short]), tmp_path / "capped")
    trainer._build()
    available = trainer.data.batches_per_epoch(4)
    assert 1 <= available < 1000 and trainer.steps_per_epoch == available and trainer.capped
    trainer = Trainer(load_config("default", [*TINY_RUN, *short, "optim.cap_steps_per_epoch=false"]), tmp_path / "strict")
    with pytest.raises(VidsslError, match=rf"set optim.steps_per_epoch={available} or less"):
        trainer._build()


KILLED_WHILE_SAVING = """
import os, signal, sys, torch
from pathlib import Path
from vidssl.cli.main import main
real_save, saves = torch.save, [0]

def save_then_die_on_the_second(obj, f, *args, **kwargs):
    saves[0] += 1
    if saves[0] == 2:  # half a checkpoint on disk, then the node is gone
        f.write(b"PK half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save_then_die_on_the_second
sys.exit(main(sys.argv[1:]))
"""


def test_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(video, tmp_path):
    args = ["default", "--video", str(video), *TINY_RUN, "engine.checkpoint_every=2"]
    full = tmp_path / "full"
    vidssl("pretrain", *args, "--out", str(full), "--steps", "7")
    cut = tmp_path / "cut"
    script = tmp_path / "die.py"
    script.write_text(KILLED_WHILE_SAVING)
    proc = subprocess.run([sys.executable, str(script), "pretrain", *args, "--out", str(cut), "--steps", "7"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ckpt.load(cut)["step"] == 2  # the previous checkpoint, whole
    assert [p.name for p in cut.glob(".checkpoint.*")], "the torn temporary file should be there before resuming"
    vidssl("pretrain", "--out", str(cut), "--resume", "--steps", "7")
    assert not list(cut.glob(".checkpoint.*"))  # cleaned up on resume
    a, b = networks(full), networks(cut)
    assert not [k for k in a if not torch.equal(a[k], b[k])]


def test_non_finite_loss_stops_and_keeps_last_checkpoint(video, tmp_path, monkeypatch):
    cfg = load_config("default", [*TINY_RUN, f"data.videos=[{video}]", "engine.checkpoint_every=1"])
    trainer = Trainer(cfg, tmp_path / "nan")
    from vidssl.methods.dino import DINO

    original = DINO.training_step

    def poisoned(self, views, info):
        loss, logs = original(self, views, info)
        return (loss * float("nan") if info.step == 2 else loss), logs

    monkeypatch.setattr(DINO, "training_step", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at step 2 .*last good checkpoint is .*checkpoint.pt"):
        trainer.fit()
    payload = ckpt.load(tmp_path / "nan")
    assert payload["step"] == 2
    assert all(torch.isfinite(v).all() for v in payload["student"].values())


@pytest.mark.parametrize(
    "make, args, message",
    [
        (None, ["--video", "/nonexistent/walk.mp4"], "/nonexistent/walk.mp4"),
        ("text", ["--video", "{path}"], "{path}"),
        ("empty", ["--video", "{path}"], "{path}"),
        ("short", ["--video", "{path}", "data.frames_per_clip=8", "data.frame_stride=60"], "60 frames"),
        (None, ["nosuchpreset"], "unknown preset 'nosuchpreset'"),
        (None, ["optim.lr=abc"], "optim.lr: expected a number"),
        (None, ["model.patch_size=16", "aug.global_crop_size=40"], "not divisible by model.patch_size=16"),
        (None, ["--out", "{tmp}/nothing", "--resume"], "no run in"),
        ("out_file", ["--out", "{path}"], "{path}: it is an existing file, not a folder"),
    ],
)
def test_bad_input_is_a_one_line_error(make, args, message, tmp_path, video):
    path = tmp_path / "input.mp4"
    if make == "text":
        path.write_text("this is not a video\n" * 50)
    elif make == "empty":
        path.write_bytes(b"")
    elif make == "short":
        path = video
    elif make == "out_file":
        path = tmp_path / "run.txt"
        path.write_text("a file where the run directory should go\n")
    args = [a.format(path=path, tmp=tmp_path) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "run")]
    proc = vidssl("pretrain", *args, *out,
                  *(TINY_RUN if make else []), check=False, env={**os.environ, "VIDSSL_CACHE": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidssl: error:"), proc.stderr[-2000:]
    assert message.format(path=path) in err[0]


def test_resume_without_checkpoint_is_an_error(tmp_path, video):
    cfg = load_config("default", [*TINY_RUN, f"data.videos=[{video}]"])
    (tmp_path / "run").mkdir()
    with pytest.raises(VidsslError, match="--resume: no checkpoint in"):
        Trainer(cfg, tmp_path / "run", resume=True)


DDP_SCRIPT = """
import sys, torch
from pathlib import Path
from vidssl.config import load_config
from vidssl.engine.trainer import Trainer
out = Path(sys.argv[1]); overrides = sys.argv[2:]
trainer = Trainer(load_config("default", overrides), out)
trainer.fit()
state = {k: v.detach().cpu() for k, v in trainer.method.state_dict().items()}
torch.save(state, out / f"rank{trainer.fabric.global_rank}.pt")
"""


def test_two_process_ddp_keeps_ranks_identical(video, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    overrides = [*TINY_RUN, f"data.videos=[{video}]", "engine.devices=2", "engine.strategy=ddp", "optim.epochs=1"]
    proc = subprocess.run([sys.executable, str(script), str(out), *overrides], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert r0.keys() == r1.keys() and "loss.center" in r0
    for key in r0:
        assert torch.allclose(r0[key], r1[key], atol=1e-6), f"ranks differ in {key}"
    initial = torch.load(out / "checkpoint.pt", weights_only=True)
    assert initial["world_size"] == 2 and initial["step"] == 3
    # the teacher follows the student by EMA, so after training they differ
    assert not torch.equal(r0["student.backbone.vit.blocks.0.attn.qkv.weight"], r0["teacher.backbone.vit.blocks.0.attn.qkv.weight"])


DDP_RESUME_SCRIPT = """
import sys
from pathlib import Path
from vidssl.config import load_config
from vidssl.engine.trainer import Trainer
out, steps, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "resume"
cfg = load_config(str(out / "config.yaml")) if resume else load_config("default", sys.argv[4:])
Trainer(cfg, out, resume=resume).fit(max_steps=steps)
"""


def test_two_process_run_killed_and_resumed_ends_identical(video, tmp_path):
    """Every rank's RNG streams (drop path, augmentation) are checkpointed: a DDP run SIGKILLed
    after a checkpoint and resumed ends with the weights of the uninterrupted two-process run."""
    script = tmp_path / "ddp_resume.py"
    script.write_text(DDP_RESUME_SCRIPT)
    overrides = [*TINY_RUN, f"data.videos=[{video}]", "engine.devices=2", "engine.strategy=ddp",
                 "engine.checkpoint_every=2"]

    def run(out: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, str(script), str(out), "7", *extra], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        if wait:
            assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]
        return proc

    run(tmp_path / "full", "new", *overrides)
    cut = tmp_path / "cut"
    proc = run(cut, "new", *overrides, wait=False)
    deadline = time.time() + 300
    while not (cut / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks at once, as a lost node would
    proc.wait()
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["step"] < 7, "finished before it could be killed"
    run(cut, "resume")
    a, b = networks(tmp_path / "full"), networks(cut)
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed DDP run differs from the uninterrupted one in {different[:5]}"


def test_resume_restores_the_fp16_grad_scaler(video, tmp_path):
    """The checkpoint holds the GradScaler's scale and growth tracker, and the first resumed step
    starts from the saved scale (not from the initial 2^10 again). A real CPU GradScaler under
    fp16 autocast stands in for the GPU's (Fabric swaps 16-mixed for bf16 on the CPU)."""
    from lightning.fabric.plugins.precision import MixedPrecision

    cfg_overrides = [*TINY_RUN, f"data.videos=[{video}]"]

    def trainer(resume: bool) -> Trainer:
        t = Trainer(load_config("default", cfg_overrides), tmp_path / "run", resume=resume)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)  # moves every step
        t.fabric._strategy.precision = MixedPrecision("16-mixed", "cpu", scaler=scaler)
        return t

    trainer(False).fit(max_steps=3)
    saved = ckpt.load(tmp_path / "run")["precision"]
    assert set(saved) >= {"scale", "_growth_tracker"} and saved["growth_interval"] == 1
    resumed = trainer(True)
    resumed.fit(max_steps=4)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    skipped = row.get("skipped_by_scaler", 0.0) == 1.0
    assert resumed.fabric.strategy.precision.scaler.get_scale() == saved["scale"] * (0.5 if skipped else 2.0)
