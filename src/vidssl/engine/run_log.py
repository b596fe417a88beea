"""What a run writes as it goes: JSON-lines metrics, TensorBoard events, a progress bar."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vidssl.io import drop_rows_after

METRICS_NAME = "metrics.jsonl"


class RunLog:
    """Rank-0 logger. On resume, metric lines past the resumed step are dropped first, so the
    file reads as one uninterrupted run."""

    def __init__(self, run_dir: Path, start_step: int, total: int, progress: bool) -> None:
        self.path = run_dir / METRICS_NAME
        drop_rows_after(self.path, start_step)
        self.file = open(self.path, "a")
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        self.bar = tqdm(
            total=total, initial=start_step, desc="pretrain", unit="step", dynamic_ncols=True,
            disable=not progress, file=sys.stderr, mininterval=1.0,
        )
        self.last_time = time.perf_counter()

    def step(self, step: int, values: dict[str, Any], bar_values: dict[str, str]) -> None:
        self.bar.update(1)
        self.bar.set_postfix(bar_values, refresh=False)

    def write(self, step: int, values: dict[str, Any]) -> None:
        row = {"step": step, **values}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        for key, value in values.items():
            if isinstance(value, (int, float)):
                self.tb.add_scalar(f"train/{key}", value, step)

    def message(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        self.tb.close()
