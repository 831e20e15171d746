"""The backbone cut to its first k decoder layers (`ModelConfig.layers`, issue 26's depth lever)."""

from __future__ import annotations

from torch import nn


def keep_layers(backbone: nn.Module, k: int) -> None:
    """Cut a decoder-only backbone to its first `k` layers, in place (`ModelConfig.layers`): the
    intermediate layers of a causal LM are the better features (RESEARCH.md, "Which layer"), and a
    shallower backbone is a cheaper step."""
    layers = backbone.base_model.layers
    if k > len(layers):
        raise ValueError(f"model.layers={k}, but the backbone has only {len(layers)} decoder layers")
    backbone.base_model.layers = nn.ModuleList(list(layers)[:k])
    backbone.config.num_hidden_layers = k
    if getattr(backbone.config, "layer_types", None):
        backbone.config.layer_types = list(backbone.config.layer_types)[:k]
