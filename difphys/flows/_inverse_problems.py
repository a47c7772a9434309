"""Source-estimation problems with a known truth: the Gaussian closed form and two of the
simulation-based-inference benchmarks of sbibm (Lueckmann et al., arXiv:2101.04653) re-coded
in JAX, each with its exact likelihood. The true source is the benchmark's prior; the task is
to recover it from observations ``y_i ~ p(y | x_i)``, ``x_i ~`` source.

* ``gaussian_problem``: ``x ~ N(mu, s^2)``, ``y = x + N(0, sigma^2)`` per coordinate, so
  ``p(y) = N(mu, s^2 + sigma^2)`` and the maximum-likelihood source is ``mu = mean(y)``,
  ``s^2 = var(y) - sigma^2`` (clipped at 0).
* ``two_moons_problem``: ``x ~ U(-1, 1)^2``; ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
  ``y = (r cos a + 0.25 - |x1 + x2| / sqrt 2, r sin a + (x2 - x1) / sqrt 2)``. With
  ``q = y - (0.25 - |x1 + x2| / sqrt 2, (x2 - x1) / sqrt 2)`` the density is
  ``N(|q|; 0.1, 0.01^2) / (pi |q|)`` on the half plane ``q_1 > 0`` (polar change of variables).
* ``slcp_problem``: ``x ~ U(-3, 3)^5``; ``y`` = four draws from the bivariate normal with mean
  ``(x1, x2)``, standard deviations ``x3^2, x4^2`` and correlation ``tanh(x5)`` (8 numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive


class InverseProblem(NamedTuple):
    """A source-estimation problem: ``sample_source(key, n) -> (n, dim_x)``,
    ``simulate(key, x (n, dim_x)) -> (n, dim_y)``, ``log_lik(y (dim_y,), x (dim_x,)) -> ()``
    exact, and a standardisation ``(loc, scale)`` of ``x`` for a flow."""

    name: str
    dim_x: int
    dim_y: int
    sample_source: Callable
    simulate: Callable
    log_lik: Callable
    loc: tuple
    scale: tuple


def gaussian_problem(mu: float = 0.3, s: float = 0.474, sigma: float = 0.5,
                     dim: int = 1) -> InverseProblem:
    """Gaussian source ``N(mu, s^2)`` observed with Gaussian noise ``sigma`` in ``dim``
    independent coordinates."""
    check_positive(s, "s")
    check_positive(sigma, "sigma")

    def sample_source(key, n):
        return mu + s * jax.random.normal(key, (n, dim))

    def simulate(key, x):
        return x + sigma * jax.random.normal(key, x.shape, x.dtype)

    def log_lik(y, x):
        return jnp.sum(-0.5 * ((y - x) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi))

    return InverseProblem("gaussian", dim, dim, sample_source, simulate, log_lik,
                          (float(mu),) * dim, (float(s),) * dim)


_MOON_R, _MOON_SIGMA = 0.1, 0.01


def _moon_shift(x):
    return jnp.stack([0.25 - jnp.abs(x[..., 0] + x[..., 1]) / np.sqrt(2),
                      (x[..., 1] - x[..., 0]) / np.sqrt(2)], axis=-1)


def two_moons_problem() -> InverseProblem:
    """sbibm's two moons with its prior ``U(-1, 1)^2`` as the true source."""

    def sample_source(key, n):
        return jax.random.uniform(key, (n, 2), minval=-1.0, maxval=1.0)

    def simulate(key, x):
        k_a, k_r = jax.random.split(key)
        a = jax.random.uniform(k_a, x.shape[:-1], x.dtype, -np.pi / 2, np.pi / 2)
        r = _MOON_R + _MOON_SIGMA * jax.random.normal(k_r, x.shape[:-1], x.dtype)
        return jnp.stack([r * jnp.cos(a), r * jnp.sin(a)], axis=-1) + _moon_shift(x)

    def log_lik(y, x):
        q = y - _moon_shift(x)
        inside = q[0] > 0
        r = jnp.sqrt(jnp.where(inside, q[0] ** 2 + q[1] ** 2, 1.0))  # double where: no NaN grad
        value = (-0.5 * ((r - _MOON_R) / _MOON_SIGMA) ** 2 - np.log(_MOON_SIGMA * np.sqrt(2 * np.pi))
                 - np.log(np.pi) - jnp.log(r))
        return jnp.where(inside, value, -jnp.inf)

    return InverseProblem("two_moons", 2, 2, sample_source, simulate, log_lik,
                          (0.0, 0.0), (0.6, 0.6))


def _slcp_moments(x):
    m = x[..., :2]
    s1, s2 = x[..., 2] ** 2, x[..., 3] ** 2
    rho = jnp.tanh(x[..., 4])
    return m, s1, s2, rho


def slcp_problem() -> InverseProblem:
    """sbibm's SLCP (simple likelihood, complex posterior) with its prior ``U(-3, 3)^5``."""

    def sample_source(key, n):
        return jax.random.uniform(key, (n, 5), minval=-3.0, maxval=3.0)

    def simulate(key, x):
        m, s1, s2, rho = _slcp_moments(x)
        z = jax.random.normal(key, (*x.shape[:-1], 4, 2), x.dtype)
        u = s1[..., None] * z[..., 0]
        v = s2[..., None] * (rho[..., None] * z[..., 0] + jnp.sqrt(1 - rho[..., None] ** 2) * z[..., 1])
        pts = jnp.stack([m[..., None, 0] + u, m[..., None, 1] + v], axis=-1)
        return pts.reshape(*x.shape[:-1], 8)

    def log_lik(y, x):
        m, s1, s2, rho = _slcp_moments(x)
        d = y.reshape(4, 2) - m
        a, b = d[:, 0] / s1, d[:, 1] / s2
        one_m = 1 - rho**2
        quad = (a**2 - 2 * rho * a * b + b**2) / one_m
        return jnp.sum(-0.5 * quad - jnp.log(2 * np.pi * s1 * s2) - 0.5 * jnp.log(one_m))

    return InverseProblem("slcp", 5, 8, sample_source, simulate, log_lik, (0.0,) * 5, (1.7,) * 5)
