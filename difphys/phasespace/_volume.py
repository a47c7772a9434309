"""Closed-form phase-space volumes in the difphys convention.

Convention (used by every sampler in :mod:`difphys.phasespace`)::

    dPhi_n = (2 pi)^4 delta^4(P - sum_i p_i) prod_i d^3 p_i / ((2 pi)^3 2 E_i)

so that a 2 -> n cross section with a massless initial state is ``sigma = (1 / 2s) int |M|^2
dPhi_n`` and ``Phi_2 = 1 / (8 pi)`` for two massless particles.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_finite, check_nonnegative
from .._numerics import kallen, safe_sqrt


def massless_volume(n: int, sqrt_s: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch"]:
    """Volume of n-body massless phase space (GeV^(2n-4)).

    ``Phi_n = (2 pi)^(4-3n) (pi/2)^(n-1) s^(n-2) / ((n-1)! (n-2)!)`` (Kleiss, Stirling, Ellis,
    Comput. Phys. Commun. 40 (1986) 359, with the ``(2 pi)`` factors of the convention above).
    """
    if n < 2:
        raise ValueError(f"phase space needs at least 2 particles; got n = {n}")
    check_nonnegative(sqrt_s, "sqrt_s")
    check_finite(sqrt_s, "sqrt_s")
    s = jnp.asarray(sqrt_s) ** 2
    const = (2 * math.pi) ** (4 - 3 * n) * (math.pi / 2) ** (n - 1)
    const /= math.factorial(n - 1) * math.factorial(n - 2)
    return const * s ** (n - 2)


def two_body_volume(
    sqrt_s: Float[ArrayLike, "*batch"],
    m1: Float[ArrayLike, "*batch"],
    m2: Float[ArrayLike, "*batch"],
) -> Float[Array, "*batch"]:
    """Two-body phase-space volume ``lambda^(1/2)(s, m1^2, m2^2) / (8 pi s)`` (dimensionless).

    Zero below threshold (a closed channel). Outside ``jit`` NaN/inf or negative values raise.
    """
    sqrt_s, m1, m2 = jnp.asarray(sqrt_s), jnp.asarray(m1), jnp.asarray(m2)
    for value, label in ((sqrt_s, "sqrt_s"), (m1, "m1"), (m2, "m2")):
        check_finite(value, label)
        check_nonnegative(value, label)
    s = sqrt_s**2
    return safe_sqrt(kallen(s, m1**2, m2**2)) / (8 * jnp.pi * s)
