"""The evaluation of a model folder on a dataset's probe users (InstructUE 4.1-4.3, Table 2).

    result = evaluate_model(run / "model", data / "movielens-100k", EvaluationSettings(), root / ".cache")
    write_report(result, run / "evaluation")          # components.evaluation.report

Stages, each a function a flow can run as one task:

1. `load_inputs`: the model, the dataset, the probe users and each task's labels among them;
2. `choose_tuning_users`: per task, few-shot users per class (the tuned variant's fitting users);
3. `tune_instructions`: soft instruction tokens per task (Eq. 6), from those users' labels only;
4. `embed_variants`: the probe users universal, under each manual instruction and each tuned one
   (one pass of the user block per batch and route for all of them: prefix reuse);
5. `baselines.compute_baselines`: the same users' baseline features (cached on disk);
6. `probe_all`: the linear probe of every variant and baseline on every task, over the same splits:
   the tuning users are in every fitting half of every representation, so no evaluation half ever
   holds a user whose label tuned an instruction, and variants and baselines are compared on
   identical halves;
7. `gates.check_gates`: the verdict.

Pure: no Prefect, no MLflow (`evaluation/tracking.py` records a written report in a run).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from components.evaluation.baselines import BaselineSettings, compute_baselines, data_fingerprint
from components.evaluation.gates import GateSettings, GateVerdict, check_gates
from components.evaluation.probe import DEFAULT_CS, DEFAULT_FOLDS, ProbeScore, probe_task

log = logging.getLogger(__name__)


class Variant(StrEnum):
    UNIVERSAL = "universal"
    MANUAL = "manual"
    TUNED = "tuned"


class TuningConfig(BaseModel):
    """Few-shot instruction tuning (InstructUE 3.3.3); see `tuning.TuningSettings`.

    Defaults below `TuningSettings`' (16 per class, 40 steps): a step back-propagates through the
    whole backbone for every few-shot user, and 6 tasks at 16 x 2 users x 40 steps took more than 7
    CPU-minutes with SmolLM2 here, alone over the evaluation's 8-minute budget.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shots_per_class: int = Field(8, ge=1)
    steps: int = Field(20, ge=0)
    lr: float = Field(5e-3, gt=0)
    temperature: float = Field(0.1, gt=0)
    # measured on 2026-12-01, the quick profile's merged model on MovieLens: tuned mean AUC 0.597
    # centred against 0.577 raw (same users, seeds and halves; README "Evaluation")
    centre: bool = Field(True, description="Eq. 6 on embeddings centred over the few-shot users")
    seed: int = Field(0, description="draws the few-shot users")


class EvaluationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seeds: list[int] = Field(default_factory=lambda: list(range(10)), min_length=1)
    fit_fraction: float = Field(0.5, gt=0, lt=1)
    Cs: list[float] = Field(default_factory=lambda: list(DEFAULT_CS), min_length=1)
    folds: int = Field(DEFAULT_FOLDS, ge=2)
    tasks: list[str] | None = Field(None, description="default: every task of the card")
    variants: list[Variant] = Field(default_factory=lambda: list(Variant), min_length=1)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    baselines: BaselineSettings = Field(default_factory=BaselineSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    batch_size: int | None = Field(None, ge=1, description="users per forward pass; default the model's")
    device: str | None = None
    progress: bool = False


@dataclass
class EvalInputs:
    model_dir: Path
    data_dir: Path
    model: object  # InstructUE
    card: object  # DatasetCard
    tables: object  # ContractTables
    probe_ids: list[int]  # every probe user with at least one label, sorted
    tasks: list[str]
    labels: dict[str, tuple[np.ndarray, np.ndarray]]  # task -> (row indices into probe_ids, 0/1 labels)


@dataclass
class EvaluationResult:
    dataset: str
    model_dir: str
    tasks: list[str]
    variants: dict[str, dict[str, ProbeScore]]  # variant -> task -> score
    baselines: dict[str, dict[str, ProbeScore]]  # baseline -> task -> score
    verdict: GateVerdict
    seconds: dict[str, float]
    settings: dict
    n_probe_users: int
    tuning_users: dict[str, list[int]] = field(default_factory=dict)
    tuning_losses: dict[str, list[float]] = field(default_factory=dict)
    baseline_cached: dict[str, bool] = field(default_factory=dict)
    # for the plots: probe users' embeddings and labels
    embeddings: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    labels: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    s2sched: dict | None = field(default=None, repr=False)  # branch -> task -> [(step, ratio)]
    tuned: dict = field(default_factory=dict, repr=False)  # task -> TunedInstruction (to save)
    routing: dict | None = field(default=None, repr=False)  # {"tasks": [...], "embedding": (T, T), ...}
    model_digest: str = ""  # factory.model_digest of the evaluated folder: registration checks it


# -- stages ------------------------------------------------------------------------------------------
def probe_user_ids(tables, tasks: list[str]) -> list[int]:
    """The probe split's users with a label for any of `tasks`, sorted: the users every variant and
    baseline is probed on."""
    from components.ingestion import Split

    probe = set(tables.users.loc[tables.users["split"] == Split.PROBE.value, "user_id"].astype(int))
    labels = tables.labels[tables.labels["user_id"].astype(int).isin(probe)]
    return sorted(int(u) for u in labels.loc[labels["task"].isin(tasks), "user_id"].unique())


def load_inputs(
    model_dir: Path, data_dir: Path, settings: EvaluationSettings, asset_cache: Path | None = None
) -> EvalInputs:
    """Load the model and the dataset; the probe users and, per task, their labels."""
    from components.ingestion import read_tables
    from components.modeling import load_model

    card, tables = read_tables(data_dir)
    tasks = settings.tasks or [t.name for t in card.tasks]
    for t in tasks:
        card.task(t)  # KeyError naming the card's tasks
    probe_ids = probe_user_ids(tables, tasks)
    labels = tables.labels[tables.labels["user_id"].astype(int).isin(set(probe_ids))]
    if not probe_ids:
        raise ValueError(f"{data_dir}: no probe user has a label for tasks {tasks}")
    row = {u: i for i, u in enumerate(probe_ids)}
    by_task = {}
    for t in tasks:
        rows = labels[labels["task"] == t]
        if rows.empty:
            raise ValueError(f"{data_dir}: task {t!r} has no labels among the probe users")
        idx = np.array([row[int(u)] for u in rows["user_id"]], dtype=np.int64)
        by_task[t] = (idx, rows["label"].to_numpy(np.int64))
    overrides = {k: v for k, v in {"batch_size": settings.batch_size}.items() if v is not None}
    model = load_model(Path(model_dir), asset_cache, device=settings.device, **overrides)
    return EvalInputs(Path(model_dir), Path(data_dir), model, card, tables, probe_ids, tasks, by_task)


def choose_tuning_users(inputs: EvalInputs, settings: EvaluationSettings) -> dict[str, list[int]]:
    """Per task, `shots_per_class` probe users per class: the tuned variant's few-shot fitting users.
    They sit in every fitting half of every probe of that task (see `probe_all`)."""
    from components.evaluation.tuning import few_shot

    if Variant.TUNED not in settings.variants:
        return {}
    out = {}
    for t in inputs.tasks:
        idx, y = inputs.labels[t]
        picked = few_shot(y, settings.tuning.shots_per_class, seed=settings.tuning.seed)
        out[t] = [inputs.probe_ids[i] for i in idx[picked]]
    return out


def tune_instructions(inputs: EvalInputs, tuning_users: dict[str, list[int]], settings: EvaluationSettings):
    """task -> TunedInstruction, each tuned on its few-shot users' labels and nothing else."""
    from components.evaluation.tuning import TuningSettings, tune_instruction

    cfg = settings.tuning
    tuning = TuningSettings(cfg.shots_per_class, cfg.steps, cfg.lr, cfg.temperature, cfg.centre)
    from tqdm.auto import tqdm

    out = {}
    for t, users in tqdm(tuning_users.items(), desc="tune", unit="task", disable=not settings.progress):
        idx, y = inputs.labels[t]
        label_of = dict(zip((inputs.probe_ids[i] for i in idx), y.tolist(), strict=True))
        few_labels = np.array([label_of[u] for u in users], dtype=np.int64)
        log.info("tuning the instruction of %s on %d users", t, len(users))
        out[t] = tune_instruction(inputs.model, inputs.card, inputs.tables, t, users, few_labels, tuning)
    return out


def embed_variants(inputs: EvalInputs, tuned: dict, settings: EvaluationSettings) -> dict[str, dict]:
    """variant -> task -> (n_probe, d) embeddings of the probe users (universal: key "*")."""
    from components.modeling import UserEmbedder

    manual = {t: inputs.card.task(t).instruction for t in inputs.tasks}
    wanted: list = []
    if Variant.UNIVERSAL in settings.variants:
        wanted.append(None)
    if Variant.MANUAL in settings.variants:
        wanted += list(manual.values())
    wanted += list(tuned.values())
    vectors = UserEmbedder(inputs.model, inputs.card, inputs.tables).embed_many(
        inputs.probe_ids, wanted, batch_size=settings.batch_size, progress=settings.progress
    )
    out: dict[str, dict] = {}
    if Variant.UNIVERSAL in settings.variants:
        out[Variant.UNIVERSAL.value] = {"*": vectors[None]}
    if Variant.MANUAL in settings.variants:
        out[Variant.MANUAL.value] = {t: vectors[text] for t, text in manual.items()}
    if tuned:
        out[Variant.TUNED.value] = {t: vectors[obj] for t, obj in tuned.items()}
    return out


def probe_all(
    inputs: EvalInputs,
    representations: dict[str, dict[str, np.ndarray]],
    tuning_users: dict[str, list[int]],
    settings: EvaluationSettings,
) -> dict[str, dict[str, ProbeScore]]:
    """name -> task -> probe score; a representation maps task (or "*" for all tasks) -> matrix whose
    rows follow `inputs.probe_ids`. Every representation of a task gets the same halves."""
    out: dict[str, dict[str, ProbeScore]] = {}
    for name, by_task in representations.items():
        out[name] = {}
        for t in inputs.tasks:
            matrix = by_task.get(t, by_task.get("*"))
            if matrix is None:
                continue
            idx, y = inputs.labels[t]
            forced = np.isin(np.asarray(inputs.probe_ids)[idx], tuning_users.get(t, []))
            out[name][t] = probe_task(
                matrix[idx], y, task=t, seeds=settings.seeds, fit_fraction=settings.fit_fraction,
                Cs=settings.Cs, folds=settings.folds, always_fit=forced if forced.any() else None,
            )  # fmt: skip
    return out


def gate(
    scores: dict[str, dict[str, ProbeScore]],
    baseline_names: list[str],
    settings: EvaluationSettings,
    champion: dict[str, float] | None,
) -> GateVerdict:
    """`check_gates` on the probe scores: variants' and baselines' per-task AUCs."""
    variants = {v.value: {t: s.auc for t, s in scores[v].items()} for v in Variant if v.value in scores}
    baselines = {b: {t: s.auc for t, s in scores[b].items()} for b in baseline_names if b in scores}
    return check_gates(variants, baselines, settings.gate, champion)


# -- the whole evaluation ----------------------------------------------------------------------------
@dataclass
class StageClock:
    """The report's `seconds`: `clock(stage, fn, *args)` calls `fn` and books its wall time under
    `stage`; `total()` adds `evaluate_total`, the time since the clock was made."""

    seconds: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    def __call__(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        value = fn(*args)
        self.seconds[stage] = round(time.perf_counter() - t0, 2)
        log.info("%s: %.1f s", stage, self.seconds[stage])
        return value

    def total(self) -> dict[str, float]:
        self.seconds["evaluate_total"] = round(time.perf_counter() - self.start, 2)
        return self.seconds


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    settings: EvaluationSettings,
    cache_dir: Path | None,
    champion: dict[str, float] | None = None,
    *,
    asset_cache: Path | None = None,
    s2sched_history: dict | None = None,
) -> EvaluationResult:
    """Evaluate a model folder on a dataset folder: every stage of the module docstring.

    Args:
        model_dir: a model folder (`save_model`).
        data_dir: an ingested dataset folder `data/<name>/`.
        settings: probe, variants, tuning, baselines and gate settings.
        cache_dir: holds `baselines/` (the baseline features); None recomputes them.
        champion: the registry champion's task -> AUC, or None.
        asset_cache: where backbones and encoders resolve (default `$INSTRUCTUE_CACHE`).
        s2sched_history: branch -> task -> [(step, ratio)] (say from MLflow); None reads the run's
            checkpoints next to the model folder.
    """
    timed = StageClock()
    inputs = timed("load", load_inputs, model_dir, data_dir, settings, asset_cache)
    tuning_users = choose_tuning_users(inputs, settings)
    tuned = timed("tune", tune_instructions, inputs, tuning_users, settings)
    reps = timed("embed", embed_variants, inputs, tuned, settings)
    data_hash = timed("data_hash", data_fingerprint, Path(data_dir))
    feats = timed(
        "baselines", compute_baselines, inputs.card, inputs.tables, inputs.probe_ids, inputs.model.config,
        settings.baselines, data_hash, cache_dir, asset_cache, settings.progress,
    )  # fmt: skip
    representations = {**reps, **{name: {"*": f.matrix} for name, f in feats.items()}}
    scores = timed("probe", probe_all, inputs, representations, tuning_users, settings)
    verdict = timed("gate", gate, scores, list(feats), settings, champion)
    return assemble(inputs, settings, tuning_users, tuned, reps, feats, scores, verdict, timed.total(),
                    s2sched_history)  # fmt: skip


def assemble(
    inputs: EvalInputs, settings: EvaluationSettings, tuning_users: dict, tuned: dict, reps: dict,
    feats: dict, scores: dict, verdict: GateVerdict, seconds: dict, s2sched_history: dict | None = None,
) -> EvaluationResult:  # fmt: skip
    """The stages' outputs as one result, with what the plots need from the run (S2Sched history:
    given, or read from the checkpoints beside the model folder; TMoLE routing from the model)."""
    from components.evaluation.plots import routing_similarity, s2sched_from_checkpoints
    from components.modeling import model_digest

    history = s2sched_history
    if history is None:
        history = s2sched_from_checkpoints(inputs.model_dir.parent)
    return EvaluationResult(
        dataset=inputs.card.name,
        model_dir=str(inputs.model_dir),
        tasks=inputs.tasks,
        variants={v: scores[v] for v in reps},
        baselines={b: scores[b] for b in feats},
        verdict=verdict,
        seconds=seconds,
        settings=settings.model_dump(mode="json"),
        n_probe_users=len(inputs.probe_ids),
        tuning_users=tuning_users,
        tuning_losses={t: list(x.losses) for t, x in tuned.items()},
        tuned=dict(tuned),
        baseline_cached={b: f.cached for b, f in feats.items()},
        embeddings=reps,
        labels=inputs.labels,
        s2sched=history or None,
        routing=routing_similarity(inputs.model),
        model_digest=model_digest(inputs.model_dir),
    )
