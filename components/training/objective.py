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
from dataclasses import dataclass, replace

import pandas as pd
import torch
from torch import nn

from components.modeling import (
    GROUP_OVERHEAD,
    Branch,
    InstructUE,
    Plan,
    Pooling,
    Route,
    UserBatch,
    UserProfile,
)
from components.training.data import Example, task_name
from components.training.losses import (
    IGNORE,
    LossTerms,
    centre_groups,
    info_nce,
    joint_loss,
    next_token_loss,
    reconstruction_loss,
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
    alpha_rec: float = 0.0  # the reconstruction loss's weight (`losses.reconstruction_loss`; 0: off)
    # the branches' sequences and the answers decoded in one call, routed per row (`Objective._decode`)
    fuse_passes: bool = True

    @classmethod
    def from_config(cls, config, **changes) -> ObjectiveSettings:
        """The objective a `TrainConfig` asks for (the one place its fields are copied); `changes`
        override single fields (a benchmark's one-branch batch, say)."""
        return replace(cls(
            n_embedding=config.n_embedding, n_generative=config.n_generative, temperature=config.temperature,
            margin=config.margin, same_side=config.same_side, alpha_lm=config.alpha_lm,
            alpha_cl=config.alpha_cl, alpha_rec=config.alpha_rec, max_answer_tokens=config.max_answer_tokens,
            in_task_negatives=config.task_batches is not None, centre=config.centre,
        ), **changes)  # fmt: skip


@dataclass
class _Rows:
    """One part of a micro-batch's sequences, planned: codes, its own soft tokens, targets."""

    plan: Plan
    soft: torch.Tensor  # the soft-token rows the plan's negative codes refer to
    target: torch.Tensor | None  # next-token targets (IGNORE where none)
    user_pos: list[int]  # `<USER>` positions (none for answer rows)
    mask: torch.Tensor
    batch: UserBatch | None = None  # the users' planned blocks (none for answer rows)


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
            ids = self._answers[answer] = self.model.tokenize(answer)[: self.settings.max_answer_tokens]
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
        gen_route = m.route(gen_tasks or [], Branch.GENERATIVE) if gen else None
        texts = [e.answer for e in emb]
        # every sequence of the micro-batch, each with its route: decoded together (`_decode`)
        parts: list[tuple[_Rows, object]] = []
        if shared:
            union = emb if len(emb) >= len(gen) else gen
            parts.append((self._user_rows(union, len(gen)), emb_route))
        else:
            if emb:
                parts.append((self._user_rows(emb, 0), emb_route))
            if gen:
                parts.append((self._user_rows(gen, len(gen)), gen_route))
        by_encoder = m.answer_projection is not None  # LiT: answers need no backbone pass
        if emb and not by_encoder:
            parts.append((self._answer_rows(texts), emb_route))
        hidden = self._decode(parts)
        tokens = sum(int(r.plan.lengths.sum()) for r, _ in parts)
        lm, cl, users, answers = None, None, None, None
        k = 0
        if shared:
            rows, h = parts[0][0], hidden[0]
            users = (
                self.pool_users(h[: len(emb)], rows.mask[: len(emb)], rows.user_pos[: len(emb)])
                if emb
                else None
            )
            lm = self._lm(h, rows.target) if gen else None
            k = 1
        else:
            if emb:
                users = self.pool_users(hidden[k], parts[k][0].mask, parts[k][0].user_pos)
                k += 1
            if gen:
                lm = self._lm(hidden[k], parts[k][0].target)
                k += 1
        rec = None
        if emb and s.alpha_rec > 0 and m.reconstruction:  # on the raw states, before any centring
            pairs = m.reconstruct(users, parts[0][0].batch)
            n = len(users)
            rec = torch.stack([reconstruction_loss(p[:n], t[:n]) for p, t in pairs]).mean()
        if emb:
            answers = m.embed_answers(texts) if by_encoder else self._last_states(hidden[k], parts[k][0])
            same = torch.tensor([[a == b for b in texts] for a in texts], device=m.device)
            names = [task_name(e) for e in emb]
            if s.in_task_negatives:  # another task's answer is told apart by its template, not the user
                same = same | torch.tensor([[a != b for b in names] for a in names], device=m.device)
            if s.centre:
                groups = names if s.in_task_negatives else None
                users, answers = centre_groups(users, groups), centre_groups(answers, groups)
            cl = info_nce(users, answers, s.temperature, s.margin, s.same_side, known_positive=same)
        examples = len(set(map(id, emb)) | set(map(id, gen)))
        return StepOutput(joint_loss(lm, cl, s.alpha_lm, s.alpha_cl, rec, s.alpha_rec), tokens, examples)

    def _user_rows(self, examples: list[Example], n_answers: int) -> _Rows:
        """[block][instruction]<USER> for every example, plus [answer]<eos> for the first
        `n_answers`: codes, soft tokens, next-token targets and `<USER>` positions."""
        m = self.model
        uids = [e.user_id for e in examples]
        batch = m.batch([self.profiles[u] for u in uids], self.users.loc[uids].reset_index(drop=True))
        soft = m.soft_tokens(batch)
        rows, labels, user_pos = [], [], []
        for i, e in enumerate(examples):
            block = batch.plan.codes[i, : int(batch.plan.lengths[i])].tolist()
            prompt = block + m.suffix_codes(e.instruction)
            answer = self.answer_ids(e.answer) if i < n_answers else []
            rows.append(prompt + answer)
            labels.append([IGNORE] * len(prompt) + answer)  # Eq. 1 only on answer tokens
            user_pos.append(len(prompt) - 1)
        plan = Plan.pad(rows)
        target = torch.full(plan.codes.shape, IGNORE, dtype=torch.long)
        for i, lab in enumerate(labels):
            target[i, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        return _Rows(plan, soft, target.to(m.device), user_pos, plan.mask.to(m.device), batch)

    def _answer_rows(self, texts: list[str]) -> _Rows:
        """The answers alone (their last token's state embeds them), through the same backbone."""
        plan = Plan.pad([self.answer_tokens(t) or [self.eos or 0] for t in texts])
        empty = torch.zeros(0, self.model.dim, device=self.model.device)
        return _Rows(plan, empty, None, [], plan.mask.to(self.model.device))

    def _last_states(self, hidden: torch.Tensor, rows: _Rows) -> torch.Tensor:
        """(B, d) float32 state of each row's last valid position (an answer's embedding)."""
        last = (rows.plan.lengths - 1).to(hidden.device)
        return hidden[torch.arange(len(last), device=hidden.device), last].float()

    def _decode(self, parts: list[tuple[_Rows, object]]) -> list[torch.Tensor]:
        """The last hidden states of every part's rows, each part under its route.

        `fuse_passes`: all parts in one `decode_padded` call, routed per row (TMoLE's routing is per
        sample), so the length groups span the branches and the answers and the decoder runs fewer,
        larger calls; otherwise one call per part. The same states up to float rounding."""
        m, s = self.model, self.settings
        if not s.fuse_passes or len(parts) == 1:
            return [
                m.decode_padded(m.input_embeddings(r.plan, r.soft), r.plan.lengths, route, s.group_overhead)
                for r, route in parts
            ]
        rows, softs, offset = [], [], 0
        for r, _ in parts:
            codes = r.plan.codes
            # a negative code names a soft row of its own part: shift it past the earlier parts' rows
            shifted = torch.where(codes < 0, codes - offset, codes)
            rows += [shifted[i, : int(n)].tolist() for i, n in enumerate(r.plan.lengths)]
            softs.append(r.soft)
            offset += r.soft.shape[0]
        plan = Plan.pad(rows)
        routes = [route for _, route in parts]
        route = None
        if routes[0] is not None:
            route = Route(torch.cat([r.task_ids for r in routes]), torch.cat([r.branch for r in routes]))
        hidden = m.decode_padded(
            m.input_embeddings(plan, torch.cat(softs)), plan.lengths, route, s.group_overhead
        )
        out, start = [], 0
        for r, _ in parts:
            n, width = len(r.plan.lengths), r.plan.codes.shape[1]
            out.append(hidden[start : start + n, :width])
            start += n
        return out

    def _lm(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        predict = shift_labels(target)  # position t predicts the token at t + 1
        keep = predict != IGNORE
        with self.model.autocast():
            logits = self.model.backbone.get_output_embeddings()(hidden[keep])
        return next_token_loss(logits, predict[keep])

    def pool_users(self, hidden: torch.Tensor, mask: torch.Tensor, user_pos: list[int]) -> torch.Tensor:
        pos = torch.tensor(user_pos, device=hidden.device)
        if self.model.config.pooling is Pooling.USER_TOKEN:
            return hidden[torch.arange(len(pos), device=hidden.device), pos].float()
        upto = (torch.arange(hidden.shape[1], device=hidden.device)[None, :] <= pos[:, None]).unsqueeze(-1)
        return (hidden.float() * upto).sum(1) / upto.sum(1)


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
