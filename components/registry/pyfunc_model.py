"""The MLflow models-from-code file of an InstructUE model version.

MLflow copies this file into the logged model and runs it on load; it defines the pyfunc class and
hands an instance to `mlflow.models.set_model`. Nothing is pickled: the weights arrive as the
artifacts `model` (model.json, trainable.safetensors, tokenizer/), `card` (the dataset's
schema.yaml) and, when bundled, `backbone` and `encoder` (safetensors folders); the project code
arrives as the model's `code/` folder. Do not import this module elsewhere: it registers the model
with MLflow as a side effect, which is what the file is for. See `register.py`.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class InstructUEPyfunc(PythonModel):
    """Request records (see `components/registry/records.py`) -> one embedding per record."""

    def load_context(self, context) -> None:
        from components.registry.served import ServedEmbedder

        artifacts = context.artifacts
        config = context.model_config or {}
        self.served = ServedEmbedder.from_paths(
            artifacts["model"],
            artifacts["card"],
            backbone_dir=artifacts.get("backbone"),
            encoder_dir=artifacts.get("encoder"),
            device=config.get("device"),
        )

    def predict(self, context, model_input, params=None):
        import pandas as pd

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from components.registry.records import RecordError

        batch_size = (params or {}).get("batch_size") or None
        try:
            return self.served.embed_records(model_input, batch_size=batch_size)
        except RecordError as e:  # the caller's mistake: a 400 that names the record, not a 500
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(InstructUEPyfunc())
