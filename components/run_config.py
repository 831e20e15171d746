"""One run's configuration, read once at the edge: the training section and the sections of the
stages after it, each validated by its own model.

    run = load_run("quick", ["steps=200", "merge.density=0.5"])
    run.train     # TrainConfig: what `trainer.train` needs, nothing after it
    run.merge     # MergeSettings: TIES merging and checkpoint selection

A profile file keeps one flat mapping (the training keys, and a `merge:` section); the split is
here, so `TrainConfig` does not know the merge stage exists. The evaluation's settings come from
`mlruns_config/gates.yaml` and `--eval-set`, not from the profile (`flows/evaluate.build_settings`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from components.merging import MergeSettings
from components.training import AFTER_TRAINING, TrainConfig, profile_raw, validate


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train: TrainConfig
    merge: MergeSettings = MergeSettings()


def load_run(name_or_path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """A profile with `key=value` overrides, every section validated (one ConfigError names the key)."""
    raw = profile_raw(name_or_path, overrides)
    where = f"profile {name_or_path}"
    train = validate({k: v for k, v in raw.items() if k not in AFTER_TRAINING}, where)
    merge = validate(raw.get("merge") or {}, where, MergeSettings, "merge.")
    return RunConfig(train=train, merge=merge)
