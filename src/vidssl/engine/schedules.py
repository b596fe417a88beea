"""Per-step schedules: the one cosine used for lr, weight decay and teacher momentum."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warm-up from `warmup_start` to `base` over `warmup_steps`, then a half cosine from
    `base` to `final` over the remaining steps; `final` after `total_steps`."""

    base: float
    final: float
    total_steps: int
    warmup_steps: int = 0
    warmup_start: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start + (self.base - self.warmup_start) * step / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        if decay_steps <= 0 or step >= self.total_steps:
            return self.final
        progress = (step - self.warmup_steps) / decay_steps
        return self.final + 0.5 * (self.base - self.final) * (1 + math.cos(math.pi * progress))
