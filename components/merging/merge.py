"""Merge several checkpoints of one run into one model folder with TIES (RecFound 4.4).

Task vectors are taken against the run's step-0 state (`<run>/initial/`). Low-rank factors are
merged through their product: for LoRA, and for each TMoLE expert, the delta B A of every checkpoint
is TIES-merged as one dense matrix and the result is factorised back to the adapter's rank by a
(randomised) truncated SVD (B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T). Merging A and B separately
would not merge the deltas: (sum B_k)(sum A_k) mixes factors of different checkpoints, whose bases
need not agree. The relative Frobenius error of the rank-r truncation is reported. Every other
trainable tensor (adapters, token rows, routers, task table) is merged entry by entry.

Why the merged rank is not simply the sum of the merged ranks: TIES trims and sign-masks entry by
entry, and an entrywise mask of a low-rank matrix is in general full rank. Measured on a quick run's
TMoLE experts (r 16, two checkpoints, README "Merging"): the TIES result has numerical rank 557-576 of
576 at 1e-6; at rank 48 (the sum of the ranks) it keeps 22-30% relative error at density 0.2 (2-3%
at density 1). So `rank` is a choice: the tuner's r (default, error reported), a larger r, or
`"full"`, which stores each block at min(d_out, d_in) and equals the TIES result to float precision.
A new rank r' keeps the layer's scale alpha / r by writing alpha' = alpha r' / r into `model.json`.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from components.merging.ties import Order, ties_merge


@dataclass
class MergeReport:
    checkpoints: list[str]
    density: float
    order: str
    factor_pairs: int
    truncation_error: dict[str, float] = field(default_factory=dict)  # per factor pair (relative)

    @property
    def max_truncation_error(self) -> float:
        return max(self.truncation_error.values(), default=0.0)


def factor_pairs(keys: list[str]) -> list[tuple[str, str]]:
    """(A key, B key) of every LoRA layer (peft names `...lora_A.<adapter>.weight`) and TMoLE layer
    (`...tmole_A` / `...tmole_B`)."""
    pairs = []
    names = set(keys)
    for k in keys:
        if ".lora_A." in k and k.replace(".lora_A.", ".lora_B.") in names:
            pairs.append((k, k.replace(".lora_A.", ".lora_B.")))
        elif k.endswith(".tmole_A") and k[: -len("A")] + "B" in names:
            pairs.append((k, k[: -len("A")] + "B"))
    return pairs


FULL = "full"  # the merge rank that loses nothing: min(d_out, d_in) of the largest factor pair


def _refactor(delta: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """B (d_out, r), A (r, d_in) with B A the best rank-r approximation of `delta`; relative error.

    A randomised SVD (Halko et al.; `torch.svd_lowrank`, 10 extra directions, 4 power iterations)
    finds the top r directions at a fraction of a full SVD's cost: thousands of expert deltas per
    merge. On the tests' exactly low-rank deltas it is exact. At r >= min(d_out, d_in) the SVD is the
    exact one and the factors are zero-padded to r columns: B A equals `delta` to float precision.
    """
    delta = delta.float()
    if r >= min(delta.shape):
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
        V = Vh.T
        pad = r - S.shape[0]
        U, S, V = F.pad(U, (0, pad)), F.pad(S, (0, pad)), F.pad(V, (0, pad))
    else:
        q = min(r + 10, *delta.shape)
        U, S, V = torch.svd_lowrank(delta, q=q, niter=4)
    root = S[:r].sqrt()
    B, A = U[:, :r] * root[None, :], root[:, None] * V[:, :r].T
    norm = float(delta.norm())
    err = float((delta - B @ A).norm()) / norm if norm > 0 else 0.0
    return B, A, err


def merge_states(
    initial: dict[str, torch.Tensor],
    checkpoints: list[dict[str, torch.Tensor]],
    density: float = 0.2,
    order: Order = Order.TRIM_FIRST,
    expert_rank: dict[str, int] | None = None,
    rank: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """TIES over trainable state dicts; factor pairs through their product (module docstring).

    `expert_rank` maps a TMoLE A key to its per-expert rank r (its rows are N stacked r-row blocks);
    a LoRA pair is one block whose rank is A's row count. `rank`: the merged blocks' rank (None: each
    keeps its own r); the factors come back with N blocks of `rank` rows / columns.
    """
    with _one_thread():
        return _merge_states(initial, checkpoints, density, order, expert_rank, rank)


def full_rank(initial: dict[str, torch.Tensor]) -> int:
    """The rank at which every factor pair's merged delta is stored exactly: the largest
    min(d_out, d_in) over the pairs (smaller blocks are zero-padded)."""
    return max((min(initial[b].shape[0], initial[a].shape[1]) for a, b in factor_pairs(list(initial))),
               default=0)  # fmt: skip


@contextmanager
def _one_thread():
    """Thousands of small top-k and SVD calls: intra-op threads cost more than they give, and on a
    busy machine they made a merge 10-50x slower (measured: 0.11 s vs 0.6-1.0 s per expert delta)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _merge_states(initial, checkpoints, density, order, expert_rank, rank):
    out: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    pairs = factor_pairs(list(initial))
    in_pairs = {k for p in pairs for k in p}
    for a_key, b_key in pairs:
        a0, b0 = initial[a_key], initial[b_key]
        r = (expert_rank or {}).get(a_key, a0.shape[0])
        n, r_out = a0.shape[0] // r, rank or r
        new_a = a0.new_empty(n * r_out, a0.shape[1])
        new_b = b0.new_empty(b0.shape[0], n * r_out)
        for j in range(n):
            block, out_block = slice(j * r, (j + 1) * r), slice(j * r_out, (j + 1) * r_out)
            base = b0[:, block].float() @ a0[block].float()
            tuned = [c[b_key][:, block].float() @ c[a_key][block].float() for c in checkpoints]
            merged = ties_merge(base, tuned, density, order)
            B, A, err = _refactor(merged, r_out)
            new_a[out_block], new_b[:, out_block] = A.to(a0.dtype), B.to(b0.dtype)
            errors[f"{a_key}[{j}]" if n > 1 else a_key] = err
        out[a_key], out[b_key] = new_a, new_b
    for k, v in initial.items():
        if k not in in_pairs:
            out[k] = (
                ties_merge(v, [c[k] for c in checkpoints], density, order) if v.is_floating_point() else v
            )
    return out, errors


def merge_run(
    run_dir: Path,
    checkpoints: list[Path],
    out_dir: Path,
    density: float = 0.2,
    order: Order = Order.TRIM_FIRST,
    rank: int | str | None = None,
) -> MergeReport:
    """Merge `checkpoints` (model folders of one run) against `<run>/initial/` into `out_dir`.

    `rank`: None keeps the tuner's r; an int or `FULL` stores the merged factors at that rank and
    writes r' and alpha' = alpha r' / r into the merged `model.json` (module docstring)."""
    import json

    from safetensors.torch import load_file, save_file

    from components.common import replace_dir, temp_sibling
    from components.modeling import MODEL_FILE, TOKENIZER_DIR, WEIGHTS_FILE
    from components.training import INITIAL_DIR

    initial_dir = Path(run_dir) / INITIAL_DIR
    if not (initial_dir / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{initial_dir} is missing: TIES needs the run's step-0 state (runs since issue 5)"
        )
    if not checkpoints:
        raise ValueError("no checkpoints to merge")
    initial = load_file(str(initial_dir / WEIGHTS_FILE))
    states = [load_file(str(Path(c) / WEIGHTS_FILE)) for c in checkpoints]
    meta = json.loads((Path(checkpoints[-1]) / MODEL_FILE).read_text(encoding="utf-8"))
    ranks = {}
    if meta.get("tmole"):
        ranks = {k: int(meta["tmole"]["r"]) for k in initial if k.endswith(".tmole_A")}
    new_rank = full_rank(initial) if rank == FULL else (int(rank) if rank is not None else None)
    merged, errors = merge_states(initial, states, density, order, ranks, new_rank)
    if new_rank is not None:
        for tuner in ("tmole", "lora"):
            if meta.get(tuner):
                r = int(meta[tuner]["r"])
                meta[tuner]["r"], meta[tuner]["alpha"] = new_rank, float(meta[tuner]["alpha"]) * new_rank / r
    tmp = temp_sibling(Path(out_dir))
    try:
        (tmp / MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        shutil.copytree(Path(checkpoints[-1]) / TOKENIZER_DIR, tmp / TOKENIZER_DIR)
        save_file({k: v.contiguous() for k, v in merged.items()}, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "instructue", "merged": "ties"})  # fmt: skip
        replace_dir(tmp, Path(out_dir))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return MergeReport(
        [str(c) for c in checkpoints], density, str(order), len(factor_pairs(list(initial))), errors
    )
