"""TimeT pieces: the feature forwarder, the Sinkhorn plan, the loss, views, optimiser groups, preset."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidssl.config import ConfigError, load_config
from vidssl.engine.optim import param_groups
from vidssl.engine.trainer import Schedules
from vidssl.hub import export_encoder
from vidssl.methods import StepInfo, build_method
from vidssl.methods.timet import TimeT, scaled_head_dims
from vidssl.methods.timet_loss import alignment_loss, first_frame_assignment, forward_features
from vidssl.methods.timet_views import TimeTClipViews
from vidssl.models import create_vit

TINY = [
    "method.name=timet", "model.arch=vit_tiny", "model.patch_size=8", "aug.global_crop_size=32",
    "aug.global_crops_number=1", "aug.local_crops_number=0", "data.frames_per_clip=4",
    "method.timet_head_dims=[48,24]", "method.timet_prototypes=6",
]


def plain_forwarder(feats: torch.Tensor, first: torch.Tensor, context: int, radius: int, topk: int, temp: float) -> torch.Tensor:
    """One clip, patch by patch: (T, D, h, w) features, (K, h, w) frame-0 map -> (T, K, h, w)."""
    T, D, h, w = feats.shape
    unit = F.normalize(feats.double(), dim=1)
    maps = [first.double()]
    for t in range(1, T):
        ctx = [0] + list(range(max(1, t - context), t))
        out = torch.zeros_like(maps[0])
        for y in range(h):
            for x in range(w):
                cands = []  # (similarity, label vector) of every source in the window of every context frame
                for c in ctx:
                    for sy in range(h):
                        for sx in range(w):
                            if abs(sy - y) <= radius and abs(sx - x) <= radius:
                                cands.append((float(unit[t, :, y, x] @ unit[c, :, sy, sx]), maps[c][:, sy, sx]))
                cands.sort(key=lambda p: -p[0])
                best = cands[:topk]
                weights = torch.tensor([math.exp(s / temp) for s, _ in best], dtype=torch.float64)
                weights = weights / weights.sum()
                out[:, y, x] = sum(wt * lab for wt, (_, lab) in zip(weights, best))
        maps.append(out)
    return torch.stack(maps)


@pytest.mark.parametrize("context,radius,topk", [(7, 1, 3), (1, 2, 5)])
def test_feature_forwarder_equals_plain_loop(context: int, radius: int, topk: int) -> None:
    torch.manual_seed(0)
    B, T, D, h, w, K = 2, 4, 8, 5, 4, 3
    feats = torch.randn(B, T, D, h, w)
    first = torch.softmax(torch.randn(B, K, h, w), dim=1)
    got = forward_features(feats, first, context=context, radius=radius, topk=topk, temperature=0.1)
    assert got.shape == (B, T, K, h, w)
    for b in range(B):
        want = plain_forwarder(feats[b], first[b], context, radius, topk, 0.1)
        torch.testing.assert_close(got[b].double(), want, atol=1e-5, rtol=1e-5)
    # frame 2 and 3 depend on the maps forwarded before them: context=1 differs from context=7
    if context == 1:
        wider = forward_features(feats, first, context=7, radius=radius, topk=topk, temperature=0.1)
        assert not torch.allclose(wider[:, 3], got[:, 3])


def test_sinkhorn_plan_has_balanced_marginals_over_the_whole_batch() -> None:
    B, N, K = 2, 16, 4
    torch.manual_seed(1)
    scores = F.normalize(torch.randn(B, N, 8), dim=-1) @ F.normalize(torch.randn(K, 8), dim=-1).t()
    scores[0, :, 0] += 0.3  # clip 0 leans to prototype 0, clip 1 to prototype 1
    scores[1, :, 1] += 0.3
    q = first_frame_assignment(scores, iters=300, eps=0.05)
    assert q.shape == (B, N, K) and (q >= 0).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(B, N))  # each patch: a distribution over prototypes
    torch.testing.assert_close(q.sum((0, 1)), torch.full((K,), B * N / K), atol=1e-3, rtol=0)  # equal prototype mass
    per_clip = q.sum(1)  # one plan over all B*N patches, not one per clip: clips keep their leaning
    assert per_clip[0, 0] > N / K + 0.5 and per_clip[1, 1] > N / K + 0.5


def test_alignment_loss_is_cross_entropy_against_argmax_of_the_forwarded_map() -> None:
    torch.manual_seed(2)
    B, K, h, w = 2, 5, 3, 3
    scores = torch.rand(B, h * w, K) * 2 - 1
    forwarded = torch.rand(B, K, h, w)
    got = alignment_loss(scores, forwarded, temperature=0.1)
    total = 0.0
    for b in range(B):
        for n in range(h * w):
            target = int(forwarded[b, :, n // w, n % w].argmax())
            logits = scores[b, n].double() / 0.1
            total += float(torch.logsumexp(logits, 0) - logits[target])
    assert got.item() == pytest.approx(total / (B * h * w), rel=1e-5)


def test_clip_view_shares_crop_flip_and_colour_across_frames() -> None:
    cfg = load_config(None, TINY)
    views_fn = TimeTClipViews(cfg.aug)
    frame = torch.randint(0, 256, (1, 40, 56, 3), dtype=torch.uint8)
    clip = frame.expand(4, -1, -1, -1).contiguous()
    jittered = 0
    for seed in range(8):
        torch.manual_seed(seed)
        (view,) = views_fn(clip)
        assert view.shape == (4, 3, 32, 32) and view.dtype == torch.uint8
        assert all(torch.equal(view[0], view[t]) for t in range(1, 4))  # one draw for the clip
        jittered += views_fn.draw_colour().jitter_order != ()
    assert jittered > 0  # the colour ops do run (p 0.8)


def test_method_freezes_all_but_the_last_blocks_and_scales_the_head() -> None:
    cfg = load_config(None, TINY + ["method.timet_trainable_blocks=3"])
    method = build_method(cfg)
    assert isinstance(method, TimeT)
    trainable = {n for n, p in method.student.named_parameters() if p.requires_grad}
    assert all(n.startswith(("backbone.vit.blocks.9.", "backbone.vit.blocks.10.", "backbone.vit.blocks.11.", "head.",
                             "prototypes.")) for n in trainable)
    assert any(n.startswith("backbone.vit.blocks.9.") for n in trainable)
    assert not any(p.requires_grad for p in method.teacher.parameters())
    assert scaled_head_dims([1024, 1024, 512, 256], 384) == [1024, 1024, 512, 256]
    assert scaled_head_dims([1024, 1024, 512, 256], 192) == [512, 512, 256, 128]
    assert method.student["prototypes"].weight.shape == (6, 12)  # 24 at ViT-S width, halved for vit_tiny


def test_only_the_last_frame_of_the_student_gets_gradients() -> None:
    cfg = load_config(None, TINY)
    method = build_method(cfg)
    views = [torch.randint(0, 256, (2, 4, 3, 32, 32), dtype=torch.uint8)]
    loss, logs = method.training_step(views, StepInfo(0, 0, 1, 1))
    assert loss.requires_grad and math.isfinite(loss.item())
    loss.backward()
    assert method.student["prototypes"].weight.grad is not None
    assert method.student["backbone"].vit.blocks[-1].attn.qkv.weight.grad is not None
    assert method.student["backbone"].vit.blocks[0].attn.qkv.weight.grad is None
    assert 1 <= logs["clusters_used"] <= 6


def test_param_groups_give_backbone_a_tenth_of_the_lr_and_no_decay_on_1d() -> None:
    cfg = load_config("timet-vits16", ["model.arch=vit_tiny", "method.timet_prototypes=20"])
    method = build_method(cfg)
    names = {id(p): n for n, p in method.student.named_parameters()}
    groups = param_groups(method.student, method.lr_scale)
    seen = set()
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            seen.add(n)
            assert g["lr_scale"] == (0.1 if n.startswith("backbone.") else 1.0), n
            assert g["apply_wd"] == (p.ndim > 1 and not n.endswith(".bias")), n
    assert seen == {n for n, p in method.student.named_parameters() if p.requires_grad}
    # at the official 128 clips the scheduled lr is 1e-4 at step 0 (no warm-up), cosine to 0
    s = Schedules.from_config(cfg, steps_per_epoch=10, total_batch=128)
    assert s.lr(0) == pytest.approx(1e-4) and s.lr(cfg.optim.epochs * 10) == 0.0
    assert s.weight_decay(0) == pytest.approx(0.04) and s.momentum(0) == pytest.approx(0.995)


def test_preset_holds_spec_5_4_values() -> None:
    cfg = load_config("timet-vits16")
    m, d, o = cfg.method, cfg.data, cfg.optim
    assert (cfg.model.arch, cfg.model.patch_size, cfg.aug.global_crop_size) == ("vit_small", 16, 224)
    assert (d.frames_per_clip, d.sampler, d.batch_size, o.epochs) == (4, "timet_uniform", 128, 100)
    assert (m.timet_prototypes, m.timet_head_dims, m.timet_trainable_blocks) == (200, [1024, 1024, 512, 256], 2)
    assert (m.sinkhorn_eps, m.sinkhorn_iters, m.student_temp) == (0.05, 10, 0.1)
    assert (m.timet_prop_temp, m.timet_prop_topk, m.timet_prop_radius, m.timet_prop_context) == (0.1, 5, 6, 7)
    assert (o.weight_decay, o.weight_decay_end, o.momentum_teacher, o.min_lr, o.warmup_epochs) == (0.04, 0.4, 0.995, 0.0, 0)
    assert tuple(cfg.aug.global_crops_scale) == (0.4, 1.0)


def test_init_weights_load_into_student_and_teacher(tmp_path) -> None:
    torch.manual_seed(3)
    vit = create_vit("vit_tiny", 8)
    path = export_encoder(vit, tmp_path / "init.safetensors")
    method = build_method(load_config(None, TINY + [f"model.init_weights={path}"]))
    for net in (method.student, method.teacher):
        for k, v in vit.state_dict().items():
            assert torch.equal(net["backbone"].vit.state_dict()[k], v), k
    with pytest.raises(ConfigError, match="does not fit model.arch/patch_size"):
        build_method(load_config(None, [*TINY, "model.patch_size=16", "aug.global_crop_size=64", f"model.init_weights={path}"]))
    with pytest.raises(ConfigError, match="read by method.name=timet only"):
        load_config(None, ["method.name=dino", f"model.init_weights={path}"])


def test_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="timet_trainable_blocks=13: vit_tiny has 12 blocks"):
        build_method(load_config(None, TINY + ["method.timet_trainable_blocks=13"]))
    with pytest.raises(ConfigError, match="frames_per_clip must be at least 2"):
        build_method(load_config(None, TINY + ["data.frames_per_clip=1"]))
    with pytest.raises(ConfigError, match="local_crops_number=0"):
        build_method(load_config(None, TINY + ["aug.local_crops_number=2"]))
