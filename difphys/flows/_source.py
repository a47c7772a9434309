"""Estimators of the marginal likelihood ``log p(y) = log E_{x ~ q}[p(y | x)]`` of observations
under a source ``q`` (neural empirical Bayes; Vandegar, Kagan, Wehenkel, Louppe,
arXiv:2011.05836), vectorised over observations and usable under ``jit`` and ``grad``.

A *source* is anything with ``sample_and_log_prob(key, n) -> (x (n, d), log q (n,))``
(reparameterised) and ``log_prob(x)``: a :class:`difphys.flows.SplineFlow` or the
:class:`GaussianSource` below. ``log_lik(y, x) -> ()`` is the log-likelihood of one observation
``y (dy,)`` given one source point ``x (d,)``: any JAX function (an analytic resolution model, or
a trained :class:`difphys.flows.ConditionalSplineFlow` through :func:`flow_likelihood`); an
``eqx.Module`` whose array leaves are nuisance parameters can be fitted jointly
(:func:`difphys.flows.fit_source`).

Estimators (``K`` draws per observation, independent between observations):

* ``"biased"``: ``log (1/K) sum_k p(y | x_k)``, ``x_k ~ q``; a lower bound in expectation with
  bias ``-Var(w) / (2 K E[w]^2) + O(K^-2)`` (Jensen), so its maximiser is too narrow at small K.
* ``"roulette"``: the Russian-roulette (SUMO; Luo et al., arXiv:2004.00353) debiasing of the
  same series: ``L_K + sum_{k=1}^{N} k (L_{K+k} - L_{K+k-1})`` with ``L_j`` the log-mean of the
  first ``j`` weights and ``N = min(max_depth, floor(1/u))``, ``u ~ U(0, 1)``, so that
  ``P(N >= k) = 1/k``. All ``K + max_depth`` draws are always made and the terms beyond ``N``
  masked, so the shapes are static. Its expectation is ``E[L_{K + max_depth}]``: the bias of
  the biased estimator with ``K + max_depth`` draws, ``O(1/(K + max_depth))``, removed entirely
  only as ``max_depth -> infinity`` (documented, and measured in the tests).
* ``"iw"``: importance-weighted, ``log (1/K) sum_k p(y | x_k) q(x_k) / r(x_k | y)`` with
  ``x_k ~ r(. | y)``, a recognition network (a conditional flow); a lower bound that tightens
  with ``K`` and is exact when ``r`` is the posterior.
* ``"elbo"``: the evidence lower bound, the mean of the same log-weights.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, is_concrete

ESTIMATORS = ("biased", "roulette", "iw", "elbo")


class GaussianSource(eqx.Module):
    """A diagonal Gaussian source ``N(loc, diag(exp(log_scale))^2)`` (both array leaves, so
    they are fitted); the closed-form reference of source estimation."""

    loc: jax.Array = eqx.field(converter=jnp.asarray)
    log_scale: jax.Array = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        if self.loc.ndim != 1 or self.loc.shape != self.log_scale.shape:
            raise ValueError(f"loc and log_scale must be vectors of one length; got shapes "
                             f"{self.loc.shape} and {self.log_scale.shape}")

    @property
    def dim(self) -> int:
        return self.loc.shape[0]

    def log_prob(self, x):
        """``log q(x)`` for ``x (..., dim)``."""
        z = (x - self.loc) / jnp.exp(self.log_scale)
        return jnp.sum(-0.5 * z**2 - self.log_scale - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

    def sample_and_log_prob(self, key, n: int, dtype=None):
        """``n`` reparameterised samples ``(n, dim)`` and their ``log q``."""
        dtype = self.loc.dtype if dtype is None else dtype
        z = jax.random.normal(key, (n, self.dim), dtype)
        x = self.loc + jnp.exp(self.log_scale) * z
        return x, self.log_prob(x)

    def sample(self, key, n: int, dtype=None):
        return self.sample_and_log_prob(key, n, dtype)[0]


class FlowLikelihood(eqx.Module):
    """``log p(y | x)`` from a conditional flow over ``y`` with context ``x`` (a surrogate
    likelihood learned from simulated pairs); callable as ``log_lik(y, x)``."""

    flow: eqx.Module

    def __call__(self, y, x):
        return self.flow.log_prob(y, x)


def flow_likelihood(flow) -> FlowLikelihood:
    """Wrap a trained :class:`difphys.flows.ConditionalSplineFlow` ``q(y | x)`` as a
    ``log_lik(y, x)`` for :func:`log_marginal` and :func:`difphys.flows.fit_source`."""
    if not hasattr(flow, "context_dim"):
        raise TypeError(f"flow_likelihood needs a conditional flow; got {type(flow).__name__}")
    return FlowLikelihood(flow)


def _pairwise(log_lik, y, x):
    """``log_lik`` on ``y (N, dy)`` and ``x (N, M, d)`` -> ``(N, M)``."""
    return jax.vmap(lambda yi, xi: jax.vmap(lambda xk: log_lik(yi, xk))(xi))(y, x)


def _check_obs(y):
    y = jnp.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"observations must be an array (N, dy); got shape {y.shape}")
    if is_concrete(y) and not np.all(np.isfinite(np.asarray(y))):
        bad = int(np.sum(~np.all(np.isfinite(np.asarray(y)), axis=-1)))
        raise ValueError(f"observations contain NaN or infinite values ({bad} rows)")
    return y


def _live(log_w):
    """Rows with at least one finite weight, and ``log_w`` with dead rows set to 0 (so no NaN
    reaches a gradient through ``logsumexp`` of all ``-inf``)."""
    live = jnp.any(jnp.isfinite(log_w), axis=1)
    return live, jnp.where(live[:, None], log_w, 0.0)


def _log_mean_exp(log_w):
    """``log mean exp`` over axis 1, ``-inf`` for rows without a finite weight."""
    live, safe = _live(log_w)
    value = jax.nn.logsumexp(safe, axis=1) - jnp.log(jnp.asarray(log_w.shape[1], log_w.dtype))
    return jnp.where(live, value, -jnp.inf)


def _source_draws(key, source, n_obs, m, shared):
    if shared:  # one set of m draws for every observation
        x, _ = source.sample_and_log_prob(key, m)
        return jnp.broadcast_to(x, (n_obs, *x.shape))
    x, _ = source.sample_and_log_prob(key, n_obs * m)
    return x.reshape(n_obs, m, x.shape[-1])


def log_marginal(key, source, log_lik: Callable, y, *, estimator: str = "biased", K: int = 64,
                 recognition=None, max_depth: int = 64, shared_draws: bool = False):
    """Estimates of ``log p(y_i)`` under ``source``, one per observation: ``(N,)``.

    Args:
      key: PRNG key (all draws).
      source: the source ``q(x)`` (see the module docstring).
      log_lik: ``log_lik(y (dy,), x (d,)) -> ()``.
      y: observations ``(N, dy)``.
      estimator: ``"biased"``, ``"roulette"``, ``"iw"`` or ``"elbo"``.
      K: draws per observation (the base draws of ``"roulette"``).
      recognition: ``r(x | y)`` with ``sample_and_log_prob(key, y, n)`` and ``log_prob(x, y)``
        (a :class:`difphys.flows.ConditionalSplineFlow` with context ``y``); ``"iw"`` and
        ``"elbo"`` only.
      max_depth: the largest number of extra terms of ``"roulette"``.
      shared_draws: ``"biased"`` / ``"roulette"`` only: one set of source draws for all
        observations (each estimate is still the same estimator; estimates of different
        observations become correlated). The flow then runs ``K`` times instead of ``N K``
        times, which is what makes large ``K`` affordable on a CPU.

    An observation whose every draw has zero likelihood gets ``-inf`` (the fitting loop masks
    such observations and counts them).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    check_count(K, "K")
    y = _check_obs(y)
    n_obs = y.shape[0]
    if estimator in ("iw", "elbo"):
        if recognition is None:
            raise ValueError(f"the {estimator!r} estimator needs a recognition network r(x | y) "
                             "(e.g. flows.make_conditional_spline_flow(key, dim_x, dim_y))")
        x, log_r = recognition.sample_and_log_prob(key, y, K)  # (K, N, d), (K, N)
        x = jnp.swapaxes(x, 0, 1)
        log_w = _pairwise(log_lik, y, x) + source.log_prob(x) - log_r.T
        if estimator == "iw":
            return _log_mean_exp(log_w)
        finite = jnp.all(jnp.isfinite(log_w), axis=1)
        mean = jnp.mean(jnp.where(finite[:, None], log_w, 0.0), axis=1)
        return jnp.where(finite, mean, -jnp.inf)
    if estimator == "biased":
        return _log_mean_exp(_pairwise(log_lik, y, _source_draws(key, source, n_obs, K, shared_draws)))
    check_count(max_depth, "max_depth")
    k_x, k_u = jax.random.split(key)
    log_w = _pairwise(log_lik, y, _source_draws(k_x, source, n_obs, K + max_depth,
                                                        shared_draws))
    counts = jnp.arange(1, K + max_depth + 1, dtype=log_w.dtype)
    live, safe_w = _live(log_w[:, :K])
    safe_w = jnp.concatenate([safe_w, jnp.where(live[:, None], log_w[:, K:], 0.0)], axis=1)
    means = jax.lax.cumlogsumexp(safe_w, axis=1) - jnp.log(counts)  # L_j, j = 1..K+D
    base = means[:, K - 1]
    deltas = jnp.diff(means[:, K - 1:], axis=1)  # (N, D): L_{K+k} - L_{K+k-1}
    u = jax.random.uniform(k_u, (n_obs,), log_w.dtype)
    depth = jnp.minimum(max_depth, jnp.floor(1.0 / u))
    k = jnp.arange(1, max_depth + 1, dtype=log_w.dtype)
    series = jnp.sum(jnp.where(k <= depth[:, None], k * deltas, 0.0), axis=1)
    return jnp.where(live, base + series, -jnp.inf)
