"""Importance-sampling metrics from log-weights ``log w = log p - log q`` (shape (n,)).

``log w = -inf`` (a point outside the target's support) counts as ``w = 0``. A NaN or ``+inf``
log-weight is a failed evaluation, not a weight: outside ``jit`` it raises ``ValueError``
(with the count); inside ``jit`` the metrics are NaN, the documented flag of such input.
With no positive weight at all, the efficiencies are 0 and ``log Z = -inf`` (``Z = 0``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, is_concrete


def _clean(log_w):
    log_w = jnp.asarray(log_w)
    if log_w.ndim != 1 or log_w.shape[0] == 0:
        raise ValueError(f"log_w must be a non-empty 1-d array of log-weights; got shape "
                         f"{log_w.shape}")
    if is_concrete(log_w):
        a = np.asarray(log_w)
        n_nan, n_inf = int(np.sum(np.isnan(a))), int(np.sum(a == np.inf))
        if n_nan or n_inf:
            raise ValueError(f"log_w has {n_nan} NaN and {n_inf} +inf entries: failed weight "
                             "evaluations (-inf, w = 0, is the only allowed non-finite value)")
    return log_w


def _flag(log_w, value, empty_value):
    """``value``, NaN where a log-weight is NaN/+inf (traced input), ``empty_value`` when no
    weight is positive."""
    bad = jnp.any(jnp.isnan(log_w) | (log_w == jnp.inf))
    empty = jnp.all(log_w == -jnp.inf)
    value = jnp.where(empty, jnp.asarray(empty_value, value.dtype), value)
    return jnp.where(bad, jnp.full_like(value, jnp.nan), value)


def _finite_or_zero_shift(log_w):
    shift = jnp.max(jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf))
    return jnp.where(jnp.isfinite(shift), shift, jnp.zeros_like(shift))


def sampling_efficiency(log_w):
    """``(sum w)^2 / (N sum w^2)`` = ESS / N, in [0, 1]."""
    log_w = _clean(log_w)
    n = jnp.asarray(log_w.shape[0], log_w.dtype)
    lw = log_w - _finite_or_zero_shift(log_w)
    lw = jnp.where(jnp.isfinite(lw), lw, -jnp.inf)
    value = jnp.exp(2 * jax.nn.logsumexp(lw) - jnp.log(n) - jax.nn.logsumexp(2 * lw))
    return _flag(log_w, value, 0.0)


def unweighting_efficiency(log_w, robust_quantile: float | None = None):
    """``mean(w) / max(w)``: the acceptance of hit-or-miss unweighting.

    With ``robust_quantile=r`` the maximum is replaced by the ``1 - r`` quantile of ``w``
    (the usual "max reduction": a fraction ``r`` of events keep weights above one); this
    variant does not collapse because of one outlier.
    """
    if robust_quantile is not None and not 0.0 < float(robust_quantile) < 1.0:
        raise ValueError(f"robust_quantile must lie in (0, 1); got {robust_quantile!r}")
    log_w = _clean(log_w)
    lw = log_w - _finite_or_zero_shift(log_w)
    w = jnp.where(jnp.isfinite(lw), jnp.exp(jnp.where(jnp.isfinite(lw), lw, 0.0)), 0.0)
    w_max = 1.0 if robust_quantile is None else jnp.quantile(w, 1.0 - robust_quantile)
    value = jnp.mean(w) / jnp.where(w_max > 0, w_max, 1.0)
    return _flag(log_w, value, 0.0)


class LogZ(NamedTuple):
    """log Z = log mean(w) and its standard error (delta method), plus Z itself and its error."""

    log_z: jax.Array
    log_z_error: jax.Array
    z: jax.Array
    z_error: jax.Array


def log_z_estimate(log_w) -> LogZ:
    """log Z = log mean(w) with its delta-method error; all weights zero gives
    ``log_z = -inf``, ``z = 0``, ``z_error = 0`` and ``log_z_error = inf``."""
    log_w = _clean(log_w)
    n = jnp.asarray(log_w.shape[0], log_w.dtype)
    shift = _finite_or_zero_shift(log_w)
    lw = log_w - shift
    w = jnp.where(jnp.isfinite(lw), jnp.exp(jnp.where(jnp.isfinite(lw), lw, 0.0)), 0.0)
    mean = jnp.mean(w)
    positive = mean > 0
    rel = jnp.where(positive, jnp.std(w) / (jnp.sqrt(n) * jnp.where(positive, mean, 1.0)),
                    jnp.inf)
    log_z = jnp.where(positive, jnp.log(jnp.where(positive, mean, 1.0)) + shift, -jnp.inf)
    bad = jnp.any(jnp.isnan(log_w) | (log_w == jnp.inf))
    nan_if_bad = lambda x: jnp.where(bad, jnp.full_like(x, jnp.nan), x)  # noqa: E731
    z = jnp.exp(log_z)
    return LogZ(log_z=nan_if_bad(log_z), log_z_error=nan_if_bad(rel), z=nan_if_bad(z),
                z_error=nan_if_bad(jnp.where(positive, z * rel, 0.0)))


def importance_log_weights(key, flow, log_p, n: int):
    """Samples ``x ~ q`` (n, dim) and ``log w = log p(x) - log q(x)`` (n,)."""
    check_count(n, "n")
    x, log_q = flow.sample_and_log_prob(key, n)
    log_p_x = jax.vmap(log_p)(x)
    return x, _clean(log_p_x - log_q)
