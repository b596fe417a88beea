"""KoLeo regulariser (Sablayrolles et al., ICLR 2019; used by DINOv2): spread a batch of features.

-mean_i log(min_{j != i} ||x_i - x_j||) over L2-normalised rows: it grows without bound as two
rows meet, so it keeps the student's backbone [CLS] from becoming one vector for every frame
(what it does and does not do on the sample: docs/diagnostics.md, DINO-on-frames section).
Off (`method.koleo_weight: 0`) in every paper preset: neither DINO nor DoRA has it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(n, D) features -> scalar; n >= 2. Each row's nearest neighbour among the other rows."""
    if features.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 features in a batch, got {features.shape[0]}")
    x = F.normalize(features.float(), dim=-1)
    with torch.no_grad():  # which row is nearest is a choice, not a function to differentiate
        sim = x @ x.T
        sim.fill_diagonal_(-2.0)
        nearest = sim.argmax(dim=1)
    dist = (x - x[nearest]).norm(dim=-1)
    return -torch.log(dist + eps).mean()


def koleo_per_view(features: torch.Tensor, views: int) -> torch.Tensor:
    """Sum of KoLeo over `views` equal chunks of the rows, as DINOv2 does per global crop: each
    view's frames are spread among themselves, never a frame against its own other view."""
    return sum(koleo_loss(chunk) for chunk in features.chunk(views))
