"""Which precision the backbone runs in when the configuration leaves it open (`model.bf16: null`).

bf16 autocast pays off only where the hardware multiplies bf16 faster than fp32. Having the
instructions is not enough: on one host of this project's 2-core VM (AVX512-BF16 with AMX) a bf16
matmul ran 2.3x fp32, on another (AVX512-BF16, no AMX) it ran at half the fp32 rate, and there
the quick profile's training step took 25 s in bf16. bf16 also rounds away small differences
between users: on MovieLens an untrained model's universal probe AUC was 0.584 in bf16 and 0.605 in
fp32 (same users, 5 probe seeds). So on a CPU the default is measured, once per process: bf16 only
where a square bf16 matmul beats fp32 by `MIN_SPEEDUP`. GPUs always take bf16.

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


def _best_matmul_s(dtype: torch.dtype, n: int, repeats: int) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    torch.mm(a, b)  # warm-up: the first call picks kernels
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def cpu_bf16_speedup(n: int = _PROBE_N, repeats: int = _PROBE_REPEATS) -> float:
    """fp32 time over bf16 time of an n x n matmul on this CPU (best of `repeats` each; > 1: bf16
    is faster). Measured once per process; about 0.1 s."""
    speedup = _best_matmul_s(torch.float32, n, repeats) / _best_matmul_s(torch.bfloat16, n, repeats)
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
