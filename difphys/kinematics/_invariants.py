"""Lorentz invariants of four-momenta ``(..., 4)`` ordered ``(E, px, py, pz)`` in GeV.

Metric signature ``(+, -, -, -)``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_finite, check_trailing_dim
from .._numerics import safe_norm, signed_sqrt

_WHAT = "four-momentum ordered (E, px, py, pz)"


def _four(p: ArrayLike, name: str = "p") -> Array:
    p = jnp.asarray(p)
    check_trailing_dim(p, 4, name, _WHAT)
    check_finite(p, name)  # eager only: inside jit NaN components propagate to what uses them
    return p


def dot(p: Float[ArrayLike, "*batch 4"], q: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Minkowski product ``p.q = E_p E_q - p_vec . q_vec`` (GeV^2); broadcasts over batch axes."""
    p, q = _four(p, "p"), _four(q, "q")
    return p[..., 0] * q[..., 0] - jnp.sum(p[..., 1:] * q[..., 1:], axis=-1)


def mass2(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Invariant mass squared ``E^2 - |p|^2`` (GeV^2).

    Evaluated as ``(E - |p|)(E + |p|)``: a massless vector built as ``(|p|, p_vec)`` gives
    exactly zero rather than rounding noise of either sign. At ``|p| = 0`` the polynomial form is
    used, so first and second derivatives are exact everywhere.
    """
    p = _four(p)
    energy, vec = p[..., 0], p[..., 1:]
    norm = safe_norm(vec)
    factored = (energy - norm) * (energy + norm)
    polynomial = energy * energy - jnp.sum(vec * vec, axis=-1)
    return jnp.where(norm > 0, factored, polynomial)


def mass(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Invariant mass (GeV), ``sign(m^2) sqrt(|m^2|)``.

    A spacelike vector (``m^2 < 0``) returns ``-sqrt(-m^2)``, as ROOT's ``TLorentzVector::M`` and
    scikit-hep ``vector`` do. At ``m^2 = 0`` the value is 0 and the gradient is defined as 0 (the
    true derivative is infinite there).
    """
    return signed_sqrt(mass2(p))
