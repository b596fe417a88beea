"""Mimetic query/key initialisation (model.attn_init=mimetic)."""

from __future__ import annotations

import math

import pytest
import torch

from vidssl.config import ConfigError, load_config
from vidssl.hub import load_encoder
from vidssl.methods.base import build_student_teacher
from vidssl.models import Encoder, create_vit
from vidssl.models.mimetic import mimetic_qk_init


def head_products(vit: torch.nn.Module, block: int = 0) -> list[torch.Tensor]:
    """W_q,i^T W_k,i (D, D) of every head i: the bilinear form behind q_i . k_i."""
    attn = vit.blocks[block].attn
    h, d = attn.num_heads, attn.head_dim
    w = attn.qkv.weight
    return [w[i * d:(i + 1) * d].T @ w[(h + i) * d:(h + i + 1) * d] for i in range(h)]


def test_without_noise_every_head_is_a_scaled_projection() -> None:
    """alpha = 0: the best rank-d approximation of beta I is beta times an orthogonal projection onto
    d dimensions, so M = W_q^T W_k is symmetric, (M / beta)^2 = M / beta and trace(M) = beta d."""
    torch.manual_seed(0)
    vit = create_vit("vit_tiny", 16)
    mimetic_qk_init(vit, alpha=0.0, beta=0.5)
    d = vit.blocks[0].attn.head_dim
    for m in head_products(vit, block=5):
        p = m / 0.5
        torch.testing.assert_close(m, m.T, atol=1e-5, rtol=0)
        torch.testing.assert_close(p @ p, p, atol=1e-4, rtol=0)
        assert math.isclose(torch.trace(m).item(), 0.5 * d, rel_tol=1e-4)


def test_values_and_projection_keep_timm_init() -> None:
    torch.manual_seed(0)
    plain = create_vit("vit_tiny", 16)
    torch.manual_seed(0)
    mim = create_vit("vit_tiny", 16, attn_init="mimetic")
    D = plain.embed_dim
    for a, b in zip(plain.blocks, mim.blocks):
        torch.testing.assert_close(a.attn.qkv.weight[2 * D:], b.attn.qkv.weight[2 * D:])
        torch.testing.assert_close(a.attn.proj.weight, b.attn.proj.weight)
        assert not torch.allclose(a.attn.qkv.weight[:D], b.attn.qkv.weight[:D])


def cls_attention_entropy(vit: torch.nn.Module) -> torch.Tensor:
    """Per-head entropy of the last block's [CLS] -> patch attention on random images, (h,)."""
    torch.manual_seed(1)
    with torch.no_grad():
        a = Encoder(vit.eval()).encode_with_last_attention(torch.randn(8, 3, 64, 64)).cls_attention
    a = a / a.sum(-1, keepdim=True)
    return -(a * a.clamp_min(1e-12).log()).sum(-1).mean(0)


def test_mimetic_heads_look_at_parts_of_the_image_from_the_start() -> None:
    """timm's std-0.02 q/k give flat [CLS] attention (entropy ~ log N); mimetic heads do not."""
    log_n = math.log(16)  # 64 px, patch 16
    torch.manual_seed(0)
    flat = cls_attention_entropy(create_vit("vit_tiny", 16))
    torch.manual_seed(0)
    sharp = cls_attention_entropy(create_vit("vit_tiny", 16, attn_init="mimetic"))
    assert flat.min() > 0.99 * log_n
    assert sharp.max() < 0.8 * log_n


def test_config_builds_both_networks_with_it_and_random_baseline_matches() -> None:
    cfg = load_config("default", ["model.attn_init=mimetic", "model.arch=vit_tiny", "model.patch_size=16"])
    torch.manual_seed(3)
    student, teacher = build_student_teacher(cfg)
    torch.manual_seed(3)
    expected = create_vit("vit_tiny", 16, cfg.model.drop_path, "mimetic")
    for net in (student, teacher):
        got = net["backbone"].vit.blocks[0].attn.qkv.weight
        torch.testing.assert_close(got, expected.blocks[0].attn.qkv.weight)
    r0 = load_encoder("random:vit_tiny_patch16_224", seed=0, attn_init="mimetic")
    r0_again = load_encoder("random:vit_tiny_patch16_224", seed=0, attn_init="mimetic")
    plain = load_encoder("random:vit_tiny_patch16_224", seed=0)
    w = lambda m: m.blocks[0].attn.qkv.weight  # noqa: E731
    torch.testing.assert_close(w(r0), w(r0_again))
    assert not torch.allclose(w(r0), w(plain))


def test_unknown_attention_init_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="model.attn_init"):
        load_config("default", ["model.attn_init=xavier"])
    with pytest.raises(ValueError, match="unknown attention initialisation 'xavier'"):
        create_vit("vit_tiny", 16, attn_init="xavier")
