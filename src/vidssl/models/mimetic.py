"""Mimetic initialisation of the query and key projections (Trockman & Kolter, "Mimetic
Initialization of Self-Attention Layers", ICML 2023): per head, W_q W_k^T ~ alpha Z + beta I
with Z a random Gaussian matrix of variance 1/D, so a token attends more to tokens like itself.

Why here: with timm's std-0.02 initialisation the query-key logits start near zero and a
tiny run's [CLS] attention stays flat for hundreds of steps, which gives DoRA's k objects the
same mask (docs/diagnostics.md). Only q and k are set; values and the output projection keep
timm's initialisation (the paper's value-projection part lowered label propagation by
28 points at random init on the built-in sample).
"""

from __future__ import annotations

import torch
import torch.nn as nn

ALPHA = 0.7  # the paper's values for ViTs
BETA = 0.7


def low_rank_factors(m: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), both (D, rank), with A B^T the best rank-`rank` approximation of m (D, D)."""
    u, s, vh = torch.linalg.svd(m)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


@torch.no_grad()
def mimetic_qk_init(vit: nn.Module, alpha: float = ALPHA, beta: float = BETA) -> None:
    """Overwrite the q and k rows of every block's fused qkv weight in place (torch's global RNG)."""
    for block in vit.blocks:
        attn = block.attn
        D, h, d = attn.qkv.in_features, attn.num_heads, attn.head_dim
        w = attn.qkv.weight  # (3 h d, D), rows: q of every head, then k, then v
        for i in range(h):
            z = torch.randn(D, D, device=w.device) / D**0.5
            a, b = low_rank_factors(alpha * z + beta * torch.eye(D, device=w.device), d)
            w[i * d:(i + 1) * d] = a.T.to(w.dtype)  # q_i = x a, k_i = x b, so q_i k_i^T = x a b^T x'^T
            w[(h + i) * d:(h + i + 1) * d] = b.T.to(w.dtype)
