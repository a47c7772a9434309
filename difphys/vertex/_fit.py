"""Billoir vertex fit with O(n) block solves and implicit differentiation.

Model: each track's perigee measurement ``m_i`` is predicted by ``h(v, q_i)`` (exact helix,
:func:`perigee_from_local`), with ``v`` the vertex (mm) and ``q_i = (phi, theta, qoverp)`` the
track direction and curvature at the vertex. The fit minimises

    chi2(v, q) = sum_i w_i r_i^T W_i r_i + (v - c)^T P (v - c),   r_i = m_i - h(v, q_i)

(``phi0`` residuals wrapped to (-pi, pi]) by Gauss-Newton iterations that eliminate the
``q_i`` with 3x3 solves (Billoir, Fruehwirth & Regler, NIM A241 (1985) 115; ACTS
FullBilloirVertexFitter), in a ``lax.while_loop`` with a tolerance. ``P`` is the beam-spot
information when a constraint is given, else a negligible prior (sigma = 1e5 mm) that keeps
degenerate fits finite.

Gradients: the converged ``(v, q)`` is differentiated implicitly through the stationarity
conditions ``d chi2/dv = 0``, ``d chi2_i/dq_i = 0`` (custom VJP, exact Hessian, block
adjoint solve), never by unrolling; weights, track parameters, covariances, the beam spot and
the field all receive gradients.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from .._checks import check_count, is_concrete
from .._fields import array_field
from . import _cpu_kernel
from ._helix import _wrap, local_to_momentum, perigee_from_local, state_at_vertex
from ._smallmat import cholesky_spd, eigvalsh3, inv3, inv_spd
from ._tracks import Perigee

WEAK_PRIOR_SIGMA = 1e5  # mm
BACKENDS = ("auto", "xla", "kernel")
_CHUNK = 1024  # jets per vmapped while_loop


class BeamSpot(eqx.Module):
    """Beam-spot constraint: ``position (3,)`` (mm) and ``cov (3, 3)`` (mm^2)."""

    position: jax.Array = array_field()
    cov: jax.Array = array_field()


class VertexFit(NamedTuple):
    """Result of :func:`fit` (leading axes as the input batch).

    ``position (..., 3)`` mm, ``cov (..., 3, 3)`` mm^2, ``chi2``, ``ndf`` (``2 sum w - 3``, +3 with a
    beam spot), ``momenta (..., n, 3)`` GeV at the vertex, ``local (..., n, 3)`` = (phi, theta,
    qoverp) at the vertex, ``n_iter``, ``converged`` (step below ``tol`` within ``max_iter``) and
    ``valid`` (at least two usable tracks, a well-conditioned vertex information matrix, finite
    options and a finite result with positive variances). An invalid fit is masked: the vertex
    at the prior centre (the beam spot, else the origin), ``cov = WEAK_PRIOR_SIGMA**2 * 1``
    (1e10 mm^2), ``chi2 = 0``; never NaN and never a negative variance.
    """

    position: jax.Array
    cov: jax.Array
    chi2: jax.Array
    ndf: jax.Array
    momenta: jax.Array
    local: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    valid: jax.Array


class _Theta(NamedTuple):
    """Everything the fitted solution depends on (differentiable)."""

    params: jax.Array  # (n, 5)
    weight_matrix: jax.Array  # (n, 5, 5)
    weights: jax.Array  # (n,)
    bfield: jax.Array
    prior_position: jax.Array  # (3,)
    prior_information: jax.Array  # (3, 3)


def _residual(theta_i_params, v, q, bfield):
    pred = perigee_from_local(v, q[0], q[1], q[2], bfield)
    r = theta_i_params - pred
    return r.at[2].set(_wrap(r[2]))


def _track_chi2(params_i, w_i, v, q, bfield):
    r = _residual(params_i, v, q, bfield)
    return r @ w_i @ r


def _total_chi2(v, q, theta: _Theta):
    per_track = jax.vmap(_track_chi2, in_axes=(0, 0, None, 0, None))(
        theta.params, theta.weight_matrix, v, q, theta.bfield
    )
    dv = v - theta.prior_position
    return jnp.sum(theta.weights * per_track) + dv @ theta.prior_information @ dv


def _linearise(theta: _Theta, v, q):
    """Residuals and Jacobians ``A = dh/dv``, ``B = dh/dq`` for all tracks."""

    def one(params_i, q_i):
        r = _residual(params_i, v, q_i, theta.bfield)
        jac_v, jac_q = jax.jacfwd(
            lambda vv, qq: perigee_from_local(vv, qq[0], qq[1], qq[2], theta.bfield), argnums=(0, 1)
        )(v, q_i)
        return r, jac_v, jac_q

    return jax.vmap(one)(theta.params, q)


def _gauss_newton_step(theta: _Theta, v, q):
    """One Billoir Gauss-Newton step: returns ``(new_v, new_q, vertex_information)``."""
    r, a, b = _linearise(theta, v, q)
    wm = theta.weight_matrix
    aw = jnp.einsum("nki,nkl->nil", a, wm)  # A^T W
    bw = jnp.einsum("nki,nkl->nil", b, wm)  # B^T W
    c = aw @ a
    e = aw @ b
    d = bw @ b
    avec = jnp.einsum("nil,nl->ni", aw, r)
    bvec = jnp.einsum("nil,nl->ni", bw, r)
    d_inv = inv3(d)
    d_inv_et = d_inv @ jnp.swapaxes(e, -1, -2)  # D^-1 E^T  (n, 3, 3)
    d_inv_b = jnp.einsum("nij,nj->ni", d_inv, bvec)  # D^-1 b    (n, 3)
    w = theta.weights[:, None, None]
    info = theta.prior_information + jnp.sum(w * (c - e @ d_inv_et), axis=0)
    rhs = theta.prior_information @ (theta.prior_position - v) + jnp.sum(
        theta.weights[:, None] * (avec - jnp.einsum("nij,nj->ni", e, d_inv_b)), axis=0
    )
    dv = inv3(info) @ rhs
    dq = d_inv_b - jnp.einsum("nij,j->ni", d_inv_et, dv)
    return v + dv, q + dq, info


def _stationarity(x, theta: _Theta):
    """``F(x, theta) = (d chi2 / dv, d chi2_i / dq_i)``: zero at the fitted solution."""
    v, q = x
    grad_v = jax.grad(_total_chi2, argnums=0)(v, q, theta)
    grad_q = jax.vmap(jax.grad(_track_chi2, argnums=3), in_axes=(0, 0, None, 0, None))(
        theta.params, theta.weight_matrix, v, q, theta.bfield
    )
    return grad_v, grad_q


def _iterate(theta: _Theta, v0, q0, max_iter, tol):
    def cond(state):
        _, _, it, step = state
        return (it < max_iter) & (step > tol)

    def body(state):
        v, q, it, _ = state
        v_new, q_new, _ = _gauss_newton_step(theta, v, q)
        step = jnp.max(jnp.abs(v_new - v))
        finite = jnp.all(jnp.isfinite(v_new)) & jnp.all(jnp.isfinite(q_new))
        v_new = jnp.where(finite, v_new, v)
        q_new = jnp.where(finite, q_new, q)
        step = jnp.where(finite, step, jnp.zeros_like(step))
        return v_new, q_new, it + 1, step

    inf = jnp.asarray(jnp.inf, v0.dtype)
    return lax.while_loop(cond, body, (v0, q0, jnp.asarray(0), inf))


@jax.custom_vjp
def _solve(theta: _Theta, v0, q0, max_iter, tol):
    v, q, it, step = _iterate(theta, v0, q0, max_iter, tol)
    return (v, q), (it, step)


def _solve_fwd(theta, v0, q0, max_iter, tol):
    out = _solve(theta, v0, q0, max_iter, tol)
    return out, (out[0], theta, v0, q0)


def _solve_bwd(residuals, cotangents):
    (v, q), theta, v0, q0 = residuals
    (v_bar, q_bar), _ = cotangents

    # Exact Hessian blocks of the stationarity conditions, per track (O(n)).
    def track_hessian(params_i, w_i, q_i):
        return jax.hessian(_track_chi2, argnums=(2, 3))(params_i, w_i, v, q_i, theta.bfield)

    hess = jax.vmap(track_hessian)(theta.params, theta.weight_matrix, q)
    h_vv_i, h_vq_i = hess[0]
    h_qq_i = hess[1][1]
    w = theta.weights
    h_vv = 2.0 * theta.prior_information + jnp.sum(w[:, None, None] * h_vv_i, axis=0)
    # J = [[h_vv, w_i K_i], [K_i^T, Q_i]]; solve J^T lam = x_bar by the Schur complement.
    k = h_vq_i  # (n, 3, 3)
    h_qq_inv = inv3(h_qq_i)
    q_inv_kt = h_qq_inv @ jnp.swapaxes(k, -1, -2)
    q_inv_qbar = jnp.einsum("nij,nj->ni", h_qq_inv, q_bar)
    schur = h_vv - jnp.sum(w[:, None, None] * (k @ q_inv_kt), axis=0)
    lam_v = inv3(schur) @ (v_bar - jnp.einsum("nij,nj->i", k, q_inv_qbar))
    lam_q = q_inv_qbar - w[:, None] * jnp.einsum("nij,j->ni", q_inv_kt, lam_v)
    _, vjp = jax.vjp(lambda th: _stationarity((v, q), th), theta)
    (theta_bar,) = vjp((-lam_v, -lam_q))
    zeros = lambda x: jnp.zeros_like(x)  # noqa: E731
    return theta_bar, zeros(v0), zeros(q0), None, None


_solve.defvjp(_solve_fwd, _solve_bwd)


def _usable_tracks(params, cov):
    """Per-track validity (finite, q/p != 0, 0 < theta < pi, positive-definite covariance)."""
    finite = jnp.all(jnp.isfinite(params), axis=-1) & jnp.all(jnp.isfinite(cov), axis=(-1, -2))
    physical = (params[..., 4] != 0) & (jnp.sin(params[..., 3]) > 0)
    sym = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    _, positive_definite = cholesky_spd(
        jnp.where(finite[..., None, None], sym, jnp.eye(5, dtype=cov.dtype)))
    return finite & physical & positive_definite


def _fit_one(
    params,
    cov,
    weights,
    seed,
    bfield,
    prior_position,
    prior_information,
    max_iter,
    tol,
    has_constraint,
    start=None,
):
    dtype = params.dtype
    usable = _usable_tracks(params, cov)
    dummy = jnp.asarray([0.0, 0.0, 0.0, jnp.pi / 2, 0.1], dtype)
    params = jnp.where(usable[:, None], params, dummy)
    cov = jnp.where(usable[:, None, None], cov, jnp.eye(5, dtype=dtype))
    weights = jnp.where(usable, weights, jnp.zeros_like(weights))
    wm, _ = inv_spd(0.5 * (cov + jnp.swapaxes(cov, -1, -2)))
    theta = _Theta(params, wm, weights, bfield, prior_position, prior_information)
    if start is not None:  # a given starting point (the compiled kernel's solution)
        seed, q0 = start
    else:
        if seed is None:
            d0, z0, phi0 = params[:, 0], params[:, 1], params[:, 2]
            pca = jnp.stack([-d0 * jnp.sin(phi0), d0 * jnp.cos(phi0), z0], axis=-1)
            norm = jnp.maximum(jnp.sum(weights), 1e-12)
            seed = jnp.sum(weights[:, None] * pca, axis=0) / norm
        _, q0 = state_at_vertex(params, seed[None, :], bfield)
    (v, q), (n_iter, step) = _solve(theta, seed, q0, max_iter, tol)
    _, _, info = _gauss_newton_step(theta, v, q)
    cov_v = inv3(info)
    per_track = jax.vmap(_track_chi2, in_axes=(0, 0, None, 0, None))(params, wm, v, q, bfield)
    chi2 = jnp.sum(weights * per_track)
    extra = 3.0 if has_constraint else 0.0
    if has_constraint:
        dv = v - prior_position
        chi2 = chi2 + dv @ prior_information @ dv
    ndf = 2.0 * jnp.sum(weights) - 3.0 + extra
    data_info = info - (0.0 if has_constraint else 1.0) * prior_information
    eig_min, eig_max = eigvalsh3(0.5 * (data_info + data_info.T))
    well_conditioned = eig_min > 1e-9 * jnp.maximum(eig_max, 1e-30)
    enough = (jnp.sum((weights > 0) & usable) >= 2) | has_constraint
    converged = step <= tol
    valid = enough & well_conditioned & jnp.all(jnp.isfinite(v))
    return VertexFit(
        v,
        cov_v,
        chi2,
        ndf,
        local_to_momentum(q[:, 0], q[:, 1], q[:, 2]),
        q,
        n_iter,
        converged,
        valid,
    )


def fit(
    tracks: Perigee,
    weights=None,
    start=None,
    *,
    bfield,
    max_iter: int = 50,
    tol: float | None = None,
    constraint: BeamSpot | None = None,
    backend: str = "auto",
) -> VertexFit:
    """Fit a common vertex to ``tracks`` (leading axes are independent jets; vmapped inside).

    Args:
        tracks: :class:`Perigee` with ``params (..., n, 5)`` and ``cov (..., n, 5, 5)``.
        weights: per-track weights in [0, 1] ``(..., n)`` scaling each chi2 term (0 excludes a
            track; use it for padding). Default 1.
        start: starting vertex ``(..., 3)`` (default: the weighted mean of the perigee points).
        bfield: magnetic field along +z (T).
        max_iter: maximum Gauss-Newton iterations.
        tol: convergence threshold on the vertex step (mm); default 1e-9 (float64), 1e-4 (float32).
        constraint: optional :class:`BeamSpot`.
        backend: ``"xla"`` runs the iterations as JAX code (any device); ``"kernel"`` runs the
            forward fit as a compiled CPU loop (numba, called through ``jax.pure_callback``;
            about 10x faster on CPU) with the same results to rounding and the same implicit
            gradients (the backward pass is the JAX path's, at the kernel's solution);
            ``"auto"`` (default) picks ``"kernel"`` when the default JAX backend is the CPU and
            numba is installed, else ``"xla"``.

    Returns :class:`VertexFit`. Outside ``jit``, non-finite inputs and non-positive-definite
    covariances of tracks with non-zero weight, weights outside [0, 1], a non-finite or zero
    ``bfield``, a non-finite ``start``, ``max_iter < 1``, ``tol <= 0`` and a beam spot that is
    not finite or whose covariance is not positive definite raise ``ValueError``. Inside
    ``jit`` such tracks are dropped (weight 0; NaN weights count as 0, weights are clipped to
    [0, 1]), bad options give ``valid = False``, and every invalid fit is masked as described
    under :class:`VertexFit`.
    """
    if not isinstance(tracks, Perigee):
        raise TypeError("tracks must be a difphys.vertex.Perigee")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if backend == "kernel" and not _cpu_kernel.available():
        raise ValueError("backend='kernel' needs numba (pip install numba)")
    use_kernel = backend == "kernel" or (
        backend == "auto" and _cpu_kernel.available() and jax.default_backend() == "cpu")
    params, cov = tracks.params, tracks.cov
    dtype = params.dtype
    batch = params.shape[:-2]
    n = params.shape[-2]
    weights = (
        jnp.ones(batch + (n,), dtype)
        if weights is None
        else jnp.broadcast_to(jnp.asarray(weights, dtype), batch + (n,))
    )
    if tol is None:
        tol = 1e-9 if dtype == jnp.float64 else 1e-4
    constraint_arrays = () if constraint is None else (constraint.position, constraint.cov)
    if use_kernel and is_concrete(params, cov, weights, bfield, start, tol, *constraint_arrays):
        # eager on the CPU: the kernel checks the tracks as it prepares them (no extra pass)
        _check_options(bfield, start, max_iter, tol, constraint)
        return _fit_eager_kernel(params, cov, weights, start, bfield, max_iter, tol, constraint)
    if is_concrete(params, cov, weights):
        _raise_track_problems(*(bool(x) for x in jax.device_get(
            _track_summary(params, cov, weights))))
    _check_options(bfield, start, max_iter, tol, constraint)
    # inside jit: a NaN weight drops its track, weights outside [0, 1] are clipped (documented)
    weights = _clean_weights(weights)
    bfield = jnp.asarray(bfield, dtype)
    if constraint is not None:
        prior_position = jnp.asarray(constraint.position, dtype)
        prior_information = jnp.linalg.inv(jnp.asarray(constraint.cov, dtype))
    else:
        prior_position = jnp.zeros(3, dtype)
        prior_information = jnp.eye(3, dtype=dtype) / WEAK_PRIOR_SIGMA**2
    has_constraint = constraint is not None
    seeds = None if start is None else jnp.broadcast_to(jnp.asarray(start, dtype), batch + (3,))
    inputs = (params, cov, weights, seeds, bfield, prior_position, prior_information,
              jnp.asarray(tol, dtype))
    seeded_prior = start is not None and not has_constraint
    if use_kernel:
        out = _fit_kernel(*inputs, int(max_iter), has_constraint, seeded_prior)
    else:
        out = _fit_batch(*inputs, max_iter=int(max_iter), has_constraint=has_constraint,
                         seeded_prior=seeded_prior)
    return _mask_invalid(out, bfield, prior_position, prior_information, seeds)


def _raise_track_problems(weights_bad: bool, params_bad: bool, cov_bad: bool) -> None:
    if weights_bad:
        raise ValueError("weights must be finite and lie in [0, 1]")
    if params_bad:
        raise ValueError(
            "track parameters contain NaN or infinite values (for tracks with weight > 0)")
    if cov_bad:
        raise ValueError("a track covariance with weight > 0 is not positive definite")


def _fit_eager_kernel(params, cov, weights, start, bfield, max_iter, tol, constraint):
    """:func:`fit` on concrete CPU inputs: the compiled kernel called directly (nothing to
    differentiate), the track checks taken from the kernel's own preparation pass, and the mask
    of :func:`_mask_invalid` applied only when some fit needs it (where every fit is valid and
    finite the mask is the identity). Same results as the traced path."""
    dtype = params.dtype
    w = np.asarray(weights)
    weights_bad = not bool(np.all((w >= 0) & (w <= 1)))  # NaN fails both comparisons
    if weights_bad:
        _raise_track_problems(True, False, False)
    batch = params.shape[:-2]
    if constraint is not None:
        prior_position = np.asarray(constraint.position, np.float64)
        prior_information = np.linalg.inv(np.asarray(constraint.cov, np.float64))
    else:
        prior_position = np.zeros(3)
        prior_information = np.eye(3) / WEAK_PRIOR_SIGMA**2
    seeds = (np.zeros(batch + (3,)) if start is None
             else np.broadcast_to(np.asarray(start, np.float64), batch + (3,)))
    prior_centre = seeds if (start is not None and constraint is None) else prior_position
    *fields, flags = _cpu_kernel.fit_host(
        np.asarray(params), np.asarray(cov), w, seeds, np.float64(bfield), prior_centre,
        prior_information, np.float64(tol), max_iter=int(max_iter),
        has_constraint=constraint is not None, use_seeds=start is not None)
    _raise_track_problems(False, bool(flags & 2), bool(flags & 4))
    position, vcov, chi2, ndf, momenta, local, n_iter, converged, valid = fields
    clean = not flags & 8
    if clean and dtype != jnp.float64:  # the kernel ran in float64; the cast may overflow
        clean = all(bool(np.all(np.isfinite(x))) for x in (position, vcov, chi2, ndf, momenta,
                                                            local))
    # as the JAX path's iteration counter (jnp.asarray(0).dtype would cost a dispatch)
    int_dtype = jax.dtypes.canonicalize_dtype(np.int64)
    out = VertexFit(*jax.device_put((position, vcov, chi2, ndf, momenta, local,
                                     n_iter.astype(int_dtype, copy=False), converged, valid)))
    if clean:
        return out
    seeds_j = None if start is None else jnp.asarray(seeds, dtype)
    return _mask_invalid(out, jnp.asarray(bfield, dtype), jnp.asarray(prior_position, dtype),
                         jnp.asarray(prior_information, dtype), seeds_j)


@jax.jit
def _clean_weights(weights):
    return jnp.where(jnp.isfinite(weights), jnp.clip(weights, 0, 1), jnp.zeros_like(weights))


@jax.jit
def _track_summary(params, cov, weights):
    """The eager input checks of :func:`fit` as one fused pass: (a weight non-finite or outside
    [0, 1], a non-finite parameter of a track with weight > 0, a covariance of such a track
    that is not positive definite)."""
    weights_bad = jnp.any(~jnp.isfinite(weights) | (weights < 0) | (weights > 1))
    active = weights > 0
    params_bad = jnp.any(active & ~jnp.all(jnp.isfinite(params), axis=-1))
    sym = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    finite = jnp.all(jnp.isfinite(sym), axis=(-1, -2))
    _, positive = cholesky_spd(jnp.where(finite[..., None, None], sym, jnp.eye(5, dtype=cov.dtype)))
    cov_bad = jnp.any(active & ~(finite & positive))
    return weights_bad, params_bad, cov_bad


def _check_options(bfield, start, max_iter, tol, constraint) -> None:
    """Eager checks of the fit's options (shapes always; values when concrete)."""
    check_count(max_iter, "max_iter")
    if is_concrete(tol) and not (np.isfinite(float(tol)) and float(tol) > 0):
        raise ValueError(f"tol must be a finite positive step (mm); got {tol!r}")
    if np.ndim(bfield) != 0:
        raise ValueError(f"bfield must be a scalar (T); got shape {np.shape(bfield)}")
    if is_concrete(bfield) and not (np.isfinite(float(bfield)) and float(bfield) != 0):
        raise ValueError(f"bfield must be finite and non-zero (T); got {float(bfield)!r}")
    if start is not None:
        if np.shape(start)[-1:] != (3,):
            raise ValueError(f"start must have trailing dimension 3 (x, y, z in mm); "
                             f"got shape {np.shape(start)}")
        if is_concrete(start) and not np.all(np.isfinite(np.asarray(start))):
            raise ValueError("start (the starting vertex) contains NaN or infinite values")
    if constraint is not None:
        if not isinstance(constraint, BeamSpot):
            raise TypeError("constraint must be a difphys.vertex.BeamSpot")
        pos, cov = constraint.position, constraint.cov
        if np.shape(pos) != (3,) or np.shape(cov) != (3, 3):
            raise ValueError(f"BeamSpot needs position (3,) and cov (3, 3); got "
                             f"{np.shape(pos)} and {np.shape(cov)}")
        if is_concrete(pos, cov):
            if not (np.all(np.isfinite(np.asarray(pos))) and np.all(np.isfinite(np.asarray(cov)))):
                raise ValueError("BeamSpot position or cov contains NaN or infinite values")
            c = np.asarray(cov)
            if not np.allclose(c, c.T, rtol=1e-6, atol=0) or np.linalg.eigvalsh(c)[0] <= 0:
                raise ValueError(f"BeamSpot cov must be symmetric positive definite (mm^2); "
                                 f"eigenvalues {np.linalg.eigvalsh(0.5 * (c + c.T))!r}")


@jax.jit
def _mask_invalid(out: VertexFit, bfield, prior_position, prior_information, seeds) -> VertexFit:
    """The documented result of a fit that is not determined (``valid = False``): the same
    finite values in every field (the vertex at the prior centre, a covariance of
    ``WEAK_PRIOR_SIGMA**2`` per axis, chi2 = 0, the input track directions), never NaN or a
    negative variance. Inside ``jit`` this is also how a NaN beam spot, field or seed ends."""
    dtype = out.position.dtype
    options_ok = (jnp.isfinite(bfield) & (bfield != 0) & jnp.all(jnp.isfinite(prior_position))
                  & jnp.all(jnp.isfinite(prior_information)))
    if seeds is not None:
        options_ok = options_ok & jnp.all(jnp.isfinite(seeds), axis=-1)
    diag = jnp.diagonal(out.cov, axis1=-2, axis2=-1)
    sane = (jnp.all(jnp.isfinite(out.cov), axis=(-1, -2)) & jnp.all(diag > 0, axis=-1)
            & jnp.isfinite(out.chi2) & jnp.all(jnp.isfinite(out.position), axis=-1)
            & jnp.all(jnp.isfinite(out.local), axis=(-1, -2)))
    valid = out.valid & options_ok & sane
    ok = lambda x, extra: jnp.reshape(valid, valid.shape + (1,) * extra)  # noqa: E731
    fallback_position = jnp.broadcast_to(jnp.where(jnp.isfinite(prior_position), prior_position,
                                                   0), out.position.shape).astype(dtype)
    huge = jnp.eye(3, dtype=dtype) * WEAK_PRIOR_SIGMA**2
    safe = lambda x: jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))  # noqa: E731
    return out._replace(
        position=jnp.where(ok(valid, 1), out.position, fallback_position),
        cov=jnp.where(ok(valid, 2), out.cov, huge),
        chi2=jnp.where(valid, out.chi2, jnp.zeros_like(out.chi2)),
        ndf=safe(out.ndf),
        momenta=safe(out.momenta),
        local=safe(out.local),
        valid=valid,
    )


@eqx.filter_jit
def _fit_batch(
    params,
    cov,
    weights,
    seeds,
    bfield,
    prior_position,
    prior_information,
    tol,
    starts=None,
    *,
    max_iter,
    has_constraint,
    seeded_prior,
):
    """Compiled once per shape/dtype and static options; vmapped over the batch axes.
    ``starts = (v0 (..., 3), q0 (..., n, 3))`` replaces the seed as the starting point."""

    def one(p, c, w, s, v0=None, q0=None):
        prior = s if seeded_prior else prior_position
        start = None if v0 is None else (v0, q0)
        return _fit_one(p, c, w, s, bfield, prior, prior_information, max_iter, tol,
                        has_constraint, start)

    batch = params.shape[:-2]
    v0s, q0s = (None, None) if starts is None else starts
    if not batch:
        return one(params, cov, weights, seeds, v0s, q0s)
    # Flatten the batch, and run chunks of at most _CHUNK jets sequentially (lax.map): on the
    # XLA CPU backend (jax 0.10) a vmapped while_loop over >= 4096 jets was seen to stall.
    total = int(np.prod(batch))
    flat = lambda x: None if x is None else x.reshape((total,) + x.shape[len(batch) :])  # noqa: E731
    args = [flat(params), flat(cov), flat(weights), flat(seeds), flat(v0s), flat(q0s)]
    in_axes = tuple(None if a is None else 0 for a in args)
    if total <= _CHUNK:
        out = jax.vmap(one, in_axes=in_axes)(*args)
    else:
        n_chunks = -(-total // _CHUNK)
        pad = n_chunks * _CHUNK - total

        def chunked(x):
            if x is None:
                return None
            x = jnp.concatenate([x, jnp.broadcast_to(x[:1], (pad,) + x.shape[1:])]) if pad else x
            return x.reshape((n_chunks, _CHUNK) + x.shape[1:])

        chunks = tuple(chunked(a) for a in args)  # None stays None (not mapped)
        out = lax.map(lambda c: jax.vmap(one, in_axes=in_axes)(*c), chunks)
        out = jax.tree.map(lambda x: x.reshape((n_chunks * _CHUNK,) + x.shape[2:])[:total], out)
    return jax.tree.map(lambda x: x.reshape(batch + x.shape[1:]), out)


def _kernel_call(params, cov, weights, seeds, bfield, prior_position, prior_information, tol,
                 max_iter, has_constraint, seeded_prior):
    """The forward fit by the compiled CPU kernel (``jax.pure_callback``, vmappable)."""
    dtype = params.dtype
    batch, n = params.shape[:-2], params.shape[-2]
    use_seeds = seeds is not None
    seeds_arr = seeds if use_seeds else jnp.zeros(batch + (3,), dtype)
    prior_centre = seeds_arr if seeded_prior else prior_position
    int_dtype = jnp.asarray(0).dtype  # as the JAX path's iteration counter
    sds = jax.ShapeDtypeStruct
    shapes = VertexFit(sds(batch + (3,), dtype), sds(batch + (3, 3), dtype), sds(batch, dtype),
                       sds(batch, dtype), sds(batch + (n, 3), dtype), sds(batch + (n, 3), dtype),
                       sds(batch, int_dtype), sds(batch, jnp.bool_), sds(batch, jnp.bool_))

    def host(p, c, w, s, b, pp, pi, tl):
        out = _cpu_kernel.fit_host(p, c, w, s, b, pp, pi, tl, max_iter=max_iter,
                                   has_constraint=has_constraint, use_seeds=use_seeds)
        return VertexFit(*out[:6], out[6].astype(int_dtype), out[7], out[8])

    return jax.pure_callback(host, shapes, params, cov, weights, seeds_arr, bfield, prior_centre,
                             prior_information, tol, vmap_method="broadcast_all")


@functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10))
def _fit_kernel(params, cov, weights, seeds, bfield, prior_position, prior_information, tol,
                max_iter, has_constraint, seeded_prior):
    """Forward fit by the compiled kernel; gradients by the JAX path's implicit differentiation
    at the kernel's solution (the backward pass re-linearises there, with no iterations)."""
    return _kernel_call(params, cov, weights, seeds, bfield, prior_position, prior_information,
                        tol, max_iter, has_constraint, seeded_prior)


def _fit_kernel_fwd(params, cov, weights, seeds, bfield, prior_position, prior_information, tol,
                    max_iter, has_constraint, seeded_prior):
    # symbolic_zeros=True: the differentiable arguments arrive as CustomVJPPrimal
    params, cov, weights, seeds, bfield, prior_position, prior_information, tol = (
        None if a is None else a.value
        for a in (params, cov, weights, seeds, bfield, prior_position, prior_information, tol))
    out = _kernel_call(params, cov, weights, seeds, bfield, prior_position, prior_information,
                       tol, max_iter, has_constraint, seeded_prior)
    return out, (params, cov, weights, seeds, bfield, prior_position, prior_information, tol,
                 out.position, out.local)


_DIFFERENTIABLE = ("position", "cov", "chi2", "ndf", "momenta", "local")


def _fit_kernel_bwd(max_iter, has_constraint, seeded_prior, residuals, cotangent):
    del max_iter
    params, cov, weights, seeds, bfield, prior_position, prior_information, tol, v, q = residuals
    # only the outputs that received a cotangent are re-linearised (symbolic zeros skipped)
    used = [name for name in _DIFFERENTIABLE
            if not isinstance(getattr(cotangent, name), SymbolicZero)]

    def at_solution(params, cov, weights, seeds, bfield, prior_position, prior_information):
        out = _fit_batch(params, cov, weights, seeds, bfield, prior_position, prior_information,
                         tol, (v, q), max_iter=0, has_constraint=has_constraint,
                         seeded_prior=seeded_prior)
        return tuple(getattr(out, name) for name in used)

    primals = (params, cov, weights, seeds, bfield, prior_position, prior_information)
    if not used:
        zeros = jax.tree.map(jnp.zeros_like, primals)
        return (*zeros, jnp.zeros_like(tol))
    _, vjp = jax.vjp(at_solution, *primals)
    grads = vjp(tuple(getattr(cotangent, name) for name in used))
    return (*grads, jnp.zeros_like(tol))


_fit_kernel.defvjp(_fit_kernel_fwd, _fit_kernel_bwd, symbolic_zeros=True)
