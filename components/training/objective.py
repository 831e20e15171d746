"""One micro-batch through both branches of the contrastive-autoregressive objective (InstructUE
3.3.2, Eq. 1-5).

    embedding branch:  [user block] [instruction] <USER>                -> u_i (hidden state at <USER>)
    answers:           [answer tokens]                                  -> a_i (last hidden state)
    generative branch: [user block] [instruction] <USER> [answer] <eos> -> next-token loss on answer

With plain LoRA both branches share every weight, and causal attention means the `<USER>` state of the
generative sequence equals the embedding branch's: one pass over the user sequences, with answer tokens
appended to the generative examples, serves both branches. The answers of the embedding examples are a
second, short pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from components.modeling.config import Pooling
from components.modeling.inputs import GROUP_OVERHEAD, Plan
from components.modeling.model import InstructUE
from components.modeling.profile import UserProfile
from components.modeling.tmole import Branch
from components.training.data import Example, task_name
from components.training.losses import (
    IGNORE,
    LossTerms,
    centre_groups,
    info_nce,
    joint_loss,
    next_token_loss,
    shift_labels,
)


@dataclass(frozen=True)
class ObjectiveSettings:
    n_embedding: int  # the first n examples of a micro-batch feed the embedding branch (0: off)
    n_generative: int  # the first n feed the generative branch (0: off)
    temperature: float = 0.05
    margin: float | None = 0.1
    same_side: bool = True
    alpha_lm: float = 1.0
    alpha_cl: float = 1.0
    max_answer_tokens: int = 96
    share_pass: bool = True  # one pass for both branches where the routing allows it (module docstring)
    in_task_negatives: bool = False  # InfoNCE negatives only from the same task (`task_batches`)
    centre: bool = False  # Eq. 2-4 on centred embeddings (per task with in_task_negatives)
    # the decoder runs per group of similar lengths (`InstructUE.decode_padded`); None: one padded pass
    group_overhead: int | None = GROUP_OVERHEAD


@dataclass
class StepOutput:
    terms: LossTerms
    tokens: int  # tokens through the backbone in this micro-batch (both passes)
    examples: int


class Objective(nn.Module):
    """Wraps the model so a data-parallel wrapper sees one `forward(examples) -> StepOutput`."""

    def __init__(
        self,
        model: InstructUE,
        settings: ObjectiveSettings,
        profiles: dict[int, UserProfile],
        users: pd.DataFrame,
    ):
        super().__init__()
        self.model, self.settings, self.profiles = model, settings, profiles
        self.users = users.set_index("user_id", drop=False)
        tok = model.tokenizer
        self.eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        self._answers: dict[str, list[int]] = {}

    def answer_tokens(self, answer: str) -> list[int]:
        """The answer's tokens, truncated (cached: answers recur across steps)."""
        ids = self._answers.get(answer)
        if ids is None:
            ids = self._answers[answer] = self.model._tokenize(answer)[: self.settings.max_answer_tokens]
        return ids

    def answer_ids(self, answer: str) -> list[int]:
        """The generative target: the answer's tokens, then eos."""
        return self.answer_tokens(answer) + ([self.eos] if self.eos is not None else [])

    def forward(
        self,
        emb: list[Example],
        gen: list[Example],
        emb_tasks: list[str] | None = None,
        gen_tasks: list[str] | None = None,
    ) -> StepOutput:
        """Loss terms of one micro-batch: `emb` feeds the embedding branch, `gen` the generative one.

        `*_tasks` name each example's TMoLE route (ignored without TMoLE). When the generative
        examples are the first ones of the embedding examples (or the reverse) and no routing tells
        the branches apart, one pass serves both (see the module docstring).
        """
        s, m = self.settings, self.model
        shared = s.share_pass and m.tmole is None and (emb[: len(gen)] == gen or gen[: len(emb)] == emb)
        emb_route = m.route(emb_tasks or [], Branch.EMBEDDING)  # None without TMoLE
        tokens, lm, cl = 0, None, None
        if shared:
            union = emb if len(emb) >= len(gen) else gen
            hidden, mask, target, user_pos, n = self._user_pass(union, len(gen), None)
            tokens += n
            users = self._pool(hidden[: len(emb)], mask[: len(emb)], user_pos[: len(emb)]) if emb else None
            lm = self._lm(hidden, target) if gen else None
        else:
            users = None
            if emb:
                hidden, mask, _, user_pos, n = self._user_pass(emb, 0, emb_route)
                tokens += n
                users = self._pool(hidden, mask, user_pos)
            if gen:
                route = m.route(gen_tasks or [], Branch.GENERATIVE)
                hidden, _, target, _, n = self._user_pass(gen, len(gen), route)
                tokens += n
                lm = self._lm(hidden, target)
        if emb:
            texts = [e.answer for e in emb]
            answers, n = self._embed_answers(texts, emb_route)
            tokens += n
            same = torch.tensor([[a == b for b in texts] for a in texts], device=m.device)
            names = [task_name(e) for e in emb]
            if s.in_task_negatives:  # another task's answer is told apart by its template, not the user
                same = same | torch.tensor([[a != b for b in names] for a in names], device=m.device)
            if s.centre:
                groups = names if s.in_task_negatives else None
                users, answers = centre_groups(users, groups), centre_groups(answers, groups)
            cl = info_nce(users, answers, s.temperature, s.margin, s.same_side, known_positive=same)
        examples = len(set(map(id, emb)) | set(map(id, gen)))
        return StepOutput(joint_loss(lm, cl, s.alpha_lm, s.alpha_cl), tokens, examples)

    def _user_pass(self, examples: list[Example], n_answers: int, route):
        """[block][instruction]<USER> for every example, plus [answer]<eos> for the first
        `n_answers`; returns hidden states, mask, next-token targets, `<USER>` positions, tokens."""
        m = self.model
        uids = [e.user_id for e in examples]
        batch = m.batch([self.profiles[u] for u in uids], self.users.loc[uids].reset_index(drop=True))
        soft = m.soft_tokens(batch)
        rows, labels, user_pos = [], [], []
        for i, e in enumerate(examples):
            block = batch.plan.codes[i, : int(batch.plan.lengths[i])].tolist()
            prompt = block + m._suffix(e.instruction)
            answer = self.answer_ids(e.answer) if i < n_answers else []
            rows.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)  # Eq. 1 only on answer tokens
            user_pos.append(len(prompt) - 1)
        plan = Plan.pad(rows)
        target = torch.full(plan.codes.shape, IGNORE, dtype=torch.long)
        for i, lab in enumerate(labels):
            target[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        hidden = m.decode_padded(
            m.input_embeddings(plan, soft), plan.lengths, route, self.settings.group_overhead
        )
        return hidden, plan.mask.to(m.device), target.to(m.device), user_pos, int(plan.lengths.sum())

    def _lm(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predict = shift_labels(target)  # position t predicts the token at t + 1
        keep = predict != IGNORE
        with self.model._autocast():
            logits = self.model.backbone.get_output_embeddings()(hidden[keep])
        return next_token_loss(logits, predict[keep])

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor, user_pos: list[int]) -> torch.Tensor:
        pos = torch.tensor(user_pos, device=hidden.device)
        if self.model.config.pooling is Pooling.USER_TOKEN:
            return hidden[torch.arange(len(pos), device=hidden.device), pos].float()
        upto = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] <= pos[:, None]).unsqueeze(-1)
        return (hidden.float() * upto).sum(1) / upto.sum(1)

    def _embed_answers(self, texts: list[str], route=None) -> tuple[torch.Tensor, int]:
        """Answers through the same backbone (and adapters), last token's hidden state."""
        m = self.model
        rows = [self.answer_tokens(t) or [self.eos or 0] for t in texts]
        plan = Plan.pad(rows)
        hidden = m.decode_padded(
            m.tokens(plan.codes.to(m.device)), plan.lengths, route, self.settings.group_overhead
        )
        last = (plan.lengths - 1).to(m.device)
        return hidden[torch.arange(len(rows), device=m.device), last].float(), int(plan.lengths.sum())


@contextmanager
def _evaluating(objective: Objective):
    """Eval mode (no dropout) and no gradients for the block; the previous mode afterwards."""
    was_training = objective.training
    objective.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        objective.train(was_training)


def evaluate(objective: Objective, examples: list[Example], batch: int = 16) -> dict[str, float]:
    """Mean loss terms over `examples` in eval mode (no dropout, no gradients), in fixed batches."""
    sums: dict[str, float] = {}
    n = 0
    with _evaluating(objective):
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            if len(chunk) < 2:
                break
            tasks = [task_name(e) for e in chunk]
            n_emb, n_gen = objective.settings.n_embedding, objective.settings.n_generative
            out = objective(chunk[:n_emb], chunk[:n_gen], tasks[:n_emb], tasks[:n_gen])
            for k, v in out.terms.detached().items():
                sums[k] = sums.get(k, 0.0) + v * len(chunk)
            n += len(chunk)
    return {k: v / max(1, n) for k, v in sums.items()}


def task_losses(
    objective: Objective, validation: dict[str, list[Example]], branches: list[str]
) -> dict[str, dict[str, float]]:
    """Each task's validation loss per branch (S2Sched's input): InfoNCE among the task's validation
    examples for "embedding", the next-token loss on their answers for "generative"."""
    out: dict[str, dict[str, float]] = {b: {} for b in branches}
    with _evaluating(objective):
        for task, examples in validation.items():
            names = [task_name(e) for e in examples]
            if "embedding" in branches:
                out["embedding"][task] = float(objective(examples, [], names, None).terms.cl)
            if "generative" in branches:
                out["generative"][task] = float(objective([], examples, None, names).terms.lm)
    return out
