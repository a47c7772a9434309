"""Vertices, off-shell currents and propagators (HELAS-style building blocks).

Conventions: spinors are ``(..., 4)`` complex column (ket) or row (bra) vectors, vector
currents are ``(..., 4)`` with an upper Lorentz index. Couplings enter as a chiral pair
``(cl, cr)`` multiplying ``gamma^mu (cl P_L + cr P_R)``. Common factors of ``i`` from the
Feynman rules are dropped *uniformly*: a coherent sum must only add diagrams with the same
numbers of vertices and propagators of each kind (as in all processes built here), or keep
track of the phases itself (as :mod:`._berends_giele` does).

Propagators (momentum ``q`` in GeV, mass and fixed width in GeV):

* vector ``(J^mu - q^mu q.J / M^2) / (q^2 - M^2 + i M Gamma)`` (unitary gauge), ``J^mu / q^2``
  for a massless boson (Feynman gauge);
* fermion ``(qslash + m) / (q^2 - m^2 + i m Gamma)`` with ``q`` along the fermion flow.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._checks import check_nonnegative
from ._dirac import GAMMA, chiral, complex_dtype, lorentz, mdot, slash


def fermion_current(bra, ket, cl, cr):
    """``J^mu = bra gamma^mu (cl P_L + cr P_R) ket``, shape (..., 4)."""
    bra, ket = lorentz(bra, "bra"), lorentz(ket, "ket")
    dtype = jnp.result_type(bra.dtype, ket.dtype)
    gamma = jnp.asarray(GAMMA, dtype)
    coupled = chiral(cl, cr, dtype) @ ket[..., None]
    return jnp.einsum("...i,mij,...j->...m", bra, gamma, coupled[..., 0])


def ffv_amplitude(bra, ket, eps, cl, cr):
    """Amputated FFV vertex ``bra epsslash (cl P_L + cr P_R) ket``."""
    return mdot(fermion_current(bra, ket, cl, cr), eps)


def ffs_amplitude(bra, ket, cl, cr, scalar=1.0):
    """FFS vertex ``bra (cl P_L + cr P_R) ket * S``."""
    bra, ket = lorentz(bra, "bra"), lorentz(ket, "ket")
    dtype = jnp.result_type(bra.dtype, ket.dtype)
    vertex = chiral(cl, cr, dtype)
    return jnp.einsum("...i,...ij,...j->...", bra, vertex, ket) * scalar


def _check_mass_width(mass, width) -> None:
    check_nonnegative(mass, "propagator mass")
    check_nonnegative(width, "propagator width")


def vector_propagator(current, q, mass, width):
    """Propagate an off-shell vector current with momentum ``q`` (see module docstring)."""
    current, q = lorentz(current, "current"), lorentz(q, "q")
    _check_mass_width(mass, width)
    dtype = current.dtype
    mass = jnp.asarray(mass, q.dtype)
    width = jnp.asarray(width, q.dtype)
    q2 = q[..., 0] ** 2 - jnp.sum(q[..., 1:] ** 2, axis=-1)
    massive = mass > 0
    m2_safe = jnp.where(massive, mass**2, jnp.ones_like(mass))
    qc = q.astype(dtype)
    longitudinal = jnp.where(massive, 1.0, 0.0).astype(dtype)
    numerator = (
        current
        - longitudinal[..., None] * qc * (mdot(qc, current) / m2_safe.astype(dtype))[..., None]
    )
    denominator = (q2 - mass**2).astype(dtype) + 1j * (mass * width).astype(dtype)
    return numerator / denominator[..., None]


def scalar_propagator(value, q, mass, width):
    """``value / (q^2 - M^2 + i M Gamma)``."""
    q = lorentz(q, "q")
    _check_mass_width(mass, width)
    dtype = complex_dtype(q.dtype)
    q2 = q[..., 0] ** 2 - jnp.sum(q[..., 1:] ** 2, axis=-1)
    mass, width = jnp.asarray(mass, q.dtype), jnp.asarray(width, q.dtype)
    return value / ((q2 - mass**2).astype(dtype) + 1j * (mass * width).astype(dtype))


def fermion_propagator(q, mass, width, dtype):
    """``(qslash + m) / (q^2 - m^2 + i m Gamma)`` as a (..., 4, 4) matrix."""
    q = lorentz(q, "q")
    _check_mass_width(mass, width)
    mass = jnp.asarray(mass, q.dtype)
    width = jnp.asarray(width, q.dtype)
    q2 = q[..., 0] ** 2 - jnp.sum(q[..., 1:] ** 2, axis=-1)
    eye = jnp.eye(4, dtype=dtype)
    numerator = slash(q.astype(dtype)) + mass.astype(dtype)[..., None, None] * eye
    denominator = (q2 - mass**2).astype(dtype) + 1j * (mass * width).astype(dtype)
    return numerator / denominator[..., None, None]


def vvv_vertex(j1, j2, k1, k2):
    """Triple-gauge Lorentz structure contracted with two currents (all momenta incoming).

    Returns ``V^mu = (j1.j2)(k1 - k2)^mu + ((k1 + 2 k2).j1) j2^mu - ((2 k1 + k2).j2) j1^mu``,
    the ``g^{nu rho}(k1 - k2)^mu + g^{rho mu}(k2 - k3)^nu + g^{mu nu}(k3 - k1)^rho`` structure with
    ``k3 = -k1 - k2`` (multiply by the coupling, e.g. ``g f^{abc}`` or ``1/sqrt(2)`` colour-ordered).
    """
    j1, j2 = lorentz(j1, "j1"), lorentz(j2, "j2")
    k1, k2 = lorentz(k1, "k1"), lorentz(k2, "k2")
    k1c, k2c = k1.astype(j1.dtype), k2.astype(j1.dtype)
    return (
        mdot(j1, j2)[..., None] * (k1c - k2c)
        + mdot(k1c + 2 * k2c, j1)[..., None] * j2
        - mdot(2 * k1c + k2c, j2)[..., None] * j1
    )


def vvvv_vertex(j1, j2, j3):
    """Quartic Lorentz structure ``2 j2 (j1.j3) - j1 (j2.j3) - j3 (j1.j2)`` (colour-ordered QCD)."""
    j1, j2, j3 = lorentz(j1, "j1"), lorentz(j2, "j2"), lorentz(j3, "j3")
    return (
        2 * j2 * mdot(j1, j3)[..., None]
        - j1 * mdot(j2, j3)[..., None]
        - j3 * mdot(j1, j2)[..., None]
    )
