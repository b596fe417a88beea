"""Encoder: a timm ViT plus the one extra call DoRA needs (the last block's q, k, [CLS] attention
and attention output)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class LastAttention(NamedTuple):
    cls: torch.Tensor  # (B, D) final-norm [CLS]
    patches: torch.Tensor  # (B, N, D) final-norm patch tokens
    q: torch.Tensor  # (B, h, N+1, d_h) last block queries, before the 1/sqrt(d_h) scaling
    k: torch.Tensor  # (B, h, N+1, d_h) last block keys
    cls_attention: torch.Tensor  # (B, h, N) softmax row of [CLS] over all tokens, [CLS] column dropped
    attention_output: torch.Tensor  # (B, N, D) patches' last-block A V, heads concatenated, before the projection


class Encoder(nn.Module):
    """Wraps a timm VisionTransformer; `self.vit` keeps timm's parameter names for export."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_heads(self) -> int:
        return self.vit.blocks[-1].attn.num_heads

    @property
    def patch_size(self) -> int:
        return self.vit.patch_embed.patch_size[0]

    @property
    def num_prefix_tokens(self) -> int:
        return self.vit.num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[CLS] after the final norm, (B, D)."""
        return self.vit.forward_features(x)[:, 0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([CLS] (B, D), patch tokens (B, N, D)), both after the final norm."""
        tokens = self.vit.forward_features(x)
        return tokens[:, 0], tokens[:, self.num_prefix_tokens :]

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        return vit.norm_pre(x)

    def encode_with_last_attention(self, x: torch.Tensor) -> LastAttention:
        """One pass that also returns the last block's queries, keys, [CLS]->patch attention and
        attention output (Z~ of the paper's Figure 3, SPEC 1.9 D4).

        All blocks but the last run timm's own (fused) forward. The last block's output uses
        fused scaled-dot-product attention too; only the [CLS] row of its attention matrix,
        (B, h, 1, N+1), is formed explicitly, which is all DoRA reads.
        q, k, the attention and its output are detached: DoRA builds masks from them, never gradients.
        """
        vit = self.vit
        tokens = self._embed(x)
        tokens = vit.blocks[:-1](tokens)
        block = vit.blocks[-1]
        attn = block.attn
        h = block.norm1(tokens)
        B, L, C = h.shape
        qkv = attn.qkv(h).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, h, L, d_h)
        q, k = attn.q_norm(q), attn.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if self.training else 0.0)
        out = attn.norm(out.transpose(1, 2).reshape(B, L, -1))
        attention_output = out.detach()
        out = attn.proj_drop(attn.proj(out))
        tokens = tokens + block.drop_path1(block.ls1(out))
        tokens = tokens + block.drop_path2(block.ls2(block.mlp(block.norm2(tokens))))
        tokens = vit.norm(tokens)
        with torch.no_grad():
            cls_row = (q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)  # (B, h, 1, L)
            cls_attention = cls_row.float().softmax(dim=-1)[:, :, 0, self.num_prefix_tokens :]
        p = self.num_prefix_tokens
        return LastAttention(tokens[:, 0], tokens[:, p:], q.detach(), k.detach(), cls_attention, attention_output[:, p:])
