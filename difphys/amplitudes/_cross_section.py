"""Partonic cross sections and differential distributions by Monte Carlo over the unit cube."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..phasespace._montecarlo import batch_moments, streaming_mean
from ..progress import progress_bar
from ._params import SMParams
from ._processes import Process

#: (hbar c)^2 in pb GeV^2 (PDG: 0.3893793721 GeV^2 mbarn).
GEV2_TO_PB = 0.3893793721e9


class CrossSection(NamedTuple):
    """``value`` and standard ``error`` in pb, and the number of points."""

    value: jax.Array
    error: jax.Array
    n_points: int


class Histogram(NamedTuple):
    """``dsigma/dx`` per bin (pb per unit of x), its error, and the bin edges."""

    edges: np.ndarray
    values: jax.Array
    errors: jax.Array


def _event_weights(proc, cuts, key, batch_size, sqrt_s, params):
    dim = proc.phase_space_dim
    dtype = params.MZ.dtype
    eps = jnp.finfo(dtype).eps
    u = jax.random.uniform(key, (batch_size, dim), dtype, minval=eps, maxval=1.0 - eps)
    momenta, weight = proc.phase_space(u, sqrt_s, params)
    s = jnp.asarray(sqrt_s, dtype) ** 2
    values = weight * proc(momenta, params) / (2.0 * s) * GEV2_TO_PB
    if cuts is not None:
        values = jnp.where(cuts(momenta), values, 0.0)
    return momenta, values


@partial(jax.jit, static_argnames=("proc", "cuts", "batch_size"))
def _batch(proc, cuts, batch_size, key, n_valid, sqrt_s, params):
    _, values = _event_weights(proc, cuts, key, batch_size, sqrt_s, params)
    return batch_moments(values, n_valid)


def _check(proc, sqrt_s, params):
    if not isinstance(proc, Process):
        raise TypeError(f"expected a difphys.amplitudes.Process; got {type(proc).__name__}")
    rs = float(sqrt_s) if not isinstance(sqrt_s, jax.core.Tracer) else None
    if rs is not None:
        threshold = float(jnp.sum(proc.final_state_masses(params)))
        if not np.isfinite(rs) or rs <= threshold:
            raise ValueError(
                f"sqrt_s = {rs} GeV is not above the {proc.name!r} threshold {threshold:.4g} GeV"
            )


def cross_section(
    proc: Process,
    sqrt_s,
    n_points: int,
    params: SMParams | None = None,
    *,
    key,
    cuts: Callable | None = None,
    batch_size: int = 32768,
    progress: bool = False,
) -> CrossSection:
    """Partonic cross section ``sigma = (1 / 2s) int |M|^2 dPhi`` (pb) at fixed ``sqrt_s`` (GeV).

    Points are uniform on the process's unit cube (:meth:`Process.phase_space`). ``cuts`` is
    an optional jnp function ``momenta (batch, n, 4) -> bool (batch,)`` (must be hashable: a
    module-level function). Differentiable with respect to ``params`` and ``sqrt_s`` with
    common random numbers (same ``key``).
    """
    params = SMParams() if params is None else params
    _check(proc, sqrt_s, params)
    batch_size = int(min(batch_size, n_points))
    value, error = streaming_mean(
        lambda k, n_valid: _batch(proc, cuts, batch_size, k, n_valid, sqrt_s, params),
        key,
        n_points,
        batch_size,
        progress=progress,
        desc=proc.name,
    )
    return CrossSection(value, error, n_points)


@partial(jax.jit, static_argnames=("proc", "cuts", "observable", "batch_size"))
def _hist_batch(proc, cuts, observable, batch_size, key, n_valid, sqrt_s, params, edges):
    momenta, values = _event_weights(proc, cuts, key, batch_size, sqrt_s, params)
    values = jnp.where(jnp.arange(batch_size) < n_valid, values, 0.0)
    x = observable(momenta)
    idx = jnp.searchsorted(edges, x, side="right") - 1
    inside = (idx >= 0) & (idx < edges.shape[0] - 1)
    idx = jnp.where(inside, idx, 0)
    sums = jnp.zeros(edges.shape[0] - 1, values.dtype).at[idx].add(jnp.where(inside, values, 0.0))
    sq = jnp.zeros(edges.shape[0] - 1, values.dtype).at[idx].add(jnp.where(inside, values**2, 0.0))
    return sums, sq


def dsigma(
    proc: Process,
    observable: Callable,
    edges,
    sqrt_s,
    n_points: int,
    params: SMParams | None = None,
    *,
    key,
    cuts: Callable | None = None,
    batch_size: int = 32768,
    progress: bool = False,
) -> Histogram:
    """Differential cross section ``dsigma/dx`` (pb per unit x) in the bins ``edges``.

    ``observable`` maps momenta ``(batch, n, 4)`` to ``x`` ``(batch,)``. The bin contents sum
    (times bin widths) to :func:`cross_section` for the same key, up to events outside the bins.
    """
    params = SMParams() if params is None else params
    _check(proc, sqrt_s, params)
    edges = jnp.asarray(edges, params.MZ.dtype)
    if edges.ndim != 1 or edges.shape[0] < 2 or not np.all(np.diff(np.asarray(edges)) > 0):
        raise ValueError("edges must be a strictly increasing 1-D array with at least 2 entries")
    batch_size = int(min(batch_size, n_points))
    n_batches = -(-n_points // batch_size)
    total = jnp.zeros(edges.shape[0] - 1, edges.dtype)
    total_sq = jnp.zeros_like(total)
    with progress_bar(progress, total=n_points, desc=f"dsigma {proc.name}", unit="pt") as bar:
        for i, k in enumerate(jax.random.split(key, n_batches)):
            n_valid = min(batch_size, n_points - i * batch_size)
            s1, s2 = _hist_batch(
                proc, cuts, observable, batch_size, k, n_valid, sqrt_s, params, edges
            )
            total, total_sq = total + s1, total_sq + s2
            bar.update(n_valid)
    widths = jnp.diff(edges)
    mean = total / n_points
    var = jnp.maximum(total_sq / n_points - mean**2, 0.0)
    return Histogram(np.asarray(edges), mean / widths, jnp.sqrt(var / n_points) / widths)
