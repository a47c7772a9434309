"""Track containers and the detector resolution model used to simulate tracks."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_finite, check_nonnegative
from .._fields import array_field
from ._helix import perigee_from_state


class Perigee(eqx.Module):
    """Perigee track parameters ``params (..., n, 5)`` = (d0, z0, phi0, theta, qoverp) in
    (mm, mm, rad, rad, e/GeV) and full covariances ``cov (..., n, 5, 5)`` in the same order."""

    params: Float[Array, "*batch n 5"]
    cov: Float[Array, "*batch n 5 5"]

    def __check_init__(self):
        if self.params.shape[-1:] != (5,) or self.cov.shape[-2:] != (5, 5):
            raise ValueError(
                f"Perigee needs params (..., n, 5) and cov (..., n, 5, 5); got {self.params.shape} and {self.cov.shape}"
            )
        if self.params.shape[:-1] != self.cov.shape[:-2]:
            raise ValueError(
                f"params {self.params.shape} and cov {self.cov.shape} disagree on the track axes"
            )


class TrackResolution(eqx.Module):
    """Resolution model (all array leaves, so it can be optimised).

    ``sigma(d0) = d0_a (+) d0_b / (p sin^(3/2) theta)`` (mm, mm GeV), same form for ``z0``;
    ``sigma(phi0) = sigma(theta) = ang_a (+) ang_b / p`` (rad, rad GeV);
    ``sigma(q/p) / |q/p| = pt_a (+) pt_b * pT`` (relative, 1/GeV). ``(+)`` is addition in quadrature.
    Defaults resemble an LHC-like pixel tracker.
    """

    d0_a: Array = array_field(0.005)
    d0_b: Array = array_field(0.015)
    z0_a: Array = array_field(0.01)
    z0_b: Array = array_field(0.03)
    ang_a: Array = array_field(1e-4)
    ang_b: Array = array_field(1.5e-3)
    pt_a: Array = array_field(0.005)
    pt_b: Array = array_field(5e-4)

    def __check_init__(self):
        for name in ("d0_a", "d0_b", "z0_a", "z0_b", "ang_a", "ang_b", "pt_a", "pt_b"):
            check_finite(getattr(self, name), name)
            check_nonnegative(getattr(self, name), name)

    def sigmas(self, params):
        """Standard deviations ``(..., 5)`` for perigee ``params (..., 5)``."""
        theta, qoverp = params[..., 3], params[..., 4]
        p = 1.0 / jnp.abs(qoverp)
        sin_t = jnp.sin(theta)
        pt = p * sin_t
        quad = lambda a, b: jnp.sqrt(a * a + b * b)  # noqa: E731
        sd0 = quad(self.d0_a, self.d0_b / (p * sin_t**1.5))
        sz0 = quad(self.z0_a, self.z0_b / (p * sin_t**1.5))
        sang = quad(self.ang_a, self.ang_b / p)
        sqop = jnp.abs(qoverp) * quad(self.pt_a, self.pt_b * pt)
        return jnp.stack([sd0, sz0, sang, sang, sqop], axis=-1)


def simulate_tracks(
    key, vertex, momenta, charges, bfield, resolution: TrackResolution | None = None
):
    """Tracks from one production vertex: ``(smeared Perigee, true params (..., n, 5))``.

    Args:
        key: PRNG key.
        vertex: production point (3,) or per-track (n, 3), mm.
        momenta: (n, 3) GeV at the production point.
        charges: (n,) in e (non-zero).
        bfield: Tesla along +z.
        resolution: :class:`TrackResolution` (default model if None).

    The true perigee comes from exact helix propagation; the smeared parameters are drawn from a
    Gaussian with the (diagonal) covariance of the resolution model evaluated at the truth.
    """
    resolution = TrackResolution() if resolution is None else resolution
    momenta = jnp.asarray(momenta)
    vertex = jnp.broadcast_to(jnp.asarray(vertex, momenta.dtype), momenta.shape)
    truth = perigee_from_state(vertex, momenta, jnp.asarray(charges, momenta.dtype), bfield)
    sig = resolution.sigmas(truth).astype(momenta.dtype)
    cov = jnp.eye(5, dtype=momenta.dtype) * (sig**2)[..., None, :]
    noise = jax.random.normal(key, truth.shape, dtype=momenta.dtype) * sig
    return Perigee(truth + noise, cov), truth
