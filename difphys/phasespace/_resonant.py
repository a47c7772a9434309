"""Unit-cube map for a pair of resonances decaying to two bodies each (e.g. t t~ -> W+ b W- b~)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_positive, check_trailing_dim, check_unit_interval, is_concrete
from ._unit_cube import _two_body_decay

RESONANT_PAIR_DIM = 8


def breit_wigner_map(u, mass, width, low, high):
    """Map ``u`` in [0, 1] to ``m^2`` in ``[low^2, high^2]`` with a Breit-Wigner density.

    ``m^2 = M^2 + M Gamma tan(x)``, ``x`` uniform between the arctan images of the limits.
    Returns ``(m2, jacobian)`` with ``jacobian = d m^2 / d u``. Smooth in all arguments.
    Outside ``jit``: ``mass`` and ``width`` must be finite and > 0, ``0 <= low < high``
    (GeV) and ``u`` in [0, 1].
    """
    check_positive(mass, "Breit-Wigner mass")
    check_positive(width, "Breit-Wigner width")
    check_unit_interval(u, "u")
    if is_concrete(low, high):
        lo, hi = np.asarray(low), np.asarray(high)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo >= 0)
                and np.all(lo < hi)):
            raise ValueError(f"the mass range needs 0 <= low < high (GeV); got {lo!r}, {hi!r}")
    return _breit_wigner_map(u, mass, width, low, high)


def _breit_wigner_map(u, mass, width, low, high):
    """:func:`breit_wigner_map` without the eager checks (the maps call it per event, where a
    closed range at the edge of phase space is a valid, masked point)."""
    mg = mass * width
    x_lo = jnp.arctan((low**2 - mass**2) / mg)
    x_hi = jnp.arctan((high**2 - mass**2) / mg)
    x = x_lo + (x_hi - x_lo) * u
    m2 = mass**2 + mg * jnp.tan(x)
    jacobian = (x_hi - x_lo) * ((m2 - mass**2) ** 2 + mg**2) / mg
    return m2, jacobian


def resonant_pair_from_unit_cube(
    u: Float[ArrayLike, "*batch 8"],
    sqrt_s: Float[ArrayLike, "*batch"],
    resonance_mass: Float[ArrayLike, ""],
    resonance_width: Float[ArrayLike, ""],
    daughter_masses: Float[ArrayLike, " 4"],
) -> tuple[Float[Array, "*batch 4 4"], Float[Array, "*batch"]]:
    """``P -> R1 R2``, ``R1 -> a b``, ``R2 -> c d`` from ``u`` in [0, 1]^8, with weight.

    Coordinates: ``u[0]``, ``u[1]`` give ``m_R1^2`` and ``m_R2^2`` through Breit-Wigner maps
    (``m_R1`` in ``[m_a + m_b, sqrt_s - m_c - m_d]``, then ``m_R2`` in ``[m_c + m_d, sqrt_s - m_R1]``);
    ``u[2:4]`` the production angles, ``u[4:6]`` and ``u[6:8]`` the decay angles in each resonance
    rest frame (``cos theta = 2u - 1``, ``phi = 2 pi u``). The weight is exact:
    ``dPhi_4 = dPhi_2(P; R1, R2) dm1^2/(2 pi) dm2^2/(2 pi) dPhi_2(R1; a, b) dPhi_2(R2; c, d)``,
    so ``E_u[w f] = int f dPhi_4`` (same convention as :func:`rambo`). Returns momenta
    ``(..., 4, 4)`` ordered (a, b, c, d). This is the 8-dimensional map used for
    ``e+ e- > w+ b w- b~`` (the FAB target of arXiv:2411.16234).
    """
    u = jnp.asarray(u)
    check_trailing_dim(u, RESONANT_PAIR_DIM, "u", "unit-cube coordinates of the resonant-pair map")
    check_positive(resonance_mass, "resonance_mass")
    check_positive(resonance_width, "resonance_width")
    masses = jnp.asarray(daughter_masses, u.dtype)
    if masses.shape != (4,):
        raise ValueError(f"daughter_masses must have shape (4,); got {masses.shape}")
    if is_concrete(u) and np.any((np.asarray(u) < 0) | (np.asarray(u) > 1)):
        raise ValueError("u must lie in the unit cube [0, 1]")
    ma, mb, mc, md = masses[0], masses[1], masses[2], masses[3]
    rs = jnp.broadcast_to(jnp.asarray(sqrt_s, u.dtype), u.shape[:-1])
    if is_concrete(rs, masses) and np.any(np.asarray(rs) <= float(np.sum(np.asarray(masses)))):
        raise ValueError("sqrt_s is not above the production threshold of the four daughters")
    mass = jnp.asarray(resonance_mass, u.dtype)
    width = jnp.asarray(resonance_width, u.dtype)
    m1sq, jac1 = _breit_wigner_map(u[..., 0], mass, width, ma + mb, rs - mc - md)
    m1 = jnp.sqrt(m1sq)
    m2sq, jac2 = _breit_wigner_map(u[..., 1], mass, width, mc + md, rs - m1)
    m2 = jnp.sqrt(m2sq)
    centre = jnp.stack([rs, *([jnp.zeros_like(rs)] * 3)], axis=-1)
    r1, r2, w_prod = _two_body_decay(centre, rs, m1, m2, u[..., 2], u[..., 3])
    pa, pb, w1 = _two_body_decay(r1, m1, ma, mb, u[..., 4], u[..., 5])
    pc, pd, w2 = _two_body_decay(r2, m2, mc, md, u[..., 6], u[..., 7])
    weight = w_prod * w1 * w2 * jac1 * jac2 / (2 * jnp.pi) ** 2
    return jnp.stack([pa, pb, pc, pd], axis=-2), weight
