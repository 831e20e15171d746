"""Rebuild `data/` from the packages when no DVC remote holds the version `data.dvc` names.

    version = rebuild_data(paths, ["movielens-100k"])   # ingest + UserQA (template writer), checked

The embedded datasets are a pure function of their package files: ingestion is deterministic (the
contract's canonical order, exact ids) and the template writer is seeded, so the same reader and
settings give byte-identical files and DVC's hash. The rebuilt folder is versioned and its hash
compared with the committed pointer; on a mismatch the pointer is restored and the caller told.
Plain component calls (no Prefect run): this is what `instructue data pull` falls back to.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.ingestion import ingest, read_dataset, versioning
from components.userqa import SynthesisConfig, make_writer, synthesize
from flows.settings import Paths

EMBEDDED = ("movielens-100k",)  # readers whose default options read files shipped in a package


class RebuildMismatch(versioning.VersioningError):
    """The rebuilt data does not hash to `data.dvc`'s version (the pointer is left as it was)."""


def rebuild_data(paths: Paths, datasets: Sequence[str] = EMBEDDED) -> versioning.DataVersion:
    """Ingest each dataset with its reader's defaults, synthesize its UserQA with the template writer
    and the default settings, version `data/`, and check the hash against the committed pointer.

    Raises:
        RebuildMismatch: the result hashes differently (`data.dvc` is restored, the files stay for
            inspection).
    """
    pointer_file = paths.root / f"{paths.data_dir}.dvc"
    committed = pointer_file.read_text(encoding="utf-8") if pointer_file.is_file() else None
    expected = versioning.read_pointer(paths.root, paths.data_dir).md5 if committed else None
    for name in datasets:
        ingest(read_dataset(name), paths.data, paths.quarantine, progress=False)
        synthesize(paths.data / name, make_writer("template"), SynthesisConfig())
    versioning.ensure_dvc_repo(paths.root)
    version = versioning.version_data(paths.root, paths.data_dir)
    if expected is not None and version.md5 != expected:
        pointer_file.write_text(committed, encoding="utf-8")
        raise RebuildMismatch(
            f"the rebuilt {paths.data_dir}/ hashes to {version.md5}, not {expected} as {pointer_file.name} "
            f"says: data.dvc names data that {', '.join(datasets)} alone does not make (another dataset, "
            "or other settings); pull it from the remote that holds it (`instructue data remote URL`)"
        )
    return version
