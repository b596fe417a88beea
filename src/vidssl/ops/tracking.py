"""DoRA's multi-object tracker (SPEC 1.5-1.6): prototypes -> Sinkhorn refinement -> cross-attention
tracking -> binary patch masks -> masked frames.

All functions work on a batch of clips whose frames were folded into the batch for the
encoder and are unfolded here to (B, T, ...). No Python loop over frames or objects.

Notation: B clips, T frames, h heads, N patches, d_h head dim, D = h * d_h, k objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidssl.ops.sinkhorn import sinkhorn_knopp

Threshold = Literal["batch_mean", "sample_mean"]


@dataclass
class Tracks:
    """Everything the tracker computed for one batch of clips (all without gradient)."""

    heads: torch.Tensor  # (k,) the heads whose [CLS] attention made the prototypes
    prototypes: torch.Tensor  # (B, k, D)  P = A^I Q~ on frame 0
    assignment: torch.Tensor  # (B, N, k)  M*, Sinkhorn soft assignment of frame-0 patches
    refined: torch.Tensor  # (B, k, D')  P' = M*^T Z~
    attention: torch.Tensor  # (B, T, k, N)  T'_t = softmax_N(P' K~_t^T / sqrt(D))
    masks: torch.Tensor  # (B, T, k, N) bool, kept patches of each object in each frame
    cls_attention: torch.Tensor | None = None  # (B, T, h, N) [CLS]->patch attention of every frame (track_clips)


def choose_heads(num_heads: int, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct heads drawn at random, (k,) long. One draw per step, shared by the batch (SPEC 1.5.2).

    Each object needs its own head's [CLS] attention, so k cannot exceed the number of heads.
    """
    if not 1 <= k <= num_heads:
        raise ValueError(
            f"cannot track {k} objects with {num_heads} attention heads: every object's prototype "
            f"pools the [CLS] attention of its own distinct head, so k must be between 1 and {num_heads}"
        )
    return torch.randperm(num_heads, generator=generator)[:k]


def object_prototypes(cls_attention: torch.Tensor, queries: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """P = A^I Q~ (paper eq. 2): each chosen head's [CLS]->patch attention pools the patch queries.

    cls_attention: (B, h, N) [CLS] row of the attention, [CLS] column dropped, not renormalised.
    queries: (B, h, N, d_h) patch queries (no [CLS]), before scaling.
    Returns (B, k, D) with the queries of all heads concatenated (D = h * d_h).
    """
    q_cat = queries.transpose(1, 2).flatten(2)  # (B, N, D)
    weights = cls_attention[:, heads.to(cls_attention.device)]  # (B, k, N)
    return weights.to(q_cat.dtype) @ q_cat  # (B, k, D)


def refine_prototypes(
    prototypes: torch.Tensor, features: torch.Tensor, iters: int = 30, eps: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sinkhorn correspondences between prototypes and patches, then pool (paper eqs. 4-5).

    prototypes: (B, k, D) P (not normalised, as in the official code).
    features: (B, N, D) patch embeddings Z~ of frame 0; L2-normalised here.
    Returns (M* (B, N, k) soft assignment, each patch sums to 1; P' = M*^T Z (B, k, D)).
    """
    z = F.normalize(features.float(), dim=-1)  # (B, N, D)
    scores = z @ prototypes.float().transpose(1, 2)  # (B, N, k)
    assignment = sinkhorn_knopp(scores, iters=iters, eps=eps)  # (B, N, k)
    return assignment, assignment.transpose(1, 2) @ z  # (B, k, D)


def track_attention(refined: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """T'_t = softmax over patches of P' K~_t^T / sqrt(D) (paper eq. 6), for every frame at once.

    refined: (B, k, D); keys: (B, T, h, N, d_h) patch keys of every frame (no [CLS]).
    Returns (B, T, k, N).
    """
    k_cat = keys.float().transpose(2, 3).flatten(3)  # (B, T, N, D)
    logits = torch.einsum("bkd,btnd->btkn", refined.float(), k_cat) / math.sqrt(k_cat.shape[-1])
    return logits.softmax(dim=-1)


def binarize(attention: torch.Tensor, threshold: Threshold = "batch_mean") -> torch.Tensor:
    """Patches above the mean of the L2-normalised map are kept (paper eq. 7; SPEC 1.5.5).

    attention: (B, T, k, N). `batch_mean` compares with the mean over the whole batch and all
    patches, per frame and object (the official code); `sample_mean` per clip, frame and object.
    The strongest patch of every map is always kept, so no object is ever fully masked out:
    a map's maximum is at least 1/sqrt(N), which is at least any mean, so this only matters
    for perfectly flat maps (e.g. a uniform frame), where nothing is above the mean.
    Returns bool (B, T, k, N).
    """
    m = F.normalize(attention.float(), dim=-1)  # (B, T, k, N)
    if threshold == "batch_mean":
        ref = m.mean(dim=(0, 3), keepdim=True)  # (1, T, k, 1)
    elif threshold == "sample_mean":
        ref = m.mean(dim=3, keepdim=True)  # (B, T, k, 1)
    else:
        raise ValueError(f"unknown mask threshold {threshold!r}; valid: 'batch_mean', 'sample_mean'")
    keep = m > ref
    top = F.one_hot(m.argmax(dim=-1), m.shape[-1]).bool()  # (B, T, k, N)
    return keep | top


def patch_masks_to_pixels(masks: torch.Tensor, grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(..., N) patch masks -> (..., H, W) pixel masks, each patch a patch_size square (nearest)."""
    gh, gw = grid
    m = masks.reshape(*masks.shape[:-1], gh, gw)
    return m.repeat_interleave(patch_size, dim=-2).repeat_interleave(patch_size, dim=-1)


def mask_frames(frames: torch.Tensor, masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """X_t^{o_i} = X_t * m: keep the tracked object's patches, zero the rest (SPEC 1.5.5, D8).

    frames: (B, T, C, H, W) normalised (so 0 is the mean colour); masks: (B, T, k, N) bool with
    N = (H / p) * (W / p). Returns (k, B, T, C, H, W), object-major so each object's copy of the
    batch is contiguous.
    """
    B, T, C, H, W = frames.shape
    pix = patch_masks_to_pixels(masks, (H // patch_size, W // patch_size), patch_size)  # (B, T, k, H, W)
    pix = pix.permute(2, 0, 1, 3, 4).unsqueeze(3)  # (k, B, T, 1, H, W)
    return frames.unsqueeze(0) * pix.to(frames.dtype)


def track(
    cls_attention0: torch.Tensor,
    queries0: torch.Tensor,
    features0: torch.Tensor,
    keys: torch.Tensor,
    heads: torch.Tensor,
    iters: int = 30,
    eps: float = 0.05,
    threshold: Threshold = "batch_mean",
) -> Tracks:
    """The whole tracker on one batch of clips (SPEC 1.5 steps 2-5, without the pixel masking).

    cls_attention0: (B, h, N), queries0: (B, h, N, d_h), features0: (B, N, D') from frame 0;
    keys: (B, T, h, N, d_h) from every frame; heads: (k,) from `choose_heads`.
    """
    with torch.no_grad(), torch.autocast(device_type=keys.device.type, enabled=False):
        prototypes = object_prototypes(cls_attention0.float(), queries0.float(), heads)
        assignment, refined = refine_prototypes(prototypes, features0, iters, eps)
        attention = track_attention(refined, keys)
        masks = binarize(attention, threshold)
    return Tracks(heads, prototypes, assignment, refined, attention, masks)


def track_clips(
    encoder: nn.Module,
    frames: torch.Tensor,
    k: int,
    iters: int = 30,
    eps: float = 0.05,
    threshold: Threshold = "batch_mean",
    features: Literal["attention_output", "final_tokens"] = "attention_output",
    heads: torch.Tensor | None = None,
) -> tuple[Tracks, torch.Tensor]:
    """Run the encoder once on every frame (folded into the batch) and track k objects.

    encoder: a `vidssl.models.Encoder`; frames: (B, T, 3, H, W) normalised.
    features: the patch embeddings Z~ the prototypes are refined against: the paper's
    last-block attention output, or the official code's final-norm patch tokens (SPEC 1.9 D4).
    Returns (tracks, [CLS] of every frame (B, T, D)), the latter for the teacher's head.
    """
    B, T = frames.shape[:2]
    if heads is None:
        heads = choose_heads(encoder.num_heads, k)
    p = encoder.num_prefix_tokens
    if features not in ("attention_output", "final_tokens"):
        raise ValueError(f"unknown tracker features {features!r}; valid: 'attention_output', 'final_tokens'")
    with torch.no_grad():
        out = encoder.encode_with_last_attention(frames.flatten(0, 1))
    z = out.attention_output if features == "attention_output" else out.patches  # (B*T, N, D)
    h, L, dh = out.q.shape[1:]
    q = out.q.reshape(B, T, h, L, dh)[:, 0, :, p:]  # (B, h, N, d_h) frame 0
    keys = out.k.reshape(B, T, h, L, dh)[:, :, :, p:]  # (B, T, h, N, d_h)
    cls_att = out.cls_attention.reshape(B, T, h, -1)[:, 0]  # (B, h, N)
    z0 = z.reshape(B, T, *z.shape[1:])[:, 0]  # (B, N, D)
    tracks = track(cls_att, q, z0, keys, heads, iters, eps, threshold)
    tracks.cls_attention = out.cls_attention.reshape(B, T, h, -1)
    return tracks, out.cls.reshape(B, T, -1)
