"""Load a registry version by alias or number, and embed a dataset's users with it into parquet.

    served, mv = load_served(client, "instructue-movielens-100k@champion")
    embed_batch(client, "instructue-movielens-100k@champion", root / "data" / "movielens-100k",
                instructions=[None, "Will this user ..."], out=Path("emb.parquet"))

The version's artifacts are downloaded through the client's own store (no global tracking URI) and
loaded as the pyfunc; batch embedding then runs the pyfunc's model over the dataset's tables with
prefix reuse across instructions, exactly like `instructue embed` does for a model folder.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


def embed_batch(
    client,
    ref: str | ModelRef,
    dataset_dir: Path,
    instructions: Sequence[str | None],
    out: Path,
    split: str = "all",
    batch_size: int | None = None,
) -> tuple[int, object]:
    """Embed every user of the dataset (or one split) under each instruction into `out`.

    Returns the number of rows written and the `ModelVersion` used.
    """
    from components.ingestion import read_tables
    from components.modeling import UserEmbedder, write_embeddings

    card, tables = read_tables(dataset_dir)
    if split != "all":
        if split not in ("train", "probe"):
            raise ValueError(f"split must be all, train or probe, not {split!r}")
        tables.users = tables.users[tables.users["split"] == split]
    with tempfile.TemporaryDirectory(prefix="instructue-model-") as tmp:
        served, mv = load_served(client, ref, Path(tmp))
        check_compatible(served, card)
        ids = tables.users["user_id"].astype(int).tolist()
        vectors = UserEmbedder(served.model, card, tables).embed_many(
            ids, list(instructions), batch_size=batch_size, progress=True
        )
    write_embeddings(out, ids, vectors)
    return len(ids) * len(vectors), mv
