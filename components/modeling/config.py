"""Typed configuration of an InstructUE model, validated once at the edge (CLI, flow, test)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

DEFAULT_BACKBONE = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"
# Issue 26's recipe switches: off by default, left out of a saved config while off (see
# `_omit_default_inputs`), and reset by baselines that must read the backbone as shipped.
RECIPE_SWITCHES = ("layers", "summary_tokens", "adapter_norm", "soft_token_rms", "answer_encoder",
                   "reconstruction_head", "mean_skip")  # fmt: skip


class Pooling(StrEnum):
    USER_TOKEN = "user_token"  # final hidden state at <USER> (the paper's choice)
    MEAN = "mean"  # ablation: mean over the user block, instruction and <USER>


class AdapterInit(StrEnum):
    TORCH = "torch"  # nn.Linear's default initialisation (models saved before this option)
    TOKEN_STATS = "token_stats"  # soft tokens start with the spread of the backbone's token embeddings


class InputMode(StrEnum):
    MULTI_ENCODER = "multi_encoder"  # events -> sentence encoder -> adapter -> one soft token each
    TEXT_ONLY = "text_only"  # events serialised as text inside the same boundary tokens


class Inputs(StrEnum):
    """What the user block holds (InstructUE Table 3's input ablations), in either input mode."""

    BOTH = "both"  # every sequence source and the tabular features
    SEQUENCES = "sequences"  # "without tabular": the sequence sources only
    TABULAR = "tabular"  # "without sequences": the tabular features only


class ModelConfig(BaseModel):
    """Everything that decides how users become embeddings (not how they are trained)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backbone: str = Field(DEFAULT_BACKBONE, description="alias, local folder or hub id (offline)")
    encoder: str = Field(DEFAULT_ENCODER, description="sentence encoder: alias, local folder or hub id")
    input_mode: InputMode = InputMode.MULTI_ENCODER
    pooling: Pooling = Pooling.USER_TOKEN
    inputs: Inputs = Field(
        Inputs.BOTH, description="the user block's data: both, sequences (no tabular) or tabular (no events)"
    )
    max_events: int | None = Field(None, ge=1, description="cap per source (most recent); None: the card's")
    adapter_hidden: int | None = Field(None, ge=1, description="adapter MLP width; None: backbone width")
    adapter_init: AdapterInit = Field(
        AdapterInit.TORCH, description="token_stats: adapters start at the token embeddings' statistics"
    )
    tabular_dim: int = Field(64, ge=1, description="width of a tabular feature's embedding")
    max_instruction_tokens: int = Field(128, ge=1)
    max_text_tokens: int = Field(1024, ge=16, description="text-only mode: token budget per source")
    batch_size: int = Field(16, ge=1, description="users per backbone forward pass")
    encoder_batch_size: int = Field(128, ge=1)
    encoder_trainable: bool = Field(
        False, description="train the sentence encoder too (its vectors are then never cached)"
    )
    device: str = Field("auto", description="auto (cuda if present), cpu, cuda, cuda:N")
    bf16: bool | None = Field(
        None, description="bf16 autocast; None: where bf16 measures faster (precision.py)"
    )
    layers: int | None = Field(
        None, ge=1, description="keep the backbone's first k decoder layers (None: all of them)"
    )
    summary_tokens: bool = Field(
        False,
        description="a summary soft token per sequence source, the mean of its event vectors through "
        "a summary adapter, ahead of the source's events (Query-as-Anchor)",
    )
    adapter_norm: bool = Field(False, description="LayerNorm on an adapter's input (Query-as-Anchor)")
    soft_token_rms: bool = Field(
        False,
        description="hold every soft token at the RMS of the backbone's token rows (an RMS norm with a "
        "fixed gain): the adapters' outputs can neither drown in nor swamp the residual stream",
    )
    answer_encoder: bool = Field(
        False,
        description="training: InfoNCE's answers embedded by the frozen sentence encoder through a "
        "learned projection (a locked text tower, as LiT) instead of by the backbone",
    )
    reconstruction_head: bool = Field(
        False,
        description="training: linear heads from the embedding to the user's mean event vector and "
        "tabular numbers, for the reconstruction loss (`alpha_rec`)",
    )
    mean_skip: bool = Field(
        False,
        description="the served embedding ends with the user's mean event vector per sequence source "
        "(the summary tokens' input), a skip past the backbone, as Causal2Vec sets its contextual "
        "token beside the last token; training's losses read the backbone's part only",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="training: keep each decoder layer's input only and recompute the layer in the "
        "backward pass (one more forward pass of the backbone; the same gradients)",
    )

    @model_validator(mode="after")
    def _skip_needs_events(self):
        if self.mean_skip and (self.input_mode is InputMode.TEXT_ONLY or self.inputs is Inputs.TABULAR):
            raise ValueError(
                "model.mean_skip appends the sentence encoder's mean event vectors: it needs "
                "input_mode=multi_encoder and the sequence sources (inputs=both or sequences)"
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_default_inputs(self, handler):
        # configs written before `inputs` existed lack it: leaving the default out keeps their
        # model.json, the checkpoints' saved configs and the retraining flow's cache keys unchanged
        data = handler(self)
        if self.inputs is Inputs.BOTH:
            data.pop("inputs", None)
        if self.adapter_init is AdapterInit.TORCH:  # the same for `adapter_init`
            data.pop("adapter_init", None)
        if not self.gradient_checkpointing:  # and `gradient_checkpointing`
            data.pop("gradient_checkpointing", None)
        for name in RECIPE_SWITCHES:  # and the recipe's switches
            if data.get(name) in (None, False):
                data.pop(name, None)
        return data
