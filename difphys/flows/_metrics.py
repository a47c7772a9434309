"""Importance-sampling metrics from log-weights ``log w = log p - log q`` (shape (n,)).

Non-finite log-weights (points outside the target's support) count as ``w = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def _clean(log_w):
    log_w = jnp.asarray(log_w)
    return jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)


def sampling_efficiency(log_w):
    """``(sum w)^2 / (N sum w^2)`` = ESS / N, in [0, 1]."""
    log_w = _clean(log_w)
    n = jnp.asarray(log_w.shape[0], log_w.dtype)
    lse = jax.nn.logsumexp(log_w)
    return jnp.exp(2 * lse - jnp.log(n) - jax.nn.logsumexp(2 * log_w))


def unweighting_efficiency(log_w, robust_quantile: float | None = None):
    """``mean(w) / max(w)``: the acceptance of hit-or-miss unweighting.

    With ``robust_quantile=r`` the maximum is replaced by the ``1 - r`` quantile of ``w``
    (the usual "max reduction": a fraction ``r`` of events keep weights above one); this
    variant does not collapse because of one outlier.
    """
    log_w = _clean(log_w)
    w = jnp.exp(log_w - jnp.max(log_w))
    w_max = 1.0 if robust_quantile is None else jnp.quantile(w, 1.0 - robust_quantile)
    return jnp.mean(w) / w_max


class LogZ(NamedTuple):
    """log Z = log mean(w) and its standard error (delta method), plus Z itself and its error."""

    log_z: jax.Array
    log_z_error: jax.Array
    z: jax.Array
    z_error: jax.Array


def log_z_estimate(log_w) -> LogZ:
    log_w = _clean(log_w)
    n = jnp.asarray(log_w.shape[0], log_w.dtype)
    shift = jnp.max(log_w)
    w = jnp.exp(log_w - shift)
    mean = jnp.mean(w)
    rel = jnp.std(w) / (jnp.sqrt(n) * mean)
    log_z = jnp.log(mean) + shift
    return LogZ(log_z=log_z, log_z_error=rel, z=jnp.exp(log_z), z_error=jnp.exp(log_z) * rel)


def importance_log_weights(key, flow, log_p, n: int):
    """Samples ``x ~ q`` (n, dim) and ``log w = log p(x) - log q(x)`` (n,)."""
    x, log_q = flow.sample_and_log_prob(key, n)
    log_p_x = jax.vmap(log_p)(x)
    return x, _clean(log_p_x - log_q)
