"""Schedules, EMA, clipping, parameter groups, checkpoint files: each against a plain formulation."""

import math
import pickle
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from vidssl.engine import checkpoint as ckpt
from vidssl.engine.optim import clip_gradients_per_tensor, ema_update, param_groups
from vidssl.engine.schedules import CosineSchedule
from vidssl.errors import VidsslError


def test_cosine_schedule_matches_dino_formula():
    base, final, warm, total = 0.5, 0.01, 5, 25
    s = CosineSchedule(base, final, total, warmup_steps=warm)
    expected = [base * i / warm for i in range(warm)]
    assert [s(i) for i in range(warm)] == pytest.approx(expected)
    iters = np.arange(total - warm)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    assert [s(warm + i) for i in range(total - warm)] == pytest.approx(cos.tolist())
    assert s(total) == final and s(10 * total) == final
    assert s(warm) == pytest.approx(base)


def test_momentum_schedule_reaches_one():
    s = CosineSchedule(0.996, 1.0, 100)
    assert s(0) == pytest.approx(0.996)
    assert all(s(i) <= s(i + 1) for i in range(100))
    assert s(100) == 1.0


def test_ema_update_is_convex_combination():
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for t0, t1, s in zip(before, teacher.parameters(), student.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s)
    kept = [p.clone() for p in teacher.parameters()]  # taken before the update it is compared with
    ema_update(teacher, student, 1.0)  # m = 1 leaves the teacher as it is
    for t1, t2 in zip(kept, teacher.parameters()):
        assert torch.equal(t1, t2)
    ema_update(teacher, student, 0.0)  # m = 0 copies the student
    for t, s in zip(teacher.parameters(), student.parameters()):
        assert torch.equal(t, s)


def test_per_tensor_gradient_clipping():
    model = nn.Linear(3, 2)
    model.weight.grad = torch.full_like(model.weight, 10.0)  # norm sqrt(6)*10
    model.bias.grad = torch.tensor([0.3, 0.4])  # norm 0.5: untouched
    largest = clip_gradients_per_tensor(model, 3.0)
    assert largest == pytest.approx(math.sqrt(6) * 10, rel=1e-5)
    assert model.weight.grad.norm().item() == pytest.approx(3.0, rel=1e-4)
    assert torch.allclose(model.bias.grad, torch.tensor([0.3, 0.4]))


def test_param_groups_no_decay_on_bias_and_norm():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3 and decay["apply_wd"] and not no_decay["apply_wd"]


def test_checkpoint_atomic_roundtrip_weights_only(tmp_path):
    payload = {"format": ckpt.FORMAT, "x": torch.arange(3), "rng": ckpt.rng_state(), "n": 3}
    path = tmp_path / ckpt.CHECKPOINT_NAME
    ckpt.save_atomic(payload, path)
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.CHECKPOINT_NAME]  # no temporary left
    loaded = ckpt.load(tmp_path)
    assert torch.equal(loaded["x"], torch.arange(3)) and loaded["n"] == 3
    a = (torch.rand(2), random.random(), np.random.rand())
    ckpt.set_rng_state(loaded["rng"])
    b = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_checkpoint_rejects_torn_and_foreign_files(tmp_path):
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(VidsslError, match="torn.pt: cannot be read as a PyTorch weights file"):
        ckpt.load(torn)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(VidsslError, match="is not a vidssl checkpoint"):
        ckpt.load(foreign)
    with pytest.raises(VidsslError, match="no checkpoint at"):
        ckpt.load(tmp_path / "missing")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_checkpoint_holding_code_is_refused_in_one_line(tmp_path, capsys):
    evil = tmp_path / "checkpoint.pt"
    evil.write_bytes(pickle.dumps({"format": ckpt.FORMAT, "x": _RunsCode()}))
    with pytest.raises(VidsslError) as e, warnings.catch_warnings():
        warnings.simplefilter("error")  # and no torch warning on the way
        ckpt.load(evil)
    message = str(e.value)
    assert "\n" not in message and "refused for safety" in message and str(evil) in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "this must never run" not in capsys.readouterr().out


DISK_FULL_SCRIPT = """
import resource, signal, sys, torch
from pathlib import Path
from vidssl.engine import checkpoint as ckpt
from vidssl.io import OutputError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    ckpt.save_atomic({"format": ckpt.FORMAT, "w": torch.zeros(1 << 20)}, Path(sys.argv[1]))
except OutputError as e:
    print(e)
"""


def test_a_checkpoint_that_does_not_fit_is_one_line_and_leaves_nothing(tmp_path):
    """Like a full disk: the write fails past 1 MiB; one line naming the file, no temporary file
    left, the previous checkpoint intact."""
    import subprocess
    import sys

    path = tmp_path / ckpt.CHECKPOINT_NAME
    ckpt.save_atomic({"format": ckpt.FORMAT, "step": 7}, path)
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", DISK_FULL_SCRIPT, str(path)], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cannot write {path}:"), proc.stdout + proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.CHECKPOINT_NAME]
    assert path.read_bytes() == before and ckpt.load(path)["step"] == 7
