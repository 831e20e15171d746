"""Prefix reuse: a batch's user blocks run once, then every instruction's suffix over the cached
keys and values in one pass (the embedding API's fast path; `InstructUE.prefix` / `embed_suffixes`).

    prefix = run_prefix(model, batch, model.soft_tokens(batch), route)
    vectors = embed_suffixes(model, prefix, [model.suffix_embeddings(i) for i in instructions])

The result equals one full pass per instruction (tests/modeling/test_model.py); gradients flow to the
suffix embeddings only, which is what instruction tuning (Eq. 6) trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from components.modeling.config import Pooling
from components.modeling.inputs import Plan
from components.modeling.tmole import Route

if TYPE_CHECKING:
    from components.modeling.model import InstructUE, UserBatch


@dataclass
class PrefixCache:
    """A batch's user blocks run once under one route: what every instruction's suffix pass reuses."""

    plan: Plan
    route: Route | None
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (B, heads, L, head_dim)
    hidden_sum: torch.Tensor  # (B, d) sum of the block's final hidden states (mean pooling)
    n: torch.Tensor  # (B, 1) the block's true length
    skip: torch.Tensor | None = None  # (B, S * encoder_dim) the mean event vectors (`mean_skip`)

    def cache(self):
        """A fresh key/value cache holding the block: a suffix pass appends to its cache, so each
        pass gets its own copy and the stored tensors stay as they are (and out of any autograd graph)."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=self.kv)


def run_prefix(model: InstructUE, batch: UserBatch, soft: torch.Tensor, route: Route | None) -> PrefixCache:
    """Run the batch's user blocks once under `route`; `soft` is `soft_tokens(batch)`."""
    from transformers import DynamicCache

    plan = batch.plan
    mask = plan.mask.to(model.device)
    positions = torch.arange(plan.codes.shape[1], device=model.device)[None, :].expand_as(mask)
    cache = DynamicCache()  # filled in place: read from it, not from the output (renamed in 5.x)
    out = model.decode(model.input_embeddings(plan, soft), mask, positions, cache, route)
    m = mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    return PrefixCache(plan, route, kv, (out.last_hidden_state * m).sum(1), m.sum(1), model.skip(batch))


def embed_suffixes(
    model: InstructUE, prefix: PrefixCache, suffixes: list[torch.Tensor]
) -> list[torch.Tensor]:
    """(B, d) L2-normalised backbone embeddings for each suffix (`suffix_embeddings`, (T_k, d)) over the
    cached user blocks, in one pass.

    The suffixes are laid side by side, and a 4D attention mask lets each suffix token see the
    user's block and the earlier tokens of its own suffix only, with position ids restarting at the
    user's true length for every suffix. The result equals one full pass per instruction.
    Gradients flow to the suffix embeddings only (the cached block is a constant).
    """
    plan = prefix.plan
    mask = plan.mask.to(model.device)
    B, L = plan.codes.shape
    lengths = [int(x.shape[0]) for x in suffixes]
    seg = torch.cat([torch.full((n,), k) for k, n in enumerate(lengths)]).to(model.device)
    offset = torch.cat([torch.arange(n) for n in lengths]).to(model.device)
    x = torch.cat(suffixes)  # (T, d)
    T = x.shape[0]
    # key j is visible to query i: same suffix and not later (block-diagonal causal), or any valid
    # position of the user's block
    own = (seg[:, None] == seg[None, :]) & (offset[None, :] <= offset[:, None])  # (T, T)
    visible = torch.cat([mask.bool()[:, None, :].expand(B, T, L), own[None].expand(B, T, T)], dim=2)
    out = model.decode(
        x[None].expand(B, T, model.dim),
        _mask_4d(model, visible[:, None]),
        plan.lengths.to(model.device)[:, None] + offset[None, :],
        prefix.cache(),
        prefix.route,
    ).last_hidden_state  # (B, T, d)
    ends = torch.cumsum(torch.tensor(lengths, device=model.device), 0)
    if model.config.pooling is Pooling.USER_TOKEN:
        return [F.normalize(out[:, e - 1].float(), dim=-1) for e in ends]
    result = []
    for k, n in enumerate(lengths):
        h = (prefix.hidden_sum + out[:, seg == k].sum(1)) / (prefix.n + n)
        result.append(F.normalize(h.float(), dim=-1))
    return result


def with_skip(backbone_part: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
    """The served embedding: the backbone's part, then the skip's mean event vectors (`mean_skip`)."""
    return backbone_part if skip is None else torch.cat([backbone_part, skip.float()], 1)


def _mask_4d(model: InstructUE, visible: torch.Tensor) -> torch.Tensor:
    """A boolean (B, 1, Q, K) mask as the attention implementation wants it: SDPA takes booleans,
    the eager implementation adds the mask to the scores."""
    if getattr(model.backbone.config, "_attn_implementation", "sdpa") == "sdpa":
        return visible
    dtype = torch.bfloat16 if model.uses_bf16() else torch.float32
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
        ~visible, torch.finfo(dtype).min
    )
