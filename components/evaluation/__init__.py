"""Evaluation of user embeddings on the downstream tasks of a dataset."""

from components.evaluation.baselines import Baseline, BaselineSettings, compute_baselines, data_fingerprint
from components.evaluation.evaluate import evaluate_model, probe_user_ids
from components.evaluation.gates import load_gate_settings, pick_variant
from components.evaluation.plots import COLORS, s2sched_from_checkpoints, s2sched_from_mlflow
from components.evaluation.probe import format_table, mean_auc, probe_embeddings
from components.evaluation.report import report_dict, table, write_report
from components.evaluation.tracking import EVAL_DIGEST_TAG, log_to_mlflow
from components.evaluation.validation import (
    probe_variants,
    validation_probe,
    validation_scorer,
    validation_users,
)

__all__ = [
    "Baseline",
    "BaselineSettings",
    "COLORS",
    "EVAL_DIGEST_TAG",
    "compute_baselines",
    "data_fingerprint",
    "evaluate_model",
    "format_table",
    "load_gate_settings",
    "log_to_mlflow",
    "mean_auc",
    "pick_variant",
    "probe_embeddings",
    "probe_user_ids",
    "probe_variants",
    "report_dict",
    "s2sched_from_checkpoints",
    "s2sched_from_mlflow",
    "table",
    "validation_probe",
    "validation_scorer",
    "validation_users",
    "write_report",
]
