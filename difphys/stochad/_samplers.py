"""Public samplers: ordinary samplers in a normal call, derivative carriers under an estimator.

Discrete samplers (``bernoulli``, ``binomial``, ``geometric``, ``poisson``, ``categorical``)
are jitted functions whose name the estimators in :mod:`difphys.stochad` recognise in the
traced program; outside an estimator they are plain, fast samplers (inverse CDF from one
uniform per draw). They return floats in the parameters' dtype.

Continuous samplers (``normal``, ``exponential``, ``uniform``) are reparameterised, so their
derivative is the pathwise one that ``jax.grad`` already gives.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete
from ._distributions import DISTRIBUTIONS, SAMPLER_PREFIX


def _float(x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_range(x, name, lo, hi, lo_open=False, hi_open=False):
    """``x`` checked to be finite and inside the range: a ``ValueError`` naming ``name`` in
    eager mode; under ``jit``/``vmap`` tracing the same condition is attached with
    ``equinox.error_if``, so a bad value raises at run time (an ``XlaRuntimeError`` carrying
    this message) instead of silently drawing from a clipped distribution."""
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    message = f"{name} must be finite and lie in {lb}{lo}, {hi if hi is not None else 'inf'}{rb}"
    if not is_concrete(x):
        bad = ~jnp.isfinite(x) | ((x <= lo) if lo_open else (x < lo))
        if hi is not None:
            bad = bad | ((x >= hi) if hi_open else (x > hi))
        return eqx.error_if(x, bad, message)
    a = np.asarray(x)
    if np.any(~np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values: {a!r}")
    bad_lo = a <= lo if lo_open else a < lo
    bad_hi = (a >= hi if hi_open else a > hi) if hi is not None else np.zeros_like(a, bool)
    if np.any(bad_lo | bad_hi):
        raise ValueError(f"{message}; got {a!r}")
    return x


@functools.cache
def _sampler(name: str):
    dist = DISTRIBUTIONS[name]

    def draw(key, *params):
        return dist.draw(key, *params)[1]

    draw.__name__ = draw.__qualname__ = SAMPLER_PREFIX + name
    return jax.jit(draw)


def _broadcast(shape, *params):
    if shape is None:
        shape = jnp.broadcast_shapes(*(p.shape for p in params))
    return [jnp.broadcast_to(p, tuple(shape)) for p in params]


def bernoulli(key, p, shape=None):
    """Bernoulli(p) draws, 1.0 with probability ``p`` else 0.0.

    Args:
      key: PRNG key.
      p: success probability in [0, 1], any shape broadcastable to ``shape``.
      shape: output shape (default ``p.shape``).
    Returns:
      float array of 0/1 with dtype of ``p``.
    """
    p = _float(p)
    p = _check_range(p, "bernoulli p", 0.0, 1.0)
    (p,) = _broadcast(shape, p)
    return _sampler("bernoulli")(key, p)


def binomial(key, n, p, shape=None):
    """Binomial(n, p) counts (float), ``n`` trials (non-negative integer valued) each with ``p``."""
    p = _float(p)
    n = _float(n).astype(p.dtype)
    p = _check_range(p, "binomial p", 0.0, 1.0)
    n = _check_range(n, "binomial n", 0.0, None)
    if is_concrete(n) and np.any(np.asarray(n) != np.round(np.asarray(n))):
        raise ValueError(f"binomial n must be integer valued; got {np.asarray(n)!r}")
    if not is_concrete(n):
        n = eqx.error_if(n, n != jnp.round(n), "binomial n must be integer valued")
    n, p = _broadcast(shape, n, p)
    return _sampler("binomial")(key, n, p)


def geometric(key, p, shape=None):
    """Geometric(p): the number of failures before the first success (float, support 0, 1, ...).

    ``p`` must lie in (0, 1]; ``E[X] = (1 - p) / p``.
    """
    p = _float(p)
    p = _check_range(p, "geometric p", 0.0, 1.0, lo_open=True)
    (p,) = _broadcast(shape, p)
    return _sampler("geometric")(key, p)


#: the largest Poisson rate sampled exactly by the inverse-CDF search in each precision
POISSON_MAX_RATE = {np.dtype("float32"): 80.0, np.dtype("float64"): 700.0}


def poisson(key, rate, shape=None):
    """Poisson(rate) counts (float). ``rate`` >= 0; at most 80 (float32) or 700 (float64)."""
    rate = _float(rate)
    rate = _check_range(rate, "poisson rate", 0.0, POISSON_MAX_RATE[np.dtype(rate.dtype)])
    (rate,) = _broadcast(shape, rate)
    return _sampler("poisson")(key, rate)


def categorical(key, probs, shape=None):
    """Category indices 0..K-1 (float) drawn with probabilities ``probs`` of shape ``(..., K)``.

    ``probs`` must be non-negative and sum to one along the last axis. ``shape`` is the batch
    shape of the draws (default ``probs.shape[:-1]``).
    """
    probs = _float(probs)
    if probs.ndim == 0:
        raise ValueError("categorical probs must have a trailing category axis; got a scalar")
    probs = _check_range(probs, "categorical probs", 0.0, 1.0)
    if is_concrete(probs) and not np.allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5):
        raise ValueError("categorical probs must sum to one along the last axis")
    if not is_concrete(probs):
        probs = eqx.error_if(probs, jnp.abs(jnp.sum(probs, axis=-1) - 1) > 1e-5,
                             "categorical probs must sum to one along the last axis")
    if shape is not None:
        probs = jnp.broadcast_to(probs, (*tuple(shape), probs.shape[-1]))
    return _sampler("categorical")(key, probs)


def normal(key, mean=0.0, std=1.0, shape=None):
    """Reparameterised normal draws ``mean + std * z``; pathwise derivative in mean and std."""
    mean, std = _float(mean), _float(std)
    std = _check_range(std, "normal std", 0.0, None)
    dtype = jnp.result_type(mean, std)
    shape = jnp.broadcast_shapes(mean.shape, std.shape) if shape is None else tuple(shape)
    return mean.astype(dtype) + std.astype(dtype) * jax.random.normal(key, shape, dtype)


def exponential(key, rate=1.0, shape=None):
    """Reparameterised exponential draws ``e / rate`` (mean 1/rate); pathwise in ``rate``."""
    rate = _float(rate)
    rate = _check_range(rate, "exponential rate", 0.0, None, lo_open=True)
    shape = rate.shape if shape is None else tuple(shape)
    return jax.random.exponential(key, shape, rate.dtype) / rate


def uniform(key, low=0.0, high=1.0, shape=None):
    """Reparameterised uniform draws on [low, high); pathwise in both bounds."""
    low, high = _float(low), _float(high)
    low = _check_range(low, "uniform low", -np.inf, None)
    high = _check_range(high, "uniform high", -np.inf, None)
    if is_concrete(low, high) and np.any(np.asarray(low) > np.asarray(high)):
        raise ValueError(f"uniform needs low <= high; got {np.asarray(low)!r} > "
                         f"{np.asarray(high)!r}")
    if not is_concrete(low, high):
        high = eqx.error_if(high, jnp.any(low > high), "uniform needs low <= high (must)")
    dtype = jnp.result_type(low, high)
    shape = jnp.broadcast_shapes(low.shape, high.shape) if shape is None else tuple(shape)
    u = jax.random.uniform(key, shape, dtype)
    return low.astype(dtype) + (high - low).astype(dtype) * u
