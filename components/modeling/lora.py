"""Plain LoRA on the backbone's attention projections, through peft (InstructUE 4.1; the "w/o TMoLE"
ablation of RecFound).

peft's `inject_adapter_in_model` wraps each targeted `nn.Linear` in place (the frozen layer becomes
`base_layer`, the adapter adds `B(A(dropout(x))) * alpha / r`), so the backbone keeps its class and
`backbone.base_model` still returns hidden states. A saved model records these settings in
`model.json` and `load_model` injects the same adapters before loading the weights.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

LORA_MARK = "lora_"
ADAPTER_MARKS = (LORA_MARK, "tmole_")  # trainable backbone parameters: LoRA and TMoLE experts/routers


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1)


def apply_lora(backbone: nn.Module, settings: LoraSettings) -> nn.Module:
    """Wrap the targeted projections of `backbone` in LoRA layers; only the LoRA weights train.

    Raises:
        ValueError: no module of the backbone matches `settings.targets`.
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = {n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in settings.targets if t not in names]
    if missing:
        raise ValueError(
            f"LoRA targets {missing} match no linear layer of the backbone; it has {sorted(names)}"
        )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
    )
    inject_adapter_in_model(config, backbone)
    mark_trainable(backbone)
    return backbone


def mark_trainable(backbone: nn.Module) -> None:
    """Freezing in one place: the backbone's base weights are frozen, its adapter weights train."""
    for name, p in backbone.named_parameters():
        p.requires_grad_(any(mark in name for mark in ADAPTER_MARKS))


def lora_parameters(backbone: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in backbone.named_parameters() if LORA_MARK in n}
