"""Colour-ordered Berends-Giele recursion for gluons and for one quark line plus gluons.

All momenta are *incoming* (an outgoing particle with momentum p enters as -p). With the
colour-ordered rules (Dixon, hep-ph/9601359; ``T^a`` normalised to ``Tr(T^a T^b) = delta^ab``)
the factors of ``i`` combine to real recursion coefficients:

* gluon current ``J(i..j) = [sum_m V3(J(i..m), J(m+1..j)) / sqrt2 + sum_{m<l} V4(...) / 2] / P^2``
  (Berends & Giele, Nucl. Phys. B306 (1988) 759);
* quark line ``Ubar(q; 1..j) = sum_m Ubar(q; 1..m) [Jslash(m+1..j) / sqrt2] (Pslash + m) / (P^2 - m^2)``
  with ``P`` the line's momentum along the fermion flow. (The relative sign of the two kinds of
  terms is fixed by gauge invariance, which the tests check for every ordering.)

The full amplitudes are ``M = g^(n-2) sum_sigma (F^sigma)_{a_1 a_n} A(1, sigma, n)`` (gluons,
DDM basis) and ``M = g^n sum_sigma (T^sigma)_{i j} A(q, sigma, qbar)`` (one quark line).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from ._dirac import lorentz, mdot, slash
from ._vertices import vvv_vertex, vvvv_vertex

_SQRT2 = math.sqrt(2.0)


def _p2(p):
    return p[..., 0] ** 2 - jnp.sum(p[..., 1:] ** 2, axis=-1)


def gluon_currents(momenta, polarisations, propagate_full: bool = True):
    """All colour-ordered currents of consecutive gluons.

    Args:
        momenta: list of n incoming momenta (..., 4) (real).
        polarisations: list of n polarisation vectors (..., 4) (complex).
        propagate_full: also attach the propagator to the current of all n gluons (False when
            that current is on shell, as in a pure-gluon amplitude).

    Returns:
        ``(currents, vertex_sums, total_momenta)`` dicts keyed by ``(i, j)`` (inclusive), where
        ``vertex_sums[(i, j)]`` is the amputated current (before the propagator).
    """
    n = len(momenta)
    cur, amp, mom = {}, {}, {}
    for i in range(n):
        cur[(i, i)] = polarisations[i]
        mom[(i, i)] = momenta[i]
    for length in range(2, n + 1):
        for i in range(0, n - length + 1):
            j = i + length - 1
            acc = 0.0
            for m in range(i, j):
                acc = (
                    acc
                    + vvv_vertex(cur[(i, m)], cur[(m + 1, j)], mom[(i, m)], mom[(m + 1, j)])
                    / _SQRT2
                )
            for m in range(i, j):
                for l in range(m + 1, j):
                    acc = acc + vvvv_vertex(cur[(i, m)], cur[(m + 1, l)], cur[(l + 1, j)]) / 2.0
            mom[(i, j)] = mom[(i, i)] + (mom[(i + 1, j)] if i + 1 <= j else 0.0)
            amp[(i, j)] = acc
            if length < n or propagate_full:
                cur[(i, j)] = acc / _p2(mom[(i, j)]).astype(acc.dtype)[..., None]
    return cur, amp, mom


def _check_legs(momenta, polarisations, minimum: int) -> None:
    if len(momenta) != len(polarisations) or len(momenta) < minimum:
        raise ValueError(f"need as many polarisations as momenta, at least {minimum}; got "
                         f"{len(momenta)} momenta and {len(polarisations)} polarisations")
    for i, (k, e) in enumerate(zip(momenta, polarisations, strict=True)):
        lorentz(k, f"momenta[{i}]")
        lorentz(e, f"polarisations[{i}]")


def gluon_amplitude(momenta, polarisations):
    """Colour-ordered pure-gluon amplitude ``A(1, ..., n)`` (all incoming), couplings stripped."""
    _check_legs(momenta, polarisations, 3)
    n = len(momenta)
    _, amp, _ = gluon_currents(momenta[:-1], polarisations[:-1], propagate_full=False)
    return mdot(amp[(0, n - 2)], polarisations[-1])


def quark_line_amplitude(ubar, v, quark_momentum, mass, gluon_momenta, polarisations):
    """Colour-ordered ``A(q, 1, ..., n, qbar)`` for an outgoing quark and antiquark.

    Args:
        ubar: row spinor of the outgoing quark (..., 4).
        v: spinor of the outgoing antiquark (..., 4).
        quark_momentum: physical momentum of the outgoing quark (..., 4).
        mass: quark mass (GeV); the internal propagators carry no width.
        gluon_momenta: incoming gluon momenta in colour order (gluon 1 next to the quark).
        polarisations: their polarisation vectors.
    """
    _check_legs(gluon_momenta, polarisations, 1)
    ubar, v = lorentz(ubar, "ubar"), lorentz(v, "v")
    quark_momentum = lorentz(quark_momentum, "quark_momentum")
    n = len(gluon_momenta)
    cur, _, mom = gluon_currents(gluon_momenta, polarisations)
    dtype = ubar.dtype
    line = {0: ubar}
    for j in range(1, n):
        acc = 0.0
        for m in range(0, j):
            acc = acc + jnp.einsum("...i,...ij->...j", line[m], slash(cur[(m, j - 1)])) / _SQRT2
        p_line = quark_momentum - mom[(0, j - 1)]
        prop = slash(p_line.astype(dtype)) + jnp.asarray(mass, dtype) * jnp.eye(4, dtype=dtype)
        denom = (_p2(p_line) - jnp.asarray(mass, p_line.dtype) ** 2).astype(dtype)
        line[j] = jnp.einsum("...i,...ij->...j", acc, prop) / denom[..., None]
    total = 0.0
    for m in range(0, n):
        total = (
            total + jnp.einsum("...i,...ij,...j->...", line[m], slash(cur[(m, n - 1)]), v) / _SQRT2
        )
    return total
