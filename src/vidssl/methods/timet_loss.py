"""TimeT's temporal-alignment clustering loss (SPEC 5.2 items 5-7).

1. the teacher's cosine scores of frame 0's patches against its prototypes go through
   Sinkhorn-Knopp (`vidssl.ops.sinkhorn`, all B*N patches of the batch in one plan): a soft,
   balanced assignment of every patch to the K prototypes;
2. the feature forwarder carries that K-channel map to the last frame with backbone features
   (`vidssl.ops.propagation`, DINO's DAVIS rule: frame 0 plus up to `context` previous frames,
   a local window, top-k, softmax at a temperature), one frame after the other so each frame
   is labelled from the maps already forwarded;
3. cross-entropy of the student's last-frame scores / temperature against argmax of the
   forwarded map, averaged over patches and clips. Only this forward direction enters the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidssl.ops.propagation import propagate_labels
from vidssl.ops.sinkhorn import sinkhorn_knopp


def prototype_scores(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(..., N, d) head outputs x (K, d) prototypes -> (..., N, K) cosine scores (features are
    L2-normalised here; the prototypes are kept unit-norm by the method after every step)."""
    return F.normalize(features, dim=-1) @ prototypes.t()


@torch.no_grad()
def forward_features(
    backbone: torch.Tensor, first_map: torch.Tensor, *, context: int = 7, radius: int = 6, topk: int = 5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """The feature forwarder: frame 0's soft map carried through the clip.

    backbone (B, T, D, h, w) backbone patch features; first_map (B, K, h, w) frame 0's map.
    Frame t is labelled from frame 0 and the min(context, t - 1) frames just before t (their
    forwarded maps). Returns (B, T, K, h, w), frame 0's map first.
    """
    maps = [first_map.float()]
    for t in range(1, backbone.shape[1]):
        previous = list(range(max(1, t - context), t))
        ctx = [0, *previous]
        maps.append(propagate_labels(
            backbone[:, t], backbone[:, ctx], torch.stack([maps[c] for c in ctx], dim=1),
            topk=topk, temperature=temperature, radius=radius,
        ))
    return torch.stack(maps, dim=1)


@torch.no_grad()
def first_frame_assignment(teacher_scores: torch.Tensor, iters: int = 10, eps: float = 0.05) -> torch.Tensor:
    """(B, N, K) teacher scores of frame 0 -> (B, N, K) Sinkhorn assignment, one plan over all B*N
    patches of the batch (each patch's row sums to 1, each prototype gets B*N/K of the mass)."""
    B, N, K = teacher_scores.shape
    return sinkhorn_knopp(teacher_scores.reshape(B * N, K), iters=iters, eps=eps).reshape(B, N, K)


def alignment_loss(student_last_scores: torch.Tensor, forwarded_last: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """CE(student scores / temperature, argmax of the forwarded map) over patches, then clips.

    student_last_scores (B, N, K) with gradient; forwarded_last (B, K, h, w), N = h * w."""
    B, N, K = student_last_scores.shape
    targets = forwarded_last.reshape(B, K, N).argmax(dim=1)  # (B, N)
    per_patch = F.cross_entropy((student_last_scores / temperature).reshape(B * N, K).float(),
                                targets.reshape(-1), reduction="none")
    return per_patch.view(B, N).mean(dim=1).mean()
