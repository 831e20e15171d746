"""The merge flow: TIES over a run's last checkpoints, then the validation probe picks among the merged
model, the final model and the best single checkpoint (RecFound 4.4).

    instructue merge --run runs/movielens-100k-quick            # writes <run>/merged, <run>/selection.json
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from components.evaluation import validation_scorer
from components.ingestion import read_tables
from components.merging import MergeSettings, Selection, merge_and_select
from flows.settings import Paths


@task(name="merge-and-select")
def merge_and_select_task(run: Path, data_dir: Path, settings: MergeSettings, checkpoints, out) -> Selection:
    card, tables = read_tables(data_dir)
    score = validation_scorer(
        card, tables, settings.validation_seeds, settings.validation_users, progress=True
    )
    return merge_and_select(run, settings, score, checkpoints=checkpoints, out_dir=out)


@flow(name="merge")
def merge_and_select_flow(
    run: Path,
    dataset: str = "movielens-100k",
    settings: MergeSettings | None = None,
    checkpoints: list[Path] | None = None,
    out: Path | None = None,
    root: Path | None = None,
) -> Selection:
    paths = Paths.resolve(root)
    data_dir = paths.data / dataset
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir} is missing: ingest it first (`instructue ingest {dataset}`)")
    selection = merge_and_select_task(Path(run), data_dir, settings or MergeSettings(), checkpoints, out)
    get_run_logger().info(
        "winner %s (scores %s); continuing with %s",
        selection.winner,
        {k: round(v, 4) for k, v in selection.scores.items()},
        selection.winner_dir,
    )
    return selection
