"""How every evaluation reports: plain JSON-ready dicts, one-line warnings, and the command's ending
(the headline printed last, the JSON written through `vidssl.io`)."""

from __future__ import annotations

import json
import math
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidssl.io import OutputError, write_json


class EvalWarning(UserWarning):
    """Something in the data or the weights makes a number meaningless or partial (an empty class,
    non-finite features, a sequence that cannot be scored). One line; the CLI prints it as
    `vidssl: warning: ...`."""


def warn(message: str) -> None:
    warnings.warn(message, EvalWarning, stacklevel=3)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within the block, every EvalWarning is printed to stderr as one line `vidssl: warning: ...`."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if issubclass(category, EvalWarning):
            print(f"vidssl: warning: {message}", file=sys.stderr, flush=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", EvalWarning)
        previous = warnings.showwarning
        warnings.showwarning = show
        yield


def clean(value: Any) -> Any:
    """Plain JSON values: non-finite floats -> None, tuples -> lists, numpy scalars -> Python, keys -> str."""
    if hasattr(value, "item") and not isinstance(value, (dict, list, tuple)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def finish(result: dict[str, Any], headline: str, json_path: str | Path | None) -> None:
    """Write `result` (plain JSON, non-finite numbers as null) and print the headline as the last line.
    If the JSON cannot be written, the results are printed first (all of them, then the headline)
    and the failure is raised as one line."""
    if json_path:
        try:
            write_json(json_path, clean(result), indent=2)
        except OutputError:
            print(json.dumps(clean(result), indent=2), flush=True)
            print(headline, flush=True)
            raise
    print(headline, flush=True)
