"""Ingestion: a reader's raw tables -> validation -> quarantine -> a dataset folder under data/.

    from components.ingestion import ingest, read_dataset
    summary = ingest(read_dataset("movielens-100k"), Path("data"), Path("quarantine"))
    print(summary.to_text())

Output `data/<name>/` holds `schema.yaml`, the four contract tables and `manifest.json` (counts and
label rates; nothing run-specific, so the same input always gives the same bytes and DVC hash).
Everything is written to a hidden temp folder and renamed into place at the end: a failed or killed
run leaves the previous version intact. Rejected rows go to `quarantine/<name>/<run>/<table>.parquet`
with one reason per row.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from components.common import remove_stale_temps, replace_dir, temp_sibling, write_text
from components.ingestion.card import DatasetCard
from components.ingestion.contract import CARD_FILENAME, ContractTables, RawDataset, Split, Table
from components.ingestion.validation import CHECK, ChunkValidator, ContractError

MANIFEST = "manifest.json"


class TooManyBadRows(ValueError):
    """The share of quarantined rows exceeds the configured limit; nothing was published."""


@dataclass
class IngestSummary:
    dataset: str
    run_id: str
    output: str
    quarantine: str | None
    rows_in: dict[str, int]
    rows_kept: dict[str, int]
    rows_quarantined: dict[str, int]
    reasons: dict[str, int]  # "table: check" -> rows
    users_per_split: dict[str, int]
    positive_rate: dict[str, dict[str, float]]  # task -> {"all": .., "probe": .., "train": ..}
    seconds: float
    provenance: dict[str, str] = field(default_factory=dict)
    data_docs: str | None = None  # the Data Docs index of the published version (`data_docs.py`)

    @property
    def bad_share(self) -> float:
        total = sum(self.rows_in.values())
        return sum(self.rows_quarantined.values()) / total if total else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def to_text(self) -> str:
        lines = [f"dataset {self.dataset}  ->  {self.output}   ({self.seconds:.1f} s, run {self.run_id})"]
        lines.append(f"{'table':<10}{'rows in':>12}{'kept':>12}{'quarantined':>13}")
        for t in self.rows_in:
            lines.append(
                f"{t:<10}{self.rows_in[t]:>12,}{self.rows_kept[t]:>12,}{self.rows_quarantined[t]:>13,}"
            )
        if self.reasons:
            lines.append(f"quarantined rows by check (see {self.quarantine}):")
            lines += [f"  {n:>8,}  {k}" for k, n in sorted(self.reasons.items(), key=lambda kv: -kv[1])]
        lines.append("users per split: " + ", ".join(f"{k} {v:,}" for k, v in self.users_per_split.items()))
        lines.append(f"{'task':<28}{'positive (all)':>15}{'probe':>9}{'train':>9}")
        for task, r in self.positive_rate.items():
            lines.append(f"{task:<28}{r['all']:>15.3f}{r['probe']:>9.3f}{r['train']:>9.3f}")
        if self.data_docs:
            lines.append(f"data docs (GX validation of the published tables): {self.data_docs}")
        return "\n".join(lines)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class _TableWriter:
    """Appends chunks of one table to a parquet file; the first chunk fixes the schema."""

    def __init__(self, path: Path):
        self.path, self.writer, self.schema = path, None, None

    def write(self, frame: pd.DataFrame) -> None:
        if self.writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        else:
            table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        self.writer.write_table(table)

    def close(self, empty_like: pd.DataFrame) -> None:
        if self.writer is None:  # no rows at all: still write a file with the columns
            pq.write_table(pa.Table.from_pandas(empty_like, preserve_index=False), self.path)
        else:
            self.writer.close()


class _Stats:
    def __init__(self):
        self.splits: Counter[str] = Counter()
        self.label_sum: Counter[tuple[str, str]] = Counter()
        self.label_n: Counter[tuple[str, str]] = Counter()
        self.sources: Counter[str] = Counter()

    def add(self, clean: ContractTables) -> None:
        self.splits.update(clean.users["split"].value_counts().to_dict())
        split = clean.users.set_index("user_id")["split"]
        lab = clean.labels.assign(split=clean.labels["user_id"].map(split))
        for (task, sp), g in lab.groupby(["task", "split"]):
            self.label_sum[(task, sp)] += int(g["label"].sum())
            self.label_n[(task, sp)] += len(g)
        self.sources.update(clean.events["source"].value_counts().to_dict())

    def rates(self, tasks: list[str]) -> dict[str, dict[str, float | None]]:
        def rate(task: str, splits: list[str]) -> float | None:  # None (JSON null): no label at all
            n = sum(self.label_n[(task, s)] for s in splits)
            return sum(self.label_sum[(task, s)] for s in splits) / n if n else None

        both = [s.value for s in Split]
        return {
            t: {"all": rate(t, both), "probe": rate(t, [Split.PROBE]), "train": rate(t, [Split.TRAIN])}
            for t in tasks
        }


def ingest(
    raw: RawDataset,
    data_root: Path,
    quarantine_root: Path,
    *,
    run_id: str | None = None,
    max_bad_share: float = 0.05,
    progress: bool = True,
    docs_root: Path | None = None,
) -> IngestSummary:
    """Validate a reader's chunks and publish the clean tables as `data_root/<card.name>/`; with
    `docs_root`, then build the published version's Data Docs in `docs_root/<card.name>/`.

    Raises:
        ContractError: the input as a whole breaks the contract (missing columns, no users, a card
            source with no events); nothing is published.
        TooManyBadRows: more than `max_bad_share` of all rows were quarantined; the quarantine is
            kept for inspection, nothing is published.
    """
    if not 0.0 <= max_bad_share <= 1.0:
        raise ValueError(f"max_bad_share must be in [0, 1], got {max_bad_share}")
    target = Path(data_root) / raw.card.name
    with dataset_lock(target):  # a second ingest of the dataset waits: it would remove our temp folder
        summary = _ingest(raw, target, quarantine_root, run_id, max_bad_share, progress)
        if docs_root is not None:
            from components.ingestion.data_docs import build_data_docs

            index = build_data_docs(raw.card, target, Path(docs_root) / raw.card.name, summary.run_id)
            summary.data_docs = str(index)
        return summary


def dataset_lock(target: Path, timeout_s: float = 3600.0):
    """An inter-process lock per published dataset folder. The lock file lives in the system temp
    folder (keyed by the folder's path), never in `data/`, which DVC hashes."""
    from components.common import file_lock, temp_lock_path

    path = temp_lock_path("ingest", target)
    why = f"another ingest of {target} has held its lock for {timeout_s:.0f} s ({path}); retry later"
    return file_lock(path, timeout_s, lambda: TimeoutError(why))


def _ingest(raw: RawDataset, target: Path, quarantine_root: Path, run_id: str | None, max_bad_share: float,
            progress: bool) -> IngestSummary:  # fmt: skip
    start = time.perf_counter()
    card, run_id = raw.card, run_id or new_run_id()
    remove_stale_temps(target)
    tmp = temp_sibling(target)
    q_target = Path(quarantine_root) / card.name / run_id
    q_tmp = None
    validator = ChunkValidator(card)
    writers = {t: _TableWriter(tmp / t.filename) for t in Table}
    q_writers: dict[Table, _TableWriter] = {}
    rows_in, kept, bad = Counter(), Counter(), Counter()
    stats, empty = _Stats(), {}
    bar = tqdm(total=raw.n_users_hint, unit="user", desc=f"ingest {card.name}", disable=not progress)
    try:
        for chunk in raw.chunks:
            res = validator.validate(chunk)
            for t, frame in res.clean.items():
                empty.setdefault(t, frame.iloc[:0])
                if len(frame):
                    writers[t].write(frame)
                rows_in[t.value] += res.rows_in[t]
                kept[t.value] += len(frame)
            for t, q in res.quarantined.items():
                if len(q):
                    if q_tmp is None:
                        q_tmp = temp_sibling(q_target)
                    q_writers.setdefault(t, _TableWriter(q_tmp / t.filename)).write(q)
                    bad[t.value] += len(q)
            stats.add(res.clean)
            bar.update(res.rows_in[Table.USERS])
        bar.close()
        for t, w in writers.items():
            w.close(empty.get(t, pd.DataFrame()))
        for w in q_writers.values():
            w.close(pd.DataFrame())

        summary = IngestSummary(
            dataset=card.name,
            run_id=run_id,
            output=str(target),
            quarantine=str(q_target) if q_tmp else None,
            rows_in={t.value: rows_in[t.value] for t in Table},
            rows_kept={t.value: kept[t.value] for t in Table},
            rows_quarantined={t.value: bad[t.value] for t in Table},
            reasons={f"{t.value}: {c}": n for (t, c), n in validator.failed_checks.most_common()},
            users_per_split={s.value: stats.splits[s.value] for s in Split},
            positive_rate=stats.rates(card.task_names),
            seconds=0.0,
            provenance=dict(raw.provenance),
        )
        if q_tmp is not None:
            write_text(q_tmp / "summary.json", summary.to_json())
            replace_dir(q_tmp, q_target)
            q_tmp = None
        _check_dataset(card, summary, stats)
        if summary.bad_share > max_bad_share:
            worst = "\n".join(f"  {n:>8,}  {k}" for k, n in list(summary.reasons.items())[:5])
            raise TooManyBadRows(
                f"{summary.bad_share:.1%} of the rows of {card.name!r} were quarantined, above the limit "
                f"of {max_bad_share:.1%}; nothing was published. Worst checks:\n{worst}\n"
                f"Rows and reasons: {q_target}. Raise the limit with max_bad_share=... if this is expected."
            )
        write_text(tmp / CARD_FILENAME, card.to_yaml())
        write_text(tmp / MANIFEST, _manifest(card, summary, stats))
        _keep_derived(target, tmp)
        replace_dir(tmp, target)
        tmp = None
        summary.seconds = time.perf_counter() - start
        return summary
    finally:
        bar.close()
        for p in (tmp, q_tmp):
            if p is not None and p.exists():
                shutil.rmtree(p, ignore_errors=True)


def _manifest(card: DatasetCard, summary: IngestSummary, stats: _Stats) -> str:
    """`manifest.json`: what the published version holds (valid JSON: a rate without labels is null)."""
    manifest = {
        "dataset": card.name,
        "rows": summary.rows_kept,
        "users_per_split": summary.users_per_split,
        "positive_rate": summary.positive_rate,
        "events_per_source": dict(sorted(stats.sources.items())),
        "provenance": summary.provenance,
    }
    return json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _keep_derived(old: Path, new: Path) -> None:
    """Carry files derived from a dataset (UserQA...) into its new version when the data is unchanged.

    Only when every file ingestion writes is byte-identical: derived files of changed data are stale
    and must be rebuilt, so they are left behind with the old version.
    """
    if not old.is_dir():
        return
    ours = {p.name for p in new.iterdir()}
    if any(
        not (old / name).is_file() or (old / name).read_bytes() != (new / name).read_bytes() for name in ours
    ):
        return
    for p in old.iterdir():
        if p.name not in ours and not p.name.startswith("."):
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, new / p.name)


def _check_dataset(card, summary: IngestSummary, stats: _Stats) -> None:
    """Dataset-level rules that no single row breaks."""
    problems = []
    if summary.rows_in["users"] == 0:
        problems.append("it has no users at all (empty users table)")
    elif summary.rows_kept["users"] == 0:
        problems.append("no user row passed validation")
    silent = [s for s in card.sequence_sources if stats.sources[s] == 0]
    if summary.rows_kept["users"] and silent:
        problems.append(f"the card declares source(s) {silent} but no valid event has them")
    if problems:
        hint = f" Quarantined rows: {summary.quarantine}." if summary.quarantine else ""
        raise ContractError(f"dataset {card.name!r} cannot be published: " + "; ".join(problems) + "." + hint)


__all__ = ["CHECK", "ContractError", "IngestSummary", "TooManyBadRows", "ingest", "new_run_id"]
