"""DINO-on-frames: loss, centre, temperatures, head, encoder calls, multi-crop views."""

import pytest
import torch

from vidssl.config import load_config
from vidssl.methods.dino_views import MultiCropFrames
from vidssl.methods import StepInfo, build_method
from vidssl.methods.dino_loss import DistillationLoss
from vidssl.models import DINOHead, Encoder, create_vit

TINY = ["model.arch=vit_tiny", "model.patch_size=16", "model.out_dim=64", "model.hidden_dim=32",
        "model.bottleneck_dim=16", "aug.global_crop_size=32", "aug.local_crop_size=16", "aug.local_crops_number=2"]


def test_multi_view_loss_equals_hand_computation():
    cfg = load_config(None, ["method.teacher_temp=0.07", "method.warmup_teacher_temp=0.04", "method.warmup_teacher_temp_epochs=3"])
    loss_fn = DistillationLoss(5, cfg.method)
    loss_fn.center.fill_(0.2)
    torch.manual_seed(0)
    teacher = [torch.randn(4, 5) for _ in range(2)]
    student = [torch.randn(4, 5) for _ in range(4)]
    epoch = 1
    tau_t = 0.04 + (0.07 - 0.04) * 1 / 2  # linspace(0.04, 0.07, 3)[1]
    assert loss_fn.teacher_temperature(epoch) == pytest.approx(tau_t)
    expected, n = 0.0, 0
    for i, t in enumerate(teacher):
        q = torch.softmax((t - 0.2) / tau_t, dim=-1)
        for j, s in enumerate(student):
            if i == j:
                continue
            expected += torch.sum(-q * torch.log_softmax(s / 0.1, dim=-1), dim=-1).mean()
            n += 1
    got = loss_fn.multi_view(student, teacher, epoch)
    assert got.item() == pytest.approx((expected / n).item(), rel=1e-5)
    # centre: 0.9 * 0.2 + 0.1 * batch mean of all teacher outputs
    assert torch.allclose(loss_fn.center, 0.9 * 0.2 + 0.1 * torch.cat(teacher).mean(0, keepdim=True), atol=1e-6)


def test_teacher_temperature_flat_after_warmup():
    cfg = load_config(None, ["method.teacher_temp=0.07", "method.warmup_teacher_temp=0.04", "method.warmup_teacher_temp_epochs=30"])
    loss_fn = DistillationLoss(3, cfg.method)
    assert loss_fn.teacher_temperature(0) == pytest.approx(0.04)
    assert loss_fn.teacher_temperature(29) == pytest.approx(0.07)
    assert loss_fn.teacher_temperature(100) == pytest.approx(0.07)


def test_head_shapes_and_weight_norm_switch():
    head = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4, nlayers=3, norm_last_layer=True)
    x = torch.randn(5, 8)
    assert head(x).shape == (5, 12)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    # with a fixed norm of 1, every prototype vector has unit length
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(12), atol=1e-5)
    free = DINOHead(8, out_dim=12, hidden_dim=16, bottleneck_dim=4, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad
    assert sum(isinstance(m, torch.nn.Linear) for m in head.mlp) == 3


def test_last_attention_matches_explicit_attention():
    torch.manual_seed(0)
    enc = Encoder(create_vit("vit_tiny", 8)).eval()
    x = torch.randn(2, 3, 32, 32)
    out = enc.encode_with_last_attention(x)
    cls, patches = enc.encode(x)
    assert torch.allclose(out.cls, cls, atol=1e-5) and torch.allclose(out.patches, patches, atol=1e-5)
    # plain formulation: run all but the last block, then form q, k and the full softmax by hand
    vit = enc.vit
    t = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
    for blk in vit.blocks[:-1]:
        t = blk(t)
    blk = vit.blocks[-1]
    h = blk.norm1(t)
    B, L, C = h.shape
    heads = blk.attn.num_heads
    q, k, _ = blk.attn.qkv(h).reshape(B, L, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) / (C // heads) ** 0.5, dim=-1)
    assert out.q.shape == (2, heads, 17, C // heads)
    assert torch.allclose(out.q, q, atol=1e-5) and torch.allclose(out.k, k, atol=1e-5)
    assert torch.allclose(out.cls_attention, attn[:, :, 0, 1:], atol=1e-5)


def test_multicrop_views_shapes_and_dtype():
    cfg = load_config(None, TINY)
    clip = torch.randint(0, 256, (3, 48, 64, 3), dtype=torch.uint8)
    views = MultiCropFrames(cfg.aug)(clip)
    assert [tuple(v.shape) for v in views] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 2
    assert all(v.dtype == torch.uint8 for v in views)
    assert not torch.equal(views[0][0], views[0][1])  # frames are augmented independently


def test_training_step_gradients_reach_student_only():
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    method = build_method(cfg)
    clips = torch.randint(0, 256, (2, 2, 40, 40, 3), dtype=torch.uint8)
    transform = method.make_transform()
    per_clip = [transform(c) for c in clips]
    views = [torch.stack([v[i] for v in per_clip]) for i in range(len(per_clip[0]))]
    loss, logs = method(views, StepInfo(0, 0, 1, 1))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is None for p in method.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student["backbone"].parameters())
    # the centre moved towards the teacher outputs
    assert method.loss.center.abs().sum() > 0
    assert logs["teacher_temp"] == pytest.approx(cfg.method.teacher_temp)
