"""Smooth map from the unit hypercube to n-body phase space (sequential two-body decays)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import (
    check_finite,
    check_nonnegative,
    check_positive,
    check_trailing_dim,
    check_unit_interval,
    is_concrete,
)
from .._numerics import kallen, safe_sqrt
from ..kinematics import boost_from_rest_frame
from ._validate import prepare


def two_body_decay(parent, parent_mass, ma, mb, u_cos, u_phi):
    """Decay ``parent`` (lab four-momentum, mass ``parent_mass``) into masses ``ma`` and ``mb``.

    The direction of daughter ``a`` in the parent rest frame is ``cos theta = 2 u_cos - 1``,
    ``phi = 2 pi u_phi``. Returns ``(p_a, p_b, weight)`` with the lab momenta and the two-body
    phase-space factor ``lambda^(1/2)(M^2, ma^2, mb^2) / (8 pi M^2)`` (the angular average
    ``dOmega / 4 pi`` is the Jacobian of the map, so ``E_u[weight] = Phi_2``).
    Outside ``jit``: a finite parent with ``parent_mass > 0``, daughter masses >= 0 with
    ``ma + mb <= parent_mass`` (an open channel) and ``u`` in [0, 1], or ``ValueError``.
    """
    for value, label in ((parent_mass, "parent_mass"), (ma, "ma"), (mb, "mb")):
        check_finite(value, label)
        check_nonnegative(value, label)
    check_positive(parent_mass, "parent_mass")
    check_unit_interval(u_cos, "u_cos")
    check_unit_interval(u_phi, "u_phi")
    check_finite(parent, "parent")
    if is_concrete(parent_mass, ma, mb) and np.any(np.asarray(ma) + np.asarray(mb)
                                                    > np.asarray(parent_mass)):
        raise ValueError(f"closed channel: ma + mb > parent_mass ({np.asarray(ma)!r} + "
                         f"{np.asarray(mb)!r} > {np.asarray(parent_mass)!r} GeV)")
    return _two_body_decay(parent, parent_mass, ma, mb, u_cos, u_phi)


def _two_body_decay(parent, parent_mass, ma, mb, u_cos, u_phi):
    """:func:`two_body_decay` without the eager checks: the maps call it per event, where an
    edge point of phase space is valid."""

    lam = safe_sqrt(kallen(parent_mass**2, ma**2, mb**2))
    factor = lam / (8.0 * jnp.pi * parent_mass**2)
    pstar = lam / (2.0 * parent_mass)
    cos_t = 2.0 * u_cos - 1.0
    sin_t = 2.0 * safe_sqrt(u_cos * (1.0 - u_cos))
    azim = 2.0 * jnp.pi * u_phi
    direction = jnp.stack([sin_t * jnp.cos(azim), sin_t * jnp.sin(azim), cos_t], axis=-1)
    vec = pstar[..., None] * direction
    e_a = safe_sqrt(ma**2 + pstar**2)  # zero-energy massless daughter: gradient 0, not NaN
    e_b = safe_sqrt(mb**2 + pstar**2)
    daughter_a = jnp.concatenate([e_a[..., None], vec], axis=-1)
    daughter_b = jnp.concatenate([e_b[..., None], -vec], axis=-1)
    p_a = boost_from_rest_frame(daughter_a, parent, parent_mass)
    p_b = boost_from_rest_frame(daughter_b, parent, parent_mass)
    return p_a, p_b, factor


def unit_cube_dim(n: int) -> int:
    """Dimension ``3n - 4`` of the unit cube that parametrises ``n``-body phase space."""
    if n < 2:
        raise ValueError(f"phase space needs at least 2 particles; got n = {n}")
    return 3 * n - 4


def from_unit_cube(
    u: Float[ArrayLike, "*batch d"],
    sqrt_s: Float[ArrayLike, "*batch"],
    masses: Float[ArrayLike, " n"],
) -> tuple[Float[Array, "*batch n 4"], Float[Array, "*batch"]]:
    """Map ``u`` in ``[0, 1]^(3n-4)`` to ``n`` momenta in the centre-of-mass frame, with weight.

    The event is built as a chain of two-body decays ``P -> p_0 + Q_1``, ``Q_1 -> p_1 + Q_2``,
    ..., ``Q_{n-2} -> p_{n-2} + p_{n-1}``:

    * ``u[..., :n-2]`` fix the intermediate masses ``M_k = sum_{j>=k} m_j + T t_k`` with
      ``T = sqrt_s - sum(m)`` and ordered ``1 > t_1 > ... > t_{n-2} > 0`` obtained by inverse-CDF
      sampling of the ordered simplex (``t_k = t_{k-1} u_k^(1/(n-1-k))``);
    * ``u[..., n-2:]`` are ``(cos theta, phi)`` pairs, ``cos theta = 2u - 1``, ``phi = 2 pi u``, of
      each decay in the rest frame of the decaying system.

    The weight is the Jacobian times the phase-space density,
    ``w = [prod_k 2 M_k T / (2 pi)] / (n-2)! * prod_k lambda^(1/2)(M_k^2, m_k^2, M_{k+1}^2)
    / (8 pi M_k^2)``, so ``E_u[w f] = int f dPhi_n`` in the convention of
    :func:`difphys.phasespace.rambo`. The map is smooth in ``u`` (on the open cube), in
    ``sqrt_s`` and in ``masses``; gradients flow to all of them. On the faces ``u_k = 0`` of
    the mass coordinates (n >= 4), where ``u^(1/j)`` has an infinite slope, the gradient with
    respect to that ``u_k`` is 0 (the point is evaluated at ``u_k = eps``, machine epsilon),
    so it is finite everywhere on the closed cube.

    Args:
        u: points of shape ``(..., 3n - 4)``.
        sqrt_s: centre-of-mass energy (GeV), broadcastable to ``u.shape[:-1]``.
        masses: ``(n,)`` final-state masses (GeV).

    Returns:
        ``momenta`` ``(..., n, 4)`` and ``weight`` ``(...)``. Outside ``jit`` invalid input
        (shape, NaN, negative masses, ``sqrt_s`` at or below threshold, ``u`` outside the cube)
        raises ``ValueError``; inside ``jit`` such points give zero momenta and zero weight.
    """
    sqrt_s, masses, valid = prepare(sqrt_s, masses)
    n = masses.shape[0]
    dim = unit_cube_dim(n)
    u = jnp.asarray(u).astype(masses.dtype)
    check_trailing_dim(u, dim, "u", f"unit-cube coordinates for {n}-body phase space")
    if is_concrete(u):
        u_np = np.asarray(u)
        if not np.all(np.isfinite(u_np)) or np.any((u_np < 0) | (u_np > 1)):
            raise ValueError("u must be finite and lie in the unit cube [0, 1]")
    valid = valid & jnp.all((u >= 0) & (u <= 1), axis=-1)
    batch = u.shape[:-1]
    sqrt_s = jnp.broadcast_to(sqrt_s, batch)
    total_mass = jnp.sum(masses)
    kinetic = jnp.where(valid, sqrt_s - total_mass, jnp.ones_like(sqrt_s))
    roots = jnp.where(valid, sqrt_s, total_mass + kinetic)
    u = jnp.where(valid[..., None], u, jnp.full_like(u, 0.5))

    # Intermediate masses M_0 = sqrt_s > M_1 > ... > M_{n-2} > M_{n-1} = m_{n-1}.
    suffix = [jnp.sum(masses[k:]) for k in range(n)]
    t_prev = jnp.ones_like(roots)
    big_m = [roots]
    weight = jnp.full_like(roots, 1.0 / math.factorial(n - 2))
    for k in range(1, n - 1):
        # u = 0 is a singular face (u^(1/j) has an infinite slope; for massless particles the
        # subsystem mass vanishes): clamp to machine epsilon, a change of the size of u's own
        # rounding, so the gradient there is 0 instead of NaN
        u_k = jnp.maximum(u[..., k - 1], jnp.finfo(u.dtype).eps)
        t_k = t_prev * u_k ** (1.0 / (n - 1 - k))
        m_k = suffix[k] + kinetic * t_k
        big_m.append(m_k)
        weight = weight * (2.0 * m_k * kinetic / (2.0 * jnp.pi))
        t_prev = t_k
    big_m.append(jnp.broadcast_to(masses[n - 1], roots.shape))

    # Chain of two-body decays, each in the rest frame of the decaying system, boosted to the lab.
    parent = jnp.stack([roots, *([jnp.zeros_like(roots)] * 3)], axis=-1)
    momenta = []
    for k in range(n - 1):
        uc, up = u[..., n - 2 + 2 * k], u[..., n - 1 + 2 * k]
        daughter, parent, factor = _two_body_decay(parent, big_m[k], masses[k], big_m[k + 1], uc, up)
        weight = weight * factor
        momenta.append(daughter)
    momenta.append(parent)
    momenta = jnp.stack(momenta, axis=-2)
    momenta = jnp.where(valid[..., None, None], momenta, jnp.zeros_like(momenta))
    weight = jnp.where(valid, weight, jnp.zeros_like(weight))
    return momenta, weight
