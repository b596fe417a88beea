"""Hostile but realistic input (issue 17): each case is one `vidssl: error:` line naming the key or
path, exit status 2, no traceback, and nothing started. No test here trains."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from vidssl.cli.main import main

TIMEOUT = 120  # seconds; every command here should answer in a few


def run_cli(*args: str, cwd: Path | None = None, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """`python -m vidssl ARGS` in its own process group, killed as a group on timeout (a command
    that forks workers must not leave them behind)."""
    p = subprocess.Popen([sys.executable, "-m", "vidssl", *args], cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"vidssl {' '.join(args)} still running after {timeout}s")
    return p.returncode, out, err


def assert_one_line_error(rc: int, err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("vidssl: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def in_process(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capsys.readouterr().err


# --------------------------------------------------------------------------- item 3: config time


def test_devices_beyond_the_cpu_cores_fail_fast_unless_forced():
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores >= 99:
        pytest.skip("this machine has 99 cores or more")
    rc, _, err = run_cli("config", "engine.devices=99", timeout=60)
    line = assert_one_line_error(rc, err, "engine.devices=99", "engine.force_devices=true")
    assert f"{cores} CPU core" in line or "CUDA device" in line
    rc, out, err = run_cli("config", "engine.devices=99", "engine.force_devices=true", timeout=60)
    assert rc == 0 and not err.strip(), err
    assert "force_devices: true" in out and "devices: 99" in out


def test_devices_are_checked_against_the_visible_gpus(monkeypatch):
    import torch

    from vidssl.config import ConfigError, load_config

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert load_config(None, ["engine.devices=1"]).engine.devices == 1
    assert load_config(None, ["engine.devices=-1"]).engine.devices == -1
    assert load_config(None, ["engine.accelerator=cuda", "engine.devices='0,'"]).engine.devices == "0,"
    with pytest.raises(ConfigError, match=r"engine.devices=4 but 1 CUDA device\(s\) are visible; use engine.devices=1"):
        load_config(None, ["engine.devices=4"])
    with pytest.raises(ConfigError, match=r"engine.devices='0,1' names GPU 1"):
        load_config(None, ["engine.accelerator=gpu", "engine.devices='0,1'"])
    assert load_config(None, ["engine.devices=4", "engine.force_devices=true"]).engine.devices == 4
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="engine.accelerator=cuda but no CUDA device is visible"):
        load_config(None, ["engine.accelerator=cuda"])


def test_pretrain_rejects_too_many_cpu_processes_before_starting(tmp_path):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # cores + 1 (not 99): were the check ever lost, this would fork only a few processes
    rc, _, err = run_cli("pretrain", "--out", str(tmp_path / "run"), "engine.accelerator=cpu",
                         f"engine.devices={cores + 1}", timeout=60)
    assert_one_line_error(rc, err, f"engine.devices={cores + 1}", "CPU core")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "override, named",
    [
        ("engine.devices=abc", "engine.devices: 'abc'"),
        ("engine.devices=0", "engine.devices"),
        ("engine.devices=2.5", "engine.devices"),
        ("engine.precision=fp7", "engine.precision: 'fp7' is not allowed; valid values: 32-true"),
        ("engine.accelerator=cdua", "engine.accelerator: 'cdua'"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.frames_per_clip=0", "data.frames_per_clip"),
        ("data.frame_stride=-3", "data.frame_stride"),
        ("data.num_workers=-1", "data.num_workers"),
        ("aug.global_crop_size=0", "aug.global_crop_size"),
        ("aug.local_crop_size=-16", "aug.local_crop_size"),
        ("aug.local_crops_scale=[0.5,0.1]", "aug.local_crops_scale"),
        ("optim.epochs=0", "optim.epochs"),
        ("optim.steps_per_epoch=0", "optim.steps_per_epoch"),
        ("optim.lr=nan", "optim.lr"),
        ("model.out_dim=0", "model.out_dim"),
        ("engine.log_every=0", "engine.log_every"),
    ],
)
def test_bad_engine_values_and_sizes_are_one_line_naming_the_key(capsys, override, named):
    rc, err = in_process(capsys, "config", override)
    assert_one_line_error(rc, err, named)


def test_precision_accepts_every_fabric_value():
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS
    from typing import get_args

    from vidssl.config import FABRIC_PRECISIONS, load_config

    assert set(FABRIC_PRECISIONS) == set(get_args(_PRECISION_INPUT_STR)) | set(get_args(_PRECISION_INPUT_STR_ALIAS))
    for value in FABRIC_PRECISIONS:
        assert load_config(None, [f"engine.precision={value}"]).engine.precision == value
    assert load_config(None, ["engine.precision=32"]).engine.precision == "32"


def test_base_cycle_is_one_line_naming_the_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\noptim:\n  epochs: 3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rc, _, err = run_cli("config", str(tmp_path / "a.yaml"), cwd=elsewhere, timeout=60)
    line = assert_one_line_error(rc, err, "base: cycle", "a.yaml -> ", "b.yaml -> ")
    assert "RecursionError" not in line


def test_relative_base_is_resolved_against_the_yaml_folder(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "parent.yaml").write_text("base: default\noptim:\n  epochs: 7\n")
    (folder / "child.yaml").write_text("base: parent.yaml\ndata:\n  batch_size: 3\n")
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    rc = main(["config", str(folder / "child.yaml")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "epochs: 7" in captured.out and "batch_size: 3" in captured.out


def test_non_utf8_yaml_is_one_line_with_the_line_number(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("optim:\n  epochs: 3\n# caf\xe9\n".encode("latin-1"))
    rc, err = in_process(capsys, "config", str(path))
    assert_one_line_error(rc, err, str(path), "line 3", "UTF-8")


def test_yaml_syntax_error_is_one_line_with_the_line_number(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("optim:\n  epochs: [1,\n  lr: 2\n")
    rc, err = in_process(capsys, "config", str(path))
    line = assert_one_line_error(rc, err, str(path), "line ", "not valid YAML")
    assert "<unicode string>" not in line


# --------------------------------------------------------------------------- item 4: output paths


@contextmanager
def read_only_folder(path: Path):
    """A folder no one can create files in: chmod for ordinary users; for root (which ignores the
    mode) the immutable attribute, where the file system has it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a read-only folder")
    try:
        yield path
    finally:
        subprocess.run([chattr, "-i", str(path)], capture_output=True)


@pytest.fixture
def video(tmp_path) -> Path:
    path = tmp_path / "video.mp4"  # never decoded: the output is checked first
    path.write_bytes(b"\0" * 64)
    return path


def test_ingest_out_an_existing_file_is_one_line(tmp_path, capsys, video):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, err = in_process(capsys, "ingest", str(video), "--out", str(blocker))
    assert_one_line_error(rc, err, str(blocker))
    rc, err = in_process(capsys, "ingest", str(video), "--out", str(blocker / "store"))
    assert_one_line_error(rc, err, str(blocker / "store"))


def test_ingest_out_a_read_only_folder_is_one_line(tmp_path, capsys, video):
    with read_only_folder(tmp_path / "ro") as ro:
        rc, err = in_process(capsys, "ingest", str(video), "--out", str(ro))
        assert_one_line_error(rc, err, str(ro))
        rc, err = in_process(capsys, "ingest", str(video), "--out", str(ro / "store"))
        assert_one_line_error(rc, err, str(ro / "store"))


def test_export_out_under_a_file_or_onto_a_folder_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, err = in_process(capsys, "export", "random:vit_tiny_patch16_224", "--out", str(blocker / "enc.safetensors"))
    assert_one_line_error(rc, err, str(blocker))
    folder = tmp_path / "enc.safetensors"
    folder.mkdir()
    rc, err = in_process(capsys, "export", "random:vit_tiny_patch16_224", "--out", str(folder))
    assert_one_line_error(rc, err, str(folder))


def test_export_into_a_read_only_folder_is_one_line(tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as ro:
        rc, err = in_process(capsys, "export", "random:vit_tiny_patch16_224", "--out", str(ro / "enc.safetensors"))
        assert_one_line_error(rc, err, str(ro))
        assert not list(ro.iterdir())


@pytest.mark.parametrize("patch", ["0", "-8"])
def test_export_metadata_with_a_bad_patch_size_is_one_line(tmp_path, capsys, patch):
    from safetensors.torch import save_file

    from vidssl.hub import load_encoder

    state = {k: v.contiguous() for k, v in load_encoder("random:vit_tiny_patch16_224").state_dict().items()}
    source = tmp_path / f"patch{patch}.safetensors"
    save_file(state, str(source), metadata={"format": "vidssl-encoder/1", "timm_model": "vit_tiny_patch16_224",
                                            "img_size": "224", "patch_size": patch, "arch": "vit_tiny"})
    rc, err = in_process(capsys, "export", str(source), "--out", str(tmp_path / "out.safetensors"))
    line = assert_one_line_error(rc, err, str(source), "patch_size")
    assert "ZeroDivisionError" not in line
    assert not (tmp_path / "out.safetensors").exists()


def test_export_writes_one_file_and_no_temporary(tmp_path, capsys):
    out = tmp_path / "new" / "enc.safetensors"
    assert main(["export", "random:vit_tiny_patch16_224", "--out", str(out)]) == 0
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["enc.safetensors"]


# --------------------------------------------------------------------------- item 7: --resume


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_malicious_pickle_in_one_line(tmp_path):
    import torch

    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    (run / "config.yaml").write_text("engine:\n  accelerator: cpu\n  progress: false\n")
    torch.save({"format": "vidssl-checkpoint/1", "x": _Shell(marker)}, run / "checkpoint.pt")
    rc, _, err = run_cli("pretrain", "--out", str(run), "--resume")
    line = assert_one_line_error(rc, err, str(run / "checkpoint.pt"))
    assert not marker.exists()
    assert "weights_only" not in line  # no advice to switch the safety off


# --------------------------------------------------------------------------- cli/main.py


def test_an_os_error_escaping_a_command_is_one_line_and_not_a_silent_exit(capsys, monkeypatch):
    import vidssl.cli.config_cmd as config_cmd

    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/results/out.json")

    monkeypatch.setattr(config_cmd, "run", full_disk)
    rc = main(["config"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("vidssl: error: /results/out.json: No space left on device")


def test_a_multi_line_vidssl_error_is_printed_on_one_line(capsys, monkeypatch):
    import vidssl.cli.config_cmd as config_cmd
    from vidssl.errors import VidsslError

    def wordy(args):
        raise VidsslError("first line\n\n  second line\n")

    monkeypatch.setattr(config_cmd, "run", wordy)
    assert main(["config"]) == 2
    assert capsys.readouterr().err == "vidssl: error: first line second line\n"


def test_a_closed_stdout_is_not_a_traceback():
    p = subprocess.Popen([sys.executable, "-m", "vidssl", "config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before anything is written (`vidssl config | true`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err
