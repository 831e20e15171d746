"""S2Sched, RecFound's step-wise convergence-oriented sample scheduler (section 4.3, Eq. 3-6).

    sched = S2Sched({"embedding": emb_tasks, "generative": gen_tasks}, window=8, tau=10.0)
    sched.record("embedding", step, {task: val_loss, ...}, total_steps)   # every eval_every steps
    batch = pools.compose(sched.counts("embedding", batch_size))

Every `eval_every` steps the trainer measures each task's loss on a fixed small validation sample and
records it; the scheduler normalises it by the task's first recorded value (taken before training),
fits the slope alpha_i of the last `window` normalised losses, and turns the slopes of one task type
into sample ratios. Embedding and generative tasks are scheduled apart, as the paper does, because
their losses (InfoNCE, cross entropy) are not on one scale.

Reading of the extracted equations. The paper states the behaviour, "decreasing the sample ratio of
a task if it is converging fast and vice versa"; the equations follow CoBa (Gong et al., 2024, the
convergence balancer of MFTCoder, whose code the RecFound release adapts), and the extracted signs,
read literally, agree with CoBa's:

    -gamma_inter_i = Softmax_i(|T| alpha_i / sum_k |alpha_k|)               CoBa's relative score (Eq. 3)
     gamma_intra_i = Softmax_i(-L alpha_i(t) / sum_s |alpha_i(s)|)          CoBa's absolute score (Eq. 4)
     beta          = min(t Softmax_t(-tau t m(t) / sum_k max_i|alpha_i(k)|), 1),  m = max_i alpha_i
                                                                            CoBa's divergence factor (Eq. 5)
     w_i           = Softmax_i(-beta gamma_inter_i + (1 - beta) gamma_intra_i)                      (Eq. 6)

- Eq. 3 gives a task a larger -gamma_inter the larger its slope: a task falling more slowly than
  the others gains share, a fast one loses share. (The paper's sentence "higher gamma_inter means
  less convergence" contradicts the minus sign of Eq. 3; Eq. 6 negates gamma_inter again, and its
  sentence "-beta gamma_inter ... positively correlated with non-convergence" fixes the reading.)
- Eq. 4 compares a task's slope with its own last L slopes: a steady fall scores +1, a loss that
  turns upward scores down to -1. It is what takes share away from a diverging task.
- Eq. 5 is 1 while the largest slope holds its past level (Eq. 3 decides) and falls towards 0 when
  the largest slope jumps above its history, i.e. some task turns upward (Eq. 4 decides). The
  softmax runs over the whole history of m, every entry scaled by t / sum_k max_i|alpha_i(k)|, as
  CoBa and the RecFound code compute it; the paper's max_i|alpha_i(k)| (not |max_i alpha_i(k)|) is
  kept, so `balancing_weight` takes both histories.
So: equal slopes give equal shares; among falling losses the faster loses share; a loss that turns
upward loses share once its windowed slope is positive (while the window still straddles the turn
its slope is only less negative, and it gains share as a slow task). Known limit, as in CoBa: a task
that rises from the very first scheduled update has no history to fall from, beta stays 1 and Eq. 3
favours it.

Eq. 6 is the paper's: the softmax over values in [-1, 1] keeps every ratio within a factor e^2 of
the others (the RecFound code multiplies the logits by |T|; we do not). Slopes are per training step
(x = the steps at which losses were recorded); Eq. 3-5 divide by sums of |alpha|, so the unit of x
does not matter. A zero denominator (all slopes 0) makes its term 0. Eq. 4 multiplies by the number
of slopes it has, not L, while fewer than L exist, so a steady fall still scores exactly +1.

The floor: `apply_floor` raises every ratio under `min_share` to exactly `min_share` and scales the
others down in proportion (repeated while that pushes another under); ratios all above the floor
are left untouched. (The RecFound code instead mixes w * (1 - n m) + m when any task is under.)
Batches are composed by `allocate` (floor of B w_i, the remainder by largest remainder) from
`TaskPools`, each task's pool walked without replacement as a seeded permutation per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class S2SchedConfig(BaseModel):
    """S2Sched's settings (RecFound 4.3). The trainer reads `eval_every` and `val_per_task`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(8, ge=2, description="L: records per slope fit and slopes per Eq. 4 window")
    tau: float = Field(10.0, gt=0, description="temperature of the balancing weight (Eq. 5)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="zeta: share of steps with uniform ratios")
    min_share: float = Field(0.02, ge=0, le=0.5, description="floor of every task's ratio")
    eval_every: int = Field(10, ge=1, description="steps between validation-loss records")
    val_per_task: int = Field(32, ge=1, description="examples in each task's fixed validation sample")


# -- the equations ---------------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - np.max(z))
    return e / e.sum()


def _div(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    """num / den, 0 where den is 0 (all slopes 0: no evidence either way)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def slope(steps: Sequence[float], values: Sequence[float]) -> float:
    """alpha: least-squares slope of `values` against `steps`; 0.0 for fewer than 2 points or one x."""
    x, y = np.asarray(steps, float), np.asarray(values, float)
    if len(x) != len(y):
        raise ValueError(f"slope: {len(x)} steps but {len(y)} values")
    if len(x) < 2:
        return 0.0
    dx = x - x.mean()
    sxx = float(dx @ dx)
    return 0.0 if sxx == 0 else float(dx @ (y - y.mean()) / sxx)


def inter_task(alphas: np.ndarray) -> np.ndarray:
    """Eq. 3: gamma_inter_i = -Softmax_i(|T| alpha_i / sum_k |alpha_k|) over the tasks of one type."""
    a = np.asarray(alphas, float)
    return -_softmax(len(a) * _div(a, np.abs(a).sum()))


def intra_task(alphas: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Eq. 4: gamma_intra_i = Softmax_i(-L alpha_i(t) / sum_{s=t-L+1..t} |alpha_i(s)|).

    Args:
        alphas: (n,) the current slopes alpha_i(t).
        history: (L, n) the last L slopes of each task, the current ones in the last row; L is its
            length (fewer than the configured L early in training).
    """
    a, h = np.asarray(alphas, float), np.asarray(history, float)
    if h.ndim != 2 or h.shape[1] != len(a) or len(h) == 0:
        raise ValueError(f"intra_task: history must be (L >= 1, {len(a)}), got {h.shape}")
    return _softmax(-len(h) * _div(a, np.abs(h).sum(axis=0)))


def balancing_weight(max_alpha: np.ndarray, max_abs_alpha: np.ndarray, tau: float) -> float:
    """Eq. 5: beta(t) = min(t Softmax_t(-tau t m(t) / sum_{k<=t} max_i |alpha_i(k)|), 1).

    Args:
        max_alpha: (t,) m(k) = max_i alpha_i(k) at each scheduler update k = 1..t.
        max_abs_alpha: (t,) max_i |alpha_i(k)|.
        tau: temperature (paper: 10).

    The softmax runs over the t entries, each scaled by the same -tau t / sum_k max_i|alpha_i(k)|;
    beta is t times the weight of the last entry: 1 when m(t) is no higher than its history.
    """
    m, d = np.asarray(max_alpha, float), np.asarray(max_abs_alpha, float)
    if len(m) == 0 or m.shape != d.shape:
        raise ValueError(f"balancing_weight: needs equal, non-empty histories, got {m.shape}, {d.shape}")
    t = len(m)
    return float(min(t * _softmax(-tau * t * _div(m, d.sum()))[-1], 1.0))


def sample_ratios(inter: np.ndarray, intra: np.ndarray, beta: float) -> np.ndarray:
    """Eq. 6: w_i = Softmax_i(-beta gamma_inter_i + (1 - beta) gamma_intra_i)."""
    return _softmax(-beta * np.asarray(inter, float) + (1.0 - beta) * np.asarray(intra, float))


def apply_floor(ratios: np.ndarray, min_share: float) -> np.ndarray:
    """Ratios summing to 1 with none under `min_share`: the ones under it are set to it, the others
    scaled down in proportion, repeated until none is under. Unchanged if none was under.

    Raises:
        ValueError: n * min_share > 1 (no ratios can satisfy the floor; lower min_share).
    """
    w = np.asarray(ratios, float)
    w = w / w.sum()
    if len(w) * min_share > 1 + 1e-12:
        raise ValueError(f"min_share={min_share} is infeasible for {len(w)} tasks: it must be <= 1/{len(w)}")
    fixed = np.zeros(len(w), bool)
    while True:
        free_mass = w[~fixed].sum()
        budget = 1.0 - min_share * fixed.sum()
        out = np.where(fixed, min_share, w * _div(budget, free_mass))
        under = ~fixed & (out < min_share)
        if not under.any():
            return out
        fixed |= under


def allocate(batch: int, ratios: np.ndarray) -> np.ndarray:
    """n_i = floor(B w_i), then the B - sum_i n_i left over one each to the largest remainders B w_i - n_i
    (ties to the earlier task). Sums to B exactly."""
    w = np.asarray(ratios, float)
    if batch < 0:
        raise ValueError(f"allocate: batch must be >= 0, got {batch}")
    exact = batch * w / w.sum()
    counts = np.floor(exact + 1e-9).astype(int)  # 1e-9: B * w that rounding left just under an integer
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: batch - int(counts.sum())]] += 1
    return counts


# -- the scheduler ---------------------------------------------------------------------------------


class _Branch:
    """The histories of one task type; plain lists so the state is JSON as it stands."""

    def __init__(self, tasks: Sequence[str]):
        self.tasks = list(tasks)
        n = len(self.tasks)
        self.initial: list[float] | None = None
        self.steps: list[int] = []  # the last `window` record steps
        self.losses: list[list[float]] = []  # normalised losses of those records, (records, n)
        self.slopes: list[list[float]] = []  # the last `window` slope vectors, (updates, n)
        self.max_alpha: list[float] = []  # m(k) of every update since warm-up
        self.max_abs_alpha: list[float] = []
        self.ratios: list[float] = [1.0 / n] * n
        self.beta: float = 1.0

    def state(self) -> dict:
        return {k: getattr(self, k) for k in _BRANCH_FIELDS}


_BRANCH_FIELDS = [
    "tasks",
    "initial",
    "steps",
    "losses",
    "slopes",
    "max_alpha",
    "max_abs_alpha",
    "ratios",
    "beta",
]


class S2Sched:
    """Sample ratios per task type from the tasks' validation-loss slopes (RecFound Eq. 3-6).

    Args:
        branches: task type ("embedding", "generative") -> its task names, in a fixed order.
        window: L, the records per slope fit and the slopes per Eq. 4 window.
        tau: temperature of Eq. 5.
        warmup_ratio: zeta; records before `warmup_ratio * total_steps` are kept, ratios stay uniform.
        min_share: the floor of every ratio (`apply_floor`).
    """

    def __init__(
        self,
        branches: Mapping[str, Sequence[str]],
        window: int = 8,
        tau: float = 10.0,
        warmup_ratio: float = 0.1,
        min_share: float = 0.02,
    ):
        problems = [f"branch {b!r} has no tasks" for b, t in branches.items() if not t]
        problems += [f"branch {b!r} repeats a task name" for b, t in branches.items() if len(set(t)) < len(t)]
        problems += [
            f"min_share={min_share} is infeasible for the {len(t)} tasks of {b!r} (need <= {1 / len(t):.4g})"
            for b, t in branches.items()
            if t and len(t) * min_share > 1
        ]
        if window < 2:
            problems.append(f"window={window}: a slope needs at least 2 records")
        if problems:
            raise ValueError("S2Sched: " + "; ".join(problems))
        self.window, self.tau, self.warmup_ratio, self.min_share = window, tau, warmup_ratio, min_share
        self._branches = {b: _Branch(t) for b, t in branches.items()}

    def _branch(self, branch: str) -> _Branch:
        if branch not in self._branches:
            raise KeyError(f"S2Sched has no branch {branch!r}; it has {sorted(self._branches)}")
        return self._branches[branch]

    def record(
        self, branch: str, step: int, losses: Mapping[str, float], total_steps: int
    ) -> dict[str, float]:
        """Store each task's validation loss at `step` and, past warm-up, update the ratios.

        The first record of a branch is the reference each later loss is divided by: record once
        before the first optimizer step. Returns the branch's ratios after this record.

        Raises:
            ValueError: `losses` misses or adds a task, a loss is not finite (or the first is not > 0),
                or `step` is not after the branch's last record.
        """
        br = self._branch(branch)
        if set(losses) != set(br.tasks):
            raise ValueError(
                f"record({branch!r}, step={step}): losses are for {sorted(losses)}, the branch has {br.tasks}"
            )
        raw = np.array([losses[t] for t in br.tasks], float)
        first = br.initial is None
        bad = [t for t, v in zip(br.tasks, raw, strict=True) if not np.isfinite(v) or (first and v <= 0)]
        if bad:
            need = "finite and > 0 (the first record divides every later one)" if first else "finite"
            raise ValueError(f"record({branch!r}, step={step}): validation losses of {bad} must be {need}")
        if br.steps and step <= br.steps[-1]:
            raise ValueError(f"record({branch!r}, step={step}): the last record was at step {br.steps[-1]}")
        if first:
            br.initial = raw.tolist()
        br.steps = (br.steps + [int(step)])[-self.window :]
        br.losses = (br.losses + [(raw / np.array(br.initial)).tolist()])[-self.window :]
        if step >= self.warmup_ratio * total_steps and len(br.steps) >= 2:
            self._update(br)
        return self.ratios(branch)

    def _update(self, br: _Branch) -> None:
        values = np.array(br.losses)
        alphas = np.array([slope(br.steps, values[:, i]) for i in range(len(br.tasks))])
        br.slopes = (br.slopes + [alphas.tolist()])[-self.window :]
        br.max_alpha.append(float(alphas.max()))
        br.max_abs_alpha.append(float(np.abs(alphas).max()))
        br.beta = balancing_weight(np.array(br.max_alpha), np.array(br.max_abs_alpha), self.tau)
        w = sample_ratios(inter_task(alphas), intra_task(alphas, np.array(br.slopes)), br.beta)
        br.ratios = apply_floor(w, self.min_share).tolist()

    def ratios(self, branch: str) -> dict[str, float]:
        br = self._branch(branch)
        return dict(zip(br.tasks, br.ratios, strict=True))

    def counts(self, branch: str, batch: int) -> dict[str, int]:
        """Examples per task in a batch of `batch` of this branch (`allocate` of the current ratios)."""
        br = self._branch(branch)
        return dict(zip(br.tasks, allocate(batch, np.array(br.ratios)).tolist(), strict=True))

    def snapshot(self, branch: str) -> dict[str, dict[str, float]]:
        """Per task: the latest normalised validation loss, slope and ratio, and the branch's beta."""
        br = self._branch(branch)
        last_loss = br.losses[-1] if br.losses else [float("nan")] * len(br.tasks)
        last_slope = br.slopes[-1] if br.slopes else [0.0] * len(br.tasks)
        return {
            t: {"val_loss": last_loss[i], "slope": last_slope[i], "ratio": br.ratios[i], "beta": br.beta}
            for i, t in enumerate(br.tasks)
        }

    def state_dict(self) -> dict:
        """Histories and ratios of every branch, as JSON-ready lists and floats."""
        return {"branches": {b: br.state() for b, br in self._branches.items()}}

    def load_state_dict(self, state: dict) -> None:
        saved = {b: s["tasks"] for b, s in state["branches"].items()}
        mine = {b: br.tasks for b, br in self._branches.items()}
        if saved != mine:
            raise ValueError(
                f"S2Sched state is for tasks {saved}, this run has {mine}: resume with the same task lists"
            )
        for b, s in state["branches"].items():
            br = self._branches[b]
            for k in _BRANCH_FIELDS:
                setattr(br, k, s[k])


def build_scheduler(branches: Mapping[str, Sequence[str]], config: S2SchedConfig) -> S2Sched:
    return S2Sched(
        branches,
        window=config.window,
        tau=config.tau,
        warmup_ratio=config.warmup_ratio,
        min_share=config.min_share,
    )


# -- the batches -----------------------------------------------------------------------------------


class TaskPools:
    """Per-task pools of example indices, each drawn without replacement within an epoch.

    Task k's epoch e is the permutation `default_rng([seed, k, e])` of its pool (k: the task's
    position in `pools`); its state is `(epoch, cursor)` per task, so a resumed run draws exactly
    what the uninterrupted run would have drawn.
    """

    def __init__(self, pools: Mapping[str, Sequence[int]], seed: int):
        empty = [t for t, p in pools.items() if len(p) == 0]
        if empty:
            raise ValueError(f"TaskPools: tasks {empty} have no examples; drop them from the schedule")
        self.seed = seed
        self.tasks = list(pools)
        self._pools = {t: np.asarray(p, dtype=np.int64) for t, p in pools.items()}
        self._pos = {t: [0, 0] for t in self.tasks}  # [epoch, cursor]
        self._order = {t: self._permutation(t, 0) for t in self.tasks}

    def _permutation(self, task: str, epoch: int) -> np.ndarray:
        pool = self._pools[task]
        return pool[np.random.default_rng([self.seed, self.tasks.index(task), epoch]).permutation(len(pool))]

    def take(self, task: str, k: int) -> list[int]:
        """The next `k` indices of `task`'s pool, moving into the next epoch's permutation as needed."""
        if task not in self._pools:
            raise KeyError(f"TaskPools has no task {task!r}; it has {self.tasks}")
        n, pos, out = len(self._pools[task]), self._pos[task], []
        while len(out) < k:
            room = min(k - len(out), n - pos[1])
            out += self._order[task][pos[1] : pos[1] + room].tolist()
            pos[1] += room
            if pos[1] == n:
                pos[0], pos[1] = pos[0] + 1, 0
                self._order[task] = self._permutation(task, pos[0])
        return out

    def compose(self, counts: Mapping[str, int]) -> list[int]:
        """One batch: `counts[task]` indices of each task, concatenated in the pools' task order."""
        unknown = sorted(set(counts) - set(self.tasks))
        if unknown:
            raise KeyError(f"TaskPools: counts name tasks {unknown} it does not hold ({self.tasks})")
        return [i for t in self.tasks for i in self.take(t, counts.get(t, 0))]

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "tasks": {
                t: {"n": len(self._pools[t]), "epoch": ep, "cursor": cur}
                for t, (ep, cur) in self._pos.items()
            },
        }

    def load_state_dict(self, state: dict) -> None:
        mine = {t: len(p) for t, p in self._pools.items()}
        saved = {t: s["n"] for t, s in state["tasks"].items()}
        if state["seed"] != self.seed or list(saved.items()) != list(mine.items()):
            raise ValueError(
                f"TaskPools state is for seed {state['seed']}, pools {saved}; this run has seed {self.seed}, "
                f"pools {mine}: the training data changed"
            )
        for t, s in state["tasks"].items():
            self._pos[t] = [int(s["epoch"]), int(s["cursor"])]
            self._order[t] = self._permutation(t, self._pos[t][0])
