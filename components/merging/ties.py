"""TIES-Merging as pure tensor functions (RecFound 4.4; Yadav et al., "TIES-Merging", 2023).

    tau_k  = theta_k - theta_0                         task vectors of K checkpoints from one start
    trim   : keep the top `density` share of each tau_k by magnitude, zero the rest
    elect  : gamma = sign(sum_k tau_k)                 the sign carrying the most mass per entry
    merge  : mean of the tau_k entries whose sign agrees with gamma (zeros excluded)
    theta  = theta_0 + lam * merged

Order: the TIES paper trims, then elects the sign from the trimmed vectors (`TRIM_FIRST`); the
RecFound code elects from the untrimmed vectors, then trims (`ELECT_FIRST`). Both are offered.
Trimming is per tensor (the top share of each parameter tensor's entries), so a small tensor such as
a router is not wiped out by a large one.

peft's `merge_utils` does the disjoint mean (`disjoint_merge`, used here). Two of its steps are not
used, each for one reason: its `magnitude_based_pruning` keeps int(density n) entries, which is none
of a 4-entry router bias at density 0.2 (ours keeps round(density n), at least one), and its
`calculate_majority_sign_mask` elects + where the summed mass is exactly 0 where the paper's sgn(0) = 0
keeps nothing (so a checkpoint and its negation cancel). Elsewhere the two agree exactly
(tests/merging/test_ties.py compares them).
"""

from __future__ import annotations

from enum import StrEnum

import torch


class Order(StrEnum):
    TRIM_FIRST = "trim_first"  # the TIES paper
    ELECT_FIRST = "elect_first"  # RecFound's code


def trim(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `density` share of entries with the largest magnitude (at least one), zero the rest.

    Ties at the threshold are broken by position (`topk`), so exactly round(density * n) survive.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    flat = tau.flatten()
    k = max(1, round(density * flat.numel()))
    if k >= flat.numel():
        return tau.clone()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).view_as(tau)


def elect_sign(taus: torch.Tensor) -> torch.Tensor:
    """gamma: the sign of the summed mass per entry over the K stacked task vectors (K, ...)."""
    return torch.sign(taus.sum(dim=0))


def disjoint_mean(taus: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Mean over k of the entries that agree with `sign` (zeros and disagreeing entries excluded);
    peft's `disjoint_merge` over our agreement mask."""
    from peft.utils.merge_utils import disjoint_merge

    agree = (torch.sign(taus) == sign.unsqueeze(0)) & (taus != 0)
    return disjoint_merge(taus, agree)


def ties_merge(
    base: torch.Tensor,
    tuned: list[torch.Tensor],
    density: float = 0.2,
    order: Order = Order.TRIM_FIRST,
    lam: float = 1.0,
) -> torch.Tensor:
    """theta_0 + lam * TIES(tau_1..tau_K) for one parameter tensor; see the module docstring."""
    if not tuned:
        raise ValueError("ties_merge needs at least one tuned tensor")
    shapes = {tuple(t.shape) for t in tuned} | {tuple(base.shape)}
    if len(shapes) != 1:
        raise ValueError(f"tensors to merge differ in shape: {sorted(shapes)}")
    taus = torch.stack([t.float() - base.float() for t in tuned])
    if order is Order.TRIM_FIRST:
        taus = torch.stack([trim(t, density) for t in taus])
        sign = elect_sign(taus)
    else:
        sign = elect_sign(taus)
        taus = torch.stack([trim(t, density) for t in taus])
    return (base.float() + lam * disjoint_mean(taus, sign)).to(base.dtype)


def ties_merge_state(
    base: dict[str, torch.Tensor],
    tuned: list[dict[str, torch.Tensor]],
    density: float = 0.2,
    order: Order = Order.TRIM_FIRST,
    lam: float = 1.0,
    keys: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """TIES over every tensor of state dicts that share `base`'s keys (or only `keys`; the others
    are copied from the last tuned state)."""
    missing = [(i, sorted(set(base) ^ set(t))[:5]) for i, t in enumerate(tuned) if set(t) != set(base)]
    if missing:
        raise ValueError(f"state dicts do not share the base's keys: {missing}")
    chosen = set(keys) if keys is not None else set(base)
    return {
        k: ties_merge(base[k], [t[k] for t in tuned], density, order, lam)
        if k in chosen
        else tuned[-1][k].clone()
        for k in base
    }
