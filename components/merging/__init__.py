"""Model Merge (RecFound 4.4): TIES over checkpoints of one run."""

from components.merging.config import MergeSettings
from components.merging.merge import merge_run
from components.merging.select import (
    FINAL,
    MERGED,
    SELECTION_FILE,
    Selection,
    candidates,
    choose,
    merge_and_select,
)
from components.merging.ties import Order

__all__ = [
    "FINAL",
    "MERGED",
    "MergeSettings",
    "Order",
    "SELECTION_FILE",
    "Selection",
    "candidates",
    "choose",
    "merge_and_select",
    "merge_run",
]
