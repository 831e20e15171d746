"""Embedding throughput of the untrained default models on MovieLens-100k, in one run:

1. multi-encoder path on all users: cold (empty encoder cache) and warm universal embeddings, then
   one instruction and six instructions (the card's manual instructions) -> the prefix-reuse ratio
   "six instructions / one instruction" (target: at most 2);
2. the encoder cache: texts encoded by the network in the warm run (target: 0);
3. multi-encoder versus text-only on the same users (`--compare-users`, the first N users by id;
   text-only is about 10x slower per user, so all 943 would take most of an hour on 2 cores).

    python benchmarks/embed_throughput.py           # needs data/movielens-100k (instructue ingest)
    python benchmarks/embed_throughput.py --users 200 --compare-users 32
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import PeakRss, machine, write_result

from components.ingestion import read_tables
from components.modeling import CachedEncoder, InputMode, ModelConfig, UserEmbedder, bf16_default, build_model


def timed(embedder: UserEmbedder, ids: list[int], instructions: list[str | None], batch_size: int) -> float:
    start = time.perf_counter()
    embedder.embed_many(ids, instructions, batch_size=batch_size, progress=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/movielens-100k"))
    p.add_argument("--users", type=int, default=None, help="first N users (default: all)")
    p.add_argument("--compare-users", type=int, default=64, help="users for the text-only comparison")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/embed_throughput.json"))
    args = p.parse_args(argv)

    card, tables = read_tables(args.data)
    ids = tables.users["user_id"].astype(int).tolist()[: args.users]
    bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    instructions = [t.instruction for t in card.tasks]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp, PeakRss() as mem:
        model = build_model(card, tables.users, ModelConfig(bf16=bf16, batch_size=args.batch_size))
        model.encoder = CachedEncoder(model.encoder.encoder, Path(tmp))  # a cold encoder cache
        bf16_used = bf16 if bf16 is not None else bf16_default(model.device)
        emb = UserEmbedder(model, card, tables)
        n = len(ids)

        def row(name: str, seconds: float, users: int, k: int = 1) -> None:
            rows[name] = {"seconds": round(seconds, 2), "users": users, "instructions": k,
                          "users_per_s": round(users / seconds, 2)}  # fmt: skip
            print(f"{name:<44}{seconds:>9.1f} s{users / seconds:>10.2f} users/s", flush=True)

        row("multi-encoder, universal, cold encoder cache", timed(emb, ids, [None], args.batch_size), n)
        texts_before = model.encoder.encoder.forward_texts
        row("multi-encoder, universal, warm cache", timed(emb, ids, [None], args.batch_size), n)
        warm_encoded = model.encoder.encoder.forward_texts - texts_before
        row("multi-encoder, one instruction", timed(emb, ids, instructions[:1], args.batch_size), n)
        row("multi-encoder, six instructions", timed(emb, ids, instructions, args.batch_size), n, 6)

        few = ids[: args.compare_users]
        row(f"multi-encoder, universal, {len(few)} users", timed(emb, few, [None], args.batch_size), len(few))
        text_model = build_model(
            card,
            tables.users,
            ModelConfig(bf16=bf16, batch_size=args.batch_size, input_mode=InputMode.TEXT_ONLY),
        )
        text = UserEmbedder(text_model, card, tables)
        row(f"text-only, universal, {len(few)} users", timed(text, few, [None], args.batch_size), len(few))

    six_over_one = (
        rows["multi-encoder, six instructions"]["seconds"] / rows["multi-encoder, one instruction"]["seconds"]
    )
    multi_over_text = (
        rows[f"multi-encoder, universal, {len(few)} users"]["users_per_s"]
        / rows[f"text-only, universal, {len(few)} users"]["users_per_s"]
    )
    print(f"prefix reuse: six instructions take {six_over_one:.2f}x the time of one (target <= 2)")
    print(f"multi-encoder / text-only throughput on the same {len(few)} users: {multi_over_text:.1f}x")
    print(f"encoder cache: {warm_encoded} texts encoded in the warm run (target 0)")
    report = {
        "benchmark": "embed_throughput",
        "dataset": card.name,
        "backbone": model.config.backbone,
        "encoder": model.config.encoder,
        "bf16": bool(bf16_used),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "machine": machine(),
        "rows": rows,
        "six_over_one_instruction": round(six_over_one, 3),
        "multi_encoder_over_text_only": round(multi_over_text, 2),
        "warm_run_texts_encoded": warm_encoded,
        "peak_rss_mb": round(mem.peak / 2**20, 1),
    }
    write_result(args.out, report)
    return report


if __name__ == "__main__":
    main()
