"""Learning diagnostics against hand computations, and the collapse warning."""

import math

import pytest
import torch

from vidssl.methods.diagnostics import (CollapseWatch, attention_entropy_per_head, collapse_kind, mask_pairwise_iou,
                                        plan_distance_from_uniform, step_diagnostics, teacher_entropies)

K = 64


def test_uniform_teacher_has_per_sample_entropy_log_k():
    e = teacher_entropies(torch.full((8, K), 1.0 / K))
    assert e["teacher_entropy"] == pytest.approx(math.log(K), abs=1e-5)
    assert e["teacher_batch_entropy"] == pytest.approx(math.log(K), abs=1e-5)


def test_constant_one_hot_teacher_has_batch_entropy_zero():
    p = torch.zeros(8, K)
    p[:, 3] = 1
    e = teacher_entropies(p)
    assert e["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert e["teacher_batch_entropy"] == pytest.approx(0.0, abs=1e-6)


def test_healthy_teacher_is_confident_and_diverse():
    p = torch.eye(K)[torch.arange(16) % K]  # every sample its own prototype
    e = teacher_entropies(p)
    assert e["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert e["teacher_batch_entropy"] == pytest.approx(math.log(16), abs=1e-5)


def test_kl_is_the_loss_minus_the_teacher_entropy():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(6, K), -1)
    s = torch.randn(6, K)
    log_p = torch.log_softmax(s / 0.1, -1)
    ce = -(q * log_p).sum(-1).mean()
    kl_by_hand = (q * (q.log() - log_p)).sum(-1).mean()
    d = step_diagnostics(q, ce, torch.zeros(1, K), torch.full((6, 3, 16), 1 / 17))
    assert d["kl"] == pytest.approx(kl_by_hand.item(), rel=1e-5)
    assert d["center_norm"] == 0.0


def test_attention_entropy_per_head():
    a = torch.zeros(2, 3, 16)
    a[:, 0] = 1 / 17  # flat (not renormalised, as the encoder gives it: [CLS] column dropped)
    a[:, 1, 5] = 0.9  # all on one patch
    a[:, 2, :4] = 0.2  # flat over four patches
    h = attention_entropy_per_head(a)
    assert h.tolist() == pytest.approx([math.log(16), 0.0, math.log(4)], abs=1e-5)


def test_identical_masks_have_iou_one_and_disjoint_zero():
    m = torch.zeros(2, 3, 3, 10, dtype=torch.bool)
    m[..., :4] = True
    assert mask_pairwise_iou(m) == pytest.approx(1.0)
    d = torch.zeros(2, 3, 3, 9, dtype=torch.bool)
    for j in range(3):
        d[:, :, j, 3 * j : 3 * j + 3] = True
    assert mask_pairwise_iou(d) == 0.0
    half = torch.zeros(1, 1, 2, 4, dtype=torch.bool)
    half[0, 0, 0, :2] = half[0, 0, 1, 1:3] = True  # overlap 1, union 3
    assert mask_pairwise_iou(half) == pytest.approx(1 / 3)


def test_plan_distance_from_uniform():
    assert plan_distance_from_uniform(torch.full((2, 10, 3), 1 / 3)) == pytest.approx(0.0, abs=1e-7)
    hard = torch.eye(3)[torch.arange(10) % 3].expand(2, 10, 3)
    assert plan_distance_from_uniform(hard) == pytest.approx(1.0)


def test_collapse_warning_fires_once_on_a_forced_collapse_and_not_when_healthy():
    said = []
    watch = CollapseWatch(K, grace=5, warn=said.append)
    uniform = teacher_entropies(torch.full((8, K), 1.0 / K))
    watch(2, uniform)  # inside the grace period: silent
    assert said == []
    watch(6, uniform)
    watch(7, uniform)
    assert len(said) == 1 and "uniform collapse" in said[0] and "step 6" in said[0]
    constant = torch.zeros(8, K)
    constant[:, 0] = 1
    watch(8, teacher_entropies(constant))
    assert len(said) == 2 and "constant collapse" in said[1]
    healthy = {**teacher_entropies(torch.eye(K)[:16] * 0.9 + 0.1 / K), "mask_iou": 0.3}
    assert collapse_kind(healthy, K) is None
    assert collapse_kind({**healthy, "mask_iou": 0.97}, K)[0] == "same objects"
