"""Which precision the backbone runs in when the configuration leaves it open (`model.bf16: null`).

bf16 autocast pays off only where the hardware multiplies bf16 faster than fp32. Having the
instructions is not enough: on one host of this project's 2-core VM (AVX512-BF16 with AMX) a bf16
matmul ran 2.3x fp32, on another (AVX512-BF16, no AMX) it ran at half the fp32 rate, and there
the quick profile's training step took 25 s in bf16. bf16 also rounds away small differences
between users: on MovieLens an untrained model's universal probe AUC was 0.584 in bf16 and 0.605 in
fp32 (same users, 5 probe seeds). So on a CPU the default is measured, once per process: bf16 only
where a square bf16 matmul beats fp32 by `MIN_SPEEDUP`. GPUs always take bf16.
A saved model folder records the precision it was made in (`factory.write_model_files`), so
loading it never measures: every process that loads a model gives the same vectors.

    use_bf16 = bf16_default(torch.device("cpu"))    # False where bf16 is not clearly faster
"""

from __future__ import annotations

import functools
import logging
import time

import torch

log = logging.getLogger(__name__)

MIN_SPEEDUP = 1.2  # bf16 must be clearly faster: it costs precision
_PROBE_N = 768  # about 0.9 GFLOP a matmul: a few ms each, long enough to time on a CPU
_PROBE_REPEATS = 5


def bf16_units(device: torch.device) -> bool:
    """Does the hardware compute in bf16 at all (GPUs; CPUs with AVX512-BF16 or AMX)?"""
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)
    return False


def _matmul_pair(dtype: torch.dtype, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, n, generator=gen).to(dtype), torch.randn(n, n, generator=gen).to(dtype)


def _timed_mm(a: torch.Tensor, b: torch.Tensor) -> float:
    t0 = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - t0


@functools.cache
def cpu_bf16_speedup(n: int = _PROBE_N, repeats: int = _PROBE_REPEATS) -> float:
    """fp32 time over bf16 time of an n x n matmul on this CPU (best of `repeats` each; > 1: bf16
    is faster). Measured once per process; about 0.1 s. The two dtypes alternate, so a burst of
    load from another process slows both rather than tipping the ratio."""
    pairs = {dtype: _matmul_pair(dtype, n) for dtype in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    for a, b in pairs.values():
        torch.mm(a, b)  # warm-up: the first call picks kernels
    for _ in range(repeats):
        for dtype, (a, b) in pairs.items():
            best[dtype] = min(best[dtype], _timed_mm(a, b))
    speedup = best[torch.float32] / best[torch.bfloat16]
    log.info("bf16 matmul runs at %.2fx fp32 on this CPU", speedup)
    return speedup


def bf16_default(device: torch.device) -> bool:
    """bf16 autocast when the configuration does not say: GPUs yes; a CPU only where it has bf16
    units and a bf16 matmul measures at least `MIN_SPEEDUP` times fp32's speed."""
    if device.type == "cuda":
        return True
    if device.type == "cpu" and bf16_units(device):
        return cpu_bf16_speedup() >= MIN_SPEEDUP
    return False
