"""Adapters from source encoders to backbone width (InstructUE 3.1, Figure 2).

- `SourceAdapter`: one MLP with a single hidden layer per source, mapping an event's encoder vector to
  one soft token of backbone width.
- `TabularEmbedder`: one soft token per tabular feature: numeric features are standardised (statistics
  frozen at build time) and projected, categorical ones looked up; a shared `SourceAdapter` then maps
  each feature embedding to backbone width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn


class SourceAdapter(nn.Module):
    """`input_gain` multiplies the input first (a constant, not trained): sqrt(d_in) gives a unit-norm
    encoder vector unit variance per dimension, the scale `nn.Linear`'s initialisation assumes."""

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        out_dim: int,
        input_gain: float = 1.0,
        norm: bool = False,
        out_rms: float | None = None,
    ):
        super().__init__()
        self.input_gain = float(input_gain)
        # Query-as-Anchor's adapter normalises the encoder vector first
        self.norm = nn.LayerNorm(in_dim) if norm else None
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.out_rms = out_rms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.input_gain if self.input_gain != 1.0 else x
        y = self.net(self.norm(x) if self.norm is not None else x)
        if self.out_rms is None:
            return y
        # an RMS norm with a fixed gain: every soft token at the token rows' RMS, whatever training
        # does to the weights (the scale used to collapse from 0.64 to 0.13 of the rows' spread)
        return y * torch.rsqrt(y.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(y.dtype) * self.out_rms

    @torch.no_grad()
    def match_token_statistics(self, token_embeddings: torch.Tensor, probe: torch.Tensor) -> None:
        """Initialise the output to look like the backbone's token embeddings: zero the hidden bias,
        scale the last layer so that on `probe` inputs the per-dimension spread of the outputs equals
        the token embeddings' mean per-dimension standard deviation, and set the output bias to their
        mean vector.

        Why: with PyTorch's default initialisation a unit-norm encoder vector gives pre-activations of
        about 0.03, so the biases dominate and every event maps to nearly the same soft token (on
        MovieLens the spread around the mean soft token was 22% of its norm at the start and 9% after
        the quick profile's training, against 110% for real token embeddings): the backbone then sees
        one repeated token and the user's embedding carries little about the user.
        """
        first, last = self.net[0], self.net[2]
        first.bias.zero_()
        last.bias.zero_()
        out = self.forward(probe.to(first.weight.dtype)).float()
        spread = out.std(0).mean().clamp_min(1e-8)
        tok = token_embeddings.detach().float()
        last.weight.mul_((tok.std(0).mean() / spread).to(last.weight.dtype))
        last.bias.copy_(tok.mean(0).to(last.bias.dtype))


@dataclass
class TabularSpec:
    """What the tabular embedder needs to know, saved with the model (JSON)."""

    numeric: list[str] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    categorical: dict[str, list[str]] = field(default_factory=dict)  # feature -> known categories

    @property
    def n_features(self) -> int:
        return len(self.numeric) + len(self.categorical)

    @classmethod
    def fit(cls, users: pd.DataFrame, numeric: list[str], categorical: dict[str, list[str] | None]):
        """Statistics from the (training) users; categories from the card, else from the data."""
        mean, std = [], []
        for name in numeric:
            x = pd.to_numeric(users[name], errors="coerce").to_numpy(dtype=np.float64)
            x = x[np.isfinite(x)]
            mean.append(float(x.mean()) if len(x) else 0.0)
            std.append(float(x.std()) if len(x) > 1 and x.std() > 0 else 1.0)
        cats = {
            name: list(known) if known else sorted(users[name].dropna().astype(str).unique().tolist())
            for name, known in categorical.items()
        }
        return cls(numeric=list(numeric), mean=mean, std=std, categorical=cats)

    def encode(self, users: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(n, F_num) standardised numbers (missing -> 0) and (n, F_cat) category codes (unknown -> 0)."""
        n = len(users)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            x = pd.to_numeric(users[name], errors="coerce").to_numpy(dtype=np.float64)
            z = (x - self.mean[j]) / self.std[j]
            num[:, j] = np.where(np.isfinite(z), np.clip(z, -10, 10), 0.0)
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (name, known) in enumerate(self.categorical.items()):
            index = {c: i + 1 for i, c in enumerate(known)}  # 0 is "missing or unknown"
            cat[:, j] = users[name].astype("string").map(lambda c, index=index: index.get(c, 0)).to_numpy()
        return num, cat


class TabularEmbedder(nn.Module):
    """Feature values -> (batch, F, dim) feature embeddings, numeric first then categorical."""

    def __init__(self, spec: TabularSpec, dim: int):
        super().__init__()
        self.spec = spec
        n_num = len(spec.numeric)
        self.num_weight = nn.Parameter(torch.randn(n_num, dim) * 0.1)
        self.num_bias = nn.Parameter(torch.zeros(n_num, dim))
        self.cat = nn.ModuleList(nn.Embedding(len(c) + 1, dim) for c in spec.categorical.values())

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = []
        if numeric.shape[1]:
            parts.append(numeric.unsqueeze(-1) * self.num_weight + self.num_bias)
        for j, emb in enumerate(self.cat):
            parts.append(emb(categorical[:, j]).unsqueeze(1))
        return torch.cat(parts, dim=1)
