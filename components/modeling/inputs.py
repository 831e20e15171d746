"""Input assembly: `[source blocks] [instruction tokens] <USER>` (InstructUE 3.2, Figure 3).

A sequence is planned as a list of integer codes: a code >= 0 is a token id, a code < 0 is the soft
token in row `-code - 1` of the batch's soft-token matrix (event vectors after their adapter, then
tabular feature tokens). Sequences are right-padded; `lengths` gives each user's true length, so a
user's `<USER>` position is exactly `length - 1` whatever the batch.

The user block comes first and does not depend on the instruction, so its key/value cache can be
computed once and reused for every instruction (see `model.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.modeling.config import Inputs
from components.modeling.tokens import boundary


@dataclass
class Plan:
    codes: torch.Tensor  # (B, L) long, right-padded with 0
    lengths: torch.Tensor  # (B,) long

    @property
    def mask(self) -> torch.Tensor:
        L = self.codes.shape[1]
        return (torch.arange(L, device=self.lengths.device)[None, :] < self.lengths[:, None]).long()

    @classmethod
    def pad(cls, rows: list[list[int]]) -> Plan:
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        codes = torch.zeros(len(rows), int(lengths.max()) if rows else 0, dtype=torch.long)
        for i, r in enumerate(rows):
            codes[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return cls(codes, lengths)


def block_sources(sources: list[str], tabular: str | None, inputs: Inputs) -> list[str]:
    """The sources a user block holds, in card order: all of them, or the sequence sources only
    (`inputs=sequences`), or the tabular source only (`inputs=tabular`). A left-out source has no
    boundary tokens, soft tokens or text in the block.

    Raises:
        ValueError: `inputs=tabular` on a dataset without a tabular source (the block would be empty).
    """
    if inputs is Inputs.TABULAR and tabular is None:
        raise ValueError(
            "model.inputs=tabular keeps only the tabular features, but this dataset's card has no "
            "tabular source: use model.inputs=both or model.inputs=sequences"
        )
    keep = {Inputs.BOTH: sources, Inputs.SEQUENCES: [s for s in sources if s != tabular],
            Inputs.TABULAR: [tabular]}[inputs]  # fmt: skip
    return [s for s in sources if s in keep]


def soft(row: int) -> int:
    return -row - 1


def multi_encoder_rows(
    event_counts: list[dict[str, int]], order: list[str], tabular: str | None, n_features: int,
    token_ids: dict[str, int], summaries: bool = False,
) -> list[list[int]]:  # fmt: skip
    """User blocks for the multi-encoder input, sources in card order (`order`).

    Soft rows are numbered: all events of all users first (user by user, source by source in card
    order, oldest first), then each user's `n_features` tabular tokens (the source named `tabular`),
    then, with `summaries`, each user's summary token per sequence source (user by user, sources in
    card order), placed right after the source's opening boundary, ahead of its events.
    """
    rows, next_event = [], 0
    n_events = sum(sum(c.values()) for c in event_counts)
    sequence = [s for s in order if s != tabular]
    first_summary = n_events + len(event_counts) * n_features
    for i, counts in enumerate(event_counts):
        row: list[int] = []
        for s in order:
            open_, close = boundary(s)
            if s == tabular:
                first = n_events + i * n_features
                row += [token_ids[open_], *(soft(first + k) for k in range(n_features)), token_ids[close]]
            else:
                n = counts.get(s, 0)
                head = [soft(first_summary + i * len(sequence) + sequence.index(s))] if summaries else []
                row += [token_ids[open_], *head, *(soft(next_event + k) for k in range(n)), token_ids[close]]
                next_event += n
        rows.append(row)
    return rows


def text_rows(
    texts: list[dict[str, list[int]]], order: list[str], token_ids: dict[str, int]
) -> list[list[int]]:
    """User blocks for the text-only input: each source's serialised tokens inside its boundary pair."""
    rows = []
    for per_source in texts:
        row: list[int] = []
        for s in order:
            open_, close = boundary(s)
            row += [token_ids[open_], *per_source.get(s, []), token_ids[close]]
        rows.append(row)
    return rows


def append_suffix(prefix: Plan, suffix: list[int]) -> Plan:
    """Each user's block followed directly by the suffix (no gap), right-padded: the uncached input."""
    rows = [prefix.codes[i, : int(n)].tolist() + suffix for i, n in enumerate(prefix.lengths)]
    return Plan.pad(rows)


# What one more decoder call is priced at, in token positions: on the 2-core CPU a quick-profile step
# took 0.84x the padded one at 64, 0.89x at 32 and 0.88x at 128 (benchmarks/length_groups.py, whose
# step-to-step noise is larger than those differences; README "Training")
GROUP_OVERHEAD = 64


def length_groups(lengths: list[int], overhead: int = GROUP_OVERHEAD) -> list[list[int]]:
    """Right-padded sequences split into groups of similar length, for one decoder call per group.

    A call computes every position up to its longest sequence, so a batch of lengths 62..131 spends a
    fifth of its work on padding (the quick profile's training passes: 21% on the user sequences,
    45% on the answers). Returns index lists, each in ascending length, for the split of the
    length-sorted sequences into contiguous groups that minimises `sum(size x longest) + overhead x
    groups`: `overhead` prices one more call, in token positions (dynamic programming, O(n^2)).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    ls = [lengths[i] for i in order]
    best = [0] * (len(ls) + 1)  # best[j]: cost of the first j sorted sequences
    cut = [0] * (len(ls) + 1)  # where the last group of those j starts
    for j in range(1, len(ls) + 1):
        best[j], cut[j] = min((best[i] + (j - i) * ls[j - 1] + overhead, i) for i in range(j))
    groups, j = [], len(ls)
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]
