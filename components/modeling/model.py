"""The InstructUE model (InstructUE 3.1-3.2): source encoders and adapters feed soft tokens into a
causal LM; the final hidden state at `<USER>` is the user embedding.

    [<ratings> e_1 .. e_n </ratings>] [<tabular> f_1 .. f_F </tabular>] [instruction tokens] <USER>

`config.inputs` leaves the sequence sources or the tabular block out of the user block (Table 3's
"without tabular" / "without sequences"): the left-out sources get no adapters and no input tokens,
at training, embedding and evaluation alike, since every input is planned by `batch`.

Prefix reuse (`prefix_cache.py`): the user block precedes the instruction, so `embed` runs it once
per batch and route and then only each instruction's tokens and `<USER>`. An instruction is a text,
None (universal) or a `TunedInstruction` whose soft tokens replace the instruction's token
embeddings; tuning them (`components.evaluation.tuning`) reuses one `PrefixCache` for every step.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from components.modeling.adapters import SourceAdapter, TabularEmbedder
from components.modeling.config import AdapterInit, InputMode, ModelConfig, Pooling
from components.modeling.depth import keep_layers
from components.modeling.inputs import (
    GROUP_OVERHEAD,
    Plan,
    append_suffix,
    block_sources,
    multi_encoder_rows,
    text_rows,
)
from components.modeling.lora import LoraSettings, apply_lora, mark_trainable
from components.modeling.padded import decode_padded
from components.modeling.precision import bf16_default
from components.modeling.prefix_cache import PrefixCache, embed_suffixes, run_prefix, with_skip
from components.modeling.profile import UserProfile
from components.modeling.spec import ModelSpec
from components.modeling.tmole import INSTRUCTION, UNIVERSAL, Branch, Route, TMoLE, TMoLESettings, routed
from components.modeling.tokens import USER_TOKEN, TokenEmbedder, add_to_tokenizer, special_tokens
from components.modeling.tuned import TunedInstruction

Instruction = str | TunedInstruction | None


@dataclass
class UserBatch:
    """One batch of users ready for the backbone: the planned user block and its soft tokens."""

    plan: Plan
    event_texts: list[str]
    event_source: list[int]  # index into the model's `sequence_sources`, per event
    numeric: torch.Tensor  # (B, F_num)
    categorical: torch.Tensor  # (B, F_cat)
    event_user: list[int] = field(default_factory=list)  # the user (row of the batch) of each event


class InstructUE(nn.Module):
    def __init__(self, backbone: nn.Module, tokenizer, spec: ModelSpec, config: ModelConfig, encoder=None):
        super().__init__()
        self.backbone, self.tokenizer, self.spec, self.config = backbone, tokenizer, spec, config
        # a frozen encoder is a CachedEncoder outside the module tree; a trainable one (a
        # SentenceEncoder with trainable=True) registers its network so it trains and is saved
        self.encoder = encoder
        self.encoder_net = encoder.model if getattr(encoder, "trainable", False) else None
        if config.input_mode is InputMode.MULTI_ENCODER and encoder is None:
            raise ValueError("the multi-encoder input needs a sentence encoder")
        if config.layers is not None:
            keep_layers(self.backbone, config.layers)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        # the sources the user block holds (config.inputs), in card order
        self.block_sources = block_sources(spec.sources, spec.tabular_source, config.inputs)
        self.sequence_sources = [s for s in self.block_sources if s != spec.tabular_source]
        self.tabular_source = spec.tabular_source if spec.tabular_source in self.block_sources else None
        self.lora: LoraSettings | None = None
        self.tmole: TMoLE | None = None
        self._frozen_cast = False  # `frozen_weights_to_bf16` runs before the first decoder call
        d = backbone.get_input_embeddings().embedding_dim
        self.dim = d
        tokens = special_tokens(spec.sources)
        self.tokens = TokenEmbedder(
            backbone.get_input_embeddings(), tokens, add_to_tokenizer(tokenizer, tokens)
        )
        self.token_ids = self.tokens.token_ids
        hidden = config.adapter_hidden or d
        matched = config.adapter_init is AdapterInit.TOKEN_STATS
        out_rms = None
        if config.soft_token_rms:  # the token rows' RMS: read once, only where it is used
            out_rms = float(backbone.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())
        shape = {"norm": config.adapter_norm, "out_rms": out_rms}
        self.adapters = nn.ModuleDict()
        self.summaries = nn.ModuleDict()  # `summary_tokens`: one adapter per sequence source
        multi = config.input_mode is InputMode.MULTI_ENCODER
        if multi:
            for s in self.sequence_sources:
                # encoder vectors are unit-norm: sqrt(dim) gives them unit variance per dimension
                gain = math.sqrt(spec.encoder_dim) if matched else 1.0
                self.adapters[s] = SourceAdapter(spec.encoder_dim, hidden, d, input_gain=gain, **shape)
                if config.summary_tokens:
                    self.summaries[s] = SourceAdapter(spec.encoder_dim, hidden, d, **shape)
        self.answer_projection = None
        if config.answer_encoder:
            if not multi:
                raise ValueError("model.answer_encoder needs the multi-encoder input (its sentence encoder)")
            width = spec.encoder_dim
            self.answer_projection = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d))
        self.reconstruction = nn.ModuleDict()  # `reconstruction_head`: embedding -> the user's inputs
        if config.reconstruction_head:
            if multi and self.sequence_sources:
                self.reconstruction["events"] = nn.Linear(d, spec.encoder_dim)
            if self.tabular_source is not None and spec.tabular.numeric:
                self.reconstruction["tabular"] = nn.Linear(d, len(spec.tabular.numeric))
        self.tabular = None
        if self.tabular_source is not None and multi:
            self.tabular = TabularEmbedder(spec.tabular, config.tabular_dim)
            self.adapters[self.tabular_source] = SourceAdapter(config.tabular_dim, hidden, d, **shape)
        if matched:  # a loaded model's saved weights replace these right after
            self._match_token_statistics()
        if config.gradient_checkpointing:
            self._checkpoint_layers()

    def _checkpoint_layers(self) -> None:
        """Activation checkpointing of every decoder layer (in training mode, with gradients on).
        The backward pass recomputes a layer after `routed(...)` has exited, and by then the trainer
        may have run the other branch's pass: the recomputation must see the route its forward saw,
        so each checkpoint keeps the route current at its forward and sets it again to recompute."""
        kwargs = {"use_reentrant": False, "context_fn": self._route_contexts}
        enable = getattr(self.backbone, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.x's name; gradient_checkpointing_enable warns
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _route_contexts(self):
        route = self.tmole.state.route if self.tmole is not None else None
        return contextlib.nullcontext(), routed(self.tmole, route)

    def _match_token_statistics(self) -> None:
        """`SourceAdapter.match_token_statistics` for every adapter, on probe inputs shaped like
        theirs: random unit vectors for the encoder's, random tabular features for the tabular one
        (a private generator, so building a model draws nothing from the global RNG)."""
        gen = torch.Generator().manual_seed(0)
        tokens = self.tokens.base.weight
        for name, adapter in self.adapters.items():
            if name == self.tabular_source and self.tabular is not None:
                spec = self.tabular.spec
                numeric = torch.randn(256, len(spec.numeric), generator=gen)
                sizes = [len(c) + 1 for c in spec.categorical.values()]
                columns = [torch.randint(0, n, (256,), generator=gen) for n in sizes]
                categorical = torch.stack(columns, 1) if columns else torch.zeros(256, 0, dtype=torch.long)
                with torch.no_grad():
                    probe = self.tabular(numeric, categorical).reshape(-1, self.config.tabular_dim)
            else:
                probe = F.normalize(torch.randn(512, adapter.net[0].in_features, generator=gen), dim=-1)
            adapter.match_token_statistics(tokens, probe)

    def add_lora(self, settings: LoraSettings) -> InstructUE:
        """LoRA on the backbone's projections (see `lora.py`); recorded so `save_model` keeps it."""
        apply_lora(self.backbone, settings)
        self.lora = settings
        return self

    def add_tmole(self, settings: TMoLESettings) -> InstructUE:
        """TMoLE experts on the backbone's projections (see `tmole.py`), routed by task and branch."""
        self.tmole = TMoLE(settings).to(self.device)
        self.tmole.wrap(self.backbone)
        self.backbone.to(self.device)
        mark_trainable(self.backbone)
        return self

    def route(self, tasks: list[str], branch: Branch = Branch.EMBEDDING) -> Route | None:
        """The route of a batch whose sequences belong to `tasks` (None for a model without TMoLE)."""
        if self.tmole is None:
            return None
        return self.tmole.route([self.tmole.settings.task_id(t) for t in tasks], branch)

    @staticmethod
    def inference_task(instruction: Instruction) -> str:
        """The route of an embedding request: `universal` without an instruction, else the generic
        `instruction` task (trained on a share of every family's records). A tuned instruction keeps
        the route of the manual instruction it was initialised from (its `route`, the generic task):
        tuning then starts from exactly the manual instruction's embedding, the router (frozen while
        tuning) sees what it was trained on, and the tuned and manual embeddings share one prefix
        cache. Probe tasks are not in the TMoLE registry, so no task-specific route exists."""
        if isinstance(instruction, TunedInstruction):
            return instruction.route
        return UNIVERSAL if instruction is None else INSTRUCTION

    # -- inputs ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.tokens.special.device

    def batch(self, profiles: list[UserProfile], users: pd.DataFrame) -> UserBatch:
        """Plan the user blocks of `profiles`; `users` holds their rows of users.parquet, same order."""
        num, cat = self.spec.tabular.encode(users)
        if self.config.input_mode is InputMode.TEXT_ONLY:
            rows = text_rows(self._serialised(profiles, users), self.block_sources, self.token_ids)
            return UserBatch(Plan.pad(rows), [], [], torch.from_numpy(num), torch.from_numpy(cat))
        seq = self.sequence_sources
        texts, source, owner = [], [], []
        for i, p in enumerate(profiles):
            for j, s in enumerate(seq):
                texts += p.events[s]
                source += [j] * len(p.events[s])
                owner += [i] * len(p.events[s])
        counts = [{s: len(p.events[s]) for s in seq} for p in profiles]
        n_feat = self.spec.tabular.n_features if self.tabular is not None else 0
        rows = multi_encoder_rows(
            counts, self.block_sources, self.tabular_source, n_feat, self.token_ids,
            summaries=self.config.summary_tokens,
        )  # fmt: skip
        return UserBatch(Plan.pad(rows), texts, source, torch.from_numpy(num), torch.from_numpy(cat), owner)

    def _serialised(self, profiles: list[UserProfile], users: pd.DataFrame) -> list[dict[str, list[int]]]:
        """Text-only input: each source's events joined as text and tokenised, oldest dropped first."""
        budget = self.config.max_text_tokens
        out = []
        for i, p in enumerate(profiles):
            per: dict[str, list[int]] = {}
            for s in self.sequence_sources:
                per[s] = self.tokenize("\n".join(p.events[s]))[-budget:]  # the most recent tokens
            if self.tabular_source is not None:
                row = users.iloc[i]
                text = "; ".join(f"{f}: {_fmt(row[f])}" for f in self.spec.tabular.numeric)
                cats = "; ".join(f"{f}: {row[f]}" for f in self.spec.tabular.categorical)
                text = "; ".join(t for t in (text, cats) if t)
                per[self.tabular_source] = self.tokenize(text)[:budget]
            out.append(per)
        return out

    def tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokens.remap(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def suffix_codes(self, instruction: str | None) -> list[int]:
        """The instruction's tokens (none for the universal embedding), then `<USER>`."""
        ids = self.tokenize(instruction or "")[: self.config.max_instruction_tokens]
        return [*ids, self.token_ids[USER_TOKEN]]

    def instruction_embeddings(self, text: str) -> torch.Tensor:
        """(k, d) float32 copy of the input embeddings of `text`'s tokens: where a tuned instruction
        starts (InstructUE 3.3.3)."""
        ids = self.suffix_codes(text)[:-1]
        if not ids:
            raise ValueError(f"instruction {text!r} has no tokens: a tuned instruction needs at least one")
        with torch.no_grad():
            return self.tokens(torch.tensor(ids, device=self.device)).float().clone()

    def suffix_embeddings(self, instruction: Instruction) -> torch.Tensor:
        """(T, d) input embeddings of the instruction suffix: the instruction's token embeddings, or a
        tuned instruction's soft tokens in their place, then `<USER>`."""
        if not isinstance(instruction, TunedInstruction):
            return self.tokens(torch.tensor(self.suffix_codes(instruction), device=self.device))
        user = self.tokens(torch.tensor([self.token_ids[USER_TOKEN]], device=self.device))
        soft = instruction.tokens
        if soft.ndim != 2 or soft.shape[1] != self.dim:
            raise ValueError(
                f"tuned instruction {instruction.task!r} has tokens of shape {tuple(soft.shape)}; this "
                f"model needs (k, {self.dim}): it was tuned for another backbone, tune it again"
            )
        return torch.cat([soft.to(self.device, user.dtype), user])

    def soft_tokens(self, batch: UserBatch) -> torch.Tensor:
        """(N, d): adapted event vectors, then tabular feature tokens (the rows the plan refers to)."""
        parts = []
        vec = None
        if batch.event_texts:
            vec = self.encoder.encode(batch.event_texts).to(self.device)
            src = torch.tensor(batch.event_source, device=self.device)
            out = torch.zeros(len(vec), self.dim, device=self.device, dtype=self.tokens.special.dtype)
            for j, s in enumerate(self.sequence_sources):
                sel = (src == j).nonzero(as_tuple=True)[0]
                if len(sel):
                    out = out.index_copy(0, sel, self.adapters[s](vec[sel]).to(out.dtype))
            parts.append(out)
        if self.tabular is not None:
            feats = self.tabular(batch.numeric.to(self.device), batch.categorical.to(self.device))
            parts.append(self.adapters[self.tabular_source](feats).reshape(-1, self.dim))
        if self.summaries:
            parts.append(self._summary_tokens(batch, vec))
        if not parts:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.cat(parts)

    def embed_answers(self, texts: list[str]) -> torch.Tensor:
        """(n, d) float32: answers through the frozen sentence encoder and the learned projection
        (`model.answer_encoder`, a locked text tower as in LiT): InfoNCE's answer side, with no
        backbone pass. The encoder's vectors are cached, so a recurring answer is encoded once."""
        if self.answer_projection is None:
            raise RuntimeError("this model embeds answers with its backbone (model.answer_encoder is off)")
        vec = self.encoder.encode(texts).to(self.device).float()
        return self.answer_projection(vec).float()

    def event_means(self, batch: UserBatch, vec: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S, encoder_dim) float32: each user's mean event vector per sequence source (zeros for a
        source without events); `vec` is the batch's encoded events if already at hand."""
        S, B = len(self.sequence_sources), len(batch.plan.lengths)
        dim = self.spec.encoder_dim
        if vec is None and batch.event_texts:
            vec = self.encoder.encode(batch.event_texts).to(self.device)
        sums = torch.zeros(B * S, dim, device=self.device)
        counts = torch.zeros(B * S, 1, device=self.device)
        if vec is not None and len(vec):
            key = torch.tensor(batch.event_user, device=self.device) * S + torch.tensor(
                batch.event_source, device=self.device
            )
            sums = sums.index_add(0, key, vec.float())
            counts = counts.index_add(0, key, torch.ones(len(key), 1, device=self.device))
        return (sums / counts.clamp_min(1)).view(B, S, dim)

    def reconstruct(self, embedding: torch.Tensor, batch: UserBatch) -> list[tuple[torch.Tensor, ...]]:
        """(predicted, target) pairs of the reconstruction heads (`reconstruction_head`): the user's
        mean event vector over all sequence sources, and the tabular numbers (standardised)."""
        out = []
        if "events" in self.reconstruction:
            target = self.event_means(batch).mean(1)
            out.append((self.reconstruction["events"](embedding.float()), target))
        if "tabular" in self.reconstruction:
            target = batch.numeric.to(self.device).float()
            out.append((self.reconstruction["tabular"](embedding.float()), target))
        return out

    def _summary_tokens(self, batch: UserBatch, vec: torch.Tensor | None) -> torch.Tensor:
        """(B * S, d): per user and sequence source, the mean of the source's event vectors through
        its summary adapter (user by user, sources in card order; the rows `multi_encoder_rows`
        numbers after the tabular tokens). A source without events summarises to the zero vector."""
        B, S = len(batch.plan.lengths), len(self.sequence_sources)
        means = self.event_means(batch, vec)
        out = [self.summaries[s](means[:, j]) for j, s in enumerate(self.sequence_sources)]
        return torch.stack(out, 1).reshape(B * S, self.dim).to(self.tokens.special.dtype)

    def input_embeddings(self, plan: Plan, soft: torch.Tensor) -> torch.Tensor:
        codes = plan.codes.to(self.device)
        tok = self.tokens(codes.clamp(min=0))
        if soft.shape[0] == 0:
            return tok
        rows = soft[(-codes - 1).clamp(min=0, max=soft.shape[0] - 1)]
        return torch.where((codes < 0).unsqueeze(-1), rows.to(tok.dtype), tok)

    # -- backbone --------------------------------------------------------------------------------
    def uses_bf16(self) -> bool:
        """bf16 autocast: as configured, else where it measures faster (`precision.bf16_default`)."""
        return self.config.bf16 if self.config.bf16 is not None else bf16_default(self.device)

    def autocast(self):
        if self.uses_bf16():
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def frozen_weights_to_bf16(self) -> int:
        """Store the frozen backbone's linear weights in bf16 where the model runs in bf16 autocast.

        Autocast keeps a cast copy only of weights that require gradients: a frozen fp32 weight is
        cast again on every call, and on the quick profile those copies were a tenth of a training
        step (`benchmarks/step_profile.py`). Stored in bf16 they are read as they are; autocast would
        have computed the same product. The input embeddings (tied to the output head) stay as they
        are, so the token rows and the trainable special tokens keep their precision. Returns how
        many weights were cast; idempotent, and a no-op without bf16."""
        if not self.uses_bf16():
            return 0
        keep = {id(self.backbone.get_input_embeddings().weight)}
        n = 0
        for name, module in self.backbone.named_modules():
            w = getattr(module, "weight", None)
            if (
                isinstance(module, nn.Linear)
                and "tmole_router" not in name  # read outside autocast (merge, routing plot); tiny
                and w is not None
                and not w.requires_grad
                and w.dtype == torch.float32
                and id(w) not in keep
            ):
                module.weight.data = w.data.to(torch.bfloat16)
                n += 1
        return n

    def decode(self, embeds, mask, positions, cache=None, route: Route | None = None, all_layers=False):
        if not self._frozen_cast:
            self.frozen_weights_to_bf16()
            self._frozen_cast = True
        with self.autocast(), routed(self.tmole, route):
            return self.backbone.base_model(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=positions,
                use_cache=cache is not None,
                output_hidden_states=all_layers,
                **{_cache_keyword(type(self.backbone.base_model)): cache},
            )

    def decode_padded(
        self, embeds: torch.Tensor, lengths: torch.Tensor, route: Route | None = None,
        overhead: int | None = GROUP_OVERHEAD,
    ) -> torch.Tensor:  # fmt: skip
        """The last hidden states of right-padded rows, one pass per length group (`padded.py`)."""
        return decode_padded(self, embeds, lengths, route, overhead)

    def pool(self, hidden: torch.Tensor, plan: Plan) -> torch.Tensor:
        lengths = plan.lengths.to(hidden.device)
        if self.config.pooling is Pooling.USER_TOKEN:
            h = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]
        else:
            m = plan.mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
            h = (hidden * m).sum(1) / m.sum(1)
        return F.normalize(h.float(), dim=-1)

    def embed_uncached(self, batch: UserBatch, instruction: Instruction) -> torch.Tensor:
        """(B, embedding_dim) embeddings from one full pass per user: block + instruction + <USER>."""
        out, plan, _ = self._full_pass(batch, instruction)
        return with_skip(self.pool(out.last_hidden_state, plan), self.skip(batch))

    @property
    def embedding_dim(self) -> int:
        """The served embedding's width: the backbone's, then the skip's (`mean_skip`)."""
        skip = len(self.sequence_sources) * self.spec.encoder_dim if self.config.mean_skip else 0
        return self.dim + skip

    def skip(self, batch: UserBatch) -> torch.Tensor | None:
        """(B, S * encoder_dim) the mean event vector per source (`mean_skip`; not normalised, as the
        sentence encoder's baseline mean it extends), or None."""
        return self.event_means(batch).flatten(1) if self.config.mean_skip else None

    def layer_states(
        self, batch: UserBatch, instruction: Instruction
    ) -> tuple[tuple[torch.Tensor, ...], Plan, int]:
        """Every layer's hidden states of the full pass `embed_uncached` makes, for diagnostics
        (`benchmarks/information_flow.py`): the input embeddings, then each decoder layer's output
        (the last one after the final norm, the embedding's source), each (B, L, d); the pass's plan
        (valid positions, lengths: `<USER>` is at `lengths - 1`) and the suffix length T (the user
        block is the valid positions before `lengths - T`)."""
        out, plan, suffix_len = self._full_pass(batch, instruction, all_layers=True)
        return out.hidden_states, plan, suffix_len

    def _full_pass(self, batch: UserBatch, instruction: Instruction, all_layers: bool = False):
        soft = self.soft_tokens(batch)
        suffix = self.suffix_embeddings(instruction)  # (T, d)
        B, T = len(batch.plan.lengths), suffix.shape[0]
        plan = append_suffix(batch.plan, [0] * T)  # placeholders: the suffix embeddings go there
        embeds = self.input_embeddings(plan, soft)
        rows = torch.arange(B, device=self.device)[:, None]
        cols = plan.lengths.to(self.device)[:, None] - T + torch.arange(T, device=self.device)[None, :]
        embeds = embeds.index_put((rows.expand(B, T), cols), suffix.to(embeds.dtype).expand(B, T, -1))
        mask = plan.mask.to(self.device)
        positions = (torch.arange(plan.codes.shape[1], device=self.device)[None, :]).expand_as(mask)
        route = self.route([self.inference_task(instruction)] * B)
        return self.decode(embeds, mask, positions, route=route, all_layers=all_layers), plan, T

    def embed(self, batch: UserBatch, instructions: list[Instruction]) -> list[torch.Tensor]:
        """Embeddings under each instruction, the user block computed once per route (prefix reuse).

        All instructions of a route then run in one pass over the cached block (`embed_suffixes`).
        Without TMoLE there is one route; with it, the universal and the instructed embeddings each
        have theirs (the block's keys and values depend on the route).
        """
        soft = self.soft_tokens(batch)
        groups: dict[str, list[int]] = {}
        for k, instruction in enumerate(instructions):
            key = self.inference_task(instruction) if self.tmole is not None else ""
            groups.setdefault(key, []).append(k)
        out: list[torch.Tensor | None] = [None] * len(instructions)
        for task, members in groups.items():
            route = self.route([task] * len(batch.plan.lengths)) if task else None
            prefix = self.prefix(batch, soft, route)
            vectors = self.embed_suffixes(prefix, [self.suffix_embeddings(instructions[k]) for k in members])
            for k, v in zip(members, vectors, strict=True):
                out[k] = v
        return out

    def prefix(self, batch: UserBatch, soft: torch.Tensor, route: Route | None) -> PrefixCache:
        """Run the batch's user blocks once under `route` (`prefix_cache.run_prefix`)."""
        return run_prefix(self, batch, soft, route)

    def embed_suffixes(self, prefix: PrefixCache, suffixes: list[torch.Tensor]) -> list[torch.Tensor]:
        """(B, embedding_dim) embeddings for each suffix over the cached blocks
        (`prefix_cache.embed_suffixes`), each followed by the skip where `mean_skip` is on."""
        return [with_skip(v, prefix.skip) for v in embed_suffixes(self, prefix, suffixes)]


@functools.cache
def _cache_keyword(base_model: type) -> str:
    """The decoder's key/value-cache argument: `cache` in newer transformers 5.x releases (which warn
    on `past_key_values` and drop it in 5.40), `past_key_values` in the earlier ones."""
    return "cache" if "cache" in inspect.signature(base_model.forward).parameters else "past_key_values"


def _fmt(x) -> str:
    if isinstance(x, float | np.floating):
        return "unknown" if not np.isfinite(x) else f"{x:.4g}"
    return str(x)
