"""The `instructue` command line.

    instructue datasets                               # the readers and their options
    instructue ingest movielens-100k                  # read, validate, publish data/, version with DVC
    instructue ingest synthetic-multisource -o n_users=10000 -o noise=0.3
    instructue ingest parquet -o path=/some/folder
    instructue synthesize movielens-100k              # UserQA records for the training users
    instructue train --profile quick --dataset movielens-100k
    instructue embed --dataset movielens-100k --model runs/movielens-100k-quick/model
    instructue evaluate --model runs/movielens-100k-quick/model --dataset movielens-100k
    instructue data push | pull | status | remote URL

User errors (bad input, bad options, a dataset that breaks the contract) print one message and exit
with status 2; a traceback means a bug.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="Train, evaluate, register and serve instruction-aware user embedding models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount_data_app() -> None:
    try:
        from flows.data_cli import data_app
    except ImportError:  # pragma: no cover - the data commands ship with the package
        return
    app.add_typer(data_app, name="data", help="Push, pull and inspect DVC versions of data/.")


_mount_data_app()


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def user_errors() -> tuple[type[BaseException], ...]:
    from components.ingestion.card import CardError
    from components.ingestion.ingest import TooManyBadRows
    from components.ingestion.readers import UnknownReader
    from components.ingestion.validation import ContractError

    errors: list[type[BaseException]] = [CardError, ContractError, TooManyBadRows, UnknownReader,
                                         FileNotFoundError, ValueError]  # fmt: skip
    try:
        from components.ingestion.versioning import VersioningError

        errors.append(VersioningError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def run_flow(flow_fn, **parameters):
    """Run a Prefect flow; a user error inside it exits 2 with its message, anything else raises.

    However the run is stopped (SIGTERM, SIGKILL), Prefect's temporary server goes with it."""
    from flows.shutdown import exit_on_sigterm, server_dies_with_its_parent

    server_dies_with_its_parent()
    exit_on_sigterm()
    state = flow_fn(**parameters, return_state=True)
    if state.is_failed():
        try:
            state.result()
        except user_errors() as e:
            raise fail(str(e)) from None
    return state.result()


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are parsed as YAML scalars (10000 -> int, 0.3 -> float, a/b -> str)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"option {pair!r} must look like key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


@app.command()
def datasets() -> None:
    """List the dataset readers and their options."""
    from components.ingestion.readers import READERS

    for spec in READERS.values():
        typer.echo(f"{spec.name:<24}{spec.summary}")
        for name, field in spec.options.model_fields.items():
            default = "required" if field.is_required() else f"default {field.default!r}"
            typer.echo(f"{'':<28}{name} ({default})")


@app.command()
def ingest(
    dataset: Annotated[
        str, typer.Argument(help="reader name: movielens-100k, synthetic-multisource, parquet")
    ],
    opt: Annotated[list[str], typer.Option("--opt", "-o", help="reader option key=value (repeatable)")] = [],  # noqa: B006
    max_bad_share: Annotated[float, typer.Option(help="stop if more than this share of rows is bad")] = 0.05,
    version: Annotated[bool, typer.Option(help="version data/ with DVC after publishing")] = True,
    commit: Annotated[bool, typer.Option(help="git-commit the new data.dvc (records the version)")] = False,
    push: Annotated[bool, typer.Option(help="push the new data version to the default DVC remote")] = True,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary as JSON here")] = None,
) -> None:
    """Ingest a dataset: read, validate (bad rows to quarantine/), publish data/<name>/, version."""
    from components.ingestion.readers import parse_options

    try:
        options = parse_pairs(opt)
        parse_options(dataset, options)  # fail fast, before any flow starts
    except user_errors() as e:
        raise fail(str(e)) from None

    from flows.ingest import ingest_flow
    from flows.logs import tidy_cli_logs

    tidy_cli_logs(user_errors())
    summary, data_version = run_flow(
        ingest_flow,
        dataset=dataset,
        options=options,
        root=str(root) if root else None,
        max_bad_share=max_bad_share,
        version=version,
        commit=commit,
        push=push,
    )
    typer.echo("")
    typer.echo(summary.to_text())
    if data_version is not None:
        typer.echo(f"data version: {data_version}")
        if not commit:
            typer.echo("record it with: git add data.dvc && git commit -m 'data: ...' (or pass --commit)")
        if push:
            typer.echo("pushed to the default DVC remote: `dvc pull` in another clone restores it")
        else:
            typer.echo("share it with: instructue data push")
    if summary_json:
        summary_json.write_text(summary.to_json() + "\n", encoding="utf-8")


@app.command()
def synthesize(
    dataset: Annotated[str, typer.Argument(help="an ingested dataset under data/")],
    writer: Annotated[
        str, typer.Option(help="template, local (a local LLM) or endpoint (OpenAI-compatible)")
    ] = "template",
    opt: Annotated[list[str], typer.Option("--opt", "-o", help="writer option key=value (repeatable)")] = [],  # noqa: B006
    cfg: Annotated[
        list[str], typer.Option("--set", help="synthesis setting key=value, e.g. paraphrases_per_user=4")
    ] = [],  # noqa: B006
    version: Annotated[bool, typer.Option(help="version data/ with DVC afterwards")] = True,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Synthesise UserQA (instruction, answer) records for the dataset's training users."""
    from components.userqa.synthesize import SynthesisConfig
    from flows.settings import Paths

    try:
        writer_options, settings = parse_pairs(opt), parse_pairs(cfg)
        SynthesisConfig.model_validate(settings)
        folder = Paths.resolve(root).data / dataset
        if not (folder / "events.parquet").exists():
            raise FileNotFoundError(
                f"dataset {dataset!r} is not ingested ({folder}); run `instructue ingest {dataset}`"
            )
        if writer not in ("template", "local", "endpoint"):
            raise ValueError(f"unknown writer {writer!r}; choose template, local or endpoint")
    except user_errors() as e:
        raise fail(str(e)) from None
    from flows.logs import tidy_cli_logs
    from flows.synthesize import synthesize_flow

    tidy_cli_logs(user_errors())
    summary, data_version = run_flow(
        synthesize_flow, dataset=dataset, writer=writer, writer_options=writer_options, config=settings,
        root=str(root) if root else None, version=version,
    )  # fmt: skip
    typer.echo("")
    typer.echo(summary.to_text())
    if data_version is not None:
        typer.echo(f"data version: {data_version}")


@app.command()
def train(
    profile: Annotated[str, typer.Option(help="tiny, quick, paper, or a YAML file")] = "quick",
    dataset: Annotated[
        str, typer.Option(help="an ingested, synthesised dataset under data/")
    ] = "movielens-100k",
    cfg: Annotated[
        list[str], typer.Option("--set", help="override key=value, e.g. steps=50 or model.max_events=32")
    ] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="continue from the newest complete checkpoint")] = False,
    processes: Annotated[int, typer.Option(help="data-parallel processes (torchrun; gloo on CPUs)")] = 1,
    run_dir: Annotated[Path | None, typer.Option(help="default: runs/<dataset>-<profile>/")] = None,
    track: Annotated[bool, typer.Option(help="log to MLflow (mlruns_config/tracking.yaml)")] = True,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Train an InstructUE model on UserQA (contrastive + next-token, LoRA); writes a model folder."""
    from components.training.config import load_profile
    from components.training.data import USERQA_FILE
    from flows.settings import Paths

    try:
        if processes < 1:
            raise ValueError(f"--processes must be >= 1, got {processes}")
        config = load_profile(profile, cfg)
        folder = Paths.resolve(root).data / dataset
        if not (folder / USERQA_FILE).exists():
            raise FileNotFoundError(
                f"{folder / USERQA_FILE} is missing: run `instructue ingest {dataset}` and "
                f"`instructue synthesize {dataset}` first"
            )
    except user_errors() as e:
        raise fail(str(e)) from None
    from flows.logs import tidy_cli_logs
    from flows.train import train_flow

    tidy_cli_logs(user_errors())
    result = run_flow(
        train_flow, dataset=dataset, profile=profile, overrides=cfg, resume=resume, processes=processes,
        run_dir=str(run_dir) if run_dir else None, track=track, root=str(root) if root else None,
    )  # fmt: skip
    losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["final"].items()))
    typer.echo("")
    rates = f"{result['examples_per_s']:.1f} examples/s, {result['tokens_per_s']:.0f} tokens/s"
    typer.echo(f"trained {config.profile} for {result['steps']} steps in {result['wall_s']:.0f} s ({rates})")
    typer.echo(f"final losses: {losses or 'n/a (resumed at the end)'}")
    if result.get("s2sched_s"):
        share = result["s2sched_s"] / max(result["wall_s"], 1e-9)
        typer.echo(f"S2Sched validation passes: {result['s2sched_s']:.0f} s ({share:.1%} of training)")
    if result.get("run_id"):
        typer.echo(f"MLflow run: {result['run_id']}")
    typer.echo(f"model folder: {result['model_dir']}")
    typer.echo(f"embed with:   instructue embed --dataset {dataset} --model {result['model_dir']}")


@app.command()
def merge(
    run: Annotated[Path, typer.Option(help="a training run folder (runs/<dataset>-<profile>)")],
    dataset: Annotated[str, typer.Option(help="the dataset the run trained on (validation probe)")] = (
        "movielens-100k"
    ),
    checkpoint: Annotated[
        list[Path], typer.Option(help="checkpoint folders to merge (repeatable); default: the last --last")
    ] = [],  # noqa: B006
    last: Annotated[int, typer.Option(help="merge the run's last K complete checkpoints")] = 2,
    density: Annotated[float, typer.Option(help="TIES: share of each task vector kept")] = 0.2,
    order: Annotated[
        str, typer.Option(help="trim_first (TIES paper) or elect_first (RecFound code)")
    ] = "trim_first",
    select: Annotated[
        bool, typer.Option(help="score merged / final / best checkpoint on validation; keep the winner")
    ] = True,
    min_gain: Annotated[float, typer.Option(help="the merged model must win by more than this")] = 0.0,
    out: Annotated[Path | None, typer.Option(help="default: <run>/merged")] = None,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level)")] = None,
) -> None:
    """Merge checkpoints of one run with TIES, then keep the best of merged / final / best checkpoint
    on the validation probe (RecFound 4.4)."""
    from components.merging.config import MergeSettings
    from components.merging.merge import merge_run
    from components.merging.ties import Order
    from components.training.checkpoint import complete_checkpoints

    try:
        settings = MergeSettings(last=last, density=density, order=Order(order), min_gain=min_gain)
        chosen = list(checkpoint) or complete_checkpoints(run)[-last:]
        if len(chosen) < 2:
            raise ValueError(f"{run}: merging needs at least 2 checkpoints, found {len(chosen)}")
        if not select:
            report = merge_run(run, chosen, out or run / "merged", density, Order(order))
            typer.echo(f"merged {len(report.checkpoints)} checkpoints (density {density}, {order}) into "
                       f"{out or run / 'merged'}; worst rank-r truncation error "
                       f"{report.max_truncation_error:.1%}")  # fmt: skip
            return
        from flows.merge import merge_and_select_flow

        selection = run_flow(merge_and_select_flow, run=run, dataset=dataset, settings=settings,
                             checkpoints=chosen, out=out, root=root)  # fmt: skip
    except (*user_errors(), KeyError) as e:
        raise fail(str(e)) from None
    typer.echo(selection.table())
    if selection.merge:
        worst = selection.merge["max_truncation_error"]
        typer.echo(f"merged {len(selection.merge['checkpoints'])} checkpoints (density {density}, {order}); "
                   f"worst rank-r truncation error {worst:.1%}")  # fmt: skip
    typer.echo(f"winner: {selection.winner} ({selection.margin_over_final:+.4f} over final) -> "
               f"{selection.winner_dir}")  # fmt: skip
    typer.echo(f"decision written to {run / 'selection.json'}")


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
    universal: Annotated[bool, typer.Option(help="also embed without instruction")] = False,
    split: Annotated[str, typer.Option(help="all, train or probe")] = "all",
    out: Annotated[Path, typer.Option(help="parquet: user_id, instruction, embedding")] = Path(
        "embeddings.parquet"
    ),
    batch_size: Annotated[int | None, typer.Option(help="users per forward pass")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda")] = None,
    seed: Annotated[int, typer.Option(help="--model default: seed of its untrained weights")] = 0,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Embed a dataset's users, universally or under instructions (prefix reuse across instructions)."""
    from components.ingestion.contract import read_tables
    from components.modeling.assets import AssetError
    from components.modeling.config import ModelConfig
    from components.modeling.embed import UserEmbedder, write_embeddings
    from components.modeling.factory import ModelFolderError, build_seeded_model, load_model
    from components.modeling.tuned import tuned_for
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
    typer.echo(f"wrote {len(ids) * len(instructions):,} embeddings of dimension {net.dim} to {out}")


@app.command()
def deploy(
    pool: Annotated[str | None, typer.Option(help="work pool (process pools are created)")] = None,
    cron: Annotated[str | None, typer.Option(help="cron schedule, e.g. '0 3 * * 1'")] = None,
    profile: Annotated[str | None, typer.Option(help="profile parameter: tiny, quick, paper")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset parameter")] = None,
    cfg: Annotated[list[str], typer.Option("--set", help="training override key=value (repeatable)")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option(help="other flow parameter key=value (YAML value)")] = [],  # noqa: B006
    entrypoint: Annotated[str | None, typer.Option(help="flow as path/to/file.py:function")] = None,
    name: Annotated[str, typer.Option(help="deployment entry of prefect.yaml to start from")] = "weekly",
    deployment_name: Annotated[str | None, typer.Option(help="register under this name instead")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA timezone of the cron schedule")] = None,
    paused: Annotated[bool | None, typer.Option("--paused/--active", help="schedule paused")] = None,
    source: Annotated[Path | None, typer.Option(help="code folder for the worker (default: root)")] = None,
    prefect_file: Annotated[Path | None, typer.Option(help="default: <root>/prefect.yaml")] = None,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Register the retraining flow on a cron schedule with a Prefect server (needs PREFECT_API_URL)."""
    from flows.deploy import PREFECT_FILE, DeployError, deploy, load_spec
    from flows.settings import Paths

    project = Paths.resolve(root).root
    try:
        spec = load_spec(prefect_file or project / PREFECT_FILE, name).with_options(
            name=deployment_name, pool=pool, cron=cron, timezone=timezone, entrypoint=entrypoint,
            paused=paused, dataset=dataset, profile=profile, overrides=cfg or None, params=parse_pairs(param),
        )  # fmt: skip
        deployed = deploy(spec, source or project)
    except (DeployError, ValueError) as e:
        raise fail(str(e)) from None
    state = " (paused)" if spec.paused else ""
    typer.echo(f"deployment {deployed.full_name!r} ({deployed.id}) of {spec.entrypoint}")
    typer.echo(f"schedule: {spec.cron} {spec.timezone}{state}; work pool: {spec.pool}")
    typer.echo(f"parameters: {spec.parameters}")
    typer.echo(f"start a worker: prefect worker start --pool {spec.pool}")
    typer.echo(f"run it now:     prefect deployment run '{deployed.full_name}'")


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
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Probe a model (universal, manual and tuned instructions) beside baselines, gate it, write the
    report. Exits 1 when the gate fails."""
    from components.ingestion.card import DatasetCard
    from components.ingestion.contract import CARD_FILENAME
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


# -- registry: gated registration, reviewer promotion, rollback, batch embedding, serving -----------
def _registry(root: Path | None):
    """Project paths, registry settings and a client bound to the registry (no global MLflow state)."""
    from components.registry.settings import RegistrySettings
    from flows.settings import Paths

    paths = Paths.resolve(root)
    settings = RegistrySettings.load(paths.root)
    return paths, settings, settings.client(paths.root)


def _registry_errors() -> tuple[type[BaseException], ...]:
    from components.modeling.assets import AssetError
    from components.modeling.factory import ModelFolderError
    from components.registry.records import RecordError
    from components.registry.register import RegistryError

    return (*user_errors(), RegistryError, RecordError, AssetError, ModelFolderError, KeyError)


@app.command()
def register(
    model_dir: Annotated[Path, typer.Option("--model-dir", help="a model folder (model.json, weights)")],
    dataset: Annotated[str, typer.Option(help="the ingested dataset the model was trained on")],
    report: Annotated[
        Path | None, typer.Option(help="optional: must be the evaluation recorded for these weights")
    ] = None,
    override_reason: Annotated[
        str | None, typer.Option(help="register without a passed, recorded gate; recorded with who")
    ] = None,
    name: Annotated[str | None, typer.Option(help="registered model (default: registry.yaml's name)")] = None,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Register a model folder whose recorded evaluation passed its gate, with alias `challenger`.

    The verdict is read from the evaluation MLflow holds for these exact weights (their sha256),
    never from a file you pass."""
    from components.registry.register import register as register_version

    paths, settings, client = _registry(root)
    name = name or settings.name_for(dataset)
    try:
        done = register_version(
            client, settings.experiment_id(client, paths.root), model_dir=model_dir, report_path=report,
            dataset_dir=paths.data / dataset, name=name, root=paths.root,
            bundle_base_models=settings.bundle_base_models, override_reason=override_reason,
        )  # fmt: skip
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"registered {done.name} version {done.version} (alias challenger; run {done.run_id})")
    typer.echo(f"promote with: instructue promote --model {done.name} --version {done.version} "
               "--reviewer <you> --reason '...'")  # fmt: skip


@app.command()
def promote(
    model: Annotated[str, typer.Option(help="registered model name")],
    version: Annotated[str, typer.Option(help="the version to make champion")],
    reviewer: Annotated[str, typer.Option(help="who approves (recorded)")],
    reason: Annotated[str, typer.Option(help="why (recorded)")],
    override_reason: Annotated[
        str | None, typer.Option(help="promote a version whose gate did not pass; recorded")
    ] = None,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Move alias `champion` to a gated version, recording reviewer, reason, time and the previous one."""
    from components.registry.promote import promote as promote_version

    paths, settings, client = _registry(root)
    try:
        change = promote_version(
            client, model, version, reviewer, reason, settings.locks(paths.root), override_reason
        )
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"{model}: champion is version {change.version} (was {change.previous or 'none'})")


@app.command()
def rollback(
    model: Annotated[str, typer.Option(help="registered model name")],
    reviewer: Annotated[str, typer.Option(help="who rolls back (recorded)")],
    reason: Annotated[str, typer.Option(help="why (recorded)")],
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Restore the champion that the current champion replaced."""
    from components.registry.promote import rollback as rollback_version

    paths, settings, client = _registry(root)
    try:
        change = rollback_version(client, model, reviewer, reason, settings.locks(paths.root))
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"{model}: champion is version {change.version} again (was {change.previous})")


@app.command("embed-batch")
def embed_batch(
    model: Annotated[
        str, typer.Option(help="NAME@ALIAS, NAME/VERSION or models:/...; a bare name: champion")
    ],
    dataset: Annotated[str, typer.Option(help="an ingested dataset under data/")],
    instruction: Annotated[list[str], typer.Option("--instruction", "-i", help="repeatable")] = [],  # noqa: B006
    task: Annotated[list[str], typer.Option(help="a probe task of the card: its manual instruction")] = [],  # noqa: B006
    universal: Annotated[bool, typer.Option(help="also embed without instruction")] = False,
    split: Annotated[str, typer.Option(help="all, train or probe")] = "all",
    out: Annotated[Path, typer.Option(help="parquet: user_id, instruction, embedding")] = Path(
        "embeddings.parquet"
    ),
    batch_size: Annotated[int | None, typer.Option(help="users per forward pass")] = None,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Embed a dataset's users with a registry version (default: the champion) into parquet."""
    from components.ingestion.card import DatasetCard
    from components.ingestion.contract import CARD_FILENAME
    from components.registry.batch import embed_batch as run_batch

    paths, _, client = _registry(root)
    try:
        card = DatasetCard.load(paths.data / dataset / CARD_FILENAME)
        instructions: list[str | None] = [*instruction, *(card.task(t).instruction for t in task)]
        if universal or not instructions:
            instructions.insert(0, None)
        rows, mv = run_batch(client, model, paths.data / dataset, instructions, out, split, batch_size)
    except _registry_errors() as e:
        raise fail(str(e)) from None
    typer.echo(f"wrote {rows:,} embeddings from {mv.name} version {mv.version} to {out}")


@app.command()
def serve(
    model: Annotated[
        str, typer.Option(help="NAME@ALIAS, NAME/VERSION or models:/...; a bare name: champion")
    ],
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 5001,
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """Serve a registry version over REST (MLflow's scoring app, requests bounded and checked)."""
    import os

    from components.registry.batch import ModelRef
    from components.registry.register import RegistryError
    from components.registry.serve import serve_command

    paths, settings, _ = _registry(root)
    try:
        uri = ModelRef.parse(model).uri
    except RegistryError as e:
        raise fail(str(e)) from None
    cmd, env = serve_command(uri, settings.tracking(paths.root), settings.registry(paths.root), host, port)
    typer.echo(f"serving {uri} on http://{host}:{port}/invocations", err=True)
    os.execvpe(cmd[0], cmd, env)


@app.command()
def retrain(
    dataset: Annotated[
        str, typer.Option(help="a dataset reader (see `instructue datasets`)")
    ] = "movielens-100k",
    profile: Annotated[str, typer.Option(help="tiny, quick, paper, or a YAML file")] = "quick",
    cfg: Annotated[list[str], typer.Option("--set", help="profile override key=value (repeatable)")] = [],  # noqa: B006
    option: Annotated[list[str], typer.Option("-o", "--option", help="reader option key=value")] = [],  # noqa: B006
    register: Annotated[bool, typer.Option(help="register the model when its gate passes")] = True,
    track: Annotated[bool, typer.Option(help="log training to MLflow")] = True,
    refresh: Annotated[bool, typer.Option(help="run every step again, ignoring the cache")] = False,
    eval_set: Annotated[
        list[str], typer.Option("--eval-set", help="evaluation setting key=value, e.g. tuning.steps=10")
    ] = [],  # noqa: B006
    root: Annotated[Path | None, typer.Option(help="project root (default: git top-level of cwd)")] = None,
) -> None:
    """The retraining pipeline: ingest, validate, version, synthesize, train, merge, evaluate, gate,
    register. Finished steps with unchanged inputs are skipped."""
    from components.training.config import load_profile
    from flows.logs import tidy_cli_logs
    from flows.retrain import GateFailedError, retrain_flow

    try:
        load_profile(profile, cfg)  # a bad profile fails here, before any step runs
        options, evaluation = parse_pairs(option), parse_pairs(eval_set)
    except user_errors() as e:
        raise fail(str(e)) from None
    tidy_cli_logs(user_errors())
    from flows.shutdown import exit_on_sigterm, server_dies_with_its_parent

    server_dies_with_its_parent()
    exit_on_sigterm()
    state = retrain_flow(dataset=dataset, profile=profile, overrides=cfg, options=options,
                         root=str(root) if root else None, register_model=register, track=track,
                         refresh=refresh, evaluation=evaluation, return_state=True)  # fmt: skip
    try:
        out = state.result()
    except GateFailedError as e:
        typer.secho(f"gate FAILED, nothing registered: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    except user_errors() as e:
        raise fail(str(e)) from None
    ev = out["evaluation"]
    typer.echo("")
    typer.echo(ev["table"])
    typer.echo("")
    typer.echo("step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in out["seconds"].items()))
    sel = out["selection"]
    typer.echo(
        f"merge: {sel['winner']} won the validation probe ({sel['margin_over_final']:+.4f} over final)"
    )
    typer.echo(f"gate: PASSED; report in {ev['folder']}")
    reg = out.get("registered")
    if reg:
        typer.echo(f"registered {reg['name']} version {reg['version']} (alias challenger)")
        typer.echo(f"promote it:  instructue promote --model {reg['name']} --version {reg['version']} "
                   '--reviewer <you> --reason "<why>"')  # fmt: skip


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
