"""Streaming Monte Carlo accumulation shared by phase-space integrals and cross sections."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ..progress import progress_bar


def batch_moments(values, n_valid):
    """``(count, mean, M2)`` of the first ``n_valid`` entries of a batch (jit-friendly)."""
    mask = jnp.arange(values.shape[0]) < n_valid
    count = jnp.sum(mask).astype(values.dtype)
    mean = jnp.sum(jnp.where(mask, values, 0.0)) / count
    m2 = jnp.sum(jnp.where(mask, (values - mean) ** 2, 0.0))
    return count, mean, m2


def streaming_mean(
    batch_fn: Callable,
    key,
    n_points: int,
    batch_size: int,
    *,
    progress: bool = False,
    desc: str = "integrate",
):
    """Mean and standard error of per-point values produced batch by batch.

    ``batch_fn(key, n_valid) -> (count, mean, M2)`` for one batch of ``batch_size`` points of
    which the first ``n_valid`` count. Batches are combined with the pairwise update of Chan,
    Golub & LeVeque (1979), so large N loses no precision. Returns ``(mean, error)`` arrays,
    differentiable through ``batch_fn``.
    """
    if n_points <= 0:
        raise ValueError(f"n_points must be positive; got {n_points}")
    batch_size = int(min(batch_size, n_points))
    n_batches = -(-n_points // batch_size)
    keys = jax.random.split(key, n_batches)
    count = mean = m2 = None
    with progress_bar(progress, total=n_points, desc=desc, unit="pt") as bar:
        for i in range(n_batches):
            n_valid = min(batch_size, n_points - i * batch_size)
            c, mu, s2 = batch_fn(keys[i], n_valid)
            if count is None:
                count, mean, m2 = c, mu, s2
            else:
                total = count + c
                delta = mu - mean
                mean = mean + delta * c / total
                m2 = m2 + s2 + delta**2 * count * c / total
                count = total
            bar.update(n_valid)
    variance = m2 / jnp.maximum(count - 1.0, 1.0)
    return mean, jnp.sqrt(variance / count)
