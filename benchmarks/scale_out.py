"""Sharded batch embedding on 1 and 2 Dask workers against one process, in one run:

1. `plain`: the one-process path with no shards and no Prefect (`UserEmbedder.embed_many`) over
   every user, with an empty encoder cache: it encodes every event text once, so every later row
   finds them cached (the encoder cache is shared by all runs; a row after a cold one must not be
   compared with it: an earlier version of this script did, see README "Scale-out");
2. `one process`: the `embed-batch` flow with its default runner (shards, one worker thread);
3. `dask N`: the same flow on a local Dask cluster of N single-thread worker processes.

Each row gives users/s, and for the flows where the time went: fixed costs (flow and cluster start,
the plan, joining the parts) and the overhead per shard (map time, times workers, less the shards'
own work and model loading, per shard: scheduling, Prefect task states, part writes). The outputs
of every row are checked to be the same vectors. The model is the untrained default (SmolLM2-135M +
MiniLM), registered with an override into a temporary store; data: the synthetic generator.

    python benchmarks/scale_out.py                        # 20,000 users, workers 1 and 2
    python benchmarks/scale_out.py --users 2000 --shard-users 250
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import machine, write_result

from components.ingestion import SyntheticOptions, ingest, read_synthetic, read_tables
from components.modeling import ModelConfig, UserEmbedder, build_model, save_model, write_embeddings
from components.registry import RegistrySettings, register
from flows.embed_batch import embed_batch_flow
from flows.sharding import ShardRunner

NAME = "instructue-scale-out"


def _setup(root: Path, users: int) -> tuple[Path, str]:
    """data/<synthetic> with `users` users and one registered untrained default model."""
    ingest(read_synthetic(SyntheticOptions(n_users=users)), root / "data", root / "quarantine", progress=True)
    dataset = next(p.name for p in (root / "data").iterdir() if p.is_dir())
    (root / "mlruns_config").mkdir(parents=True, exist_ok=True)
    (root / "mlruns_config" / "registry.yaml").write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "artifact_root": (root / "art").as_uri(),
        "lock_dir": str(root / "locks"), "bundle_base_models": False,
    }))  # fmt: skip
    card, tables = read_tables(root / "data" / dataset)
    model_dir = save_model(build_model(card, tables.users, ModelConfig()), root / "model")
    settings = RegistrySettings.load(root)
    client = settings.client(root)
    register(
        client, settings.experiment_id(client, root), model_dir=model_dir,
        dataset_dir=root / "data" / dataset, name=NAME, root=root, bundle_base_models=False,
        override_reason="scale-out benchmark: untrained",
    )  # fmt: skip
    return model_dir, dataset


def _vectors(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return np.stack(pq.read_table(path).column("embedding").to_numpy(zero_copy_only=False))


def _timeline(result) -> dict[str, float]:
    """From the shards' start and end times: how long each worker took to start its first shard
    (cluster start, imports, unpickling), its model load, the idle gap between two of its shards
    (scheduling, Prefect task states, returning the result), and its users per second of work."""
    by_worker: dict[str, list] = {}
    for r in result.shards:
        by_worker.setdefault(r.worker, []).append(r)
    firsts, gaps = [], []
    for shards in by_worker.values():
        shards.sort(key=lambda r: r.started_at)
        firsts.append(shards[0].started_at - result.map_started_at)
        gaps += [b.started_at - a.ended_at for a, b in zip(shards, shards[1:], strict=False)]
    work = sum(r.seconds for r in result.shards)
    return {
        "first_shard_start_s": round(float(np.mean(firsts)), 2),
        "model_load_s_per_worker": round(sum(r.load_seconds for r in result.shards) / len(by_worker), 2),
        "gap_between_shards_s": round(float(np.mean(gaps)) if gaps else 0.0, 3),
        "users_per_worker_second": round(sum(r.users for r in result.shards) / work, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="Dask runs (none: one process)")
    p.add_argument("--shard-users", type=int, default=500)
    p.add_argument("--plain-users", type=int, default=None, help="users of the no-shard pass (default all)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_out.json"))
    args = p.parse_args(argv)

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        root = Path(tmp)
        os.environ["INSTRUCTUE_CACHE"] = str(root / "cache")
        model_dir, dataset = _setup(root, args.users)
        from components.modeling import load_model

        card, tables = read_tables(root / "data" / dataset)
        ids = tables.users["user_id"].astype(int).tolist()
        plain_ids = ids[: args.plain_users]
        start = time.perf_counter()
        embedder = UserEmbedder(load_model(model_dir), card, tables)
        vectors = embedder.embed_many(plain_ids, [None], progress=True)
        write_embeddings(root / "plain.parquet", plain_ids, vectors)
        plain = time.perf_counter() - start
        rows["plain"] = {"workers": 1, "users": len(plain_ids), "seconds": round(plain, 1),
                         "users_per_s": round(len(plain_ids) / plain, 2)}  # fmt: skip
        reference = _vectors(root / "plain.parquet")
        del embedder

        runners = [("one process", ShardRunner())] + [
            (f"dask {n}", ShardRunner(workers=n)) for n in args.workers
        ]
        for label, runner in runners:
            out = root / f"{label.replace(' ', '-')}.parquet"
            start = time.perf_counter()
            result = runner.apply(embed_batch_flow)(
                model=f"{NAME}/1", dataset=dataset, instructions=[None], out=str(out),
                shard_users=args.shard_users, root=str(root),
            )  # fmt: skip
            wall = time.perf_counter() - start
            s = result.summary
            workers = int(s["workers"])
            timeline = _timeline(result)
            rows[label] = {
                "workers": workers,
                "shards": int(s["shards"]),
                "seconds": round(wall, 1),
                "users_per_s": round(len(ids) / wall, 2),
                "fixed_seconds": round(wall - s["map_seconds"], 2),
                "map_seconds": round(s["map_seconds"], 1),
                **timeline,
                "users": len(ids),
                # bf16 rounding: a user's vector depends on the padded length of its batch
                "max_abs_diff_vs_plain": float(np.abs(_vectors(out)[: len(plain_ids)] - reference).max()),
            }
            if label != "one process":
                one = root / "one-process.parquet"
                rows[label]["max_abs_diff_vs_one_process"] = float(
                    np.abs(_vectors(out) - _vectors(one)).max()
                )
            print(f"{label:<14}{wall:>9.1f} s{len(ids) / wall:>9.2f} users/s", flush=True)

    head = ("workers", "s", "users/s", "fixed s", "1st shard", "load s", "gap s", "u/worker-s", "diff")
    widths = (8, 8, 9, 9, 10, 8, 7, 11, 9)
    print(f"\n{'run':<14}" + "".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for label, r in rows.items():
        print(f"{label:<14}{r['workers']:>8}{r['seconds']:>8.1f}{r['users_per_s']:>9.2f}"
              f"{r.get('fixed_seconds', 0):>9.1f}{r.get('first_shard_start_s', 0):>10.1f}"
              f"{r.get('model_load_s_per_worker', 0):>8.1f}{r.get('gap_between_shards_s', 0):>7.2f}"
              f"{r.get('users_per_worker_second', r['users_per_s']):>11.2f}"
              f"{r.get('max_abs_diff_vs_plain', 0):>9.1e}")  # fmt: skip
    report = {
        "benchmark": "scale_out",
        "users": args.users,
        "shard_users": args.shard_users,
        "model": "untrained default (smollm2-135m-instruct + all-minilm-l6-v2), universal embedding",
        "machine": machine(),
        "rows": rows,
    }
    write_result(args.out, report)
    return report


if __name__ == "__main__":
    main()
