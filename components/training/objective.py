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

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from components.modeling.config import Pooling
from components.modeling.inputs import Plan
from components.modeling.model import InstructUE
from components.modeling.profile import UserProfile
from components.training.data import Example
from components.training.losses import IGNORE, LossTerms, info_nce, joint_loss, next_token_loss, shift_labels


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

    def answer_ids(self, answer: str) -> list[int]:
        """Answer tokens, truncated, then eos: the generative target (cached: answers recur)."""
        ids = self._answers.get(answer)
        if ids is None:
            ids = self.model._tokenize(answer)[: self.settings.max_answer_tokens]
            ids = ids + ([self.eos] if self.eos is not None else [])
            self._answers[answer] = ids
        return ids

    def forward(self, examples: list[Example]) -> StepOutput:
        s, m = self.settings, self.model
        n_emb, n_gen = min(s.n_embedding, len(examples)), min(s.n_generative, len(examples))
        uids = [e.user_id for e in examples]
        batch = m.batch([self.profiles[u] for u in uids], self.users.loc[uids].reset_index(drop=True))
        soft = m.soft_tokens(batch)
        rows, labels, user_pos = [], [], []
        for i, e in enumerate(examples):
            block = batch.plan.codes[i, : int(batch.plan.lengths[i])].tolist()
            prompt = block + m._suffix(e.instruction)
            answer = self.answer_ids(e.answer) if i < n_gen else []
            rows.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)  # Eq. 1 only on answer tokens
            user_pos.append(len(prompt) - 1)
        plan = Plan.pad(rows)
        target = torch.full(plan.codes.shape, IGNORE, dtype=torch.long)
        for i, lab in enumerate(labels):
            target[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        target = target.to(m.device)
        mask = plan.mask.to(m.device)
        positions = torch.arange(plan.codes.shape[1], device=m.device)[None, :].expand_as(mask)
        hidden = m._decoder(m.input_embeddings(plan, soft), mask, positions).last_hidden_state
        tokens = int(plan.lengths.sum())

        lm = None
        if n_gen:
            predict = shift_labels(target)  # position t predicts the token at t + 1
            keep = predict != IGNORE
            with m._autocast():
                logits = m.backbone.get_output_embeddings()(hidden[keep])
            lm = next_token_loss(logits, predict[keep])

        cl = None
        if n_emb:
            users = self._pool(hidden[:n_emb], mask[:n_emb], user_pos[:n_emb])
            texts = [e.answer for e in examples[:n_emb]]
            answers, n_tok = self._embed_answers(texts)
            tokens += n_tok
            same = torch.tensor([[a == b for b in texts] for a in texts], device=m.device)
            cl = info_nce(users, answers, s.temperature, s.margin, s.same_side, known_positive=same)

        return StepOutput(joint_loss(lm, cl, s.alpha_lm, s.alpha_cl), tokens, len(examples))

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor, user_pos: list[int]) -> torch.Tensor:
        pos = torch.tensor(user_pos, device=hidden.device)
        if self.model.config.pooling is Pooling.USER_TOKEN:
            return hidden[torch.arange(len(pos), device=hidden.device), pos].float()
        upto = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] <= pos[:, None]).unsqueeze(-1)
        return (hidden.float() * upto).sum(1) / upto.sum(1)

    def _embed_answers(self, texts: list[str]) -> tuple[torch.Tensor, int]:
        """Answers through the same backbone (and adapters), last token's hidden state."""
        m = self.model
        rows = [m._tokenize(t)[: self.settings.max_answer_tokens] or [self.eos or 0] for t in texts]
        plan = Plan.pad(rows)
        mask = plan.mask.to(m.device)
        positions = torch.arange(plan.codes.shape[1], device=m.device)[None, :].expand_as(mask)
        hidden = m._decoder(m.tokens(plan.codes.to(m.device)), mask, positions).last_hidden_state
        last = (plan.lengths - 1).to(m.device)
        return hidden[torch.arange(len(rows), device=m.device), last].float(), int(plan.lengths.sum())


@torch.no_grad()
def evaluate(objective: Objective, examples: list[Example], batch: int = 16) -> dict[str, float]:
    """Mean loss terms over `examples` in eval mode (no dropout, no gradients), in fixed batches."""
    was_training = objective.training
    objective.eval()
    sums: dict[str, float] = {}
    n = 0
    try:
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            if len(chunk) < 2:
                break
            for k, v in objective(chunk).terms.detached().items():
                sums[k] = sums.get(k, 0.0) + v * len(chunk)
            n += len(chunk)
    finally:
        objective.train(was_training)
    return {k: v / max(1, n) for k, v in sums.items()}
