"""Special tokens: `<USER>` and one boundary pair per source of the dataset card (InstructUE 3.2).

The tokens are added to the tokenizer; their embeddings are a separate trainable table, so the
backbone's own embedding matrix stays frozen and is never resized. A token id at or above the
backbone's vocabulary size indexes that table.
"""

from __future__ import annotations

import torch
from torch import nn

USER_TOKEN = "<USER>"


def boundary(source: str) -> tuple[str, str]:
    return f"<{source}>", f"</{source}>"


def special_tokens(sources: list[str]) -> list[str]:
    """`<USER>` first, then `<src>`, `</src>` for each source in card order."""
    out = [USER_TOKEN]
    for s in sources:
        out.extend(boundary(s))
    return out


def add_to_tokenizer(tokenizer, tokens: list[str]) -> dict[int, str]:
    """Register the tokens as special (never split); returns the tokenizer's id -> token."""
    tokenizer.add_tokens(tokens, special_tokens=True)
    return dict(zip(tokenizer.convert_tokens_to_ids(tokens), tokens, strict=True))


class TokenEmbedder(nn.Module):
    """Looks up ids in the frozen base table, or in the trainable table of added special tokens.

    The special tokens get the model-side ids `base_vocab + k`, whatever ids the tokenizer gave them
    (a tokenizer may be larger or smaller than the model's vocabulary); `remap` turns tokenizer
    output into model-side ids.
    """

    def __init__(self, base: nn.Embedding, tokens: list[str], tokenizer_ids: dict[int, str] | None = None):
        super().__init__()
        self.base = base
        self.base_vocab = base.num_embeddings
        self.token_ids = {t: self.base_vocab + k for k, t in enumerate(tokens)}
        self._from_tokenizer = {i: self.token_ids[t] for i, t in (tokenizer_ids or {}).items()}
        with torch.no_grad():  # start at the mean base embedding, slightly apart from each other
            w = base.weight.float()
            rows = w.mean(0, keepdim=True) + 0.02 * w.std() * torch.randn(len(tokens), w.shape[1])
        self.special = nn.Parameter(rows.to(base.weight.dtype))

    def remap(self, tokenizer_ids: list[int]) -> list[int]:
        """Tokenizer ids -> model ids: added special tokens to their rows, anything else unchanged."""
        return [self._from_tokenizer.get(i, i) for i in tokenizer_ids]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_special = ids >= self.base_vocab
        base = self.base(ids.clamp(max=self.base_vocab - 1))
        if not bool(is_special.any()):
            return base
        special = self.special[(ids - self.base_vocab).clamp(min=0, max=self.special.shape[0] - 1)]
        return torch.where(is_special.unsqueeze(-1), special.to(base.dtype), base)
