"""UserQA synthesis: training users -> grounded facts -> (instruction, answer) records.

    summary = synthesize(Path("data/movielens-100k"), TemplateWriter())
    # -> data/movielens-100k/userqa.parquet and userqa_tasks.json

Per training user and applicable family, `paraphrases_per_user` instruction paraphrases are drawn
(seeded by user and family, so a user's records never depend on which other users are processed)
and answered from the same facts; the general family adds one record with no instruction.

Resumable: users are processed in chunks; each chunk is written to `.userqa-parts/<key>/` as soon
as it is done, and a restarted run with the same inputs and settings (`key`) skips finished chunks.
The final file is assembled at the end, validated, and renamed into place; a finished run with the
same key is not repeated.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from components.common import shards as sharding
from components.common import write_bytes_atomic, write_text
from components.ingestion import Table, read_tables
from components.userqa import recorded
from components.userqa.families import FAMILIES, GENERAL, Family, applicable
from components.userqa.records import Answer, AnswerRequest, AnswerWriter, Window
from components.userqa.view import EventView, train_view
from components.userqa.writers import reference_answer

USERQA_FILE = "userqa.parquet"
TASKS_FILE = "userqa_tasks.json"
PARTS_DIR = ".userqa-parts"
MANIFEST_FILE = "userqa_manifest.json"


class SynthesisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    paraphrases_per_user: int = Field(4, ge=1, description="instructions drawn per user and family")
    chunk_users: int = Field(64, ge=1, description="users per resumable chunk")
    # an answer that fails verification: replace it by the reference answer, or drop the record
    on_reject: str = Field("fallback", pattern="^(fallback|drop)$")
    max_users: int | None = Field(None, ge=1, description="only the first N training users (smoke runs)")
    recorded_labels: bool = Field(
        True, description="add the `recorded` family: answers from the training users' labels, "
        "outside the validation holdout (recorded.py)"
    )  # fmt: skip


@dataclass
class SynthesisSummary:
    dataset: str
    output: str
    writer: str
    users: int
    records: int
    per_family: dict[str, int]
    rejected: int  # answers that failed verification (then fell back or were dropped)
    seconds: float
    resumed_chunks: int
    skipped: bool = False  # the same synthesis was already complete

    @property
    def seconds_per_record(self) -> float:
        return self.seconds / self.records if self.records else 0.0

    def to_text(self) -> str:
        lines = [
            f"UserQA for {self.dataset} -> {self.output}",
            f"writer {self.writer}: {self.records:,} records from {self.users:,} training users in "
            f"{self.seconds:.1f} s ({1000 * self.seconds_per_record:.2f} ms per record)"
            + (
                f"; {self.resumed_chunks} chunk(s) reused from an interrupted run"
                if self.resumed_chunks
                else ""
            )
            + ("; already complete, nothing to do" if self.skipped else ""),
            f"rejected by verification: {self.rejected:,} ({self.rejected / max(self.records, 1):.1%})",
            f"{'family':<20}{'records':>10}",
        ]
        lines += [f"{f:<20}{n:>10,}" for f, n in self.per_family.items()]
        return "\n".join(lines)


def _rng(seed: int, user: int, task_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, user, task_id])


def user_requests(
    user: int,
    view: EventView,
    families: list[Family],
    config: SynthesisConfig,
    recorded_facts: dict | None = None,
) -> list[AnswerRequest]:
    """Every request for one user: facts from the family's window only, paraphrases drawn per family;
    the recorded family's from `recorded_facts` (user -> facts) when the user has some."""
    profile, future = view.window(user)
    out = []
    if recorded_facts and user in recorded_facts:
        k = config.paraphrases_per_user
        out += recorded.recorded_requests(user, recorded_facts[user], k, config.seed)
    for fam in families:
        facts = fam.facts(user, future if fam.window is Window.FUTURE else profile, view)
        if facts is None:
            continue
        reference = reference_answer(facts.statements)
        if fam.name == GENERAL:
            out.append(AnswerRequest(user, fam.name, None, facts, reference))
            continue
        options = fam.instructions(view)
        k = min(config.paraphrases_per_user, len(options))
        for i in _rng(config.seed, user, fam.task_id).choice(len(options), size=k, replace=False):
            out.append(AnswerRequest(user, fam.name, options[int(i)], facts, reference))
    return out


def _records(
    requests: list[AnswerRequest], answers: list[Answer], families: dict[str, Family], config
) -> list[dict]:
    rows = []
    for r, a in zip(requests, answers, strict=True):
        if not a.passed and config.on_reject == "drop":
            continue
        final, writer = (
            (a.text, a.writer) if a.passed else (r.reference, f"template (fallback from {a.writer})")
        )
        fam = families[r.family]
        rows.append(
            {
                "user_id": r.user_id,
                "family": r.family,
                "task_id": fam.task_id,
                "kind": fam.kind,
                "window": fam.window.value,
                "instruction": r.instruction,
                "answer": final,
                "writer": writer,
                "passed": a.passed,
                "reason": a.reason,
                "attempts": a.attempts,
                "facts": json.dumps(list(r.facts.statements)),
            }
        )
    return rows


def _key(folder: Path, writer: AnswerWriter, config: SynthesisConfig) -> str:
    h = hashlib.sha1()
    tables = (Table.USERS, Table.EVENTS, Table.CUTOFFS) + ((Table.LABELS,) if config.recorded_labels else ())
    for t in tables:
        h.update(hashlib.sha1((folder / t.filename).read_bytes()).digest())
    h.update(
        json.dumps({"writer": writer.name, "config": config.model_dump(exclude={"chunk_users"})}).encode()
    )
    h.update(json.dumps([(f.name, f.task_id, f.paraphrases) for f in (*FAMILIES, recorded.FAMILY)]).encode())
    return h.hexdigest()[:16]


def task_registry(view: EventView, families: list[Family]) -> dict:
    return {
        "families": [
            {"name": f.name, "task_id": f.task_id, "kind": f.kind, "window": f.window.value,
             "instructions": f.instructions(view)}
            for f in families
        ]
    }  # fmt: skip


@dataclass(frozen=True)
class SynthesisPlan:
    """What every shard of one synthesis shares; picklable, so Dask workers get it as it is."""

    folder: str
    key: str  # the output's key: inputs, writer and settings (not the chunk size)
    config: SynthesisConfig
    shards: sharding.ShardPlan

    @property
    def parts(self) -> Path:
        return Path(self.folder) / PARTS_DIR / self.shards.key


@dataclass(frozen=True)
class _Inputs:
    """What a synthesis reads, once per process: the card, the training users' events, the
    families that apply, and the recorded family's facts per user (empty when it is off)."""

    card: object
    view: EventView
    families: list[Family]
    recorded: dict


def _view(folder: str, key: str, with_recorded: bool) -> _Inputs:
    card, tables = read_tables(Path(folder))
    view = train_view(tables, card.sequence_sources)
    facts = recorded.recorded_facts(card, tables) if with_recorded else {}
    return _Inputs(card, view, applicable(view) + ([recorded.FAMILY] if facts else []), facts)


def _inputs(folder: str, key: str, config: SynthesisConfig):
    return sharding.worker_cached(
        ("userqa-view", folder, key), lambda: _view(folder, key, config.recorded_labels)
    )


def plan_synthesis(
    folder: Path, writer: AnswerWriter, config: SynthesisConfig | None = None
) -> tuple[SynthesisPlan, SynthesisSummary | None]:
    """The shard plan (users in chunks of `chunk_users`, parts under `.userqa-parts/<key>/`), and the
    summary of the finished synthesis when `userqa.parquet` already holds exactly these inputs."""
    config = config or SynthesisConfig()
    folder = Path(folder)
    start = time.perf_counter()
    key = _key(folder, writer, config)
    inputs, _ = _inputs(str(folder), key, config)
    card, view = inputs.card, inputs.view
    users = view.user_ids[: config.max_users]
    shards = sharding.ShardPlan.of(users, config.chunk_users, sharding.inputs_key(key, config.chunk_users))
    plan = SynthesisPlan(str(folder), key, config, shards)
    manifest = folder / MANIFEST_FILE
    if (
        (folder / USERQA_FILE).exists()
        and manifest.exists()
        and json.loads(manifest.read_text())["key"] == key
    ):
        df = pd.read_parquet(folder / USERQA_FILE)
        return plan, _summary(card.name, folder, writer, users, df, time.perf_counter() - start, 0, True)
    # parts of other keys (other inputs or chunk sizes) are stale: the store clears them
    sharding.ShardStore(folder / PARTS_DIR, shards).open(
        {"writer": writer.name, "config": config.model_dump()}
    )
    return plan, None


def synthesize_shard(
    plan: SynthesisPlan, shard: sharding.Shard, writer: AnswerWriter
) -> sharding.ShardResult:
    """Answer one chunk of users into its part (skipped when a killed run already wrote it)."""
    part = plan.parts / shard.name
    if part.exists():
        return sharding.ShardResult.reused_part(shard)
    started_at = time.time()
    inputs, t_load = _inputs(plan.folder, plan.key, plan.config)
    view, families = inputs.view, inputs.families
    start = time.perf_counter()
    requests = [r for u in shard.user_ids
                for r in user_requests(u, view, families, plan.config, inputs.recorded)]  # fmt: skip
    answers = writer.write(requests, view.vocabulary)
    frame = pd.DataFrame(_records(requests, answers, {f.name: f for f in families}, plan.config))
    write_bytes_atomic(part, sharding.parquet_bytes(frame))
    return sharding.ShardResult(
        shard.index, len(shard.user_ids), len(frame), time.perf_counter() - start, t_load,
        sharding.worker_name(), started_at=started_at, ended_at=time.time(),
    )  # fmt: skip


def finish_synthesis(
    plan: SynthesisPlan, writer: AnswerWriter, results: list[sharding.ShardResult], seconds: float
) -> SynthesisSummary:
    """Parts -> validated `userqa.parquet`, the task registry and the manifest; the parts go."""
    folder = Path(plan.folder)
    inputs, _ = _inputs(plan.folder, plan.key, plan.config)
    card, view, families = inputs.card, inputs.view, inputs.families
    store = sharding.ShardStore(folder / PARTS_DIR, plan.shards)
    missing = store.missing()
    if missing:
        raise RuntimeError(
            f"{len(missing)} chunk(s) of {len(plan.shards)} have no part, e.g. {missing[0].name}"
        )
    df = pd.concat([store.read(i).to_pandas() for i in range(len(plan.shards))], ignore_index=True)
    from components.userqa.validate import validate_userqa

    users = plan.shards.user_ids
    validate_userqa(df, set(users), {f.name: f for f in families})
    write_bytes_atomic(folder / USERQA_FILE, sharding.parquet_bytes(df))
    write_text(folder / TASKS_FILE, json.dumps(task_registry(view, families), indent=2) + "\n")
    write_text(
        folder / MANIFEST_FILE,
        json.dumps({"key": plan.key, "writer": writer.name, "config": plan.config.model_dump()}, indent=2)
        + "\n",
    )
    shutil.rmtree(folder / PARTS_DIR, ignore_errors=True)
    resumed = sum(r.reused for r in results)
    return _summary(card.name, folder, writer, users, df, seconds, resumed)


def synthesize(
    folder: Path, writer: AnswerWriter, config: SynthesisConfig | None = None, progress: bool = True
) -> SynthesisSummary:
    """Synthesise UserQA for the dataset in `folder` (an ingested contract folder), chunk after chunk
    in this process (the `synthesize` flow runs the same chunks on a task runner)."""
    start = time.perf_counter()
    plan, finished = plan_synthesis(folder, writer, config)
    if finished is not None:
        return finished
    results = []
    bar = tqdm(total=len(plan.shards.user_ids), unit="user", desc=f"userqa {Path(folder).name}",
               disable=not progress)  # fmt: skip
    for shard in plan.shards.shards:
        results.append(synthesize_shard(plan, shard, writer))
        bar.update(len(shard.user_ids))
    bar.close()
    return finish_synthesis(plan, writer, results, time.perf_counter() - start)


def _summary(name, folder, writer, users, df, seconds, resumed, skipped=False) -> SynthesisSummary:
    counts = Counter(df["family"]) if len(df) else Counter()
    return SynthesisSummary(
        dataset=name,
        output=str(folder / USERQA_FILE),
        writer=writer.name,
        users=len(users),
        records=len(df),
        per_family=dict(sorted(counts.items())),
        rejected=int((~df["passed"]).sum()) if len(df) else 0,
        seconds=seconds,
        resumed_chunks=resumed,
        skipped=skipped,
    )


def build_requests(folder: Path, n: int, seed: int = 0) -> list[AnswerRequest]:
    """`n` requests drawn at random (seeded) from a dataset's UserQA requests: for writer benchmarks."""
    card, tables = read_tables(folder)
    view = train_view(tables, card.sequence_sources)
    families = applicable(view)
    rng = np.random.default_rng(seed)
    users = rng.permutation(view.user_ids)
    out: list[AnswerRequest] = []
    config = SynthesisConfig(seed=seed, paraphrases_per_user=1)
    for u in users:
        out += user_requests(int(u), view, families, config)
        if len(out) >= 4 * n:
            break
    return [out[i] for i in sorted(rng.choice(len(out), size=min(n, len(out)), replace=False))]
