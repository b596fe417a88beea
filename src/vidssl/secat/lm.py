"""A local Hugging Face causal LM folder and its tokenizer, frozen. `transformers` is the
optional extra `vidssl[secat]`; nothing is fetched from the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from vidssl.errors import VidsslError, first_line

EXTRA_HINT = "SeCAt needs the optional extra: pip install 'vidssl[secat]' (transformers)"


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise VidsslError(EXTRA_HINT) from None
    return transformers


def load_lm(folder: str | Path) -> tuple[nn.Module, Any]:
    """(model in eval mode with every parameter frozen, tokenizer) from a local folder holding
    config.json, weights and tokenizer files (`save_pretrained` output, or a hub snapshot
    copied there)."""
    transformers = require_transformers()
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise VidsslError(f"--lm {path}: no such folder (a local Hugging Face causal LM folder with config.json, "
                          "weights and tokenizer; nothing is downloaded)")
    if not (path / "config.json").is_file():
        raise VidsslError(f"--lm {path}: no config.json; expected a folder written by save_pretrained")
    transformers.utils.logging.disable_progress_bar()  # per-shard bars: noise for a model of one file
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable folder is one line naming it
        raise VidsslError(f"--lm {path}: cannot load a causal LM and its tokenizer ({first_line(e)})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def lm_width(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])
