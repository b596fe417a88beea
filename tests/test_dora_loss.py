"""DoRA's multi-object loss (SPEC 1.7) against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from vidssl.config import MethodConfig
from vidssl.methods.dino_loss import DistillationLoss
from vidssl.methods.dora import multi_object_loss

K, B, T, V, D = 2, 2, 3, 3, 5
TAU_S = 0.1


def ce(q: list[float], s: list[float]) -> float:
    """H(q, softmax(s / tau_s)) for one sample, by hand."""
    z = [x / TAU_S for x in s]
    m = max(z)
    log_norm = m + math.log(sum(math.exp(x - m) for x in z))
    return -sum(qi * (zi - log_norm) for qi, zi in zip(q, z))


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(B, T, D, generator=g) * 3, dim=-1)
    masked = torch.randn(K, B, T, D, generator=g)
    local = torch.randn(V, B, T, D, generator=g)
    return probs, masked, local


def criterion() -> DistillationLoss:
    return DistillationLoss(D, MethodConfig(name="dora", student_temp=TAU_S))


def hand_terms(probs, masked, local):
    mask_ce = [[sum(ce(probs[b, t].tolist(), masked[j, b, t].tolist()) for b in range(B)) / B for t in range(T)] for j in range(K)]
    local_ce = [[sum(ce(probs[b, t].tolist(), local[v, b, t].tolist()) for b in range(B)) / B for t in range(T)] for v in range(V)]
    return mask_ce, local_ce


def test_paper_loss_by_hand() -> None:
    probs, masked, local = inputs()
    mask_ce, local_ce = hand_terms(probs, masked, local)
    expected = 0.0
    for j in range(K):
        for t in range(T):
            local_mean = sum(local_ce[v][t] for v in range(V)) / V
            expected += 0.5 * (mask_ce[j][t] + local_mean)
    expected /= K * T
    loss, m_ce, l_ce = multi_object_loss(criterion(), probs, masked, local, official_quirks=False)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(m_ce, torch.tensor(mask_ce), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l_ce, torch.tensor(local_ce), rtol=1e-5, atol=1e-5)


def test_official_quirks_by_hand() -> None:
    """D11: local crop 0 skipped; D12: frame_loss carried over from one object to the next."""
    probs, masked, local = inputs(1)
    mask_ce, local_ce = hand_terms(probs, masked, local)
    frame_loss, total = 0.0, 0.0
    for j in range(K):
        for t in range(T):
            local_mean = sum(local_ce[v][t] for v in range(1, V)) / (V - 1)
            frame_loss += 0.5 * (mask_ce[j][t] + local_mean)
        frame_loss /= T
        total += frame_loss
    expected = total / K
    loss, _, _ = multi_object_loss(criterion(), probs, masked, local, official_quirks=True)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    paper, _, _ = multi_object_loss(criterion(), probs, masked, local, official_quirks=False)
    assert abs(paper.item() - loss.item()) > 1e-3


def test_without_local_crops_only_the_masked_views_count() -> None:
    probs, masked, _ = inputs(2)
    mask_ce, _ = hand_terms(probs, masked, torch.zeros(V, B, T, D))
    expected = sum(sum(row) for row in mask_ce) / (K * T)
    loss, _, l_ce = multi_object_loss(criterion(), probs, masked, None)
    assert l_ce is None
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_flows_to_student_outputs_only() -> None:
    """The loss is a function of the student's outputs; in DoRA the teacher's targets come from
    `no_grad` (checked in test_dora_method), so here only the student side may carry gradient."""
    probs, masked, local = inputs(3)
    masked.requires_grad_(True)
    local.requires_grad_(True)
    loss, _, _ = multi_object_loss(criterion(), probs, masked, local)
    loss.backward()
    assert masked.grad is not None and masked.grad.abs().sum() > 0
    assert local.grad is not None and local.grad.abs().sum() > 0
