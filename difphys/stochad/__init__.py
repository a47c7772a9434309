"""Stochastic automatic differentiation for programs with discrete and branching randomness.

Write a program ``f(theta, key)`` with the samplers below (and any jnp/lax code, including
``lax.cond``, ``lax.while_loop`` and ``lax.scan`` whose behaviour depends on the draws), then
``derivative_estimate(f, theta, key)`` returns one unbiased sample of d/dtheta E[f].
See ``docs/stochad.md``.
"""

from ._distributions import DISTRIBUTIONS as DISTRIBUTIONS
from ._estimators import METHODS as METHODS
from ._estimators import derivative_estimate as derivative_estimate
from ._samplers import POISSON_MAX_RATE as POISSON_MAX_RATE
from ._samplers import bernoulli as bernoulli
from ._samplers import binomial as binomial
from ._samplers import categorical as categorical
from ._samplers import exponential as exponential
from ._samplers import geometric as geometric
from ._samplers import normal as normal
from ._samplers import poisson as poisson
from ._samplers import uniform as uniform

__all__ = [
    "DISTRIBUTIONS",
    "METHODS",
    "POISSON_MAX_RATE",
    "bernoulli",
    "binomial",
    "categorical",
    "derivative_estimate",
    "exponential",
    "geometric",
    "normal",
    "poisson",
    "uniform",
]
