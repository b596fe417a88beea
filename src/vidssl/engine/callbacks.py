"""What the engine calls at the end of each epoch and of a run; the CLI supplies the callbacks
(pictures, plots), so the engine knows nothing of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidssl.engine.trainer import Trainer


class Callback:
    """Both hooks run on rank 0 with the method in eval mode (the other ranks wait); the trainer
    gives access to `cfg`, `run_dir`, `method`, `data`, `epoch` and `step`. A callback must leave
    the global RNG as it found it: the run's randomness would otherwise depend on the pictures."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass
