"""How every evaluation ends: metrics as JSON (`--json FILE`) and one headline line printed last."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def finish(result: dict[str, Any], headline: str, json_path: str | Path | None) -> None:
    """Write `result` (plain JSON, non-finite numbers as null) and print the headline as the last line."""
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_clean(result), indent=2) + "\n")
    print(headline, flush=True)
