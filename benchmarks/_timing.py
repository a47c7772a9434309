"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time

import jax


def time_compiled(fn, *args, repeats: int = 3) -> tuple[float, float]:
    """``(first call incl. compilation, best of `repeats` later calls)`` in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return compile_s, best
