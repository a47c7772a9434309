"""External wavefunctions in the helicity basis (HELAS conventions, chiral Dirac basis).

Fermions (helicity ``hel = +1 / -1``; momentum ``p`` (..., 4) in GeV, mass ``m`` in GeV):

* ``u(p, hel) = (sqrt(E - hel|p|) chi_hel, sqrt(E + hel|p|) chi_hel)``
* ``v(p, hel) = (sqrt(E + hel|p|) chi_-hel, -sqrt(E - hel|p|) chi_-hel)``

with two-component helicity eigenstates ``chi_+ = (cos t/2, e^{i phi} sin t/2)``,
``chi_- = (-e^{-i phi} sin t/2, cos t/2)``. The small component is written
``m / sqrt(E + |p|)``, exact on shell, smooth in ``p`` and ``m``, and exactly 0 when ``m = 0``.

Vector bosons: ``eps(k, +-1) = (-+eps_1 - i eps_2) / sqrt(2)`` with
``eps_1 = (0, cos t cos phi, cos t sin phi, -sin t)``, ``eps_2 = (0, -sin phi, cos phi, 0)``,
multiplied by ``e^{+-i phi}`` (north) or ``e^{-+i phi}`` (south hemisphere) and written as
rational functions of the momentum, ``(eps_1 + i eps_2) e^{i phi} = (1 - px^2/D - i px py/D,
-px py/D + i (1 - py^2/D), -(px + i py)/|p|)`` with ``D = |p|(|p| + pz)``, so that states and
their derivatives are regular on the beam axis;
``eps(k, 0) = (|k|, E k_hat) / m`` for massive bosons. Outgoing vectors take the complex
conjugate. Summed over helicities, ``sum u ubar = pslash + m``, ``sum v vbar = pslash - m`` and
``sum eps eps* = -g + k k / m^2`` (tested).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete
from .._numerics import safe_norm, safe_sqrt
from ._dirac import bar, complex_dtype, lorentz


def _complex_dtype(p):
    return complex_dtype(jnp.asarray(p).dtype)


def _hemisphere_terms(p):
    """``|p|``, the hemisphere flag (pz >= 0) and the safe denominators ``|p| +- pz``.

    Helicity states are written in rational form with the phase convention switched between the
    two hemispheres, so that they are smooth (and differentiable) everywhere, including on the
    beam axis where an angle-based form has an undefined azimuth. Spin-summed quantities do not
    depend on the phase convention.
    """
    norm = safe_norm(p[..., 1:])
    pz = p[..., 3]
    north = pz >= 0
    denom = jnp.where(north, norm + pz, norm - pz)  # >= |p|, zero only at p = 0
    nonzero = denom > 0
    denom_safe = jnp.where(nonzero, denom, jnp.ones_like(denom))
    norm_safe = jnp.where(nonzero, norm, jnp.ones_like(norm))
    return norm_safe, north, denom_safe, nonzero


def helicity_spinor_2d(p, hel):
    """Two-component helicity eigenstate ``chi_hel(p_hat)`` (``sigma.p_hat chi = hel chi``).

    North (``pz >= 0``): ``chi_+ = (|p| + pz, px + i py) / N``, ``chi_- = (-(px - i py), |p| + pz) / N``
    with ``N = sqrt(2|p|(|p| + pz))``; south: the same states times a phase,
    ``chi_+ = (px - i py, |p| - pz) / N'``, ``chi_- = (-(|p| - pz), px + i py) / N'``. At ``p = 0``
    the z axis is used. Shape (..., 2), complex.
    """
    dtype = _complex_dtype(p)
    norm, north, denom, nonzero = _hemisphere_terms(p)
    scale = 1.0 / jnp.sqrt(2.0 * norm * denom)
    px, py = p[..., 1].astype(dtype), p[..., 2].astype(dtype)
    d = denom.astype(dtype)
    plus_n = jnp.stack([d, px + 1j * py], axis=-1)
    minus_n = jnp.stack([-(px - 1j * py), d], axis=-1)
    plus_s = jnp.stack([px - 1j * py, d], axis=-1)
    minus_s = jnp.stack([-d, px + 1j * py], axis=-1)
    hel = jnp.asarray(hel)
    pos = (hel > 0)[..., None]
    north_ = north[..., None]
    chi = jnp.where(pos, jnp.where(north_, plus_n, plus_s), jnp.where(north_, minus_n, minus_s))
    chi = chi * scale.astype(dtype)[..., None]
    z_plus = jnp.asarray([1.0, 0.0], dtype)
    z_minus = jnp.asarray([0.0, 1.0], dtype)
    at_rest = jnp.where(pos, z_plus, z_minus)
    return jnp.where(nonzero[..., None], chi, at_rest)


def _big_small(p, m):
    norm = safe_norm(p[..., 1:])
    big = safe_sqrt(p[..., 0] + norm)
    big_safe = jnp.where(big > 0, big, jnp.ones_like(big))
    small = jnp.where(big > 0, m / big_safe, jnp.zeros_like(big))
    return big, small


def _components(p, m, hel):
    """``(sqrt(E - |p|) or sqrt(E + |p|) per chirality, the 2-spinor, hel > 0)`` shared by
    ``u`` and ``v`` (complex, ``(..., 1)``, ``(..., 2)``, ``(..., 1)``)."""
    p = lorentz(p, "p", "four-momentum (E, px, py, pz)")
    dtype = _complex_dtype(p)
    big, small = _big_small(p, jnp.asarray(m, p.dtype))
    big, small = big.astype(dtype)[..., None], small.astype(dtype)[..., None]
    hel = _check_helicity(hel, (-1, 1), "fermion helicity")
    if is_concrete(m) and np.any(np.asarray(m) < 0):
        raise ValueError(f"fermion mass must be >= 0 (GeV); got {np.asarray(m)!r}")
    return big, small, hel, (hel > 0)[..., None]


def _check_helicity(hel, allowed, what):
    """``hel`` as an array; outside ``jit`` every value must be in ``allowed``."""
    hel = jnp.asarray(hel)
    if is_concrete(hel) and not np.all(np.isin(np.asarray(hel), allowed)):
        raise ValueError(f"{what} must be one of {allowed}; got {np.asarray(hel)!r}")
    return hel


def u_spinor(p, m, hel):
    """Dirac spinor ``u(p, hel)`` of an incoming fermion, (..., 4) complex."""
    big, small, hel, pos = _components(p, m, hel)
    chi = helicity_spinor_2d(jnp.asarray(p), hel)
    upper = jnp.where(pos, small, big) * chi
    lower = jnp.where(pos, big, small) * chi
    return jnp.concatenate([upper, lower], axis=-1)


def v_spinor(p, m, hel):
    """Dirac spinor ``v(p, hel)`` of an outgoing antifermion, (..., 4) complex."""
    big, small, hel, pos = _components(p, m, hel)
    chi = helicity_spinor_2d(jnp.asarray(p), -hel)
    upper = jnp.where(pos, big, small) * chi
    lower = -jnp.where(pos, small, big) * chi
    return jnp.concatenate([upper, lower], axis=-1)


def ubar_spinor(p, m, hel):
    """Row spinor ``ubar(p, hel)`` of an outgoing fermion."""
    return bar(u_spinor(p, m, hel))


def vbar_spinor(p, m, hel):
    """Row spinor ``vbar(p, hel)`` of an incoming antifermion."""
    return bar(v_spinor(p, m, hel))


def _transverse(k, hel, dtype):
    """Circular polarisation ``eps(k, +-1)`` in rational, hemisphere-switched form (smooth)."""
    norm, north, denom, nonzero = _hemisphere_terms(k)
    px, py = k[..., 1], k[..., 2]
    big_d = norm * denom
    a = px * px / big_d
    b = px * py / big_d
    c = py * py / big_d
    zero = jnp.zeros_like(px)
    # (eps_1 + i eps_2) times e^{+i phi} (north) or e^{-i phi} (south); see the module docstring.
    re_n = jnp.stack([zero, 1 - a, -b, -px / norm], axis=-1)
    im_n = jnp.stack([zero, -b, 1 - c, -py / norm], axis=-1)
    re_s = jnp.stack([zero, a - 1, b, -px / norm], axis=-1)
    im_s = jnp.stack([zero, -b, 1 - c, py / norm], axis=-1)
    north_ = north[..., None]
    re = jnp.where(north_, re_n, re_s).astype(dtype)
    im = jnp.where(north_, im_n, im_s).astype(dtype)
    e_plus = re + 1j * im  # ~ eps_1 + i eps_2
    e_minus = re - 1j * im  # ~ eps_1 - i eps_2
    hel = jnp.asarray(hel)
    eps = jnp.where((hel > 0)[..., None], -e_plus, e_minus) / jnp.sqrt(2.0)
    axis_plus = jnp.asarray([0.0, -1.0, -1j, 0.0], dtype) / jnp.sqrt(2.0)
    axis_minus = jnp.asarray([0.0, 1.0, -1j, 0.0], dtype) / jnp.sqrt(2.0)
    at_rest = jnp.where((hel > 0)[..., None], axis_plus, axis_minus)
    return jnp.where(nonzero[..., None], eps, at_rest)


def polarization_vector(k, m, hel, outgoing: bool = False):
    """Polarisation vector ``eps^mu(k, hel)`` (..., 4) complex; ``hel`` in {-1, 0, +1}.

    Transverse states are ``eps(+-) = (-+eps_1 - i eps_2) / sqrt2`` up to a phase (rational,
    smooth form); ``hel = 0`` (longitudinal, ``m > 0`` only) is ``(|k|, E k_hat) / m``.
    ``outgoing=True`` returns ``eps*``. Outside ``jit`` a helicity outside {-1, 0, 1}, a
    negative mass or ``hel = 0`` with ``m = 0`` raises ``ValueError``.
    """
    k = lorentz(k, "k", "four-momentum (E, px, py, pz)")
    dtype = _complex_dtype(k)
    hel = _check_helicity(hel, (-1, 0, 1), "vector helicity")
    if is_concrete(m, hel):
        m_np, h_np = np.broadcast_arrays(np.asarray(m), np.asarray(hel))
        if np.any(m_np < 0):
            raise ValueError(f"vector mass must be >= 0 (GeV); got {np.asarray(m)!r}")
        if np.any((h_np == 0) & (m_np == 0)):
            raise ValueError("hel = 0 (longitudinal) needs a massive vector boson (m > 0)")
    transverse = _transverse(k, hel, dtype)
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
