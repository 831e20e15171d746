"""Right-padded rows through the decoder in groups of similar length, so padding costs little.

hidden = decode_padded(model, embeds, lengths, route)    # (B, L, d), zeros past each group's end
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from components.modeling.inputs import GROUP_OVERHEAD, length_groups
from components.modeling.tmole import Route

if TYPE_CHECKING:
    from components.modeling.model import InstructUE


def decode_padded(
    model: InstructUE,
    embeds: torch.Tensor,
    lengths: torch.Tensor,
    route: Route | None = None,
    overhead: int | None = GROUP_OVERHEAD,
) -> torch.Tensor:
    """The last hidden states (B, L, d) of right-padded input embeddings (B, L, d) whose rows hold
    `lengths` valid positions each.

    With `overhead`, the decoder runs once per group of similar lengths (`inputs.length_groups`),
    each group cut to its longest row, so padding costs little; positions past that row come back
    as zeros (callers read valid positions only). A causal mask keeps right padding out of every
    valid position's attention, so this equals one padded pass up to float rounding.
    `overhead=None`: one pass over all rows.
    """
    B, L = embeds.shape[:2]
    lengths = lengths.to(model.device)
    groups = [list(range(B))] if overhead is None else length_groups(lengths.tolist(), overhead)
    parts, order = [], []
    for idx in groups:
        rows = torch.tensor(idx, device=model.device)
        n = int(lengths[rows].max())
        mask = (torch.arange(n, device=model.device)[None, :] < lengths[rows][:, None]).long()
        positions = torch.arange(n, device=model.device)[None, :].expand_as(mask)
        sub = Route(route.task_ids[rows], route.branch[rows]) if route is not None else None
        hidden = model.decode(embeds[rows, :n], mask, positions, route=sub).last_hidden_state
        parts.append(F.pad(hidden, (0, 0, 0, L - n)))
        order += idx
    if len(parts) == 1 and order == list(range(B)):
        return parts[0]
    inverse = torch.empty(B, dtype=torch.long, device=model.device)
    inverse[torch.tensor(order, device=model.device)] = torch.arange(B, device=model.device)
    return torch.cat(parts)[inverse]
