"""Merge several checkpoints of one run into one model folder with TIES (RecFound 4.4).

Task vectors are taken against the run's step-0 state (`<run>/initial/`). Low-rank factors are
merged through their product: for LoRA, and for each TMoLE expert, the delta B A of every checkpoint
is TIES-merged as one dense matrix and the result is factorised back to the adapter's rank by a
(randomised) truncated SVD (B = U_r sqrt(S_r), A = sqrt(S_r) V_r^T). Merging A and B separately
would not merge the deltas: (sum B_k)(sum A_k) mixes factors of different checkpoints, whose bases
need not agree. The relative Frobenius error of the rank-r truncation is reported. Every other
trainable tensor (adapters, token rows, routers, task table) is merged entry by entry.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

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


def _refactor(delta: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """B (d_out, r), A (r, d_in) with B A the best rank-r approximation of `delta`; relative error.

    A randomised SVD (Halko et al.; `torch.svd_lowrank`, 10 extra directions, 4 power iterations)
    finds the top r directions at a fraction of a full SVD's cost: thousands of expert deltas per
    merge. On the tests' exactly low-rank deltas it is exact.
    """
    delta = delta.float()
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
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """TIES over trainable state dicts; factor pairs through their product (module docstring).

    `expert_rank` maps a TMoLE A key to its per-expert rank r (its rows are N stacked r-row blocks);
    a LoRA pair is one block whose rank is A's row count.
    """
    with _one_thread():
        return _merge_states(initial, checkpoints, density, order, expert_rank)


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


def _merge_states(initial, checkpoints, density, order, expert_rank):
    out: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    pairs = factor_pairs(list(initial))
    in_pairs = {k for p in pairs for k in p}
    for a_key, b_key in pairs:
        a0, b0 = initial[a_key], initial[b_key]
        r = (expert_rank or {}).get(a_key, a0.shape[0])
        n = a0.shape[0] // r
        new_a, new_b = torch.empty_like(a0), torch.empty_like(b0)
        for j in range(n):
            rows, cols = slice(j * r, (j + 1) * r), slice(j * r, (j + 1) * r)
            base = b0[:, cols].float() @ a0[rows].float()
            tuned = [c[b_key][:, cols].float() @ c[a_key][rows].float() for c in checkpoints]
            merged = ties_merge(base, tuned, density, order)
            B, A, err = _refactor(merged, r)
            new_a[rows], new_b[:, cols] = A.to(a0.dtype), B.to(b0.dtype)
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
) -> MergeReport:
    """Merge `checkpoints` (model folders of one run) against `<run>/initial/` into `out_dir`."""
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
    merged, errors = merge_states(initial, states, density, order, ranks)
    tmp = temp_sibling(Path(out_dir))
    try:
        shutil.copy(Path(checkpoints[-1]) / MODEL_FILE, tmp / MODEL_FILE)
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
