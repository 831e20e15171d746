"""Soft-token alignment: the adapters learn to write tokens the frozen backbone can read (issue 26).

LLaVA's first stage trains only the projector, the language model frozen, on feature-caption pairs.
Here the pair is an event and its own text: the adapter turns the event's encoder vector into one
soft token, the event's tokenised text follows it, and the next-token loss (InstructUE Eq. 1, the
same `next_token_loss`) is taken on the text only,

    L_align = -1/|y| sum_t log p(y_t | y_<t, A_s(e))       with e = Enc(y), A_s the source's adapter,

so the only way to lower it beyond the backbone's own text model is a soft token that says what the
text will say. Only the sequence sources' adapters train; the backbone, the special-token rows, the
summary adapters, every head and (later) the LoRA/TMoLE experts are untouched; a test checks it.

The result is cached by content (`alignment_key`: the training users' profile texts, the encoder,
the backbone, the model settings the adapters depend on, these settings), so every retrain that
shares them reuses it: `<cache>/alignment/<key>.safetensors`, written through a temp file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save

from components.common import write_bytes_atomic
from components.training.losses import IGNORE, next_token_loss

CACHE_SUBDIR = "alignment"


class AlignmentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(0, ge=0, description="alignment steps before joint training; 0: no alignment stage")
    batch_events: int = Field(32, ge=1, description="events (soft token + its text) per step")
    lr: float = Field(1e-3, gt=0, description="the adapters' lr (LLaVA stage 1: 1e-3)")
    max_text_tokens: int = Field(48, ge=2, description="an event's text is cut to this many tokens")
    seed: int = 0


@dataclass
class AlignmentResult:
    key: str
    cached: bool
    seconds: float
    losses: list[float] = field(default_factory=list)  # per step; empty when read from the cache

    def summary(self) -> str:
        if self.cached:
            return f"alignment {self.key[:12]}: reused from the cache"
        first, last = np.mean(self.losses[:5]), np.mean(self.losses[-5:])
        n, t = len(self.losses), self.seconds
        return f"alignment {self.key[:12]}: {n} steps in {t:.0f} s, loss {first:.2f} -> {last:.2f}"


def aligned_parameters(model) -> dict[str, torch.Tensor]:
    """The tensors the stage trains: every sequence source's adapter (names as in the model)."""
    return {
        f"adapters.{s}.{n}": p
        for s in model.sequence_sources
        for n, p in model.adapters[s].named_parameters()
    }


def alignment_key(model, texts: list[tuple[int, str]], settings: AlignmentSettings) -> str:
    """What the adapters' aligned weights depend on: the texts, the models and the settings."""
    h = hashlib.sha256()
    for j, text in texts:
        h.update(f"{j}\x1f{text}\x1e".encode())
    relevant = model.config.model_dump(
        mode="json", include={"backbone", "encoder", "adapter_hidden", "adapter_init", "adapter_norm",
                              "soft_token_rms", "layers", "bf16"},
    )  # fmt: skip
    h.update(json.dumps({"model": relevant, "sources": model.sequence_sources,
                         "settings": settings.model_dump(mode="json")}, sort_keys=True).encode())  # fmt: skip
    return h.hexdigest()


def event_texts(model, profiles) -> list[tuple[int, str]]:
    """(source index, text) of every distinct profile event of `profiles`, in a stable order."""
    seen: dict[tuple[int, str], None] = {}
    for p in profiles:
        for j, s in enumerate(model.sequence_sources):
            for text in p.events.get(s, []):
                seen.setdefault((j, text), None)
    return sorted(seen)


def _batch(model, items: list[tuple[int, str]], max_tokens: int):
    """Input embeddings (B, 1 + T, d), the mask and the labels: soft token, then the text."""
    vec = model.encoder.encode([t for _, t in items]).to(model.device)
    codes = [model.tokenize(t)[:max_tokens] for _, t in items]
    width = 1 + max(len(c) for c in codes)
    table = model.backbone.get_input_embeddings()
    ids = torch.zeros(len(items), width, dtype=torch.long, device=model.device)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long, device=model.device)
    mask = torch.zeros(len(items), width, dtype=torch.long, device=model.device)
    for i, c in enumerate(codes):
        ids[i, 1 : 1 + len(c)] = torch.tensor(c, device=model.device)
        labels[i, : len(c)] = ids[i, 1 : 1 + len(c)]  # position t predicts token t + 1: soft -> y_1
        mask[i, : 1 + len(c)] = 1
    embeds = table(ids).detach()
    src = torch.tensor([j for j, _ in items], device=model.device)
    soft = torch.zeros(len(items), embeds.shape[-1], device=model.device, dtype=embeds.dtype)
    for j, s in enumerate(model.sequence_sources):  # one adapter call per source, as `soft_tokens`
        sel = (src == j).nonzero(as_tuple=True)[0]
        if len(sel):
            soft = soft.index_copy(0, sel, model.adapters[s](vec[sel]).to(embeds.dtype))
    embeds = torch.cat([soft[:, None, :], embeds[:, 1:]], dim=1)
    return embeds, mask, labels


def align_adapters(model, texts: list[tuple[int, str]], settings: AlignmentSettings, progress: bool = False):
    """Train the sequence adapters of `model` in place for `settings.steps` steps; returns the losses."""
    from tqdm.auto import tqdm

    params = list(aligned_parameters(model).values())
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    rng = np.random.default_rng(settings.seed)
    head = model.backbone.get_output_embeddings()
    losses = []
    was_training = model.training
    model.train()
    for _ in tqdm(range(settings.steps), desc="align", unit="step", disable=not progress):
        picks = rng.choice(len(texts), size=min(settings.batch_events, len(texts)), replace=False)
        embeds, mask, labels = _batch(model, [texts[int(i)] for i in picks], settings.max_text_tokens)
        positions = torch.arange(embeds.shape[1], device=model.device)[None, :].expand_as(mask)
        hidden = model.decode(embeds, mask, positions).last_hidden_state
        with model.autocast():
            logits = head(hidden)
        loss = next_token_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.zero_grad(set_to_none=True)  # grads that reached frozen rows go; nothing else moved
    model.train(was_training)
    return losses


def align_cached(
    model, profiles, settings: AlignmentSettings, cache_dir: Path | None, progress: bool = False
):
    """`align_adapters` unless the cache holds this exact alignment; either way the model's sequence
    adapters end aligned. Returns an `AlignmentResult`."""
    t0 = time.perf_counter()
    texts = event_texts(model, profiles)
    if not texts:
        raise ValueError("the alignment stage needs profile events of a sequence source; the users have none")
    if not aligned_parameters(model):
        raise ValueError("the alignment stage needs the multi-encoder input (sequence sources' adapters)")
    key = alignment_key(model, texts, settings)
    path = Path(cache_dir) / CACHE_SUBDIR / f"{key[:32]}.safetensors" if cache_dir else None
    params = aligned_parameters(model)
    if path is not None and path.is_file():
        saved = load_file(str(path), device=str(model.device))
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(saved[name])
        return AlignmentResult(key, True, time.perf_counter() - t0)
    losses = align_adapters(model, texts, settings, progress)
    if path is not None:
        state = {n: p.detach().cpu().contiguous() for n, p in params.items()}
        write_bytes_atomic(path, save(state))
    return AlignmentResult(key, False, time.perf_counter() - t0, losses)
