"""Load a registry version by alias or number, and embed a dataset's users with it into parquet.

    served, mv = load_served(client, "instructue-movielens-100k@champion")

Sharded (what the `embed-batch` flow maps over a Prefect task runner, one process or a Dask cluster):

    job = EmbedJob(source=RegistrySource.pin(client, ref, tracking_uri, registry_uri), ...)
    plan, store = plan_embedding(job, out)       # users cut into parts under emb.parquet.parts/<key>/
    results = [embed_shard(job, shard, store.folder) for shard in plan.shards]   # anywhere, any order
    finish_embedding(job, plan, store, out)      # parts -> emb.parquet, the same file as one process

A shard worker loads the model and the dataset once per process (`worker_cached`), not per shard.

The version's artifacts are downloaded through the client's own store (no global tracking URI) and
loaded as the pyfunc; batch embedding then runs the pyfunc's model over the dataset's tables with
prefix reuse across instructions, exactly like `instructue embed` does for a model folder.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from components.common import shards, write_bytes_atomic, write_text
from components.registry.register import CHAMPION, RegistryError
from components.registry.served import ServedEmbedder

_REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))?$")


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """`name@alias`, `name/3` or `models:/...` of either; a bare name means `name@champion`."""
        m = _REF.match(ref.strip())
        if not m:
            raise RegistryError(
                f"model reference {ref!r} must look like NAME@ALIAS, NAME/VERSION or models:/NAME@ALIAS"
            )
        alias, version = m["alias"], m["version"]
        return cls(m["name"], alias if alias or version else CHAMPION, version)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def resolve(client, ref: str | ModelRef):
    """The `ModelVersion` a reference points to."""
    from components.registry.promote import alias_version, model_version

    ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
    if ref.version is not None:
        return model_version(client, ref.name, ref.version)
    version = alias_version(client, ref.name, ref.alias)
    if version is None:
        raise RegistryError(
            f"registered model {ref.name!r} has no alias {ref.alias!r}; "
            f"{'promote a version with `instructue promote`' if ref.alias == CHAMPION else 'set it first'}"
        )
    return model_version(client, ref.name, version)


def download(client, ref: str | ModelRef, dst: Path) -> tuple[Path, object]:
    """Download a version's MLflow model folder into `dst`; returns the folder and the version."""
    import mlflow.artifacts

    mv = resolve(client, ref)
    location = client.get_model_version_download_uri(mv.name, mv.version)
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=location, dst_path=str(dst), tracking_uri=client.tracking_uri
    )
    return Path(folder), mv


def load_served(client, ref: str | ModelRef, dst: Path | None = None) -> tuple[ServedEmbedder, object]:
    """Load a registry version as the pyfunc and return its embedder and the `ModelVersion`."""
    import mlflow.pyfunc

    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="instructue-model-"))
    folder, mv = download(client, ref, dst)
    pyfunc = mlflow.pyfunc.load_model(str(folder))
    return pyfunc.unwrap_python_model().served, mv


def check_compatible(served: ServedEmbedder, card) -> None:
    """The dataset must have the sources and features the model was registered with."""
    want = (served.card.sequence_sources, [f.name for f in served.card.features])
    got = (card.sequence_sources, [f.name for f in card.features])
    if want != got:
        raise RegistryError(
            f"dataset {card.name!r} (sources {got[0]}, features {got[1]}) does not match the model's "
            f"dataset {served.card.name!r} (sources {want[0]}, features {want[1]}); embed it with a "
            "model registered for that dataset"
        )


# -- sharded batch embedding ------------------------------------------------------------------------

PARTS_SUFFIX = ".parts"
MANIFEST_SUFFIX = ".manifest.json"
DEFAULT_SHARD_USERS = 1024


@dataclass(frozen=True)
class RegistrySource:
    """A registry version pinned by number, so every shard embeds with the same weights even when the
    alias moves mid-run; each worker downloads it through the store's URIs (no global MLflow state)."""

    tracking_uri: str
    registry_uri: str
    name: str
    version: str
    run_id: str

    @classmethod
    def pin(cls, client, ref: str | ModelRef, tracking_uri: str, registry_uri: str) -> RegistrySource:
        mv = resolve(client, ref)
        return cls(tracking_uri, registry_uri, mv.name, str(mv.version), mv.run_id or "")

    @property
    def identity(self) -> dict:
        return {"registry": self.name, "version": self.version, "run_id": self.run_id}

    def load(self) -> ServedEmbedder:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        # the folder must outlive the call: a loaded model may read its bundled files lazily
        folder = Path(tempfile.mkdtemp(prefix="instructue-model-"))
        atexit.register(shutil.rmtree, folder, True)
        served, _ = load_served(client, ModelRef(self.name, version=self.version), folder)
        return served


@dataclass(frozen=True)
class EmbedJob:
    """Everything a shard task needs, small and picklable (it travels to every Dask worker)."""

    source: RegistrySource
    dataset_dir: str
    instructions: tuple[str | None, ...]
    split: str = "all"
    batch_size: int | None = None
    shard_users: int = DEFAULT_SHARD_USERS


def _dataset(dataset_dir: str, split: str):
    from components.ingestion import read_tables

    card, tables = read_tables(Path(dataset_dir))
    if split != "all":
        if split not in ("train", "probe"):
            raise ValueError(f"split must be all, train or probe, not {split!r}")
        tables.users = tables.users[tables.users["split"] == split]
    return card, tables


def _cached_dataset(job: EmbedJob, key: str, timed: bool = False):
    """The dataset's tables, read once per process for a plan (the driver's plan and an in-process
    shard share them); with `timed`, also the seconds this call spent reading."""
    value, seconds = shards.worker_cached(
        ("dataset", job.dataset_dir, job.split, key), lambda: _dataset(job.dataset_dir, job.split)
    )
    return (value, seconds) if timed else value


def _dataset_digest(dataset_dir: str) -> dict[str, str]:
    from components.ingestion import Table

    folder = Path(dataset_dir)
    return {t.value: shards.file_digest(folder / t.filename) for t in Table if (folder / t.filename).exists()}


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + PARTS_SUFFIX)


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + MANIFEST_SUFFIX)


def plan_embedding(job: EmbedJob, out: Path) -> tuple[shards.ShardPlan, shards.ShardStore, bool]:
    """The shard plan for `job`, its part store opened under `<out>.parts/`, and whether `out` is
    already the finished output of exactly these inputs (then there is nothing to do)."""
    inputs = {
        "model": job.source.identity,
        "dataset": _dataset_digest(job.dataset_dir),
        "instructions": list(job.instructions),
        "split": job.split,
        "batch_size": job.batch_size,
        "shard_users": job.shard_users,
    }
    key = shards.inputs_key("embed-1", inputs)
    card, tables = _cached_dataset(job, key)
    served, _ = shards.worker_cached(("model", job.source), job.source.load)
    check_compatible(served, card)
    plan = shards.ShardPlan.of(tables.users["user_id"].astype(int), job.shard_users, key)
    manifest = manifest_path(out)
    if out.exists() and manifest.exists() and json.loads(manifest.read_text())["key"] == plan.key:
        return plan, shards.ShardStore(parts_dir(out), plan), True
    return plan, shards.ShardStore(parts_dir(out), plan).open(inputs), False


def embed_shard(job: EmbedJob, shard: shards.Shard, folder: str | Path) -> shards.ShardResult:
    """Embed one shard's users under every instruction into its part (skipped if already written)."""
    from components.modeling import UserEmbedder, embeddings_table

    part = Path(folder) / shard.name
    if part.exists():
        return shards.ShardResult.reused_part(shard)
    started_at = time.time()
    served, t_model = shards.worker_cached(("model", job.source), job.source.load)
    key = Path(folder).name  # the part folder is named by the inputs' key
    (card, tables), t_data = _cached_dataset(job, key, timed=True)
    embedder, _ = shards.worker_cached(
        ("embedder", job.source, key), lambda: UserEmbedder(served.model, card, tables)
    )
    start = time.perf_counter()
    vectors = embedder.embed_many(list(shard.user_ids), list(job.instructions), batch_size=job.batch_size)
    table = embeddings_table(shard.user_ids, vectors)
    write_bytes_atomic(part, shards.parquet_bytes(table))
    return shards.ShardResult(
        shard.index, len(shard.user_ids), table.num_rows, time.perf_counter() - start,
        t_model + t_data, shards.worker_name(), started_at=started_at, ended_at=time.time(),
    )  # fmt: skip


def finish_embedding(job: EmbedJob, plan: shards.ShardPlan, store: shards.ShardStore, out: Path) -> int:
    """Parts -> `out`, rows in the one-process order (instruction by instruction, users in dataset
    order); the manifest beside it records the inputs' key; the parts go. Returns the rows written."""
    import numpy as np
    import pyarrow as pa

    missing = store.missing()
    if missing:
        raise RuntimeError(f"{len(missing)} shard(s) of {len(plan)} have no part, e.g. {missing[0].name}")
    table = pa.concat_tables([store.read(i) for i in range(len(plan))])
    rank = {label: k for k, label in enumerate(job.instructions)}
    order = np.argsort([rank[x] for x in table.column("instruction").to_pylist()], kind="stable")
    write_bytes_atomic(out, shards.parquet_bytes(table.take(pa.array(order))))
    write_text(
        manifest_path(out),
        json.dumps({"key": plan.key, "shards": len(plan), "rows": table.num_rows}, indent=2) + "\n",
    )
    store.remove()
    return table.num_rows
