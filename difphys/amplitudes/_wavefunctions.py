"""External wavefunctions in the helicity basis (HELAS conventions, chiral Dirac basis).

Fermions (helicity ``hel = +1 / -1``; momentum ``p`` (..., 4) in GeV, mass ``m`` in GeV):

* ``u(p, hel) = (sqrt(E - hel|p|) chi_hel, sqrt(E + hel|p|) chi_hel)``
* ``v(p, hel) = (sqrt(E + hel|p|) chi_-hel, -sqrt(E - hel|p|) chi_-hel)``

with two-component helicity eigenstates ``chi_+ = (cos t/2, e^{i phi} sin t/2)``,
``chi_- = (-e^{-i phi} sin t/2, cos t/2)``. The small component is written
``m / sqrt(E + |p|)``, exact on shell, smooth in ``p`` and ``m``, and exactly 0 when ``m = 0``.

Vector bosons: ``eps(k, +-1) = (-+eps_1 - i eps_2) / sqrt(2)`` with
``eps_1 = (0, cos t cos phi, cos t sin phi, -sin t)``, ``eps_2 = (0, -sin phi, cos phi, 0)``;
``eps(k, 0) = (|k|, E k_hat) / m`` for massive bosons. Outgoing vectors take the complex
conjugate. Summed over helicities, ``sum u ubar = pslash + m``, ``sum v vbar = pslash - m`` and
``sum eps eps* = -g + k k / m^2`` (tested).
"""

from __future__ import annotations

import jax.numpy as jnp

from .._numerics import safe_norm, safe_sqrt
from ..kinematics import phi as _phi
from ..kinematics import pt as _pt
from ._dirac import bar


def _complex_dtype(p):
    return jnp.result_type(jnp.asarray(p).dtype, jnp.complex64)


def _angles(p):
    """Polar and azimuthal angle of the 3-momentum, finite (0) with zero gradient at p = 0."""
    transverse, pz = _pt(p), p[..., 3]
    nonzero = (transverse > 0) | (pz != 0)
    t_safe = jnp.where(nonzero, transverse, jnp.zeros_like(transverse))
    z_safe = jnp.where(nonzero, pz, jnp.ones_like(pz))
    theta = jnp.where(nonzero, jnp.arctan2(t_safe, z_safe), jnp.zeros_like(pz))
    return theta, _phi(p)


def helicity_spinor_2d(p, hel):
    """Two-component helicity eigenstate ``chi_hel(p_hat)``, shape (..., 2), complex."""
    theta, phi = _angles(p)
    dtype = _complex_dtype(p)
    c, s = jnp.cos(theta / 2).astype(dtype), jnp.sin(theta / 2).astype(dtype)
    phase = jnp.exp(1j * phi.astype(dtype))
    hel = jnp.asarray(hel)
    plus = jnp.stack([c, phase * s], axis=-1)
    minus = jnp.stack([-jnp.conj(phase) * s, c], axis=-1)
    return jnp.where((hel > 0)[..., None], plus, minus)


def _big_small(p, m):
    norm = safe_norm(p[..., 1:])
    big = safe_sqrt(p[..., 0] + norm)
    big_safe = jnp.where(big > 0, big, jnp.ones_like(big))
    small = jnp.where(big > 0, m / big_safe, jnp.zeros_like(big))
    return big, small


def u_spinor(p, m, hel):
    """Dirac spinor ``u(p, hel)`` of an incoming fermion, (..., 4) complex."""
    p = jnp.asarray(p)
    dtype = _complex_dtype(p)
    big, small = _big_small(p, jnp.asarray(m, p.dtype))
    big, small = big.astype(dtype)[..., None], small.astype(dtype)[..., None]
    hel = jnp.asarray(hel)
    chi = helicity_spinor_2d(p, hel)
    pos = (hel > 0)[..., None]
    upper = jnp.where(pos, small, big) * chi
    lower = jnp.where(pos, big, small) * chi
    return jnp.concatenate([upper, lower], axis=-1)


def v_spinor(p, m, hel):
    """Dirac spinor ``v(p, hel)`` of an outgoing antifermion, (..., 4) complex."""
    p = jnp.asarray(p)
    dtype = _complex_dtype(p)
    big, small = _big_small(p, jnp.asarray(m, p.dtype))
    big, small = big.astype(dtype)[..., None], small.astype(dtype)[..., None]
    hel = jnp.asarray(hel)
    chi = helicity_spinor_2d(p, -hel)
    pos = (hel > 0)[..., None]
    upper = jnp.where(pos, big, small) * chi
    lower = -jnp.where(pos, small, big) * chi
    return jnp.concatenate([upper, lower], axis=-1)


def ubar_spinor(p, m, hel):
    """Row spinor ``ubar(p, hel)`` of an outgoing fermion."""
    return bar(u_spinor(p, m, hel))


def vbar_spinor(p, m, hel):
    """Row spinor ``vbar(p, hel)`` of an incoming antifermion."""
    return bar(v_spinor(p, m, hel))


def polarization_vector(k, m, hel, outgoing: bool = False):
    """Polarisation vector ``eps^mu(k, hel)`` (..., 4) complex; ``hel`` in {-1, 0, +1}.

    ``hel = 0`` (longitudinal) requires ``m > 0``. ``outgoing=True`` returns ``eps*``.
    """
    k = jnp.asarray(k)
    dtype = _complex_dtype(k)
    theta, phi = _angles(k)
    ct, st, cp, sp = (jnp.cos(theta), jnp.sin(theta), jnp.cos(phi), jnp.sin(phi))
    zero = jnp.zeros_like(ct)
    eps1 = jnp.stack([zero, ct * cp, ct * sp, -st], axis=-1).astype(dtype)
    eps2 = jnp.stack([zero, -sp, cp, zero], axis=-1).astype(dtype)
    hel = jnp.asarray(hel)
    sign = jnp.where(hel > 0, -1.0, 1.0).astype(dtype)[..., None]
    transverse = (sign * eps1 - 1j * eps2) / jnp.sqrt(2.0)
    m = jnp.asarray(m, k.dtype)
    m_safe = jnp.where(m > 0, m, jnp.ones_like(m))
    norm = safe_norm(k[..., 1:])
    n_safe = jnp.where(norm > 0, norm, jnp.ones_like(norm))
    khat = jnp.where(
        (norm > 0)[..., None],
        k[..., 1:] / n_safe[..., None],
        jnp.broadcast_to(jnp.asarray([0.0, 0.0, 1.0], k.dtype), k[..., 1:].shape),
    )
    longitudinal = jnp.concatenate(
        [(norm / m_safe)[..., None], (k[..., :1] / m_safe[..., None]) * khat], axis=-1
    ).astype(dtype)
    eps = jnp.where((hel == 0)[..., None], longitudinal, transverse)
    return jnp.conj(eps) if outgoing else eps
