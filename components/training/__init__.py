"""Training: the contrastive-autoregressive objective, LoRA, the trainer loop and checkpoints."""

from components.training.batches import route_names
from components.training.checkpoint import STATE_FILE, complete_checkpoints, latest_checkpoint, step_dir
from components.training.config import (
    AFTER_TRAINING,
    ConfigError,
    TrainConfig,
    Tuner,
    load_profile,
    profile_raw,
    validate,
)
from components.training.data import USERQA_FILE, MissingUserQA, load_examples, task_name
from components.training.losses import centre_groups
from components.training.objective import Objective, ObjectiveSettings
from components.training.tracking import (
    MlflowTracker,
    TrackingSettings,
    artifact_uri,
    store_uri,
    tracking_client,
)
from components.training.trainer import INITIAL_DIR, MODEL_DIR, RESULT_FILE, seed_everything, train

__all__ = [
    "AFTER_TRAINING",
    "ConfigError",
    "INITIAL_DIR",
    "MODEL_DIR",
    "MissingUserQA",
    "MlflowTracker",
    "Objective",
    "ObjectiveSettings",
    "RESULT_FILE",
    "STATE_FILE",
    "TrackingSettings",
    "TrainConfig",
    "Tuner",
    "USERQA_FILE",
    "artifact_uri",
    "centre_groups",
    "complete_checkpoints",
    "latest_checkpoint",
    "load_examples",
    "load_profile",
    "profile_raw",
    "route_names",
    "seed_everything",
    "step_dir",
    "store_uri",
    "task_name",
    "tracking_client",
    "train",
    "validate",
]
