"""The trainable bridge (Frozen / FROMAGe style): frozen-encoder features of an image -> `m`
input embeddings of a frozen causal LM, the sequence's embeddings, the caption-only loss and
greedy decoding."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vidssl.secat.episodes import IGNORE


class FeatureMapper(nn.Module):
    """LayerNorm then one linear map from (N, F) image features to (N, m, D) LM embeddings.

    The projection starts at the LM's own embedding scale (`embedding_std`): after the LayerNorm
    the features have unit variance, so weights of std `embedding_std / sqrt(F)` give image
    embeddings as large as word embeddings, neither drowned out nor dominating at step 0."""

    def __init__(self, in_dim: int, lm_dim: int, image_tokens: int = 2, embedding_std: float = 0.02) -> None:
        super().__init__()
        self.in_dim, self.lm_dim, self.image_tokens = in_dim, lm_dim, image_tokens
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, image_tokens * lm_dim)
        nn.init.normal_(self.proj.weight, std=embedding_std / math.sqrt(in_dim))
        nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(features)).reshape(features.shape[0], self.image_tokens, self.lm_dim)


def embed_sequence(lm: nn.Module, mapper: nn.Module, ids: torch.Tensor, slot: torch.Tensor,
                   features: torch.Tensor) -> torch.Tensor:
    """Input embeddings (B, L, D): the LM's word embeddings, with image positions (`slot` >= 0)
    replaced by row `slot` of the mapped `features` (n_images, F) -> (n_images * m, D)."""
    text = lm.get_input_embeddings()(ids)  # (B, L, D)
    images = mapper(features).reshape(-1, text.shape[-1]).to(text.dtype)  # (n_images * m, D)
    picked = images[slot.clamp(min=0)]  # (B, L, D)
    return torch.where((slot >= 0)[..., None], picked, text)


def caption_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions only (the query's caption): the
    logits at position i predict labels[i + 1]."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                           ignore_index=IGNORE)


@torch.no_grad()
def greedy_generate(lm: nn.Module, tokenizer: Any, embeds: torch.Tensor, max_new_tokens: int = 8) -> str:
    """Greedy continuation of one sequence of input embeddings (1, L, D), stopped at the caption's
    end ('.'), a new line or the end-of-sequence token; the text before that stop.

    Each new token's embedding is appended and the whole sequence run again: no KV cache, whose
    argument changed name across transformers releases; answers are a few tokens long."""
    table = lm.get_input_embeddings()
    generated: list[int] = []
    eos = tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        token = int(lm(inputs_embeds=embeds, use_cache=False).logits[0, -1].argmax())
        if token == eos:
            break
        generated.append(token)
        text = tokenizer.decode(generated)
        if "." in text or "\n" in text:
            break
        step = table(torch.tensor([[token]], device=embeds.device)).to(embeds.dtype)
        embeds = torch.cat([embeds, step], dim=1)
    text = tokenizer.decode(generated)
    return text.split(".")[0].split("\n")[0].strip()


def embedding_std(lm: nn.Module) -> float:
    return float(lm.get_input_embeddings().weight.detach().float().std())
