"""Partonic cross sections and differential distributions by Monte Carlo over the unit cube."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..phasespace._montecarlo import batch_moments, streaming_mean
from ._params import SMParams
from ._particles import PARTICLES
from ._process import Process

#: (hbar c)^2 in pb GeV^2 (PDG: 0.3893793721 GeV^2 mbarn).
GEV2_TO_PB = 0.3893793721e9


class CrossSection(NamedTuple):
    """``value`` and standard ``error`` in pb, and the number of points."""

    value: jax.Array
    error: jax.Array
    n_points: int


class Histogram(NamedTuple):
    """``dsigma/dx`` per bin (pb per unit of x), its error, and the bin edges."""

    edges: np.ndarray
    values: jax.Array
    errors: jax.Array

    def to_hist(self, name: str = "x", label: str | None = None):
        """This histogram as a scikit-hep ``hist.Hist`` (the ``hep`` extra): a variable-width
        axis on :attr:`edges` and ``Weight`` storage whose values are ``dsigma/dx`` (pb per
        unit of x) and whose variances are ``errors**2``; ``h.values() * widths`` sums to
        sigma."""
        from .._extras import require

        hist = require("hist", "hep", "Histogram.to_hist")
        h = hist.Hist(hist.axis.Variable(np.asarray(self.edges), name=name, label=label or name),
                      storage=hist.storage.Weight())
        view = h.view(flow=False)
        view["value"] = np.asarray(self.values, np.float64)
        view["variance"] = np.asarray(self.errors, np.float64) ** 2
        return h


def sigma_integrand(proc: Process, u, sqrt_s, params: SMParams, *, mapping: str = "auto"):
    """The cross-section integrand on the unit cube: ``(momenta (..., n, 4), w (...))`` with
    ``w = |M|^2 x (phase-space weight) / (2 s)`` in pb, so that ``E_u[w] = sigma`` for ``u``
    uniform on ``[0, 1]^proc.phase_space_dim``. The one place the flux factor and the unit
    conversion are written: :func:`cross_section`, :func:`dsigma`, :mod:`difphys.analysis` and
    :class:`difphys.flows.MatrixElementTarget` all use it. ``mapping`` is that of
    :meth:`Process.phase_space`."""
    momenta, weight = proc.phase_space(u, sqrt_s, params, mapping=mapping)
    s = jnp.asarray(sqrt_s, weight.dtype) ** 2
    return momenta, weight * proc(momenta, params) / (2.0 * s) * GEV2_TO_PB


def _event_weights(proc, cuts, key, batch_size, sqrt_s, params):
    dim = proc.phase_space_dim
    dtype = params.MZ.dtype
    eps = jnp.finfo(dtype).eps
    u = jax.random.uniform(key, (batch_size, dim), dtype, minval=eps, maxval=1.0 - eps)
    momenta, values = sigma_integrand(proc, u, sqrt_s, params)
    if cuts is not None:
        values = jnp.where(cuts(momenta), values, 0.0)
    return momenta, values


@partial(jax.jit, static_argnames=("proc", "cuts", "batch_size"))
def _batch(proc, cuts, batch_size, key, n_valid, sqrt_s, params):
    _, values = _event_weights(proc, cuts, key, batch_size, sqrt_s, params)
    return batch_moments(values, n_valid)


def _check(proc, sqrt_s, params):
    if not isinstance(proc, Process):
        raise TypeError(f"expected a difphys.amplitudes.Process; got {type(proc).__name__}")
    rs = float(sqrt_s) if not isinstance(sqrt_s, jax.core.Tracer) else None
    masses = proc.final_state_masses(params)
    if rs is not None and not isinstance(masses, jax.core.Tracer):
        threshold = float(jnp.sum(masses))
        if not np.isfinite(rs) or rs <= threshold:
            raise ValueError(
                f"sqrt_s = {rs} GeV is not above the {proc.name!r} threshold {threshold:.4g} GeV"
            )


def cross_section(proc, sqrt_s, n_points: int, params: SMParams | None = None, *, key,
                  cuts: Callable | None = None, batch_size: int = 32768, progress: bool = False,
                  loop: str = "python", pdf=None, scale=None, beams=(2212, 2212)) -> CrossSection:
    """Partonic cross section ``sigma = (1 / 2s) int |M|^2 dPhi`` (pb) at fixed ``sqrt_s`` (GeV).

    Points are uniform on the process's unit cube (:meth:`Process.phase_space`). ``cuts`` is
    an optional jnp function ``momenta (batch, n, 4) -> bool (batch,)`` (must be hashable: a
    module-level function). Differentiable with respect to ``params`` and ``sqrt_s`` with
    common random numbers (same ``key``). ``loop="scan"`` makes the whole estimate one
    traceable ``lax.scan`` (for use inside ``jit``/``vmap``, e.g. a likelihood; no progress
    bar); ``"python"`` compiles one batch and loops over it.

    **Hadron colliders**: with ``pdf`` (a :class:`difphys.pdf.PDFSet`) ``sqrt_s`` is the beams'
    energy and ``proc`` a :class:`Process` or a :class:`ProcessSet` (``process("p p > t t~")``),
    whose subprocesses are summed: ``sigma = sum_ab int dx1 dx2 f_a(x1, muF) f_b(x2, muF)
    sigma_ab(x1 x2 s)`` with ``x1, x2`` two more unit-cube dimensions (``tau = x1 x2`` sampled
    logarithmically from threshold, the rapidity uniformly), ``n_points`` per subprocess.
    ``scale`` is the factorisation scale muF in GeV (required); |M|^2 uses ``params.aS`` as
    alpha_s(muR) (set it for your renormalisation scale). ``beams``: PDG ids (2212 proton,
    -2212 antiproton). Incoming partons are massless: a massive ``b`` beam parton needs
    ``params.replace(MB=0.0)``. Returned momenta (for ``cuts``) are in the lab frame.
    """
    if pdf is not None:
        return _hadronic(proc, sqrt_s, n_points, params, key=key, cuts=cuts,
                         batch_size=batch_size, progress=progress, loop=loop, pdf=pdf,
                         scale=scale, beams=beams)
    params = SMParams() if params is None else params
    _check(proc, sqrt_s, params)
    batch_size = int(min(batch_size, n_points))

    def batch(k, n_valid):
        return _batch(proc, cuts, batch_size, k, n_valid, sqrt_s, params)

    value, error = streaming_mean(batch, n_points, batch_size, key=key, progress=progress,
                                  desc=proc.name, loop=loop)
    return CrossSection(value, error, n_points)


@partial(jax.jit, static_argnames=("proc", "cuts", "observable", "batch_size"))
def _hist_batch(proc, cuts, observable, batch_size, key, n_valid, sqrt_s, params, edges):
    """``(count, mean, M2)`` per bin of the per-point contributions ``w 1[x in bin]`` of one
    batch, computed by scatter-adds without materialising a (points, bins) array: a point
    outside bin b contributes 0, i.e. ``mean_b^2`` to its M2."""
    momenta, values = _event_weights(proc, cuts, key, batch_size, sqrt_s, params)
    valid = jnp.arange(batch_size) < n_valid
    x = observable(momenta)
    idx = jnp.searchsorted(edges, x, side="right") - 1
    inside = valid & (idx >= 0) & (idx < edges.shape[0] - 1)
    idx = jnp.where(inside, idx, 0)
    n_bins = edges.shape[0] - 1
    count = jnp.sum(valid).astype(values.dtype)
    in_bin = jnp.zeros(n_bins, values.dtype).at[idx].add(inside.astype(values.dtype))
    mean = jnp.zeros(n_bins, values.dtype).at[idx].add(jnp.where(inside, values, 0.0)) / count
    dev = jnp.where(inside, values - mean[idx], 0.0)
    m2 = jnp.zeros(n_bins, values.dtype).at[idx].add(dev**2) + (count - in_bin) * mean**2
    return count, mean, m2


def dsigma(proc: Process, observable: Callable, edges, sqrt_s, n_points: int,
           params: SMParams | None = None, *, key, cuts: Callable | None = None,
           batch_size: int = 32768, progress: bool = False) -> Histogram:
    """Differential cross section ``dsigma/dx`` (pb per unit x) in the bins ``edges``.

    ``observable`` maps momenta ``(batch, n, 4)`` to ``x`` ``(batch,)``. The bin contents sum
    (times bin widths) to :func:`cross_section` for the same key, up to events outside the bins.
    """
    params = SMParams() if params is None else params
    _check(proc, sqrt_s, params)
    edges = jnp.asarray(edges, params.MZ.dtype)
    if edges.ndim != 1 or edges.shape[0] < 2 or not np.all(np.diff(np.asarray(edges)) > 0):
        raise ValueError("edges must be a strictly increasing 1-D array with at least 2 entries")
    batch_size = int(min(batch_size, n_points))

    def batch(k, n_valid):
        return _hist_batch(proc, cuts, observable, batch_size, k, n_valid, sqrt_s, params, edges)

    mean, error = streaming_mean(batch, n_points, batch_size, key=key, progress=progress,
                                 desc=f"dsigma {proc.name}")
    widths = jnp.diff(edges)
    return Histogram(np.asarray(edges), mean / widths, error / widths)


# --- hadron colliders --------------------------------------------------------------------------


def _parton_id(particle, beam: int) -> int:
    pid = 21 if particle.name == "g" else particle.pdg
    return pid if beam > 0 else (21 if pid == 21 else -pid)


def hadronic_integrand(proc, pdf, u, sqrt_s, params, scale, beams=(2212, 2212), *,
                       partons=None):
    """The hadron-collider integrand of one subprocess: ``(momenta (..., n, 4), w (...))``.

    ``u`` (..., proc.phase_space_dim + 2) on the unit cube: ``u[..., 0]`` maps to
    ``tau = x1 x2`` (logarithmically from threshold), ``u[..., 1]`` to the rapidity (uniform),
    the rest to the partonic phase space. ``w`` (pb) includes both PDFs ``f(x, muF) / x``, the
    Jacobian and the partonic flux, so ``E_u[w]`` is the subprocess's cross section; momenta
    are in the lab frame (GeV; incoming partons ``x E_beam`` along +-z). ``scale``: muF in GeV
    (a number or a function of the momenta); ``sqrt_s`` the beams' energy (GeV).
    ``partons``: ``((a, b), ...)`` incoming particle pairs that share ``proc``'s |M|^2 (the
    members of a :attr:`ProcessSet.groups` entry); ``w`` then has a trailing axis, one weight
    per pair, for the price of one |M|^2."""
    dtype = u.dtype
    s = jnp.asarray(sqrt_s, dtype) ** 2
    threshold = jnp.sum(proc.final_state_masses(params)).astype(dtype)
    tau_min = (threshold**2 / s) * (1 + 1e-12) if proc.n_external > 3 else threshold**2 / s
    log_tau_min = jnp.log(jnp.maximum(tau_min, pdf.x_range[0] ** 2))
    tau = jnp.exp(log_tau_min * (1 - u[..., 0]))
    half_width = -0.5 * jnp.log(tau)  # |y| <= -ln(tau)/2
    y = (2 * u[..., 1] - 1) * half_width
    jacobian = tau * (-log_tau_min) * (2 * half_width)  # d tau dy per d u0 d u1
    x1, x2 = jnp.sqrt(tau) * jnp.exp(y), jnp.sqrt(tau) * jnp.exp(-y)
    momenta, w = sigma_integrand(proc, u[..., 2:], jnp.sqrt(tau * s), params)
    mu = scale(momenta) if callable(scale) else jnp.broadcast_to(jnp.asarray(scale, dtype),
                                                                 x1.shape)
    pairs = ((proc.particles[0], proc.particles[1]),) if partons is None else tuple(
        tuple(PARTICLES[x] if isinstance(x, str) else x for x in pair) for pair in partons)
    lumi = jnp.stack([pdf.xfx(_parton_id(a, beams[0]), x1, mu) / x1
                      * pdf.xfx(_parton_id(b, beams[1]), x2, mu) / x2 for a, b in pairs], -1)
    beta = jnp.tanh(y)
    gamma = jnp.cosh(y)
    e, pz = momenta[..., 0], momenta[..., 3]
    lab = momenta.at[..., 0].set(gamma[..., None] * (e + beta[..., None] * pz))
    lab = lab.at[..., 3].set(gamma[..., None] * (pz + beta[..., None] * e))
    weights = lumi * (w * jacobian)[..., None]
    return lab, weights[..., 0] if partons is None else weights


@partial(jax.jit, static_argnames=("proc", "cuts", "batch_size", "scale", "beams", "partons"))
def _hadronic_batch(proc, cuts, batch_size, key, n_valid, sqrt_s, params, pdf, scale, beams,
                    partons):
    dtype = params.MZ.dtype
    eps = jnp.finfo(dtype).eps
    u = jax.random.uniform(key, (batch_size, proc.phase_space_dim + 2), dtype, minval=eps,
                           maxval=1.0 - eps)
    momenta, values = hadronic_integrand(proc, pdf, u, sqrt_s, params, scale, beams,
                                         partons=partons)
    values = jnp.sum(values, axis=-1)
    if cuts is not None:
        values = jnp.where(cuts(momenta), values, 0.0)
    return batch_moments(values, n_valid)


def check_hadronic(proc, sqrt_s, params, pdf, scale, beams):
    """Validate a hadron-collider request; returns ``(subprocesses, scale, beams)`` normalised
    (``scale`` a float or the callable). Shared by :func:`cross_section` and
    :class:`difphys.flows.MatrixElementTarget`."""
    subprocesses = tuple(proc) if isinstance(proc, tuple) else (proc,)
    if not subprocesses or not all(isinstance(p, Process) for p in subprocesses):
        raise TypeError("expected a difphys.amplitudes.Process or ProcessSet")
    if scale is None:
        raise ValueError("a hadron-collider cross section needs scale= (muF in GeV, a number "
                         "or a function of the momenta)")
    if not callable(scale):
        scale = float(scale)
        if not (np.isfinite(scale) and pdf.q_range[0] <= scale <= pdf.q_range[1]):
            raise ValueError(f"scale = {scale} GeV is outside the PDF grid {pdf.q_range} GeV")
    beams = tuple(int(b) for b in beams)
    if any(abs(b) != 2212 for b in beams):
        raise ValueError(f"beams must be protons or antiprotons (2212, -2212); got {beams}")
    for sub in subprocesses:
        for leg in sub.particles[:2]:
            mass = None if leg.mass is None else getattr(params, leg.mass)
            if mass is not None and not isinstance(mass, jax.core.Tracer) and float(mass) != 0:
                raise ValueError(f"{sub.name!r}: incoming {leg.name} has mass "
                                 f"{leg.mass} = {float(getattr(params, leg.mass))} GeV; beam "
                                 f"partons are massless (use params.replace({leg.mass}=0.0))")
            if _parton_id(leg, 1) not in pdf.flavours:
                raise ValueError(f"{sub.name!r}: the PDF {pdf.name} has no {leg.name}")
        _check(sub, sqrt_s, params)
    return subprocesses, scale, beams


def parton_groups(proc) -> tuple:
    """``((representative, member indices, incoming parton names of each member), ...)`` of a
    :class:`Process` (one group of itself) or :class:`ProcessSet` (its ``groups``): what
    :func:`hadronic_integrand` evaluates with one |M|^2 per group."""
    if not (isinstance(proc, tuple) or hasattr(proc, "particles")):
        raise TypeError(f"expected a difphys.amplitudes.Process or ProcessSet; got "
                        f"{type(proc).__name__}")
    subprocesses = tuple(proc) if isinstance(proc, tuple) else (proc,)
    groups = getattr(proc, "groups", None) or ((subprocesses[0], (0,)),)
    return tuple((rep, members, tuple(tuple(q.name for q in subprocesses[m].particles[:2])
                                      for m in members)) for rep, members in groups)


def _hadronic(proc, sqrt_s, n_points, params, *, key, cuts, batch_size, progress, loop, pdf,
              scale, beams):
    params = SMParams() if params is None else params
    _, scale, beams = check_hadronic(proc, sqrt_s, params, pdf, scale, beams)
    groups = parton_groups(proc)
    total, variance = 0.0, 0.0
    for k, (rep, _, partons) in enumerate(groups):
        size = int(min(batch_size, n_points))

        def batch(kk, n_valid, rep=rep, size=size, partons=partons):
            return _hadronic_batch(rep, cuts, size, kk, n_valid, sqrt_s, params, pdf, scale,
                                   beams, partons)

        value, error = streaming_mean(batch, n_points, size, key=jax.random.fold_in(key, k),
                                      progress=progress, desc=rep.name, loop=loop)
        total = total + value
        variance = variance + error**2
    return CrossSection(total, jnp.sqrt(variance), n_points * len(groups))
