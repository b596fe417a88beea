"""DINO projection head (SPEC 1.2): MLP -> L2-normalised bottleneck -> weight-normalised prototypes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < nlayers - 1:
                if use_bn:
                    # the head only ever trains: batch statistics in every mode, and no running
                    # buffers that would drift apart between DDP ranks
                    layers.append(nn.BatchNorm1d(b, track_running_stats=False))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        # Weight-normalised last layer: direction `original1` is learned, the norm `original0`
        # is fixed at 1 when norm_last_layer (the DINO default) and learned otherwise.
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        self.last_layer.parametrizations.weight.original0.requires_grad = not norm_last_layer

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)

    def cancel_last_layer_gradients(self) -> None:
        """DINO freezes the last layer during the first epoch(s) (`optim.freeze_last_layer`): drop its gradients."""
        for p in self.last_layer.parameters():
            p.grad = None
