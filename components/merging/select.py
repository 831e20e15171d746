"""Keep the merged model only if it is better (RecFound 4.4): score the merged model, the run's final
model and each merged checkpoint on validation, and name the winner.

    score = validation_scorer(card, tables, settings.validation_seeds)  # evaluation/validation.py
    selection = merge_and_select(run_dir, settings, score)
    selection.winner_dir   # the folder the pipeline continues with

`choose` is the rule, pure: the best single checkpoint is the highest-scoring of the singles (the final
model included; ties go to the later one); the merged model wins only when it beats that by more than
`min_gain`. The decision, every score and the margins are written to `<run>/selection.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from components.merging.config import MergeSettings
from components.merging.merge import MergeReport, merge_run

MERGED = "merged"
FINAL = "final"
MERGED_DIR = "merged"
SELECTION_FILE = "selection.json"


@dataclass(frozen=True)
class Selection:
    scores: dict[str, float]  # candidate -> validation score, singles in step order, merged last
    folders: dict[str, str]
    best_single: str
    winner: str
    margin_over_final: float  # winner's score minus the final model's
    margin_merged_vs_best_single: float | None  # merged minus best single (None: nothing merged)
    details: dict[str, dict]  # candidate -> the scorer's full record
    merge: dict | None = None  # the MergeReport, when a merge ran

    @property
    def winner_dir(self) -> Path:
        return Path(self.folders[self.winner])

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = ["| candidate | validation score | |", "|---|---:|---|"]
        for name, s in self.scores.items():
            mark = "winner" if name == self.winner else ("best single" if name == self.best_single else "")
            rows.append(f"| {name} | {s:.4f} | {mark} |")
        return "\n".join(rows)


def choose(scores: dict[str, float], final: str = FINAL, merged: str | None = MERGED,
           min_gain: float = 0.0) -> tuple[str, str]:  # fmt: skip
    """(winner, best single) from validation scores; `scores` lists singles in step order."""
    if final not in scores:
        raise ValueError(f"the final model {final!r} has no score; candidates: {sorted(scores)}")
    singles = [k for k in scores if k != merged]
    best = max(reversed(singles), key=lambda k: scores[k])  # reversed: a tie goes to the later one
    if merged is not None and merged in scores and scores[merged] > scores[best] + min_gain:
        return merged, best
    return best, best


def candidates(run_dir: Path, checkpoints: list[Path]) -> dict[str, Path]:
    """The singles to score: each checkpoint by its folder name, and the final model as `final`.

    A checkpoint of the run's last step holds the final model's weights; it is scored once, as `final`.
    """
    from components.training import MODEL_DIR, RESULT_FILE

    run_dir = Path(run_dir)
    out = {Path(c).name: Path(c) for c in checkpoints}
    final = run_dir / MODEL_DIR
    if not final.is_dir():  # a run stopped early: its latest checkpoint is its final model
        last = list(out)[-1]
        out[FINAL] = out.pop(last)
        return out
    result = run_dir / RESULT_FILE
    steps = json.loads(result.read_text(encoding="utf-8")).get("steps") if result.is_file() else None
    if steps is not None:
        out = {k: v for k, v in out.items() if k != f"step-{int(steps):08d}"}
    out[FINAL] = final
    return out


def merge_and_select(
    run_dir: Path,
    settings: MergeSettings,
    score: Callable[[Path], float | tuple[float, dict]],
    checkpoints: list[Path] | None = None,
    out_dir: Path | None = None,
) -> Selection:
    """Merge the run's checkpoints (the last `settings.last`, or `checkpoints`), score every candidate
    with `score(folder)` (a float, or (float, details)), choose, and write `<run>/selection.json`."""
    from components.common import write_bytes_atomic
    from components.training import complete_checkpoints

    run_dir = Path(run_dir)
    chosen = (
        [Path(c) for c in checkpoints] if checkpoints else complete_checkpoints(run_dir)[-settings.last :]
    )
    report: MergeReport | None = None
    folders = {k: str(v) for k, v in candidates(run_dir, chosen).items()}
    if settings.enabled:
        if len(chosen) < 2:
            raise ValueError(
                f"{run_dir}: merging needs at least 2 complete checkpoints, found {len(chosen)} "
                "(keep more with `keep_checkpoints`, or set merge.enabled=false)"
            )
        out = Path(out_dir) if out_dir else run_dir / MERGED_DIR
        report = merge_run(run_dir, chosen, out, settings.density, settings.order, settings.rank)
        folders[MERGED] = str(out)
    if not settings.select:  # no scoring: the merge when there is one, else the final model
        folders = {k: v for k, v in folders.items() if k in (FINAL, MERGED)}
    scores, details = {}, {}
    for name, folder in folders.items():
        if not settings.select:
            scores[name], details[name] = float(name == MERGED), {"scored": False}
            continue
        got = score(Path(folder))
        scores[name], details[name] = got if isinstance(got, tuple) else (float(got), {})
    winner, best = choose(scores, FINAL, MERGED if report else None, settings.min_gain)
    selection = Selection(
        scores=scores,
        folders=folders,
        best_single=best,
        winner=winner,
        margin_over_final=scores[winner] - scores[FINAL],
        margin_merged_vs_best_single=scores[MERGED] - scores[best] if report else None,
        details=details,
        merge=asdict(report) | {"max_truncation_error": report.max_truncation_error} if report else None,
    )
    payload = json.dumps({**selection.to_dict(), "settings": settings.model_dump(mode="json")}, indent=2)
    write_bytes_atomic(run_dir / SELECTION_FILE, payload.encode("utf-8"))
    return selection
