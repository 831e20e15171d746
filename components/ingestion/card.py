"""The dataset card (`schema.yaml`): what sources, tabular features and probe tasks a dataset has.

The card is the typed half of the data contract (DESIGN.md section 3). Readers write it, validation
checks the tables against it, and later stages (modeling, UserQA, evaluation) read sources and tasks
from it instead of hard-coding them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.common import bounded_yaml

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class CardError(ValueError):
    """A dataset card that cannot be read or does not describe a valid dataset."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceKind(StrEnum):
    SEQUENCE = "sequence"  # rows of events.parquet with this `source`
    TABULAR = "tabular"  # the feature columns of users.parquet


class SourceSpec(_Strict):
    """One behaviour source; it becomes a `<name> ... </name>` block in the model input."""

    name: str
    kind: SourceKind
    template: str = Field(description="how one event (or the tabular block) is rendered as text")
    max_events: int = Field(default=256, ge=1, description="most recent events kept per user")

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"source name {v!r} must be lower_snake_case (it becomes a special token)")
        return v


class FeatureType(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class FeatureSpec(_Strict):
    """One tabular feature: a column of users.parquet."""

    name: str
    type: FeatureType
    description: str = ""
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type is FeatureType.CATEGORICAL and (self.min is not None or self.max is not None):
            raise ValueError(f"categorical feature {self.name!r} cannot have min/max")
        if self.type is FeatureType.NUMERIC and self.categories is not None:
            raise ValueError(f"numeric feature {self.name!r} cannot have categories")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} > max {self.max}")
        return self


class TaskSpec(_Strict):
    """A downstream probe task: a 0/1 label per probe user plus its hand-written instruction."""

    name: str
    description: str
    instruction: str = Field(description="the paper's 'manual instruction' for this task")

    @field_validator("name")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"task name {v!r} must be lower_snake_case")
        return v


class SplitRule(_Strict):
    """Users whose integer id modulo `modulus` is in `probe_remainders` are probe users."""

    modulus: int = Field(default=5, ge=2)
    probe_remainders: list[int] = Field(default_factory=lambda: [0, 1])

    def is_probe(self, user_id: int) -> bool:
        return user_id % self.modulus in self.probe_remainders


class DatasetCard(_Strict):
    """The dataset card, stored as `schema.yaml` beside the tables."""

    name: str
    description: str
    sources: list[SourceSpec]
    features: list[FeatureSpec] = Field(default_factory=list)
    tasks: list[TaskSpec]
    split: SplitRule | None = Field(
        default_factory=SplitRule,
        description="rule that decides probe users; null trusts the `split` column of users.parquet",
    )
    text_max_chars: int = Field(default=2000, ge=1, description="longest accepted event text")
    earliest_ts: str = Field(default="1970-01-01", description="events before this are rejected")

    @field_validator("name")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_.-]*$", v):
            raise ValueError(f"dataset name {v!r} must be lowercase letters, digits, '-', '_' or '.'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetCard:
        problems = []
        for what, names in (
            ("source", [s.name for s in self.sources]),
            ("feature", [f.name for f in self.features]),
            ("task", [t.name for t in self.tasks]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                problems.append(f"duplicate {what} names: {dupes}")
        tabular = [s for s in self.sources if s.kind is SourceKind.TABULAR]
        if len(tabular) > 1:
            problems.append("at most one tabular source is allowed")
        if self.features and not tabular:
            problems.append("features are declared but no source has kind 'tabular'")
        if tabular and not self.features:
            problems.append(f"tabular source {tabular[0].name!r} declares no features")
        if not self.sequence_sources:
            problems.append("at least one source of kind 'sequence' is required")
        reserved = {"user_id", "split"}
        if clash := reserved & {f.name for f in self.features}:
            problems.append(f"feature names {sorted(clash)} are reserved columns of users.parquet")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def sequence_sources(self) -> list[str]:
        return [s.name for s in self.sources if s.kind is SourceKind.SEQUENCE]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"dataset {self.name!r} has no tabular feature {name!r}")

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"dataset {self.name!r} has no task {name!r}; known: {self.task_names}")

    # -- files -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> DatasetCard:
        path = Path(path)
        try:
            raw = bounded_yaml.load_file(path)
        except FileNotFoundError:
            raise CardError(f"dataset card {path} does not exist") from None
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise CardError(f"dataset card {path} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise CardError(f"dataset card {path} must be a mapping, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValueError as e:
            raise CardError(f"dataset card {path} is invalid:\n{e}") from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)


def load_bundled_card(name: str) -> DatasetCard:
    """The card shipped with a built-in reader (`components/ingestion/cards/<name>.yaml`)."""
    return DatasetCard.load(Path(__file__).parent / "cards" / f"{name}.yaml")
