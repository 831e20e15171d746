"""Typed training configuration and the YAML run profiles (`profiles/tiny|quick|paper.yaml`).

    config = load_profile("quick", overrides=["steps=200", "model.max_events=32"])

A profile is validated once, here; every problem is reported in one message. Overrides are dotted
`key=value` pairs whose values are read as YAML (`margin=null`, `lora.targets=[q_proj,v_proj]`).
"""

from __future__ import annotations

from enum import StrEnum
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.common import bounded_yaml, dotted
from components.modeling import LoraSettings, ModelConfig, TMoLESettings
from components.training.alignment import AlignmentSettings
from components.training.param_groups import GroupSettings, ParamGroup
from components.training.s2sched import S2SchedConfig

PROFILES = ("tiny", "quick", "paper")


class Tuner(StrEnum):
    LORA = "lora"  # plain LoRA through peft (RecFound's "w/o TMoLE" ablation)
    TMOLE = "tmole"  # task-wise mixture of low-rank experts (RecFound 4.2)


class Scheduling(StrEnum):
    UNIFORM = "uniform"  # one permutation of all records per epoch (the "w/o S2Sched" ablation)
    S2SCHED = "s2sched"  # RecFound 4.3


class TrainConfig(BaseModel):
    """One training run: the model, LoRA, the objective (InstructUE Eq. 1-5) and the optimiser."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    profile: str = "custom"
    model: ModelConfig = ModelConfig()
    tuner: Tuner = Tuner.LORA
    lora: LoraSettings = LoraSettings()
    tmole: TMoLESettings = TMoLESettings()  # its task registry is filled from the data at train time
    generic_instruction_share: float = Field(
        0.2, ge=0, le=1, description="share of instructed examples routed to the generic instruction task"
    )
    scheduling: Scheduling = Scheduling.UNIFORM
    s2sched: S2SchedConfig = S2SchedConfig()
    seed: int = 0
    alignment: AlignmentSettings = AlignmentSettings()  # the soft-token alignment stage (alignment.py)
    # -- data ----------------------------------------------------------------------------------
    families: list[str] | None = Field(None, description="UserQA families to train on; None: all")
    max_records: int | None = Field(None, ge=2, description="a seeded subsample of UserQA records")
    max_answer_tokens: int = Field(96, ge=1)
    # -- objective (Eq. 1-5) -------------------------------------------------------------------
    batch_embedding: int = Field(16, ge=0, description="embedding-branch examples per micro-batch")
    batch_generative: int = Field(16, ge=0, description="generative-branch examples per micro-batch")
    no_ntp: bool = Field(False, description="ablation: drop the generative branch (Eq. 1)")
    no_contrastive: bool = Field(False, description="ablation: drop the embedding branch (Eq. 2-4)")
    task_batches: int | None = Field(
        None,
        ge=1,
        description="S2Sched only: draw each step's embedding batch from this many tasks (by their "
        "ratios) and take InfoNCE negatives within the task; None: every task mixed, negatives from all",
    )
    temperature: float = Field(0.05, gt=0)
    centre: bool = Field(
        False,
        description="score Eq. 2-4 on embeddings centred per batch (per task with task_batches): "
        "the backbone's states share one dominant direction (losses.centre_groups)",
    )
    margin: float | None = Field(0.1, description="c_margin of Eq. 4; null disables the mask")
    same_side: bool = True
    alpha_lm: float = Field(1.0, ge=0)
    alpha_cl: float = Field(1.0, ge=0)
    alpha_rec: float = Field(
        0.0, ge=0, description="weight of the input reconstruction loss (needs model.reconstruction_head)"
    )
    # -- optimiser -----------------------------------------------------------------------------
    steps: int = Field(100, ge=1, description="optimizer steps")
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    groups: dict[ParamGroup, GroupSettings] = Field(
        default_factory=dict, description="per parameter group lr / weight_decay (param_groups.py)"
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_accum: int = Field(1, ge=1)
    clip: float | None = Field(1.0, gt=0)
    # -- bookkeeping ---------------------------------------------------------------------------
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _branches(self) -> TrainConfig:
        problems = []
        if self.no_ntp and self.no_contrastive:
            problems.append("no_ntp and no_contrastive together leave nothing to train")
        if not self.no_contrastive and self.batch_embedding < 2:
            problems.append("batch_embedding must be >= 2: InfoNCE needs in-batch negatives")
        if not self.no_ntp and self.batch_generative < 1:
            problems.append("batch_generative must be >= 1 unless no_ntp")
        if self.alpha_rec > 0 and not self.model.reconstruction_head:
            problems.append("alpha_rec > 0 needs model.reconstruction_head=true (the heads it trains)")
        if self.task_batches is not None:
            if self.scheduling is not Scheduling.S2SCHED:
                problems.append("task_batches composes S2Sched's batches: it needs scheduling=s2sched")
            elif not self.no_contrastive and self.batch_embedding < 2 * self.task_batches:
                problems.append(
                    f"task_batches={self.task_batches} needs batch_embedding >= {2 * self.task_batches}: "
                    "each task's examples need an in-task negative"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def n_embedding(self) -> int:
        return 0 if self.no_contrastive else self.batch_embedding

    @property
    def n_generative(self) -> int:
        return 0 if self.no_ntp else self.batch_generative

    @property
    def micro_batch(self) -> int:
        """Records drawn per micro-batch: the generative examples are the first `n_generative` of
        them and the embedding examples the first `n_embedding` (one forward pass serves both)."""
        return max(self.n_embedding, self.n_generative)


class ConfigError(ValueError):
    pass


def parse_overrides(overrides: list[str]) -> dict:
    out: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. steps=200, model.max_events=32)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({e.problem})") from None
        dotted.set_dotted(out, key.strip(), value, ConfigError)
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def profile_text(name: str) -> str:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; shipped profiles: {', '.join(PROFILES)}")
    return resources.files("components.training").joinpath("profiles", f"{name}.yaml").read_text("utf-8")


def validate(raw: dict, where: str, model: type[BaseModel] = TrainConfig, section: str = ""):
    """`model` from `raw`, or one ConfigError naming every bad key (prefixed with `section.`)."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{section}{'.'.join(map(str, err['loc'])) or '?'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"invalid training config ({where}): {problems}") from None


AFTER_TRAINING = ("merge",)  # profile sections that belong to later stages (`components/run_config.py`)


def load_profile(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """The training part of a profile (shipped by name, or a YAML file by path) with `key=value`
    overrides applied; the sections of later stages (`merge`) are left to `run_config.load_run`."""
    raw = profile_raw(name_or_path, overrides)
    return validate({k: v for k, v in raw.items() if k not in AFTER_TRAINING}, f"profile {name_or_path}")


def profile_raw(name_or_path: str | Path, overrides: list[str] | None = None) -> dict:
    """A profile's mapping with the overrides applied, before validation."""
    path = Path(name_or_path)
    if str(name_or_path) in PROFILES:
        raw = yaml.safe_load(profile_text(str(name_or_path)))
    elif path.suffix in (".yaml", ".yml") and path.is_file():
        try:
            raw = bounded_yaml.load_file(path)
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(
                f"profile {path} is not valid UTF-8 YAML ({e}); fix or replace the file"
            ) from None
    else:
        raise ConfigError(
            f"unknown profile {str(name_or_path)!r}: give one of {', '.join(PROFILES)} or a YAML file"
        )
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"profile {name_or_path} must be a mapping of settings, not a {type(raw).__name__}")
    return _merge(raw or {}, parse_overrides(overrides or []))
