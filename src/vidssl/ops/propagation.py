"""Label propagation by feature affinity (DINO's video-segmentation rule, SPEC 4.3).

A target patch takes the weighted average of the labels of its most similar source patches:
affinity exp(<f_tar, f_src> / T) on L2-normalised features, sources restricted to a square
window of `radius` patches around the target position (in every context frame), only the
`topk` strongest sources kept over all context frames jointly, weights normalised to sum
to one. "Labels" are any per-patch vectors (one-hot masks for DAVIS, features for TimeT's
feature forwarder). Exponentiating, keeping the top k and normalising is a softmax over the
top k of <f_tar, f_src> / T, which is how it is computed here (numerically stable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_mask(h: int, w: int, radius: int | None, device: torch.device | None = None) -> torch.Tensor:
    """(h*w targets, h*w sources) bool: True where |dy| <= radius and |dx| <= radius."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    if radius is None or radius < 0:
        return torch.ones(h * w, h * w, dtype=torch.bool, device=device)
    return ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)


def propagate_labels(
    target: torch.Tensor,
    sources: torch.Tensor,
    source_labels: torch.Tensor,
    *,
    topk: int = 5,
    temperature: float = 0.1,
    radius: int | None = 12,
    max_chunk_elements: int = 1 << 26,
) -> torch.Tensor:
    """Labels of the target frame from labelled context frames.

    target (D, h, w) or (B, D, h, w); sources (C, D, h, w) or (B, C, D, h, w) — C context frames;
    source_labels (C, K, h, w) or (B, C, K, h, w). Returns (K, h, w) or (B, K, h, w).
    `radius` None (or negative) uses every source position. Work is chunked over target
    patches so that at most `max_chunk_elements` affinities exist at once.
    """
    unbatched = target.dim() == 3
    if unbatched:
        target, sources, source_labels = target[None], sources[None], source_labels[None]
    B, D, h, w = target.shape
    C, K = sources.shape[1], source_labels.shape[2]
    if sources.shape[-2:] != (h, w) or source_labels.shape[-2:] != (h, w):
        raise ValueError(f"grids differ: target {tuple(target.shape)}, sources {tuple(sources.shape)}, "
                         f"labels {tuple(source_labels.shape)}")
    N = h * w
    tgt = F.normalize(target.float().reshape(B, D, N), dim=1).transpose(1, 2)  # (B, N, D)
    src = F.normalize(sources.float().reshape(B, C, D, N), dim=2).permute(0, 1, 3, 2).reshape(B, C * N, D)
    lab = source_labels.float().reshape(B, C, K, N).permute(0, 1, 3, 2).reshape(B, C * N, K)  # (B, C*N, K)
    allowed = window_mask(h, w, radius, device=target.device)  # (N, N)
    k = min(topk, C * N)
    chunk = max(1, max_chunk_elements // max(1, B * C * N))
    out = torch.empty(B, N, K, dtype=lab.dtype, device=lab.device)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        sim = tgt[:, s:e] @ src.transpose(1, 2)  # (B, n, C*N)
        sim = sim.masked_fill(~allowed[s:e].repeat(1, C)[None], float("-inf"))
        vals, idx = sim.topk(k, dim=-1)  # (B, n, k)
        weights = torch.softmax(vals / temperature, dim=-1)  # masked entries get weight 0
        picked = lab.gather(1, idx.reshape(B, -1, 1).expand(-1, -1, K)).reshape(B, e - s, k, K)
        out[:, s:e] = (weights.unsqueeze(-1) * picked).sum(dim=2)
    out = out.transpose(1, 2).reshape(B, K, h, w)
    return out[0] if unbatched else out
