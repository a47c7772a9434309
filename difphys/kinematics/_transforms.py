"""Lorentz boosts and spatial rotations of four-momenta ``(..., 4)`` ``(E, px, py, pz)``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import check_finite, check_trailing_dim, is_concrete
from .._numerics import safe_norm
from ._invariants import _four


def boost(
    p: Float[ArrayLike, "*batch 4"], beta: Float[ArrayLike, "*batch 3"]
) -> Float[Array, "*batch 4"]:
    """Boost ``p`` by velocity ``beta`` (a 3-vector in units of c, ``|beta| < 1``).

    A particle at rest is given velocity ``beta``: ``boost((m, 0, 0, 0), beta)`` has
    ``p_vec = gamma m beta``. Uses ``(gamma - 1) / beta^2 = gamma^2 / (gamma + 1)``, regular at
    ``beta = 0`` (identity, with exact derivatives there).

    Raises ``ValueError`` outside ``jit`` if ``|beta| >= 1`` or ``beta`` is not finite. Inside
    ``jit`` such entries return the zero four-vector (a masked result, never NaN).
    """
    p = _four(p)
    beta = jnp.asarray(beta)
    check_trailing_dim(beta, 3, "beta", "velocity (bx, by, bz)")
    b2 = jnp.sum(beta * beta, axis=-1)
    if is_concrete(beta):
        b2_np = np.asarray(b2)
        if not np.all(np.isfinite(b2_np)) or np.any(b2_np >= 1):
            raise ValueError(f"boost velocity must satisfy |beta| < 1; got |beta|^2 = {b2_np!r}")
    valid = b2 < 1
    b2_safe = jnp.where(valid, b2, jnp.zeros_like(b2))
    gamma = 1.0 / jnp.sqrt(1.0 - b2_safe)
    gamma2 = gamma * gamma / (gamma + 1.0)
    beta_safe = jnp.where(valid[..., None], beta, jnp.zeros_like(beta))
    energy, vec = p[..., 0], p[..., 1:]
    bp = jnp.sum(beta_safe * vec, axis=-1)
    new_energy = gamma * (energy + bp)
    new_vec = vec + (gamma2 * bp + gamma * energy)[..., None] * beta_safe
    out = jnp.concatenate([new_energy[..., None], new_vec], axis=-1)
    return jnp.where(valid[..., None], out, jnp.zeros_like(out))


def _frame_mass(frame, frame_mass):
    if frame_mass is not None:
        return jnp.asarray(frame_mass)
    energy, vec = frame[..., 0], frame[..., 1:]
    m2 = (energy - safe_norm(vec)) * (energy + safe_norm(vec))
    # double where: a light-like or space-like frame gives mass 0 with a zero (not NaN) gradient
    time_like = m2 > 0
    return jnp.where(time_like, jnp.sqrt(jnp.where(time_like, m2, jnp.ones_like(m2))),
                     jnp.zeros_like(m2))


def _check_frame(frame, frame_mass=None) -> None:
    """Outside ``jit``: a finite time-like frame (E > |p|), or, when its mass is given (as
    phase-space maps do, where E and |p| may agree to rounding), a finite frame with E > 0
    and mass > 0."""
    if frame_mass is not None:
        if is_concrete(frame, frame_mass):
            f, m = np.asarray(frame), np.asarray(frame_mass)
            if not (np.all(np.isfinite(f)) and np.all(np.isfinite(m))) or np.any(f[..., 0] <= 0) \
                    or np.any(m <= 0):
                raise ValueError("frame must be finite with E > 0 and frame_mass > 0")
        return
    if is_concrete(frame):
        f = np.asarray(frame)
        if not np.all(np.isfinite(f)) or np.any(f[..., 0] <= np.linalg.norm(f[..., 1:], axis=-1)):
            raise ValueError("frame must be a finite time-like four-momentum with E > |p|")


def boost_from_rest_frame(
    p: Float[ArrayLike, "*batch 4"],
    frame: Float[ArrayLike, "*batch 4"],
    frame_mass: Float[ArrayLike, "*batch"] | None = None,
) -> Float[Array, "*batch 4"]:
    """Take ``p``, given in the rest frame of ``frame``, to the frame in which ``frame`` is given.

    Inverse of :func:`boost_to_rest_frame`. Written with the frame's four-momentum ``(E_Q, q)``
    and mass ``M`` rather than a velocity, ``E' = (E_Q e + q.v) / M`` and
    ``v' = v + q [q.v / (M (E_Q + M)) + e / M]``, which keeps full precision at large ``gamma``
    (no ``1 / sqrt(1 - beta^2)``). Pass ``frame_mass`` when it is known exactly (e.g. from a
    phase-space map); otherwise it is computed from ``frame``. A non-time-like frame raises
    outside ``jit`` and gives zeros inside.
    """
    p, frame = _four(p), _four(frame, "frame")
    _check_frame(frame, frame_mass)
    big_m = _frame_mass(frame, frame_mass)
    energy_q, q = frame[..., 0], frame[..., 1:]
    valid = (big_m > 0) & (energy_q > 0)
    m_safe = jnp.where(valid, big_m, jnp.ones_like(big_m))
    e_safe = jnp.where(valid, energy_q, jnp.ones_like(energy_q))
    e, v = p[..., 0], p[..., 1:]
    qv = jnp.sum(q * v, axis=-1)
    new_energy = (e_safe * e + qv) / m_safe
    coeff = qv / (m_safe * (e_safe + m_safe)) + e / m_safe
    new_vec = v + coeff[..., None] * q
    out = jnp.concatenate([new_energy[..., None], new_vec], axis=-1)
    return jnp.where(valid[..., None], out, jnp.zeros_like(out))


def boost_to_rest_frame(
    p: Float[ArrayLike, "*batch 4"], frame: Float[ArrayLike, "*batch 4"]
) -> Float[Array, "*batch 4"]:
    """Express ``p`` in the rest frame of the time-like four-momentum ``frame``.

    ``boost_to_rest_frame(frame, frame) == (mass(frame), 0, 0, 0)``. ``frame`` must have
    ``E > |p|`` (checked outside ``jit``; inside ``jit`` a non-time-like frame gives zeros).
    """
    p, frame = _four(p), _four(frame, "frame")
    _check_frame(frame)
    mirrored = jnp.concatenate([frame[..., :1], -frame[..., 1:]], axis=-1)
    return boost_from_rest_frame(p, mirrored)


def rotate(
    p: Float[ArrayLike, "*batch 4"],
    axis: Float[ArrayLike, "*batch 3"],
    angle: Float[ArrayLike, "*batch"],
) -> Float[Array, "*batch 4"]:
    """Rotate the spatial part of ``p`` by ``angle`` (rad, right-handed) about ``axis``.

    Rodrigues' formula; ``axis`` need not be normalised but must be non-zero (checked outside
    ``jit``; inside ``jit`` a zero axis leaves ``p`` unchanged). Energy is untouched.
    """
    p = _four(p)
    axis = jnp.asarray(axis)
    angle = jnp.asarray(angle)
    check_trailing_dim(axis, 3, "axis", "rotation axis (x, y, z)")
    check_finite(axis, "axis")
    check_finite(angle, "angle")
    n2 = jnp.sum(axis * axis, axis=-1)
    if is_concrete(axis) and np.any(np.asarray(n2) <= 0):
        raise ValueError("rotation axis must be a non-zero 3-vector")
    nonzero = n2 > 0
    n2_safe = jnp.where(nonzero, n2, jnp.ones_like(n2))
    k = jnp.where(nonzero[..., None], axis / jnp.sqrt(n2_safe)[..., None], jnp.zeros_like(axis))
    vec = p[..., 1:]
    cos, sin = jnp.cos(angle)[..., None], jnp.sin(angle)[..., None]
    kv = jnp.sum(k * vec, axis=-1, keepdims=True)
    rotated = vec * cos + jnp.cross(k, vec) * sin + k * kv * (1.0 - cos)
    rotated = jnp.where(nonzero[..., None], rotated, vec)
    energy = jnp.broadcast_to(p[..., :1], rotated.shape[:-1] + (1,))
    return jnp.concatenate([energy, rotated], axis=-1)
