"""Typed settings of the merge step (RecFound 4.4): which checkpoints, how TIES runs, how the winner
is chosen. They live in a run profile under `merge:` and can be overridden (`--set merge.density=0.5`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from components.merging.ties import Order


class MergeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="merge at all (`false`: the 'w/o Model Merge' ablation)")
    last: int = Field(2, ge=2, description="merge the run's last K complete checkpoints")
    density: float = Field(0.2, gt=0, le=1, description="TIES: share of each task vector kept")
    order: Order = Order.TRIM_FIRST
    rank: int | Literal["full"] | None = Field(
        None,
        description="rank of the merged factors: None keeps the tuner's r (truncated, error reported); "
        "'full' stores the TIES result exactly (components/merging/merge.py says why it is not low-rank)",
    )
    select: bool = Field(True, description="score merged / final / best checkpoint and keep the winner")
    min_gain: float = Field(
        0.0, ge=0, description="the merged model must beat the best single checkpoint by more than this"
    )
    validation_seeds: list[int] = Field([0, 1, 2], min_length=1, description="probe splits per score")
    validation_users: int | None = Field(
        None, ge=20, description="score on this many labelled training users (spread evenly); None: all"
    )
