"""Modeling: source encoders, adapters, backbone with `<USER>`, TMoLE layers and embedding extraction."""

from components.modeling.assets import AssetError, default_cache_dir, resolve_backbone, resolve_encoder
from components.modeling.config import RECIPE_SWITCHES, InputMode, Inputs, ModelConfig, Pooling
from components.modeling.embed import UserEmbedder, embeddings_table, write_embeddings
from components.modeling.encoders import CachedEncoder, encoder_identity, read_st_layout
from components.modeling.factory import (
    MODEL_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    ModelFolderError,
    build_model,
    build_seeded_model,
    load_backbone,
    load_encoder,
    load_model,
    load_trainable,
    model_digest,
    pick_device,
    save_model,
    write_model_files,
)
from components.modeling.inputs import GROUP_OVERHEAD, Plan
from components.modeling.lora import LoraSettings
from components.modeling.model import InstructUE, UserBatch
from components.modeling.precision import bf16_default, bf16_units
from components.modeling.prefix_cache import PrefixCache
from components.modeling.profile import UserProfile, build_profiles
from components.modeling.tmole import INSTRUCTION, UNIVERSAL, Branch, Route, TMoLELinear, TMoLESettings
from components.modeling.tuned import TunedInstruction, load_tuned, save_tuned, tuned_for

__all__ = [
    "AssetError",
    "Branch",
    "CachedEncoder",
    "GROUP_OVERHEAD",
    "INSTRUCTION",
    "InputMode",
    "Inputs",
    "InstructUE",
    "LoraSettings",
    "MODEL_FILE",
    "ModelConfig",
    "ModelFolderError",
    "Plan",
    "Pooling",
    "PrefixCache",
    "RECIPE_SWITCHES",
    "Route",
    "TMoLELinear",
    "TMoLESettings",
    "TOKENIZER_DIR",
    "TunedInstruction",
    "UNIVERSAL",
    "UserBatch",
    "UserEmbedder",
    "UserProfile",
    "WEIGHTS_FILE",
    "bf16_default",
    "bf16_units",
    "build_model",
    "build_profiles",
    "build_seeded_model",
    "default_cache_dir",
    "embeddings_table",
    "encoder_identity",
    "load_backbone",
    "load_encoder",
    "load_model",
    "load_trainable",
    "load_tuned",
    "model_digest",
    "pick_device",
    "read_st_layout",
    "resolve_backbone",
    "resolve_encoder",
    "save_model",
    "save_tuned",
    "tuned_for",
    "write_embeddings",
    "write_model_files",
]
