"""Frame-dependent components of four-momenta ``(..., 4)`` ordered ``(E, px, py, pz)``.

Conventions at the singular points (values are finite and gradients are zero there):
* ``pt = 0``: ``phi = 0``; ``eta = +-1e11`` with the sign of ``pz`` (0 if ``pz = 0``), as
  ROOT's ``TVector3::PseudoRapidity``.
* ``E <= |pz|`` (light-like along the beam, or unphysical): ``rapidity = +-1e11``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_finite, check_nonnegative
from .._numerics import safe_norm, safe_sqrt
from ._invariants import _four

#: Value returned for |eta| or |y| where it is infinite (ROOT's convention).
INFINITE_RAPIDITY = 1e11


def p3(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch 3"]:
    """Three-momentum ``(px, py, pz)`` (GeV)."""
    return _four(p)[..., 1:]


def p_abs(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Magnitude of the three-momentum ``|p|`` (GeV); gradient 0 at ``|p| = 0``."""
    return safe_norm(p3(p))


def pt(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Transverse momentum ``sqrt(px^2 + py^2)`` (GeV); gradient 0 at ``pt = 0``."""
    p = _four(p)
    return safe_sqrt(p[..., 1] ** 2 + p[..., 2] ** 2)


def phi(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Azimuth ``atan2(py, px)`` in ``(-pi, pi]`` (rad); 0 with zero gradient at ``pt = 0``."""
    p = _four(p)
    px, py = p[..., 1], p[..., 2]
    nonzero = (px * px + py * py) > 0
    px_safe = jnp.where(nonzero, px, jnp.ones_like(px))
    py_safe = jnp.where(nonzero, py, jnp.zeros_like(py))
    return jnp.where(nonzero, jnp.arctan2(py_safe, px_safe), jnp.zeros_like(px))


def eta(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Pseudorapidity ``asinh(pz / pt)``; ``+-1e11`` (sign of ``pz``) at ``pt = 0``."""
    p = _four(p)
    transverse = pt(p)
    pz = p[..., 3]
    nonzero = transverse > 0
    pt_safe = jnp.where(nonzero, transverse, jnp.ones_like(transverse))
    regular = jnp.arcsinh(pz / pt_safe)
    return jnp.where(nonzero, regular, jnp.sign(pz) * INFINITE_RAPIDITY)


def rapidity(p: Float[ArrayLike, "*batch 4"]) -> Float[Array, "*batch"]:
    """Rapidity ``0.5 log((E + pz) / (E - pz))``; ``+-1e11`` (sign of ``pz``) where ``E <= |pz|``."""
    p = _four(p)
    energy, pz = p[..., 0], p[..., 3]
    regular_point = energy > jnp.abs(pz)
    e_safe = jnp.where(regular_point, energy, jnp.full_like(energy, 2.0))
    pz_safe = jnp.where(regular_point, pz, jnp.ones_like(pz))
    regular = 0.5 * jnp.log((e_safe + pz_safe) / (e_safe - pz_safe))
    return jnp.where(regular_point, regular, jnp.sign(pz) * INFINITE_RAPIDITY)


def delta_phi(
    p: Float[ArrayLike, "*batch 4"], q: Float[ArrayLike, "*batch 4"]
) -> Float[Array, "*batch"]:
    """Azimuthal difference ``phi(p) - phi(q)`` wrapped into ``[-pi, pi)`` (rad)."""
    d = phi(p) - phi(q)
    return jnp.mod(d + jnp.pi, 2 * jnp.pi) - jnp.pi


def delta_r(
    p: Float[ArrayLike, "*batch 4"], q: Float[ArrayLike, "*batch 4"]
) -> Float[Array, "*batch"]:
    """Angular distance ``sqrt(d_eta^2 + d_phi^2)`` with pseudorapidity; gradient 0 at ``dR = 0``."""
    deta = eta(p) - eta(q)
    dphi = delta_phi(p, q)
    return safe_sqrt(deta * deta + dphi * dphi)


def from_pt_eta_phi_m(
    pt_: Float[ArrayLike, "*batch"],
    eta_: Float[ArrayLike, "*batch"],
    phi_: Float[ArrayLike, "*batch"],
    m: Float[ArrayLike, "*batch"],
) -> Float[Array, "*batch 4"]:
    """Four-momentum ``(E, px, py, pz)`` from ``(pt [GeV], eta, phi [rad], m [GeV])``.

    Outside ``jit`` NaN or infinite inputs and negative ``pt`` or ``m`` raise ``ValueError``."""
    pt_, eta_, phi_, m = (jnp.asarray(x) for x in (pt_, eta_, phi_, m))
    for value, label in ((pt_, "pt"), (eta_, "eta"), (phi_, "phi"), (m, "m")):
        check_finite(value, label)
    check_nonnegative(pt_, "pt")
    check_nonnegative(m, "m")
    px = pt_ * jnp.cos(phi_)
    py = pt_ * jnp.sin(phi_)
    pz = pt_ * jnp.sinh(eta_)
    energy = jnp.sqrt(m * m + pt_ * pt_ * jnp.cosh(eta_) ** 2)
    return jnp.stack(jnp.broadcast_arrays(energy, px, py, pz), axis=-1)
