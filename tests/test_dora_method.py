"""DoRA method: clip views, the training step (who gets gradients), config errors, pictures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.transforms import v2

from vidssl.config import ConfigError, load_config
from vidssl.engine.optim import ema_update
from vidssl.methods import StepInfo, build_method
from vidssl.methods import dora as dora_module
from vidssl.methods.dora import DoRA
from vidssl.methods.dora_views import DoRAClipViews
from vidssl.viz.callbacks import TracksPictures

TINY = [
    "method.name=dora", "model.arch=vit_tiny", "model.patch_size=8", "model.out_dim=64", "model.hidden_dim=32",
    "model.bottleneck_dim=16", "aug.global_crops_number=1", "aug.precrop_size=48", "aug.global_crop_size=32",
    "aug.local_crop_size=16", "aug.local_crops_number=2", "method.num_objects=2",
]


def collate(transform, clips: torch.Tensor) -> list[torch.Tensor]:
    per_clip = [transform(c) for c in clips]
    return [torch.stack([v[i] for v in per_clip]) for i in range(len(per_clip[0]))]


def test_clip_views_share_geometry_and_draw_colour_and_locals_per_frame() -> None:
    cfg = load_config(None, TINY + ["aug.local_crops_number=3"])
    views_fn = DoRAClipViews(cfg.aug)
    frame = torch.randint(0, 256, (1, 60, 80, 3), dtype=torch.uint8)
    clip = frame.expand(6, -1, -1, -1).contiguous()  # six identical frames
    torch.manual_seed(0)
    views = views_fn(clip)
    assert [tuple(v.shape) for v in views] == [(6, 3, 32, 32)] + [(6, 3, 16, 16)] * 3
    assert all(v.dtype == torch.uint8 for v in views)
    g = views[0]
    assert any(not torch.equal(g[0], g[t]) for t in range(1, 6)), "colour is drawn per frame"
    # without the colour transforms, the global view of identical frames is identical: one crop + flip
    views_fn.global_colour = v2.Identity()
    views_fn.local_colour = v2.Identity()
    for seed in range(4):
        torch.manual_seed(seed)
        views = views_fn(clip)
        assert all(torch.equal(views[0][0], views[0][t]) for t in range(6))
        # local crops are drawn independently for each frame
        assert any(not torch.equal(views[1][0], views[1][t]) for t in range(1, 6))
    with pytest.raises(ValueError, match="uint8 clip"):
        views_fn(clip.float())


def test_training_step_gradients_reach_student_only_and_teacher_moves_by_ema_only(monkeypatch) -> None:
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    method = build_method(cfg)
    assert isinstance(method, DoRA)
    clips = torch.randint(0, 256, (2, 3, 40, 56, 3), dtype=torch.uint8)
    views = collate(method.make_transform(), clips)
    teacher_before = [p.detach().clone() for p in method.teacher.parameters()]
    seen = []  # the real loss, called through: record whether its teacher targets carry a graph
    real_loss = dora_module.multi_object_loss
    monkeypatch.setattr(dora_module, "multi_object_loss",
                        lambda c, probs, *a, **kw: seen.append(probs.requires_grad) or real_loss(c, probs, *a, **kw))
    loss, logs = method(views, StepInfo(0, 0, 1, 1))
    assert seen == [False], "the teacher's targets must not carry gradient"
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(not p.requires_grad for p in method.teacher.parameters())
    backbone_grads = [p.grad for p in method.student["backbone"].parameters() if p.requires_grad]
    assert all(g is not None for g in backbone_grads) and sum(g.abs().sum() for g in backbone_grads) > 0
    assert 0 < logs["mask_kept"] < 1 and "local_ce" in logs
    assert method.loss.center.abs().sum() > 0
    opt = torch.optim.SGD([p for p in method.student.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, method.teacher.parameters()))
    ema_update(method.teacher, method.student, 0.9)
    for before, t, s in zip(teacher_before, method.teacher.parameters(), method.student.parameters()):
        torch.testing.assert_close(t, 0.9 * before + 0.1 * s.detach())


def test_masked_views_reach_the_student() -> None:
    """The student's masked views are the teacher frames with the tracked patches kept."""
    cfg = load_config(None, TINY + ["aug.local_crops_number=0"])
    torch.manual_seed(1)
    method = build_method(cfg)
    seen: list[torch.Tensor] = []
    handle = method.student["backbone"].vit.patch_embed.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    views = collate(method.make_transform(), torch.randint(0, 256, (2, 3, 40, 40, 3), dtype=torch.uint8))
    method(views, StepInfo(0, 0, 1, 1))
    handle.remove()
    assert len(seen) == 1 and seen[0].shape == (2 * 2 * 3, 3, 32, 32)  # k*B*T frames in one call
    zero_patches = (seen[0].unflatten(2, (4, 8)).unflatten(4, (4, 8)) == 0).all(dim=(1, 3, 5))  # (n, 4, 4)
    assert zero_patches.any() and not zero_patches.all(dim=(1, 2)).any()


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="method.num_objects=4.*3 heads; use 1..3"):
        DoRA(load_config(None, TINY + ["method.num_objects=4"]))
    with pytest.raises(ConfigError, match="method.sinkhorn_iters"):
        DoRA(load_config(None, TINY + ["method.sinkhorn_iters=0"]))
    with pytest.raises(ConfigError, match="global_crops_number=1"):
        load_config(None, TINY + ["aug.global_crops_number=2"])


def test_official_quirks_switch_changes_the_loss() -> None:
    losses = []
    for quirks in (False, True):
        cfg = load_config(None, TINY + [f"method.official_loss_quirks={str(quirks).lower()}"])
        torch.manual_seed(2)
        method = build_method(cfg)
        torch.manual_seed(3)
        views = collate(method.make_transform(), torch.randint(0, 256, (2, 3, 40, 40, 3), dtype=torch.uint8))
        torch.manual_seed(4)
        losses.append(method(views, StepInfo(0, 0, 1, 1))[0].item())
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)


def test_tracks_pictures_leave_the_rng_alone(tmp_path) -> None:
    cfg = load_config(None, TINY)
    method = build_method(cfg).eval()
    clip = torch.randint(0, 256, (3, 48, 64, 3), dtype=torch.uint8)
    trainer = SimpleNamespace(cfg=cfg, method=method, epoch=2, run_dir=tmp_path,
                              data=SimpleNamespace(num_clips=1, read_clip=lambda i: clip))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    TracksPictures(every=2).on_epoch_end(trainer)
    assert torch.equal(state, torch.get_rng_state())
    assert (tmp_path / "tracks" / "epoch_0002.png").stat().st_size > 0
    assert (tmp_path / "tracks" / "epoch_0002.gif").stat().st_size > 0
    trainer.epoch = 3  # not a multiple of `every`: nothing drawn
    TracksPictures(every=2).on_epoch_end(trainer)
    assert not (tmp_path / "tracks" / "epoch_0003.png").exists()


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    """model.grad_checkpointing only trades memory for compute: same loss, same student gradients."""
    clips = torch.randint(0, 256, (2, 3, 40, 56, 3), dtype=torch.uint8)
    results = []
    for checkpointing in (False, True):
        cfg = load_config(None, TINY + ["model.drop_path=0.0", f"model.grad_checkpointing={str(checkpointing).lower()}"])
        torch.manual_seed(0)
        method = build_method(cfg).train()
        views = collate(method.make_transform(), clips)
        loss, _ = method.training_step(views, StepInfo(0, 0, 1, 1))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in method.student.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert method.student["backbone"].vit.grad_checkpointing
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert all(torch.allclose(grads_a[n], grads_b[n], atol=1e-5) for n in grads_a)
