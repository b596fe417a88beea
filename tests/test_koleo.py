"""KoLeo spread of the student's [CLS]: value against a direct formulation, its pull, DINO's and DoRA's use."""

import math

import pytest
import torch

from vidssl.config import load_config
from vidssl.data.transforms import normalize
from vidssl.methods import StepInfo, build_method
from vidssl.methods import dora as dora_module
from vidssl.methods.koleo import koleo_loss
from vidssl.ops.tracking import mask_frames, track_clips

from test_dino import TINY
from test_dora_method import TINY as DORA_TINY, collate


def one_step(overrides, koleo_weight):
    """A fresh tiny method and one training step on fixed clips: (method, views, loss, logs)."""
    cfg = load_config(None, overrides + ["model.drop_path=0", f"method.koleo_weight={koleo_weight}"])
    torch.manual_seed(0)
    method = build_method(cfg)
    torch.manual_seed(1)
    views = collate(method.make_transform(), torch.randint(0, 256, (3, 3, 40, 56, 3), dtype=torch.uint8))
    torch.manual_seed(2)
    return method, views, *method(views, StepInfo(0, 0, 1, 1))


def test_koleo_matches_all_pairs_formulation():
    torch.manual_seed(0)
    x = torch.randn(7, 5) * 3
    u = x / x.norm(dim=1, keepdim=True)
    d = torch.cdist(u, u) + torch.diag(torch.full((7,), math.inf))
    expected = -torch.log(d.min(dim=1).values).mean()
    assert koleo_loss(x).item() == pytest.approx(expected.item(), rel=1e-5)


def test_koleo_of_known_geometry_and_its_gradient_spreads():
    # two orthogonal unit vectors: distance sqrt(2) each way
    assert koleo_loss(torch.eye(2)).item() == pytest.approx(-math.log(math.sqrt(2)), rel=1e-6)
    x = torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]], requires_grad=True)
    before = koleo_loss(x)
    before.backward()
    with torch.no_grad():
        after = koleo_loss(x - 0.1 * x.grad)
    assert after < before  # a gradient step moves the two near rows apart


def test_koleo_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2"):
        koleo_loss(torch.randn(1, 4))


def test_dino_adds_weighted_koleo_of_each_global_view():
    _, _, plain, plain_logs = one_step(TINY, 0.0)
    method, views, loss, logs = one_step(TINY, 0.5)
    assert "koleo" not in plain_logs
    globals_ = [v.flatten(0, 1) for v in views[:2]]  # (B*T, 3, S, S) per global view
    with torch.no_grad():
        expected = sum(koleo_loss(method.student["backbone"](normalize(g))) for g in globals_)
    assert logs["koleo"] == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * logs["koleo"], rel=1e-5)
    # the diagnostics still describe the distillation part alone
    assert logs["kl"] == pytest.approx(plain_logs["kl"], rel=1e-5)


def test_dora_adds_weighted_koleo_of_each_objects_masked_copies(monkeypatch):
    monkeypatch.setattr(dora_module, "choose_heads", lambda heads, k: torch.arange(k))

    _, _, plain, plain_logs = one_step(DORA_TINY, 0.0)
    method, views, loss, logs = one_step(DORA_TINY, 0.5)
    assert "koleo" not in plain_logs
    m = method.cfg.method
    frames = normalize(views[0])
    with torch.no_grad():
        tracks, _ = track_clips(method.teacher["backbone"], frames, m.num_objects, m.sinkhorn_iters, m.sinkhorn_eps,
                                m.mask_threshold, m.track_features, heads=torch.arange(m.num_objects))
        masked = mask_frames(frames, tracks.masks, method.teacher["backbone"].patch_size)  # (k, B, T, 3, S, S)
        expected = sum(koleo_loss(method.student["backbone"](obj.flatten(0, 1))) for obj in masked)
    assert logs["koleo"] == pytest.approx(expected.item(), rel=1e-4)
    assert loss.item() == pytest.approx(plain.item() + 0.5 * logs["koleo"], rel=1e-5)
    assert logs["kl"] == pytest.approx(plain_logs["kl"], rel=1e-5)
