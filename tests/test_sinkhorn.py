"""Sinkhorn-Knopp (vidssl.ops.sinkhorn): marginals, agreement with the plain exp-domain loop, stability."""

from __future__ import annotations

import pytest
import torch

from vidssl.ops.sinkhorn import sinkhorn_knopp


def plain_sinkhorn(scores: torch.Tensor, iters: int, eps: float) -> torch.Tensor:
    """The official formulation (SPEC 1.6), float64, one sample (N, K) at a time."""
    q = scores.double() / eps
    q = q - q.max()
    Q = torch.exp(q).t()  # (K, N)
    Q = Q / Q.sum()
    K, N = Q.shape
    for _ in range(iters):
        Q = Q / Q.sum(dim=1, keepdim=True) / K
        Q = Q / Q.sum(dim=0, keepdim=True) / N
    return (Q * N).t()


@pytest.mark.parametrize("k", [1, 3, 6])
def test_matches_plain_formulation(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    scores = torch.randn(4, 50, k, generator=g) * 0.3
    ours = sinkhorn_knopp(scores, iters=30, eps=0.05)
    ref = torch.stack([plain_sinkhorn(s, 30, 0.05) for s in scores]).float()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_marginals() -> None:
    g = torch.Generator().manual_seed(0)
    n, k = 64, 4
    scores = torch.randn(3, n, k, generator=g)
    q = sinkhorn_knopp(scores, iters=200, eps=0.5)
    assert q.shape == (3, n, k) and q.dtype == torch.float32
    # each item's assignment sums to 1; each prototype receives N/K items
    torch.testing.assert_close(q.sum(-1), torch.ones(3, n), atol=1e-4, rtol=0)
    torch.testing.assert_close(q.sum(-2), torch.full((3, k), n / k), atol=1e-4 * n, rtol=0)
    # as a transport plan (divided by N): marginals 1/N and 1/K to 1e-4
    plan = q / n
    assert (plan.sum(-1) - 1 / n).abs().max() < 1e-4
    assert (plan.sum(-2) - 1 / k).abs().max() < 1e-4
    assert (q >= 0).all()


def test_balances_a_biased_assignment() -> None:
    # every item prefers prototype 0; Sinkhorn must still spread them evenly
    scores = torch.zeros(1, 40, 2)
    scores[..., 0] = 1.0
    scores[..., 0] += torch.linspace(0, 0.1, 40)
    q = sinkhorn_knopp(scores, iters=100, eps=0.05)
    assert abs(q[0, :, 0].sum().item() - 20) < 1e-2
    plain_argmax = scores[0].argmax(-1)
    assert (plain_argmax == 0).all() and (q[0].argmax(-1) == 1).sum() >= 19


def test_stable_for_large_logits() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 30, 3, generator=g) * 1e4  # exp(score / eps) overflows float32 and float64
    q = sinkhorn_knopp(scores, iters=30, eps=0.05)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(-1), torch.ones(2, 30), atol=1e-4, rtol=0)
    # one prototype far below all others: the exp-domain loop underflows it to a zero row
    scores = torch.randn(1, 30, 3, generator=g)
    scores[..., 2] -= 1e3
    assert torch.isnan(plain_sinkhorn(scores[0], 30, 0.05)).any()
    q = sinkhorn_knopp(scores, iters=30, eps=0.05)
    assert torch.isfinite(q).all()
    assert q[0, :, 2].sum().item() > 1.0  # still receives mass


def test_bf16_input_and_no_grad() -> None:
    scores = torch.randn(2, 16, 3, requires_grad=True)
    q = sinkhorn_knopp(scores.bfloat16(), iters=10, eps=0.05)
    assert q.dtype == torch.float32 and not q.requires_grad


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="iters"):
        sinkhorn_knopp(torch.randn(4, 2), iters=0)
    with pytest.raises(ValueError, match="eps"):
        sinkhorn_knopp(torch.randn(4, 2), eps=0.0)
    with pytest.raises(ValueError, match="N, K"):
        sinkhorn_knopp(torch.randn(4))
