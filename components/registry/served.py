"""A model folder plus its dataset card, embedding request records (see `records.py`).

The registry's pyfunc holds one of these; the batch command and tests use it directly:

    served = ServedEmbedder.from_paths(model_dir, card_path, backbone_dir, encoder_dir)
    vectors = served.embed_records(records)        # (n, dim) float32, one row per record

Records become contract tables whose users are the record rows, so they go through the same
`UserEmbedder` path as `instructue embed` and get the same vectors as the model folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.ingestion import DatasetCard
from components.modeling import InstructUE, UserEmbedder
from components.registry.records import check_card, instructions_of, tables_from_records


class ServedEmbedder:
    def __init__(self, model: InstructUE, card: DatasetCard):
        self.model, self.card = model, check_card(card)

    @classmethod
    def from_paths(
        cls,
        model_dir: str | Path,
        card_path: str | Path,
        backbone_dir: str | Path | None = None,
        encoder_dir: str | Path | None = None,
        cache_dir: str | Path | None = None,
        device: str | None = None,
    ) -> ServedEmbedder:
        """Load a model folder; bundled base-model folders replace the aliases in its model.json."""
        from components.modeling import load_model

        overrides = {}
        if backbone_dir:
            overrides["backbone"] = str(backbone_dir)
        if encoder_dir:
            overrides["encoder"] = str(encoder_dir)
        model = load_model(
            Path(model_dir), Path(cache_dir) if cache_dir else None, device=device, **overrides
        )
        return cls(model, DatasetCard.load(card_path))

    @property
    def dim(self) -> int:
        return self.model.embedding_dim

    def embed_records(self, records: pd.DataFrame, batch_size: int | None = None) -> np.ndarray:
        """(n, dim) float32: each record under its own instruction (or universal), in record order."""
        records = records.reset_index(drop=True)
        instructions = instructions_of(self.card, records)
        out = np.zeros((len(records), self.dim), dtype=np.float32)
        if not len(records):
            return out
        embedder = UserEmbedder(self.model, self.card, tables_from_records(self.card, records))
        for instruction in dict.fromkeys(instructions):
            rows = [i for i, x in enumerate(instructions) if x == instruction]
            out[rows] = embedder.embed(rows, instruction, batch_size=batch_size)
        return out
