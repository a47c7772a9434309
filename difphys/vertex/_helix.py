"""Helix maths for charged tracks in a uniform magnetic field along +z.

Conventions (ACTS): perigee parameters with respect to the origin are
``(d0, z0, phi0, theta, qoverp)`` in (mm, mm, rad, rad, e/GeV). The point of closest approach in
the transverse plane is ``(-d0 sin phi0, d0 cos phi0, z0)`` and ``phi0`` is the direction of the
transverse momentum there. The signed curvature is ``rho = 0.299792458e-3 B qoverp / sin(theta)``
(1/mm, B in Tesla): a positive particle turns clockwise seen from +z, ``dphi/ds_T = -rho``.

All formulas are written without ``1/rho`` cancellations, so they are exact for any curvature
(including the straight-line limit) and smooth for automatic differentiation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_finite, check_trailing_dim, is_concrete

#: c in GeV / (T mm): a unit charge with pT = 1 GeV in B = 1 T has radius 1 / (C_LIGHT) mm.
C_LIGHT = 0.299792458e-3


def _check_field(bfield) -> None:
    """A finite field (T); 0 is allowed here: the helix maths has the straight-line limit."""
    check_finite(bfield, "bfield")


def _check_direction(theta, qoverp) -> None:
    """Outside ``jit``: finite, 0 < theta < pi, q/p != 0 (a charged track with momentum)."""
    check_finite(theta, "theta")
    check_finite(qoverp, "qoverp")
    if is_concrete(theta) and np.any((np.asarray(theta) <= 0) | (np.asarray(theta) >= np.pi)):
        raise ValueError(f"theta must lie in (0, pi); got {np.asarray(theta)!r}")
    if is_concrete(qoverp) and np.any(np.asarray(qoverp) == 0):
        raise ValueError("qoverp must be non-zero (a charged track with finite momentum)")


def _vector(x, dim: int, name: str, what: str):
    x = jnp.asarray(x)
    check_trailing_dim(x, dim, name, what)
    check_finite(x, name)
    return x


def curvature(qoverp, theta, bfield):
    """Signed transverse curvature ``rho`` (1/mm). Outside ``jit`` bad inputs raise
    (``theta`` outside (0, pi), ``qoverp = 0``, a non-finite field)."""
    _check_direction(theta, qoverp)
    _check_field(bfield)
    return C_LIGHT * bfield * qoverp / jnp.sin(theta)


def _wrap(angle):
    return jnp.arctan2(jnp.sin(angle), jnp.cos(angle))


def perigee_from_local(position, phi, theta, qoverp, bfield):
    """Perigee parameters of the helix through ``position`` (mm) with direction ``(phi, theta)``
    and ``qoverp`` (e/GeV) there. Returns ``(..., 5)``."""
    position = _vector(position, 3, "position", "(x, y, z) in mm")
    check_finite(phi, "phi")
    x0, y0, z0 = position[..., 0], position[..., 1], position[..., 2]
    rho = curvature(qoverp, theta, bfield)
    sphi, cphi = jnp.sin(phi), jnp.cos(phi)
    a = x0 * sphi - y0 * cphi
    r2 = x0 * x0 + y0 * y0
    root = jnp.sqrt(1.0 + 2.0 * rho * a + rho * rho * r2)
    d0 = -(2.0 * a + rho * r2) / (1.0 + root)
    phi0 = jnp.arctan2(sphi + rho * x0, cphi - rho * y0)
    delta = _wrap(phi0 - phi)  # = rho * s, s the transverse path from the perigee to position
    # s = delta / rho, with the straight-line limit x0 cos phi + y0 sin phi when rho -> 0.
    small = jnp.abs(rho) < 1e-14
    rho_safe = jnp.where(small, jnp.ones_like(rho), rho)
    s = jnp.where(small, x0 * cphi + y0 * sphi, delta / rho_safe)
    z_perigee = z0 - s / jnp.tan(theta)
    return jnp.stack(
        [
            d0,
            z_perigee,
            phi0,
            jnp.broadcast_to(theta, d0.shape),
            jnp.broadcast_to(qoverp, d0.shape),
        ],
        axis=-1,
    )


def momentum_to_local(momentum, charge):
    """``(phi, theta, qoverp)`` of a momentum vector (GeV) and charge (e), non-zero both."""
    momentum = _vector(momentum, 3, "momentum", "(px, py, pz) in GeV")
    check_finite(charge, "charge")
    if is_concrete(charge) and np.any(np.asarray(charge) == 0):
        raise ValueError("charge must be non-zero (a neutral particle leaves no track)")
    if is_concrete(momentum) and np.any(np.linalg.norm(np.asarray(momentum), axis=-1) == 0):
        raise ValueError("momentum must be non-zero")
    px, py, pz = momentum[..., 0], momentum[..., 1], momentum[..., 2]
    pt = jnp.sqrt(px * px + py * py)
    p = jnp.sqrt(pt * pt + pz * pz)
    return jnp.arctan2(py, px), jnp.arctan2(pt, pz), charge / p


def local_to_momentum(phi, theta, qoverp):
    """Momentum vector (GeV) from ``(phi, theta, qoverp)``; ``|p| = 1 / |qoverp|`` (unit charge)."""
    check_finite(phi, "phi")
    _check_direction(theta, qoverp)
    p = 1.0 / jnp.abs(qoverp)
    return jnp.stack(
        [p * jnp.sin(theta) * jnp.cos(phi), p * jnp.sin(theta) * jnp.sin(phi), p * jnp.cos(theta)],
        axis=-1,
    )


def perigee_from_state(position, momentum, charge, bfield):
    """Exact perigee ``(..., 5)`` of a track produced at ``position`` (mm) with ``momentum``
    (GeV) and ``charge`` (e) in a field ``bfield`` (T) along +z (helix propagation, not a line)."""
    position, momentum = jnp.asarray(position), jnp.asarray(momentum)
    phi, theta, qoverp = momentum_to_local(momentum, jnp.asarray(charge, momentum.dtype))
    return perigee_from_local(position, phi, theta, qoverp, bfield)


def state_at_vertex(params, vertex, bfield):
    """Inverse map: the helix point closest (transversely) to ``vertex`` and the local momentum
    ``(phi, theta, qoverp)`` there. Returns ``(point (..., 3), local (..., 3))``."""
    params = _vector(params, 5, "params", "perigee (d0, z0, phi0, theta, qoverp)")
    vertex = _vector(vertex, 3, "vertex", "(x, y, z) in mm")
    _check_direction(params[..., 3], params[..., 4])
    _check_field(bfield)
    d0, z0, phi0, theta, qoverp = (params[..., i] for i in range(5))
    rho = curvature(qoverp, theta, bfield)
    vx, vy = vertex[..., 0], vertex[..., 1]
    # Position relative to the perigee point, in the frame where the helix is regular in rho:
    # phi at the point closest to the vertex satisfies (-sin phi, cos phi) ~ rho (v - centre).
    px0, py0 = -d0 * jnp.sin(phi0), d0 * jnp.cos(phi0)
    # rho * (v - centre) = rho * (v - pca) + (-sin phi0, cos phi0)
    ux = rho * (vx - px0) - jnp.sin(phi0)
    uy = rho * (vy - py0) + jnp.cos(phi0)
    phi = jnp.arctan2(-ux, uy)  # (-sin phi, cos phi) = u / |u|
    delta = _wrap(phi0 - phi)  # = rho * s from the perigee to the point
    small = jnp.abs(rho) < 1e-14
    rho_safe = jnp.where(small, jnp.ones_like(rho), rho)
    s = jnp.where(small, (vx - px0) * jnp.cos(phi0) + (vy - py0) * jnp.sin(phi0), delta / rho_safe)
    # position along the helix after transverse path s from the perigee
    sin_c = jnp.where(small, s, (jnp.sin(phi0) - jnp.sin(phi)) / rho_safe)  # integral of cos(phi)
    cos_c = jnp.where(small, 0.0 * s, (jnp.cos(phi) - jnp.cos(phi0)) / rho_safe)
    x = px0 + jnp.where(small, s * jnp.cos(phi0), sin_c)
    y = py0 + jnp.where(small, s * jnp.sin(phi0), cos_c)
    z = z0 + s / jnp.tan(theta)
    return jnp.stack([x, y, z], axis=-1), jnp.stack([phi, theta, qoverp], axis=-1)


def perigee_jacobians(vertex, local, bfield):
    """``(d perigee / d vertex (..., 5, 3), d perigee / d (phi, theta, qoverp) (..., 5, 3))``."""
    vertex = _vector(vertex, 3, "vertex", "(x, y, z) in mm")
    local = _vector(local, 3, "local", "(phi, theta, qoverp)")
    _check_direction(local[..., 1], local[..., 2])
    _check_field(bfield)

    def h(v, q):
        return perigee_from_local(v, q[0], q[1], q[2], bfield)

    fn = lambda v, q: jax.jacfwd(h, argnums=(0, 1))(v, q)  # noqa: E731
    for _ in range(vertex.ndim - 1):
        fn = jax.vmap(fn)
    return fn(vertex, local)
