"""The Monte-Carlo core shared by phase-space integrals, cross sections, differential
distributions and likelihoods: per-batch moments, their numerically stable combination, a
streaming mean (Python loop with progress, or one jittable ``lax.scan``) and hit-or-miss
unweighting."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete
from ..progress import progress_bar

LOOPS = ("python", "scan")


def batch_moments(values, n_valid):
    """``(count, mean, M2)`` of the first ``n_valid`` entries of ``values (batch, ...)`` along
    axis 0 (jit-friendly; trailing axes, e.g. histogram bins, are kept)."""
    mask = jnp.arange(values.shape[0]) < n_valid
    mask = mask.reshape(mask.shape + (1,) * (values.ndim - 1))
    count = jnp.sum(mask[(slice(None),) + (0,) * (values.ndim - 1)]).astype(values.dtype)
    mean = jnp.sum(jnp.where(mask, values, 0.0), axis=0) / count
    m2 = jnp.sum(jnp.where(mask, (values - mean) ** 2, 0.0), axis=0)
    return count, mean, m2


def combine_moments(a, b):
    """The ``(count, mean, M2)`` of two disjoint sets of points from theirs: the pairwise
    update of Chan, Golub & LeVeque (1979), exact and free of the cancellation in
    ``E[x^2] - E[x]^2``."""
    count_a, mean_a, m2_a = a
    count_b, mean_b, m2_b = b
    total = count_a + count_b
    delta = mean_b - mean_a
    return (total, mean_a + delta * count_b / total,
            m2_a + m2_b + delta**2 * count_a * count_b / total)


def _mean_and_error(moments):
    count, mean, m2 = moments
    variance = m2 / jnp.maximum(count - 1.0, 1.0)
    return mean, jnp.sqrt(variance / count)


def streaming_mean(
    batch_fn: Callable,
    n_points: int,
    batch_size: int,
    *,
    key,
    progress=False,
    desc: str = "integrate",
    loop: str = "python",
):
    """Mean and standard error of per-point values produced batch by batch.

    ``batch_fn(key, n_valid) -> (count, mean, M2)`` for one batch of ``batch_size`` points of
    which the first ``n_valid`` count (:func:`batch_moments`; ``mean`` and ``M2`` may carry
    trailing axes). Batches are combined with :func:`combine_moments`, so large N loses no
    precision. ``loop="python"`` calls ``batch_fn`` once per batch (a jitted ``batch_fn``
    compiles once; ``progress`` shows a bar, :mod:`difphys.progress`); ``loop="scan"`` runs
    all batches in one ``lax.scan``, so the whole estimate can sit inside ``jit``/``vmap``
    (e.g. a likelihood). Returns ``(mean, error)`` arrays, differentiable through
    ``batch_fn``.
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}; got {loop!r}")
    if n_points <= 0:
        raise ValueError(f"n_points must be positive; got {n_points}")
    batch_size = int(min(batch_size, n_points))
    n_batches = -(-n_points // batch_size)
    keys = jax.random.split(key, n_batches)
    n_valid = [min(batch_size, n_points - i * batch_size) for i in range(n_batches)]
    if loop == "scan":
        first = batch_fn(keys[0], n_valid[0])
        if n_batches == 1:
            return _mean_and_error(first)

        def body(moments, xs):
            k, n = xs
            return combine_moments(moments, batch_fn(k, n)), None

        moments, _ = jax.lax.scan(body, first, (keys[1:], jnp.asarray(n_valid[1:])))
        return _mean_and_error(moments)
    moments = None
    with progress_bar(progress, total=n_points, desc=desc, unit="pt") as bar:
        for i in range(n_batches):
            batch = batch_fn(keys[i], n_valid[i])
            moments = batch if moments is None else combine_moments(moments, batch)
            bar.update(n_valid[i])
    return _mean_and_error(moments)


def hit_or_miss(key, log_w, log_w_max):
    """Hit-or-miss unweighting: ``accept (n,)`` keeps a point of weight ``w = exp(log_w)``
    with probability ``min(1, w / w_max)``, and ``overweight (n,)`` flags the points above
    ``w_max`` (kept once: the unweighted sample is then biased by their excess, which the
    caller reports). Log weights keep the ratio finite over many orders of magnitude;
    ``log_w = -inf`` (zero weight, outside cuts) is never kept and never counted as
    overweight; NaN or ``+inf`` raise outside ``jit`` and are dropped inside it. The one unweighting rule of
    difphys (``difphys sample``, :func:`difphys.analysis.unweighted_events`)."""
    log_w = jnp.asarray(log_w)
    if is_concrete(log_w, log_w_max):
        a = np.asarray(log_w)
        if np.any(np.isnan(a) | (a == np.inf)):
            raise ValueError(f"log_w has {int(np.sum(np.isnan(a)))} NaN and "
                             f"{int(np.sum(a == np.inf))} +inf entries: failed weight evaluations")
        if not np.isfinite(float(log_w_max)):
            raise ValueError(f"log_w_max must be finite; got {float(log_w_max)!r}")
    finite = jnp.isfinite(log_w)
    log_ratio = jnp.where(finite, log_w - log_w_max, -jnp.inf)
    u = jax.random.uniform(key, log_w.shape, log_w.dtype)
    accept = finite & (jnp.log(u) < log_ratio)
    return accept, finite & (log_ratio > 0)
