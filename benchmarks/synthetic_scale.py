"""Scale benchmark of the `synthetic-multisource` reader: generate chunk by chunk and write parquet.

Plain mode appends every chunk to one parquet file per table (zstd, as ingestion writes them) in a
temporary folder, and measures wall time (generation and writing apart), peak resident memory,
rows per table and throughput. `--full-ingest` runs the real `ingest` (validation, quarantine,
publishing) instead. The result is printed and written as JSON that names the machine.

    python benchmarks/synthetic_scale.py                                  # 1,000,000 users
    python benchmarks/synthetic_scale.py --n-users 100000 --chunk-users 25000 --noise 0.5
    python benchmarks/synthetic_scale.py --n-users 100000 --full-ingest
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from common import PeakRss, machine, write_result

from components.ingestion import SyntheticOptions, Table, ingest, read_synthetic

DEFAULTS = SyntheticOptions.model_fields


def generate_and_write(options: SyntheticOptions, folder: Path) -> dict:
    """Append every chunk of every table to `folder/<table>.parquet`; time generation and writing apart."""
    raw = read_synthetic(options)
    writers: dict[Table, pq.ParquetWriter] = {}
    rows: Counter[str] = Counter()
    gen_s = write_s = 0.0
    n_chunks = 0
    chunks = iter(raw.chunks)
    try:
        while True:
            t = time.perf_counter()
            chunk = next(chunks, None)
            gen_s += time.perf_counter() - t
            if chunk is None:
                break
            n_chunks += 1
            t = time.perf_counter()
            for table, frame in chunk.items():
                arrow = pa.Table.from_pandas(frame, preserve_index=False)
                if table not in writers:
                    writers[table] = pq.ParquetWriter(
                        folder / table.filename, arrow.schema, compression="zstd"
                    )
                writers[table].write_table(arrow)
                rows[table.value] += len(frame)
            write_s += time.perf_counter() - t
    finally:
        for w in writers.values():
            w.close()
    return {"generate_s": gen_s, "write_s": write_s, "chunks": n_chunks, "rows": dict(rows)}


def full_ingest(options: SyntheticOptions, folder: Path) -> dict:
    raw = read_synthetic(options)
    summary = ingest(raw, data_root=folder / "data", quarantine_root=folder / "quarantine", run_id="bench")
    return {"rows": summary.rows_kept, "rows_quarantined": summary.rows_quarantined,
            "positive_rate": summary.positive_rate}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-users", type=int, default=1_000_000)
    p.add_argument("--chunk-users", type=int, default=DEFAULTS["chunk_users"].default)
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"].default)
    p.add_argument("--noise", type=float, default=DEFAULTS["noise"].default)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON report (default benchmarks/results/synthetic_scale_<mode>.json)")  # fmt: skip
    p.add_argument("--tmp-dir", type=Path, default=None, help="where the temporary parquet folder goes")
    p.add_argument("--full-ingest", action="store_true", help="run ingest() (validation) instead")
    args = p.parse_args(argv)
    options = SyntheticOptions(n_users=args.n_users, chunk_users=args.chunk_users, seed=args.seed,
                               noise=args.noise)  # fmt: skip
    mode = "full_ingest" if args.full_ingest else "generate_and_write"
    args.out = args.out or Path(f"benchmarks/results/synthetic_scale_{mode}.json")

    with tempfile.TemporaryDirectory(prefix="synthetic-scale-", dir=args.tmp_dir) as tmp, PeakRss() as mem:
        start = time.perf_counter()
        result = (full_ingest if mode == "full_ingest" else generate_and_write)(options, Path(tmp))
        wall = time.perf_counter() - start
        sizes = {str(f.relative_to(tmp)): f.stat().st_size for f in Path(tmp).rglob("*.parquet")}
    report = {
        "benchmark": "synthetic_scale",
        "mode": mode,
        "options": options.model_dump(mode="json"),
        "machine": machine(),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(mem.peak / 2**20, 1),
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
        "parquet_mb": {k: round(v / 2**20, 1) for k, v in sorted(sizes.items())},
        "users_per_s": round(options.n_users / wall),
        "events_per_s": round(result["rows"]["events"] / wall),
    }
    print(f"{mode}: {options.n_users:,} users on {report['machine']['cpu_model']} "
          f"({report['machine']['cpu_count']} CPUs, {report['machine']['memory_total_gb']} GB)")  # fmt: skip
    print(f"{'table':<10}{'rows':>14}{'parquet MB':>12}")
    for t in Table:
        mb = sum(
            v for k, v in report["parquet_mb"].items() if k.endswith(t.filename) and "quarantine/" not in k
        )
        print(f"{t.value:<10}{result['rows'][t.value]:>14,}{mb:>12.1f}")
    timing = f"wall {wall:.1f} s"
    if mode == "generate_and_write":
        timing += f" (generate {result['generate_s']:.1f} s, write {result['write_s']:.1f} s, "
        timing += f"{result['chunks']} chunks)"
    print(timing)
    print(f"peak RSS {report['peak_rss_mb']:,.0f} MB; {report['users_per_s']:,} users/s, "
          f"{report['events_per_s']:,} events/s")  # fmt: skip
    write_result(args.out, report)
    return report


if __name__ == "__main__":
    main()
