"""Shared by the benchmark scripts: which machine ran them, peak memory, writing results."""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import threading
from pathlib import Path

import psutil


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


ROOT = Path(__file__).resolve().parents[1]


# an absolute path into some project's run folder (another clone's, say): kept from `runs/` on
_OTHER_RUNS = re.compile(r"(?<![\w.~])/(?:[\w.+-]+/)+?(?=runs/)")


def portable(value):
    """`value` with this checkout's absolute path made relative, another checkout's run folders
    written from `runs/` on and the home folder written `~`, in every string it holds: results are
    committed, machine paths are not."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, str):
        value = value.replace(f"{ROOT}/", "").replace(str(ROOT), ".")
        return _OTHER_RUNS.sub("", value).replace(str(Path.home()), "~")
    return value


def write_result(path: Path, report: dict) -> None:
    """Write `report` as JSON, atomically (a temp file, then rename), with portable paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(portable(report), indent=2) + "\n")
    tmp.replace(path)
    print(f"written to {path}")


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG beside the results and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
