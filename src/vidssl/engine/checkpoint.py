"""The checkpoint contract: file name, format tag, atomic save, safe load (plain tensors and
containers only, `torch.load(weights_only=True)`). `vidssl.hub` reads checkpoints through it."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidssl.errors import VidsslError, first_line
from vidssl.io import atomic_open

FORMAT = "vidssl-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pt"


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """A crash at any moment leaves either the previous checkpoint or the new one, never a torn
    file; a failed write (disk full) removes its temporary file and is one line (`vidssl.io`)."""
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def torch_load_safely(path: Path, allow: tuple[type, ...] = ()) -> Any:
    """`torch.load(weights_only=True)` (tensors and containers, plus the classes in `allow`); a
    torn, foreign or code-holding file is one line that never advises turning the safety off."""
    try:
        with torch.serialization.safe_globals(list(allow)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on pickle protocols is noise here
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        if "weights_only" in str(e):
            why = "it holds Python objects other than tensors and containers, refused for safety"
        else:
            why = first_line(e)
        raise VidsslError(f"{path}: cannot be read as a PyTorch weights file ({why})") from None


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise VidsslError(f"no checkpoint at {path}")
    payload = torch_load_safely(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise VidsslError(f"{path} is not a vidssl checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    return payload


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
