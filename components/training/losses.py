"""The contrastive-autoregressive objective of InstructUE (section 3.3.2, Eq. 1-5), as pure functions.

    L = alpha_lm * L_lm + alpha_cl * L_cl                                        (Eq. 5)

`next_token_loss` is Eq. 1 over answer tokens only; `info_nce` is Eq. 2-4 with in-batch negatives,
same-side negatives and the false-negative margin mask. Each returns a scalar tensor; `joint_loss`
keeps both terms beside their weighted sum so each can be logged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100  # label of a position that is not an answer token (profile, instruction, <USER>, pad)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Teacher forcing: the hidden state at position t predicts the token at t + 1, so the label of
    position t is `labels[t + 1]`; the last position predicts nothing."""
    out = torch.full_like(labels, IGNORE)
    out[..., :-1] = labels[..., 1:]
    return out


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1: -sum_t log p(y_t | y_<t, x, s), averaged over the answer tokens of the batch.

    Args:
        logits: (..., V) scores at the positions that predict a token.
        labels: (...) the token each position must predict, `IGNORE` where it predicts nothing.

    The paper writes a sum over tokens; averaging over the batch's answer tokens keeps alpha_lm on the
    same scale whatever the answers' lengths. Returns 0 (with a graph) when no position has a label.
    """
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != IGNORE
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep].float(), labels[keep])


def margin_mask(scores: torch.Tensor, positive: torch.Tensor, margin: float | None) -> torch.Tensor:
    """Eq. 4: m_ij = 0 where s_ij > s(u_i, a_i+) + c_margin, else 1 (a float mask like `scores`).

    `margin=None` keeps every negative (the mask is all ones).
    """
    if margin is None:
        return torch.ones_like(scores)
    return (scores <= positive[:, None] + margin).to(scores.dtype)


def centre_groups(x: torch.Tensor, groups: list[str] | None = None) -> torch.Tensor:
    """Subtract each group's mean vector from its rows (the whole batch is one group by default).

    Why: an LLM's last-token states are anisotropic. On MovieLens the untrained quick model's
    `<USER>` states of 8 users of one task have mean pairwise cosine 0.97, their answers' 0.97, so
    Eq. 2's cosines differ in the third decimal and a step spends itself on the shared direction.
    The cosine of centred vectors scores only how users (answers) differ from each other; a group
    is a task when negatives come from the task alone. A group of one row is left as it is (its
    mean is itself). Gradients flow through the mean.
    """
    if groups is None:
        return x - x.mean(0, keepdim=True) if x.shape[0] > 1 else x
    out = x.clone()
    for name in dict.fromkeys(groups):
        rows = torch.tensor([g == name for g in groups], device=x.device)
        if int(rows.sum()) > 1:
            out[rows] = x[rows] - x[rows].mean(0, keepdim=True)
    return out


def info_nce(
    users: torch.Tensor,
    answers: torch.Tensor,
    temperature: float = 0.05,
    margin: float | None = 0.1,
    same_side: bool = True,
    known_positive: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 2-4: InfoNCE between user embeddings u_i and their answers' embeddings a_i.

        L_cl = -1/B sum_i log( e^{s(u_i, a_i)/tau} / Z_i )                        (Eq. 2)
        Z_i  = e^{s(u_i, a_i)/tau} + sum_{j!=i} m_ij e^{s(u_i, a_j)/tau}
                                   + sum_{j!=i} m_ij e^{s(u_i, u_j)/tau}
                                   + sum_{j!=i} m_ij e^{s(a_i, a_j)/tau}           (Eq. 3)

    s is cosine similarity. Reading of Eq. 4 (the extracted text names only the u-u and u-a scores):
    each negative is masked by its own score, so m_ij of the a-a term compares s(a_i, a_j) with the
    positive s(u_i, a_i) + c_margin, as it does for the other two terms.

    Args:
        users, answers: (B, d) embeddings (normalised here; cosine is scale-free).
        temperature: tau > 0.
        margin: c_margin of Eq. 4; None disables the false-negative mask.
        same_side: include the u-u and a-a terms of Z_i (False: the plain cross-side InfoNCE).
        known_positive: optional (B, B) bool, True where pair (i, j) is known to be a positive
            (identical answer texts): those j are dropped from i's negatives in every term.

    Returns:
        the scalar loss (Eq. 2).
    """
    if users.shape != answers.shape or users.dim() != 2:
        raise ValueError(f"users {tuple(users.shape)} and answers {tuple(answers.shape)} must both be (B, d)")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    u, a = F.normalize(users.float(), dim=-1), F.normalize(answers.float(), dim=-1)
    B = u.shape[0]
    ua, uu, aa = u @ a.T, u @ u.T, a @ a.T
    positive = ua.diagonal()
    off = ~torch.eye(B, dtype=torch.bool, device=u.device)
    if known_positive is not None:
        off = off & ~known_positive.to(u.device)
    terms = [(ua, off)] + ([(uu, off), (aa, off)] if same_side else [])
    # log Z_i as a logsumexp over the positive and every kept negative: masked entries become -inf
    logits = [positive[:, None] / temperature]
    for scores, keep in terms:
        kept = keep & margin_mask(scores, positive, margin).bool()
        logits.append((scores / temperature).masked_fill(~kept, float("-inf")))
    log_z = torch.logsumexp(torch.cat(logits, dim=1), dim=1)
    return (log_z - positive / temperature).mean()


@dataclass
class LossTerms:
    """Eq. 5 with its terms kept apart; `lm` / `cl` are None where their branch did not run."""

    total: torch.Tensor
    lm: torch.Tensor | None
    cl: torch.Tensor | None
    rec: torch.Tensor | None = None  # the input reconstruction term (`reconstruction_loss`)

    def detached(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach())}
        if self.lm is not None:
            out["loss_lm"] = float(self.lm.detach())
        if self.cl is not None:
            out["loss_cl"] = float(self.cl.detach())
        if self.rec is not None:
            out["loss_rec"] = float(self.rec.detach())
        return out


def joint_loss(
    lm: torch.Tensor | None,
    cl: torch.Tensor | None,
    alpha_lm: float = 1.0,
    alpha_cl: float = 1.0,
    rec: torch.Tensor | None = None,
    alpha_rec: float = 0.0,
) -> LossTerms:
    """Eq. 5: alpha_lm * L_lm + alpha_cl * L_cl (+ alpha_rec * L_rec, our addition); a branch that
    did not run contributes nothing."""
    terms = ((alpha_lm, lm), (alpha_cl, cl), (alpha_rec, rec))
    parts = [w * t for w, t in terms if t is not None]
    if not parts:
        raise ValueError("no loss term: both the generative and the embedding branch are switched off")
    return LossTerms(total=torch.stack(parts).sum(), lm=lm, cl=cl, rec=rec)


def reconstruction_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine between each user's predicted and true input summary, both centred over the batch
    (mean over users). Centred, because users' mean event vectors share one dominant direction
    (raw cosines near 1 whatever the prediction): what is scored is how a user differs from the
    batch. Not in InstructUE: a dense per-user signal that asks the embedding to keep, linearly
    readable, what its input held (the encoder's mean event vector, the tabular features)."""
    if predicted.shape != target.shape or predicted.ndim != 2:
        shapes = f"{tuple(predicted.shape)}, {tuple(target.shape)}"
        raise ValueError(f"reconstruction_loss needs two (B, k) tensors, got {shapes}")
    p, t = centre_groups(predicted.float()), centre_groups(target.float())
    return (1 - F.cosine_similarity(p, t, dim=-1, eps=1e-6)).mean()
