"""Optimiser parameter groups: each kind of trainable weight with its own learning rate and weight
decay (issue 26, lever 3; LLaVA trains its projector at 1e-3 while the LM moves at 2e-5).

    groups = param_groups(objective.named_parameters(), config)    # -> torch.optim.AdamW(groups)

Groups, by parameter name:
- `adapters`: the source and summary adapters, the tabular embedder (and a trainable encoder);
- `tokens`: the added special-token rows (`<USER>`, boundaries);
- `experts`: LoRA's and TMoLE's low-rank matrices, the weights that move the backbone;
- `router`: TMoLE's routers and task table;
- `heads`: training-only heads (the answer projection, the reconstruction heads).
A group the profile does not name takes the run's `lr` and `weight_decay`.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class ParamGroup(StrEnum):
    ADAPTERS = "adapters"
    TOKENS = "tokens"
    EXPERTS = "experts"
    ROUTER = "router"
    HEADS = "heads"


class GroupSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float | None = Field(None, gt=0, description="None: the run's lr")
    weight_decay: float | None = Field(None, ge=0, description="None: the run's weight_decay")


def group_of(name: str) -> ParamGroup:
    """The group of a parameter of `Objective` / `InstructUE` by its qualified name."""
    if "tmole_router" in name or "tmole_tasks" in name:
        return ParamGroup.ROUTER
    if "lora_" in name or "tmole_A" in name or "tmole_B" in name:
        return ParamGroup.EXPERTS
    if name.endswith("tokens.special"):
        return ParamGroup.TOKENS
    if "answer_projection" in name or "reconstruction." in name:
        return ParamGroup.HEADS
    return ParamGroup.ADAPTERS


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    settings: dict[ParamGroup, GroupSettings],
    lr: float,
    weight_decay: float,
) -> list[dict]:
    """AdamW's groups for the trainable parameters, in `ParamGroup` order, empty groups left out
    (the order is fixed, so a checkpoint's optimizer state loads into the same groups)."""
    members: dict[ParamGroup, list[nn.Parameter]] = {g: [] for g in ParamGroup}
    for name, p in named:
        if p.requires_grad:
            members[group_of(name)].append(p)
    out = []
    for group, params in members.items():
        if not params:
            continue
        s = settings.get(group, GroupSettings())
        out.append({
            "params": params, "name": str(group),
            "lr": s.lr if s.lr is not None else lr,
            "weight_decay": s.weight_decay if s.weight_decay is not None else weight_decay,
        })  # fmt: skip
    return out
