"""`instructue evaluate | embed`: linear-probe evaluation with its gate, and embeddings of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import app, fail, parse_pairs, run_flow, user_errors
from flows.cli.options import BatchOption, OutOption, RootOption, SplitOption, UniversalOption


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="a model folder, e.g. runs/movielens-100k-quick/model")],
    dataset: Annotated[str, typer.Option(help="an ingested dataset under data/")] = "movielens-100k",
    report_dir: Annotated[
        Path | None, typer.Option(help="default: <run>/evaluation/ (<run>/evaluation-<name>/ for others)")
    ] = None,
    cfg: Annotated[
        list[str], typer.Option("--set", help="setting key=value, e.g. tuning.steps=20 or seeds=[0,1,2]")
    ] = [],  # noqa: B006
    champion_report: Annotated[
        Path | None, typer.Option(help="the registry champion's report.json (per-task AUC regression gate)")
    ] = None,
    track: Annotated[bool, typer.Option(help="log the report to MLflow (the training run if known)")] = True,
    root: RootOption = None,
) -> None:
    """Probe a model (universal, manual and tuned instructions) beside baselines, gate it, write the
    report. Exits 1 when the gate fails."""
    from components.ingestion import CARD_FILENAME, DatasetCard
    from flows.evaluate import build_settings, champion_from_report
    from flows.settings import Paths

    paths = Paths.resolve(root)
    try:
        folder = paths.data / dataset
        if not (folder / CARD_FILENAME).is_file():
            raise FileNotFoundError(
                f"dataset {dataset!r} is not ingested ({folder}); run `instructue ingest {dataset}` first"
            )
        if not (model / "model.json").is_file():
            raise FileNotFoundError(f"{model} is not a model folder: model.json is missing")
        overrides = {"progress": True, **parse_pairs(cfg)}  # progress bars unless progress=false
        settings = build_settings(paths.root, dataset, overrides)
        card = DatasetCard.load(folder / CARD_FILENAME)
        for t in settings.tasks or []:
            card.task(t)
        champion = champion_from_report(champion_report) if champion_report else None
    except (*user_errors(), KeyError) as e:
        raise fail(str(e)) from None
    from flows.evaluate import evaluate_flow
    from flows.logs import tidy_cli_logs

    tidy_cli_logs(user_errors())
    out = run_flow(
        evaluate_flow, model=str(model), dataset=dataset, report_dir=str(report_dir) if report_dir else None,
        overrides=overrides, champion=champion, track=track, root=str(paths.root),
    )  # fmt: skip
    gate = out["report"]["gate"]
    typer.echo("")
    typer.echo(out["table"])
    typer.echo("")
    typer.echo(f"gate: {'PASSED' if gate['passed'] else 'FAILED'} (variant {gate.get('variant') or 'none'})")
    for reason in gate["reasons"]:
        typer.echo(f"  - {reason}")
    typer.echo(f"report: {out['folder']}")
    if out.get("run_id"):
        typer.echo(f"MLflow run: {out['run_id']}")
    if not gate["passed"]:
        raise typer.Exit(code=1)


@app.command()
def embed(
    dataset: Annotated[str, typer.Option(help="an ingested dataset under data/")] = "movielens-100k",
    model: Annotated[
        str, typer.Option(help="a model folder, or 'default' (untrained default models)")
    ] = "default",
    instruction: Annotated[
        list[str], typer.Option("--instruction", "-i", help="repeatable; none gives universal embeddings")
    ] = [],  # noqa: B006
    task: Annotated[
        list[str], typer.Option(help="a probe task of the card: use its manual instruction")
    ] = [],  # noqa: B006
    tuned: Annotated[
        list[str], typer.Option(help="a task: use its tuned instruction saved in the model folder")
    ] = [],  # noqa: B006
    universal: UniversalOption = False,
    split: SplitOption = "all",
    out: OutOption = Path("embeddings.parquet"),
    batch_size: BatchOption = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    seed: Annotated[int, typer.Option(help="--model default: seed of its untrained weights")] = 0,
    root: RootOption = None,
) -> None:
    """Embed a dataset's users, universally or under instructions (prefix reuse across instructions)."""
    from components.ingestion import read_tables
    from components.modeling import (
        AssetError,
        ModelConfig,
        ModelFolderError,
        UserEmbedder,
        build_seeded_model,
        load_model,
        tuned_for,
        write_embeddings,
    )
    from flows.settings import Paths

    paths = Paths.resolve(root)
    try:
        card, tables = read_tables(paths.data / dataset)
        instructions: list = [*instruction, *(card.task(t).instruction for t in task)]
        if tuned and model == "default":
            raise ValueError("--tuned needs --model <folder>: tuned instructions are saved with a model")
        instructions += tuned_for(Path(model), tuned) if tuned else []
        if universal or not instructions:
            instructions.insert(0, None)
        if split != "all":
            if split not in ("train", "probe"):
                raise ValueError(f"--split must be all, train or probe, not {split!r}")
            tables.users = tables.users[tables.users["split"] == split]
        overrides = {k: v for k, v in {"batch_size": batch_size, "device": device}.items() if v is not None}
        if model == "default":
            net = build_seeded_model(card, tables.users, ModelConfig(**overrides), seed=seed)
            typer.echo(f"untrained default model, weights drawn from seed {seed}", err=True)
        else:
            net = load_model(Path(model), **overrides)
    except (*user_errors(), AssetError, ModelFolderError, KeyError) as e:
        raise fail(str(e)) from None
    ids = tables.users["user_id"].astype(int).tolist()
    typer.echo(
        f"embedding {len(ids):,} users of {dataset} under {len(instructions)} instruction(s)", err=True
    )
    vectors = UserEmbedder(net, card, tables).embed_many(ids, instructions, progress=True)
    write_embeddings(out, ids, vectors)
    typer.echo(f"wrote {len(ids) * len(instructions):,} embeddings of dimension {net.embedding_dim} to {out}")
