"""Tuned instructions (InstructUE 3.3.3): soft instruction tokens optimised on few-shot labelled users.

The task's manual instruction is tokenised and its token embeddings become k trainable vectors; the
user embedding under them is pulled towards its class prototype and pushed from the other classes'
prototypes (the prototype loss, Eq. 6). Everything else stays frozen: backbone, adapters, experts,
router, `<USER>`.

    picked = few_shot(fit_labels, settings.shots_per_class, seed=0)
    tuned = tune_instruction(model, card, tables, task, fit_ids[picked], fit_labels[picked], settings)
    vectors = UserEmbedder(model, card, tables).embed_many(ids, [None, tuned])[tuned]
    save_tuned(model_dir, [tuned])

Cost: the user block precedes the instruction, so its key/value cache does not depend on the tokens
being tuned. It is computed once per tuning run (under the route the manual instruction uses) and
every step runs only the k instruction tokens and `<USER>` through the backbone, with gradients to
the soft tokens only. The function reads no label but the `labels` it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.ingestion import ContractTables, DatasetCard
from components.modeling import (
    InstructUE,
    PrefixCache,
    TunedInstruction,
    build_profiles,
    load_tuned,
    save_tuned,
    tuned_for,
)
from components.training import centre_groups

TUNING_BATCH = 64  # few-shot users per backbone pass: few-shot sets fit in one, fewer and larger ops

__all__ = [
    "TunedInstruction",
    "TuningSettings",
    "few_shot",
    "load_tuned",
    "prototype_loss",
    "save_tuned",
    "tune_instruction",
    "tuned_for",
]


@dataclass(frozen=True)
class TuningSettings:
    shots_per_class: int = 16  # few-shot fitting users per class (chosen by the caller, see `few_shot`)
    steps: int = 40  # Adam steps on the soft tokens
    lr: float = 5e-3
    temperature: float = 0.1  # tau of Eq. 6
    centre: bool = False  # Eq. 6 on embeddings centred over the few-shot users (`prototype_loss`)

    def __post_init__(self):
        problems = [
            f"{name} must be > 0, got {value}"
            for name, value in vars(self).items()
            if not value > 0 and name not in ("steps", "centre")
        ]
        if self.steps < 0:
            problems.append(f"steps must be >= 0, got {self.steps}")
        if problems:
            raise ValueError("bad tuning settings: " + "; ".join(problems))


def prototype_loss(
    user_emb: torch.Tensor, labels: torch.Tensor, temperature: float, centre: bool = False
) -> torch.Tensor:
    """The prototype loss L_pt of InstructUE Eq. 6 (mean over the B users):

        L_pt = -1/B sum_i log( exp(s(u_i, p_{l_i}) / tau) / sum_k exp(s(u_i, p_k) / tau) ),
        p_k = 1/|C_k| sum_{i in C_k} u_i

    s is cosine similarity: users and prototypes are L2-normalised. A prototype is the mean of its
    class's embeddings in this batch (the user itself included, as in the paper), so gradients flow
    through the prototypes too. Classes are the distinct values of `labels`, K of them.

    `centre` subtracts the batch's mean embedding first. The backbone's states of different users
    point almost the same way (mean cosine 0.97 on MovieLens), so the raw cosines to the class
    prototypes differ in the third decimal; centred, they score how a user differs from the others
    (the same reason as `training.losses.centre_groups`).

    Args:
        user_emb: (B, d) user embeddings.
        labels: (B,) class labels (any integer values).
        temperature: tau > 0.
    Returns:
        A scalar tensor.
    Raises:
        ValueError: on mismatched shapes, fewer than two classes or a non-positive temperature.
    """
    labels = torch.as_tensor(labels, device=user_emb.device)
    if user_emb.ndim != 2 or labels.ndim != 1 or len(labels) != len(user_emb):
        raise ValueError(
            f"prototype_loss needs (B, d) embeddings and (B,) labels, got {tuple(user_emb.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    classes, y = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"the prototype loss needs users of at least two classes, got {classes.tolist()}")
    if centre:
        user_emb = centre_groups(user_emb)
    one_hot = F.one_hot(y, len(classes)).to(user_emb.dtype)  # (B, K)
    prototypes = (one_hot.T @ user_emb) / one_hot.sum(0)[:, None]  # (K, d): p_k, class means
    sim = F.normalize(user_emb, dim=-1) @ F.normalize(prototypes, dim=-1).T  # (B, K): s(u_i, p_k)
    return F.cross_entropy(sim / temperature, y)


def few_shot(labels: np.ndarray, shots_per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of at most `shots_per_class` users per class (all of a smaller class), drawn without
    replacement; sorted. Pure: the same labels and seed give the same users."""
    labels = np.asarray(labels)
    if shots_per_class < 1:
        raise ValueError(f"shots_per_class must be >= 1, got {shots_per_class}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, size=min(shots_per_class, len(members)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=int)


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Every parameter of `model` frozen and the model in eval mode (no dropout) for the duration;
    both restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)


def tune_instruction(
    model: InstructUE,
    card: DatasetCard,
    tables: ContractTables,
    task: str,
    user_ids: Sequence[int],
    labels: np.ndarray,
    settings: TuningSettings,
) -> TunedInstruction:
    """Tune soft instruction tokens for `task` on the few-shot users `user_ids` with `labels`.

    The tokens start as the input embeddings of the card's manual instruction for `task` and are
    optimised with Adam on the prototype loss (Eq. 6) over all given users each step; the model stays
    frozen. Only the users' profiles (events, cut-offs, user attributes) are read from `tables`, never
    its labels.

    Args:
        model: a loaded InstructUE model (not modified; its parameters' flags are restored).
        card, tables: the dataset of the users.
        task: a task of `card` with a manual instruction.
        user_ids: the few-shot fitting users.
        labels: their labels, same order.
        settings: steps, learning rate, temperature.
    Returns:
        The tuned instruction (tokens on the CPU, float32) with the loss before each step and after
        the last in `losses`.
    Raises:
        KeyError: `task` is not a task of `card`; ValueError: bad users or labels.
    """
    spec = card.task(task)
    ids = [int(u) for u in user_ids]
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(ids):
        raise ValueError(f"tune_instruction({task!r}): {len(ids)} users but labels of shape {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"tune_instruction({task!r}) needs few-shot users of at least two classes, got {np.unique(y)}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"tune_instruction({task!r}): user ids repeat")
    users = tables.users.set_index("user_id", drop=False)
    unknown = sorted(set(ids) - set(users.index))
    if unknown:
        raise ValueError(f"tune_instruction({task!r}): user ids not in dataset {card.name!r}: {unknown[:10]}")

    init = model.instruction_embeddings(spec.instruction)
    route_task = model.inference_task(spec.instruction)
    soft_tokens = nn.Parameter(init.clone())
    with frozen(model), _attention_for_tuning(model.device):
        prefixes, order = _prefixes(model, card, tables, users, ids, route_task)
        target = torch.as_tensor(y[order], device=model.device)
        optimizer = torch.optim.Adam([soft_tokens], lr=settings.lr)
        losses = []
        for step in range(settings.steps + 1):
            tuned = TunedInstruction(task, soft_tokens, spec.instruction, route_task)
            suffix = model.suffix_embeddings(tuned)
            emb = torch.cat([model.embed_suffixes(p, [suffix])[0] for p in prefixes])
            loss = prototype_loss(emb, target, settings.temperature, settings.centre)
            losses.append(float(loss.detach()))
            if step == settings.steps:  # the last pass only measures the final loss
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return TunedInstruction(
        task=task,
        tokens=soft_tokens.detach().cpu().float().clone(),
        init_text=spec.instruction,
        route=route_task,
        n_users=len(ids),
        losses=losses,
    )


def _attention_for_tuning(device: torch.device):
    """On CPUs, the plain (math) attention: a step's queries are a few suffix tokens against a short
    cached block, where the fused flash kernel's backward costs about a third of the step (measured on
    the quick model: 1.2 s instead of 1.4 s per step of 32 users, one thread)."""
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


@torch.no_grad()
def _prefixes(model, card, tables, users, ids, route_task) -> tuple[list[PrefixCache], np.ndarray]:
    """The users' block caches under the route, in batches of similar length; and the user order."""
    profiles = build_profiles(card, tables, ids, model.config.max_events)
    order = np.array(
        sorted(range(len(ids)), key=lambda i: -sum(len(v) for v in profiles[i].events.values())), dtype=int
    )
    size = max(model.config.batch_size, TUNING_BATCH)
    out = []
    for start in range(0, len(order), size):
        idx = order[start : start + size]
        rows = users.loc[[ids[i] for i in idx]].reset_index(drop=True)
        batch = model.batch([profiles[i] for i in idx], rows)
        route = model.route([route_task] * len(idx)) if model.tmole is not None else None
        out.append(model.prefix(batch, model.soft_tokens(batch), route))
    return out, order
