"""Sinkhorn-Knopp: soft, balanced assignment of N items to K prototypes (entropic optimal transport).

The one implementation in vidssl: DoRA refines its object prototypes with it (SPEC 1.5-1.6) and
TimeT clusters patches with it (SPEC 5.2). It computes the same plan as the official
exp-domain loop (`q = exp(S/eps)`, alternate prototype and item normalisations, rescale so
each item's assignment sums to 1) but in the log domain, so very large or very small scores
neither overflow nor underflow to a row of zeros (which makes the exp-domain loop divide by 0).
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, iters: int = 30, eps: float = 0.05) -> torch.Tensor:
    """Soft assignment of items to prototypes with equal prototype mass.

    scores: (..., N, K) similarity of each of N items to each of K prototypes (any leading dims,
    e.g. a batch of images, each solved independently).
    Returns (..., N, K) float32: every item's row sums to 1 (exactly, the last step), every
    prototype's column sums to N/K (approached over `iters` alternations; the transport plan
    divided by N has marginals 1/N per item and 1/K per prototype). No gradient.
    """
    if iters < 1:
        raise ValueError(f"sinkhorn_knopp: iters must be at least 1, got {iters}")
    if eps <= 0:
        raise ValueError(f"sinkhorn_knopp: eps must be positive, got {eps}")
    if scores.dim() < 2:
        raise ValueError(f"sinkhorn_knopp: scores must be (..., N, K), got shape {tuple(scores.shape)}")
    n, k = scores.shape[-2:]
    with torch.autocast(device_type=scores.device.type, enabled=False):
        log_q = scores.float() / eps  # (..., N, K)
        log_k, log_n = math.log(k), math.log(n)
        for _ in range(iters):
            log_q = log_q - torch.logsumexp(log_q, dim=-2, keepdim=True) - log_k  # each prototype: mass 1/K
            log_q = log_q - torch.logsumexp(log_q, dim=-1, keepdim=True) - log_n  # each item: mass 1/N
        return torch.exp(log_q + log_n)  # rows sum to 1
