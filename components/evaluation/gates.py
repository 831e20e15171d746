"""Gates: may a candidate model be registered? (DESIGN.md section 6)

Three checks on the probe AUCs of one variant of the candidate (`variant`; `best` takes the variant
with the highest mean AUC over the tasks):

1. floor: every task's AUC reaches `auc_floor` (or the task's own entry in `task_floors`);
2. champion: when the registry has a champion, no task is more than `champion_tolerance` below the
   champion's AUC on that task (the champion's per-task AUCs come in as a plain dict);
3. baselines: the candidate's mean AUC beats the best baseline's mean AUC (over the same tasks) by
   more than `baseline_margin`.

Thresholds live in `mlruns_config/gates.yaml`, per dataset with a default:

    settings = load_gate_settings(root, "movielens-100k")
    verdict = check_gates(variant_auc, baseline_auc, settings, champion={"gender_female": 0.61, ...})
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.common import bounded_yaml

GATES_FILE = Path("mlruns_config") / "gates.yaml"
VARIANTS = ("universal", "manual", "tuned")


class GateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Literal["best", "universal", "manual", "tuned"] = "best"
    auc_floor: float = Field(0.5, ge=0.0, le=1.0)
    task_floors: dict[str, float] = Field(default_factory=dict)
    champion_tolerance: float = Field(0.02, ge=0.0, le=1.0)
    beat_best_baseline: bool = True
    baseline_margin: float = Field(0.0, ge=0.0, le=1.0)

    def floor(self, task: str) -> float:
        return self.task_floors.get(task, self.auc_floor)


class GatesFile(BaseModel):
    """`mlruns_config/gates.yaml`: a default and per-dataset overrides (partial GateSettings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: GateSettings = Field(default_factory=GateSettings)
    datasets: dict[str, dict] = Field(default_factory=dict)

    def for_dataset(self, dataset: str) -> GateSettings:
        override = self.datasets.get(dataset) or {}
        return GateSettings.model_validate({**self.default.model_dump(), **override})


class GateConfigError(ValueError):
    pass


def load_gates_file(path: Path) -> GatesFile:
    """Read and validate the whole file: every dataset entry is checked, all problems in one message."""
    raw = bounded_yaml.load_file(path) if Path(path).is_file() else {}
    try:
        gates = GatesFile.model_validate(raw or {})
    except ValidationError as e:
        raise GateConfigError(f"{path}: {e}") from None
    problems = []
    for name in gates.datasets:
        try:
            gates.for_dataset(name)
        except ValidationError as e:
            problems.append(f"datasets.{name}: {e}")
    if problems:
        raise GateConfigError(f"{path}: invalid gate settings:\n" + "\n".join(problems))
    return gates


def load_gate_settings(root: Path, dataset: str) -> GateSettings:
    """The gate settings of `dataset` from `<root>/mlruns_config/gates.yaml` (defaults if absent)."""
    return load_gates_file(Path(root) / GATES_FILE).for_dataset(dataset)


@dataclass
class GateVerdict:
    passed: bool
    reasons: list[str]  # why it failed; empty when it passed
    variant: str = ""  # the candidate variant the gate judged
    notes: list[str] = field(default_factory=list)  # the checks that passed, for the report

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(aucs: dict[str, float]) -> float:
    return float(np.mean(list(aucs.values()))) if aucs else float("nan")


def pick_variant(variant_auc: dict[str, dict[str, float]], wanted: str) -> str | None:
    """The variant the gate judges: `wanted`, or for `best` the highest mean AUC (None if absent)."""
    present = {v: a for v, a in variant_auc.items() if a}
    if wanted != "best":
        return wanted if wanted in present else None
    return max(present, key=lambda v: _mean(present[v])) if present else None


def check_gates(
    variant_auc: dict[str, dict[str, float]],
    baseline_auc: dict[str, dict[str, float]],
    settings: GateSettings,
    champion: dict[str, float] | None = None,
) -> GateVerdict:
    """Apply the three checks (module docstring) to a candidate's probe AUCs.

    Args:
        variant_auc: variant (universal, manual, tuned) -> task -> mean AUC; a variant that was not
            evaluated is absent or empty.
        baseline_auc: baseline name -> task -> mean AUC, same tasks and splits.
        settings: this dataset's thresholds.
        champion: the registry champion's task -> AUC, or None when there is no champion.

    Returns:
        A `GateVerdict`; `reasons` names every failed check with the numbers involved.
    """
    reasons, notes = [], []
    variant = pick_variant(variant_auc, settings.variant)
    if variant is None:
        return GateVerdict(False, [f"variant {settings.variant!r} was not evaluated; nothing to judge"])
    aucs = variant_auc[variant]
    mean = _mean(aucs)

    low = [t for t, a in aucs.items() if a < settings.floor(t)]
    for t in low:
        reasons.append(
            f"floor: task {t} AUC {aucs[t]:.4f} ({variant}) is below the floor {settings.floor(t):.4f}"
        )
    if not low:
        notes.append(
            f"floor: every task's AUC ({variant}) reaches its floor (default {settings.auc_floor:.4f})"
        )

    if champion:
        tol = settings.champion_tolerance
        worse = []
        for t, best in champion.items():
            if t not in aucs:
                worse.append(t)
                reasons.append(f"champion: task {t} of the champion's evaluation was not evaluated")
            elif aucs[t] < best - tol:
                worse.append(t)
                reasons.append(
                    f"champion: task {t} AUC {aucs[t]:.4f} is {best - aucs[t]:.4f} below the champion's "
                    f"{best:.4f} (tolerance {tol:.4f})"
                )
        if not worse:
            notes.append(f"champion: no task more than {tol:.4f} below the champion")
    else:
        notes.append("champion: no champion to compare with")

    if settings.beat_best_baseline:
        means = {name: _mean({t: a[t] for t in aucs if t in a}) for name, a in baseline_auc.items() if a}
        if not means:
            notes.append("baselines: none evaluated; check skipped")
        else:
            best_name = max(means, key=means.get)
            margin = settings.baseline_margin
            if not mean > means[best_name] + margin:
                reasons.append(
                    f"baseline: mean AUC {mean:.4f} ({variant}) does not beat the best baseline "
                    f"{best_name} ({means[best_name]:.4f})"
                    + (f" by more than {margin:.4f}" if margin else "")
                )
            else:
                notes.append(
                    f"baseline: mean AUC {mean:.4f} ({variant}) beats {best_name} ({means[best_name]:.4f})"
                )
    return GateVerdict(not reasons, reasons, variant, notes)
