"""Detector models of the dimuon source-estimation problem (``docs/source_estimation.md``).

Two tiers, both built on :class:`difphys.vertex.TrackResolution` (relative ``q/p``
resolution ``pt_a (+) pt_b pT``, angular ``ang_a (+) ang_b / p``):

* **Exact likelihood** (:class:`DimuonLikelihood`, :func:`smear_dimuon`): the observation is
  ``y = (m, cos theta*)`` smeared with Gaussians whose widths are the track resolution
  propagated to the pair in its rest frame (two back-to-back muons of momentum ``m/2`` at polar
  angles ``theta*`` and ``pi - theta*``): ``sigma_m = m sigma_rel / sqrt 2`` (``m = 2 sqrt(p1 p2)``,
  independent momentum errors) and ``sigma_cos = sin theta* sigma_theta / sqrt 2`` (the average
  of the two polar-angle measurements). The observations are *generated* by this model, so
  ``log p(y | x)`` is exact; its resolution parameters are array leaves (nuisance parameters
  that :func:`difphys.flows.fit_source` can fit).
* **Likelihood-free** (:func:`reconstruct_dimuon`): the final-state muons (after the QED
  shower, with the pair's transverse recoil from radiation) get their ``q/p``, ``theta`` and
  ``phi`` smeared independently with the same model, and ``y = (m, cos theta*)`` is computed
  from the smeared muons (``cos theta*`` of the mu- in the pair rest frame, +z axis). Radiation
  and the boost make ``p(y | x)`` intractable; it is learned by a conditional flow from
  simulated pairs.

Units: GeV; angles in rad.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_trailing_dim
from ..vertex import TrackResolution

MUON_MASS = 0.1056583755  # GeV (PDG 2024)


def cld_like_resolution() -> TrackResolution:
    """A future e+ e- tracker: ``sigma(pT) / pT^2 = 2e-5 / GeV`` at high momentum with a 0.2%
    multiple-scattering term (the CLD design goal, arXiv:1911.12230), angles to 0.1 mrad."""
    return TrackResolution(d0_a=0.003, d0_b=0.015, z0_a=0.005, z0_b=0.02, ang_a=1e-4,
                           ang_b=1.5e-3, pt_a=0.002, pt_b=2e-5)


def _widths(x, resolution: TrackResolution):
    m, c = x[..., 0], x[..., 1]
    sin_t = jnp.sqrt(jnp.clip(1 - c * c, 0.0, 1.0))
    p = m / 2
    pt = p * sin_t
    rel = jnp.sqrt(resolution.pt_a**2 + (resolution.pt_b * pt) ** 2)
    ang = jnp.sqrt(resolution.ang_a**2 + (resolution.ang_b / p) ** 2)
    return m * rel / np.sqrt(2), sin_t * ang / np.sqrt(2) + 1e-9


class DimuonLikelihood(eqx.Module):
    """The exact ``log p(y | x)`` of :func:`smear_dimuon`: ``y, x = (m GeV, cos theta*)``;
    ``-inf`` (with a zero gradient) for an unphysical source point (``m <= 0`` or
    ``|cos theta*| > 1``)."""

    resolution: TrackResolution

    def __call__(self, y, x):
        ok = (x[0] > 0) & (jnp.abs(x[1]) <= 1)
        x_safe = jnp.where(ok, x, jnp.array([91.0, 0.0], x.dtype))  # double where: no NaN
        s_m, s_c = _widths(x_safe, self.resolution)
        z_m, z_c = (y[0] - x_safe[0]) / s_m, (y[1] - x_safe[1]) / s_c
        value = -0.5 * (z_m**2 + z_c**2) - jnp.log(s_m) - jnp.log(s_c) - jnp.log(2 * jnp.pi)
        return jnp.where(ok, value, -jnp.inf)


def smear_dimuon(key, x, resolution: TrackResolution):
    """Observations ``y (n, 2)`` of true ``x (n, 2) = (m, cos theta*)`` under the exact tier."""
    x = jnp.asarray(x)
    check_trailing_dim(x, 2, "x", "(m, cos theta*)")
    s_m, s_c = _widths(x, resolution)
    eps = jax.random.normal(key, x.shape, x.dtype)
    return x + eps * jnp.stack([s_m, s_c], axis=-1)


def _cos_star(p_minus, pair):
    m = jnp.sqrt(jnp.maximum(pair[..., 0] ** 2 - jnp.sum(pair[..., 1:] ** 2, -1), 1e-12))
    beta = pair[..., 1:] / pair[..., :1]
    gamma = pair[..., 0] / m
    b2 = jnp.maximum(jnp.sum(beta**2, -1), 1e-30)
    bp = jnp.sum(beta * p_minus[..., 1:], -1)
    coef = (gamma - 1) * bp / b2 - gamma * p_minus[..., 0]
    p_star = p_minus[..., 1:] + coef[..., None] * beta
    return p_star[..., 2] / jnp.linalg.norm(p_star, axis=-1)


def reconstruct_dimuon(key, muons, resolution: TrackResolution):
    """Observations ``y (n, 2) = (m, cos theta*)`` from smeared final-state muons
    ``muons (n, 2, 4)`` (mu-, mu+; E, px, py, pz in GeV): the likelihood-free tier."""
    muons = jnp.asarray(muons)
    if muons.ndim != 3 or muons.shape[1:] != (2, 4):
        raise ValueError(f"muons must be (n, 2, 4) (mu-, mu+ four-momenta); got {muons.shape}")
    p3 = muons[..., 1:]
    p = jnp.linalg.norm(p3, axis=-1)
    theta = jnp.arccos(jnp.clip(p3[..., 2] / p, -1.0, 1.0))
    phi = jnp.arctan2(p3[..., 1], p3[..., 0])
    pt = p * jnp.sin(theta)
    rel = jnp.sqrt(resolution.pt_a**2 + (resolution.pt_b * pt) ** 2)
    ang = jnp.sqrt(resolution.ang_a**2 + (resolution.ang_b / p) ** 2)
    e1, e2, e3 = jax.random.normal(key, (3, *p.shape), p.dtype)
    inv_p = (1 / p) * (1 + rel * e1)
    theta_s, phi_s = theta + ang * e2, phi + ang * e3
    p_s = 1 / jnp.abs(inv_p)
    p3_s = p_s[..., None] * jnp.stack([jnp.sin(theta_s) * jnp.cos(phi_s),
                                       jnp.sin(theta_s) * jnp.sin(phi_s), jnp.cos(theta_s)], -1)
    energy = jnp.sqrt(p_s**2 + MUON_MASS**2)
    p4 = jnp.concatenate([energy[..., None], p3_s], axis=-1)
    pair = p4[:, 0] + p4[:, 1]
    m = jnp.sqrt(jnp.maximum(pair[:, 0] ** 2 - jnp.sum(pair[:, 1:] ** 2, -1), 0.0))
    return jnp.stack([m, _cos_star(p4[:, 0], pair)], axis=-1)
