"""Posteriors of single observations under a fitted source, by self-normalised importance
sampling: ``p(x | y) ∝ p(y | x) q(x)`` with draws from the source (or from a proposal such as
a trained recognition network ``r(x | y)``), their normalised weights and effective sample
size (Kish), and central credible intervals from the weighted quantiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, is_concrete


class Posterior(NamedTuple):
    """Weighted draws of ``p(x | y)``: ``x (n, d)``, normalised ``log_weights (n,)``
    (``logsumexp = 0``) and the effective sample size ``1 / sum w^2``."""

    x: jax.Array
    log_weights: jax.Array
    ess: jax.Array


def posterior(key, source, log_lik: Callable, y_one, n: int, *, proposal=None) -> Posterior:
    """The posterior of one observation ``y_one (dy,)`` under ``source`` as ``n`` weighted draws.

    Draws come from the source (weights ``p(y | x)``) or, with ``proposal`` (an object with
    ``sample_and_log_prob(key, context, n)``, e.g. the recognition network of
    :func:`difphys.flows.fit_source`), from ``proposal(. | y)`` (weights
    ``p(y | x) q(x) / r(x | y)``). Raises ``ValueError`` outside ``jit`` when no draw has a
    non-zero weight.
    """
    check_count(n, "n")
    y_one = jnp.asarray(y_one)
    if y_one.ndim != 1:
        raise ValueError(f"posterior takes one observation (dy,); got shape {y_one.shape}")
    if is_concrete(y_one) and not np.all(np.isfinite(np.asarray(y_one))):
        raise ValueError("the observation contains NaN or infinite values")
    if proposal is None:
        x, _ = source.sample_and_log_prob(key, n)
        log_w = jax.vmap(lambda xi: log_lik(y_one, xi))(x)
    else:
        x, log_r = proposal.sample_and_log_prob(key, y_one, n)
        log_w = jax.vmap(lambda xi: log_lik(y_one, xi))(x) + source.log_prob(x) - log_r
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    total = jax.nn.logsumexp(log_w)
    if is_concrete(total) and not np.isfinite(float(total)):
        raise ValueError(f"none of the {n} draws has a non-zero likelihood for this observation; "
                         "draw more, or pass a proposal closer to the posterior")
    log_w = log_w - total
    ess = 1.0 / jnp.sum(jnp.exp(2 * log_w))
    return Posterior(x, log_w, ess)


def weighted_quantile(x, log_weights, q):
    """Quantiles ``q`` (scalar or ``(m,)``) of weighted draws ``x (n,)`` (normalised or not
    ``log_weights``): the inverse of the weighted empirical CDF (midpoint convention)."""
    x = jnp.asarray(x)
    w = jnp.exp(log_weights - jax.nn.logsumexp(log_weights))
    order = jnp.argsort(x)
    xs, ws = x[order], w[order]
    cdf = jnp.cumsum(ws) - 0.5 * ws
    return jnp.interp(jnp.asarray(q, x.dtype), cdf, xs)


def credible_interval(post: Posterior, level: float = 0.68):
    """Central ``level`` interval of each coordinate: ``(lo (d,), hi (d,))``."""
    if not (0.0 < float(level) < 1.0):
        raise ValueError(f"level must be in (0, 1); got {level!r}")
    qs = jnp.asarray([(1 - level) / 2, (1 + level) / 2], post.x.dtype)
    bounds = jax.vmap(lambda col: weighted_quantile(col, post.log_weights, qs),
                      in_axes=1, out_axes=1)(post.x)
    return bounds[0], bounds[1]
