"""The dataset-dependent shape of a model (sources, tabular features, encoder width), saved as JSON
beside the weights (`model.json`) and checked on load."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from components.modeling.adapters import TabularSpec

SPEC_VERSION = 1


@dataclass
class ModelSpec:
    """The dataset-dependent shape of a model, saved beside its weights as JSON."""

    sources: list[str]  # card order, including the tabular source
    tabular_source: str | None
    tabular: TabularSpec
    encoder_dim: int | None  # None in text-only mode
    version: int = SPEC_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def sequence_sources(self) -> list[str]:
        return [s for s in self.sources if s != self.tabular_source]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        if d.get("version") != SPEC_VERSION:
            raise ValueError(
                f"model spec version {d.get('version')} is not supported (expected {SPEC_VERSION})"
            )
        return cls(**{**d, "tabular": TabularSpec(**d["tabular"])})
