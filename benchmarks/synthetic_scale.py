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
import json
import os
import platform
import resource
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from components.ingestion.contract import Table
from components.ingestion.synthetic import SyntheticOptions, read_synthetic

try:
    from components.ingestion.ingest import ingest
except ImportError:  # plain generate + write needs nothing else
    ingest = None

DEFAULTS = SyntheticOptions.model_fields


class PeakRss:
    """Samples this process's resident memory in a background thread; the peak also from getrusage."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        # ru_maxrss is in KiB on Linux; it catches spikes shorter than the sampling period
        self.peak = max(self.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def machine() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "node": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


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
    if ingest is not None:
        p.add_argument("--full-ingest", action="store_true", help="run ingest() (validation) instead")
    args = p.parse_args(argv)
    options = SyntheticOptions(n_users=args.n_users, chunk_users=args.chunk_users, seed=args.seed,
                               noise=args.noise)  # fmt: skip
    mode = "full_ingest" if getattr(args, "full_ingest", False) else "generate_and_write"
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
