"""SeCAt test fixtures: a tiny causal LM folder built from a config (random weights, nothing
downloaded) with a word-level tokenizer, and generated colour/texture images in ImageFolder layout.
The fixtures are checked here, so a broken one fails on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidssl.secat.names import SHIPPED_WORDS

transformers = pytest.importorskip("transformers")

# Colour classes of the generated images, named as ImageFolder folders would be.
CLASS_COLOURS = {
    "red_square": (220, 40, 40), "green_field": (40, 190, 60), "blue_sky": (50, 70, 230),
    "yellow_sun": (230, 210, 40), "purple_plum": (150, 40, 170), "cyan_pool": (40, 200, 210),
}
PSEUDO_VOCAB = sorted(set(SHIPPED_WORDS))[:60]
EOS = "<|endoftext|>"


def class_words() -> list[str]:
    return sorted({w for c in CLASS_COLOURS for w in c.split("_")})


def write_tiny_lm(folder: Path, words: list[str] | None = None, layers: int = 2, width: int = 64,
                  init_std: float = 0.2) -> Path:
    """A GPT-2 of `layers` blocks and `width` channels and its word-level tokenizer, saved as a local
    model folder (config.json, weights, tokenizer.json), loadable by AutoModelForCausalLM. Weights of
    std `init_std` (GPT-2 uses 0.02): a random LM's attention is then peaked enough for the image
    embeddings to move its predictions, so a few mapper steps visibly lower the loss."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    vocab_words = ["[PAD]", "[UNK]", EOS, "this", "is", "a", "."] + class_words() + (
        words if words is not None else PSEUDO_VOCAB)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(vocab_words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                bos_token=EOS, eos_token=EOS)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=width, n_layer=layers, n_head=2,
                                     initializer_range=init_std, bos_token_id=vocab[EOS], eos_token_id=vocab[EOS],
                                     pad_token_id=vocab["[PAD]"])
    import torch

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def write_colour_folder(root: Path, per_class: int, seed: int = 0, classes: list[str] | None = None,
                        size: int = 32) -> Path:
    """ROOT/CLASS/NNN.png: each class a colour with per-image brightness jitter and noise texture."""
    rng = np.random.default_rng(seed)
    for name in classes or list(CLASS_COLOURS):
        (root / name).mkdir(parents=True, exist_ok=True)
        base = np.array(CLASS_COLOURS[name], np.float32)
        for i in range(per_class):
            img = base * rng.uniform(0.8, 1.1) + rng.normal(0, 12, (size, size, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def test_tiny_lm_folder_loads_like_a_model_folder(tmp_path: Path) -> None:
    from vidssl.secat.lm import load_lm

    lm, tok = load_lm(write_tiny_lm(tmp_path / "lm"))
    ids = tok(" This is a blue sky.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["this", "is", "a", "blue", "sky", "."]
    assert not any(p.requires_grad for p in lm.parameters())
    assert lm.get_input_embeddings().weight.shape == (len(tok), 64)


def test_colour_folder_layout(tmp_path: Path) -> None:
    from vidssl.eval.datasets import read_image_folder

    data = read_image_folder(write_colour_folder(tmp_path / "imgs", 3, classes=["red_square", "blue_sky"]))
    assert data.classes == ["blue_sky", "red_square"] and len(data.items) == 6
