"""Pairwise particle features of the Particle Transformer (Qu, Li, Qian, arXiv:2202.03772, eq. 3)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._components import phi, pt, rapidity
from ._invariants import _four, mass2

#: Floor applied before each logarithm (as weaver-core's ``pairwise_lv_fts``).
PAIR_EPS = 1e-8


def _log_floor(x):
    return jnp.log(jnp.maximum(x, PAIR_EPS))


def pairwise_features(p: Float[ArrayLike, "*batch n 4"],
                      partners=None) -> Float[Array, "*batch n k 4"]:
    """ParT's four interaction features of particle pairs ``(i, j)``:
    ``(ln Delta, ln kT, ln z, ln m^2)`` with ``Delta = sqrt(dy^2 + dphi^2)`` in rapidity,
    ``kT = min(pT_i, pT_j) Delta``, ``z = min(pT_i, pT_j) / (pT_i + pT_j)`` and
    ``m^2 = (p_i + p_j)^2`` (GeV^2); each argument is floored at ``PAIR_EPS`` before the log.

    ``p`` holds four-momenta (E, px, py, pz) in GeV with the particle axis second-last.
    Without ``partners`` the result is ``(*batch, n, n, 4)`` for every pair: symmetric in
    ``(i, j)``, self-pairs with ``Delta = 0`` (floored). With ``partners``, an integer array
    ``(n, k)`` of particle indices, it is ``(*batch, n, k, 4)`` for the pairs
    ``(i, partners[i, m])`` only (the Particle Transformer evaluates each unordered pair once).
    """
    p = _four(p)
    pt_all, y_all, phi_all = pt(p), rapidity(p), phi(p)
    if partners is None:  # every j, broadcast along a new axis
        pj = p[..., None, :, :]
        ptj, yj, phij = pt_all[..., None, :], y_all[..., None, :], phi_all[..., None, :]
    else:
        partners = np.asarray(partners)
        if partners.ndim != 2 or partners.shape[0] != p.shape[-2]:
            raise ValueError(f"partners must be (n, k) with n = {p.shape[-2]} particles; "
                             f"got {partners.shape}")
        pj = p[..., partners, :]
        ptj, yj, phij = pt_all[..., partners], y_all[..., partners], phi_all[..., partners]
    pi, pti = p[..., :, None, :], pt_all[..., :, None]
    dy = y_all[..., :, None] - yj
    dphi = jnp.mod(phi_all[..., :, None] - phij + jnp.pi, 2 * jnp.pi) - jnp.pi
    d2 = dy * dy + dphi * dphi
    delta = jnp.sqrt(jnp.maximum(d2, PAIR_EPS * PAIR_EPS))
    ptmin = jnp.minimum(pti, ptj)
    ln_delta = _log_floor(delta)
    ln_kt = _log_floor(ptmin * delta)
    ln_z = _log_floor(ptmin / jnp.maximum(pti + ptj, PAIR_EPS))
    ln_m2 = _log_floor(mass2(pi + pj))
    return jnp.stack([ln_delta, ln_kt, ln_z, ln_m2], axis=-1)
