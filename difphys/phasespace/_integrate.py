"""Monte Carlo integration over n-body phase space with streaming mean/variance."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_count
from ._montecarlo import batch_moments, streaming_mean
from ._rambo import rambo
from ._unit_cube import from_unit_cube, unit_cube_dim
from ._validate import prepare

SAMPLERS = ("rambo", "unit_cube")


class IntegrationResult(NamedTuple):
    """Monte Carlo estimate of ``int f dPhi_n``: ``value``, its standard ``error``, ``n_points``."""

    value: Array
    error: Array
    n_points: int


def sample_batch(
    key: PRNGKeyArray,
    batch_size: int,
    sqrt_s: Float[ArrayLike, ""],
    masses: Float[ArrayLike, " n"],
    sampler: str = "rambo",
) -> tuple[Float[Array, "batch n 4"], Float[Array, " batch"]]:
    """Draw ``batch_size`` weighted events ``(momenta (batch, n, 4), weights (batch,))``.

    ``sampler="rambo"`` uses :func:`rambo`; ``"unit_cube"`` draws ``u`` uniformly in the open
    cube and maps it with :func:`from_unit_cube`. Both estimate ``int f dPhi_n`` by ``mean(w f)``.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    check_count(batch_size, "batch_size")
    sqrt_s, masses, _ = prepare(sqrt_s, masses)
    if sampler == "rambo":
        keys = jax.random.split(key, batch_size)
        return jax.vmap(rambo, in_axes=(0, None, None))(keys, sqrt_s, masses)
    dim = unit_cube_dim(masses.shape[0])
    tiny = jnp.finfo(masses.dtype).eps
    u = jax.random.uniform(key, (batch_size, dim), masses.dtype, minval=tiny, maxval=1.0 - tiny)
    return from_unit_cube(u, sqrt_s, masses)


@partial(jax.jit, static_argnames=("f", "sampler", "batch_size"))
def _batch_moments(f, sampler, batch_size, key, n_valid, sqrt_s, masses):
    momenta, weights = sample_batch(key, batch_size, sqrt_s, masses, sampler)
    values = weights * jnp.asarray(f(momenta)).astype(weights.dtype)
    return batch_moments(values, n_valid)


def integrate(
    f: Callable[[Array], Array],
    n_points: int,
    sqrt_s: Float[ArrayLike, ""],
    masses: Float[ArrayLike, " n"],
    *,
    key: PRNGKeyArray,
    sampler: str = "rambo",
    batch_size: int = 65536,
    progress: bool = False,
) -> IntegrationResult:
    """Estimate ``int f dPhi_n`` (GeV^(2n-4) times the units of ``f``) by Monte Carlo.

    Args:
        f: vectorised integrand, momenta ``(batch, n, 4)`` -> values ``(batch,)``. Must be a
            hashable callable (a function, not a fresh lambda per call, to avoid recompiling).
        key: PRNG key.
        n_points: number of phase-space points (> 0).
        sqrt_s, masses: centre-of-mass energy and final-state masses (GeV).
        sampler: ``"rambo"`` or ``"unit_cube"`` (see :func:`sample_batch`).
        batch_size: points per compiled batch; the last batch is masked, not recompiled.
        progress: show a progress bar.

    Returns:
        :class:`IntegrationResult` with the mean of ``w f``, its standard error
        ``sqrt(var / N)`` (Chan et al. streaming variance, so no cancellation at large N) and N.
        The result is differentiable in ``sqrt_s`` and ``masses`` (common random numbers).
    """
    if n_points <= 0:
        raise ValueError(f"n_points must be positive; got {n_points}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    sqrt_s, masses, _ = prepare(sqrt_s, masses)
    batch_size = int(min(batch_size, n_points))
    mean, error = streaming_mean(
        lambda k, n_valid: _batch_moments(f, sampler, batch_size, k, n_valid, sqrt_s, masses),
        n_points, batch_size, key=key, progress=progress)
    if not isinstance(mean, jax.core.Tracer) and not np.isfinite(np.asarray(mean)):
        raise ValueError("integrand returned NaN or infinite values on phase space")
    return IntegrationResult(mean, error, n_points)
