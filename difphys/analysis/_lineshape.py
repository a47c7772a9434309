"""Unbinned maximum-likelihood fits of Standard-Model parameters through the differentiable
matrix element, e.g. the Z line shape (MZ, WZ) from an e+ e- -> mu+ mu- energy scan.

For each scan point k (centre-of-mass energy sqrt(s_k), integrated luminosity L_k in pb^-1)
the events x_ki are fully differential final states. The extended unbinned likelihood is

    -ln L(theta) = sum_k [ L_k sigma_k(theta) - sum_i ln |M|^2(x_ki; theta) ] + const,

because the expected event density on phase space is ``L_k dsigma/dPhi = L_k |M|^2 / (2 s_k)``
and only |M|^2 and the cross section depend on theta. ``sigma_k(theta)`` is the Monte Carlo
integral of :func:`difphys.amplitudes.cross_section` with a fixed key (common random numbers),
so the likelihood is a smooth, differentiable function of theta; its Hessian at the minimum
gives the covariance of the fitted parameters (Cramer-Rao / asymptotic MLE).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..amplitudes import Process, SMParams, cross_section
from ..amplitudes._cross_section import _event_weights
from ..phasespace import hit_or_miss
from ..progress import progress_bar


class ScanPoint(NamedTuple):
    """Events of one scan point: ``sqrt_s`` (GeV), ``luminosity`` (pb^-1), ``momenta (N, n, 4)``
    GeV (all external legs, incoming first, as the process takes them)."""

    sqrt_s: float
    luminosity: float
    momenta: jax.Array


class FitResult(NamedTuple):
    """Best-fit ``values`` and ``errors`` (dicts by parameter name), ``cov`` (k, k) in the
    order of ``names``, ``nll`` at the minimum, ``steps`` taken, ``converged`` (gradient norm
    below tolerance) and ``history`` of (step, nll, values)."""

    names: tuple[str, ...]
    values: dict
    errors: dict
    cov: np.ndarray
    nll: float
    steps: int
    converged: bool
    history: list


@functools.partial(jax.jit, static_argnums=(0, 2))
def _weights(proc, key, n, sqrt_s, params):
    """``n`` points of the process's unit cube: momenta and their cross-section weights (pb)."""
    return _event_weights(proc, None, key, n, sqrt_s, params)


def unweighted_events(proc: Process, sqrt_s: float, n_events: int,
                      params: SMParams | None = None, *, key, batch_size: int = 16384,
                      calibration: int = 100_000, safety: float = 1.2) -> jax.Array:
    """``n_events`` unweighted events ``(n_events, n_external, 4)`` of ``proc`` at ``sqrt_s``
    by hit-or-miss on the unit cube: a point with weight ``w`` is kept with probability
    ``w / w_max``, ``w_max = safety x`` the largest weight of a calibration sample (points above
    it are kept once; their fraction is small for smooth matrix elements)."""
    params = SMParams() if params is None else params
    if n_events < 1:
        raise ValueError(f"n_events must be positive; got {n_events}")
    dtype = params.MZ.dtype
    rs = jnp.asarray(sqrt_s, dtype)
    k_cal, k_gen = jax.random.split(key)
    weights = functools.partial(_weights, proc)
    _, w_cal = weights(k_cal, calibration, rs, params)
    w_max = safety * float(jnp.max(w_cal))
    if not np.isfinite(w_max) or w_max <= 0:
        raise ValueError(f"{proc.name} has no positive weight at sqrt_s = {sqrt_s} GeV")
    kept, total, i = [], 0, 0
    while total < n_events:
        k_w, k_u = jax.random.split(jax.random.fold_in(k_gen, i))
        p, w = weights(k_w, batch_size, rs, params)
        accept, _ = hit_or_miss(k_u, jnp.log(w), jnp.log(jnp.asarray(w_max, dtype)))
        accept = np.asarray(accept)
        kept.append(np.asarray(p)[accept])
        total += int(accept.sum())
        i += 1
    return jnp.asarray(np.concatenate(kept)[:n_events])


def pseudo_data(proc: Process, energies: Sequence[float], luminosities: Sequence[float],
                params: SMParams | None = None, *, key, n_points: int = 400_000) -> list[ScanPoint]:
    """An energy scan at the ``params`` truth: at each ``sqrt_s`` (GeV) a Poisson number of
    events with mean ``L sigma`` (``L`` in pb^-1, ``sigma`` from ``n_points`` Monte Carlo
    points), drawn from the matrix element."""
    params = SMParams() if params is None else params
    if len(energies) != len(luminosities) or not len(energies):
        raise ValueError("give one luminosity per scan energy (and at least one energy)")
    points = []
    for k, (rs, lumi) in enumerate(zip(energies, luminosities, strict=True)):
        if lumi <= 0:
            raise ValueError(f"luminosity must be positive; got {lumi} pb^-1 at {rs} GeV")
        k_xs, k_n, k_ev = jax.random.split(jax.random.fold_in(key, k), 3)
        sigma = float(cross_section(proc, rs, n_points, params, key=k_xs).value)
        n = int(jax.random.poisson(k_n, lumi * sigma))
        points.append(ScanPoint(float(rs), float(lumi),
                                unweighted_events(proc, rs, max(n, 1), params, key=k_ev)[:n]))
    return points


def _sigma(proc, sqrt_s, key, n_points: int, params):
    """Monte Carlo sigma (pb) from ``n_points`` unit-cube points drawn from ``key`` (the same
    points for every ``params``: a pure, jittable, smooth function of the parameters), by the
    one estimator of :func:`difphys.amplitudes.cross_section` in its traceable form."""
    return cross_section(proc, sqrt_s, n_points, params, key=key, loop="scan").value


def _stack(data: Sequence[ScanPoint]):
    """Scan points as padded arrays: momenta (K, N, n, 4), mask (K, N), sqrt_s (K,), lumi (K,)."""
    n_max = max(1, max(int(p.momenta.shape[0]) for p in data))
    shapes = {tuple(p.momenta.shape[1:]) for p in data if p.momenta.shape[0]}
    if len(shapes) != 1:
        raise ValueError(f"scan points hold events of different shapes {sorted(shapes)}")
    shape = shapes.pop()
    filler = next(np.asarray(p.momenta, np.float64)[:1] for p in data if p.momenta.shape[0])
    moms, masks = [], []
    for p in data:
        m = np.asarray(p.momenta, np.float64).reshape((-1,) + shape)
        moms.append(np.concatenate([m, np.repeat(filler, n_max - len(m), axis=0)]))
        masks.append(np.arange(n_max) < len(m))
    return (np.stack(moms), np.stack(masks), np.array([p.sqrt_s for p in data]),
            np.array([p.luminosity for p in data]))


def scan_nll(values, names: Sequence[str], data: Sequence[ScanPoint], proc: Process, *, key,
             params: SMParams | None = None, n_points: int = 200_000):
    """Extended unbinned negative log-likelihood (module docstring) at parameter ``values``
    (array ``(k,)`` for the SMParams fields ``names``); pure and jittable, differentiable in
    ``values``. The cross sections use ``n_points`` fixed unit-cube points per scan point drawn
    from ``key`` (common random numbers for every ``values``)."""
    if not data:
        raise ValueError("scan_nll needs at least one scan point (data is empty)")
    if len(names) != np.shape(values)[0]:
        raise ValueError(f"values {np.shape(values)} must have one entry per name {list(names)}")
    params = SMParams() if params is None else params
    p = params.replace(**{n: values[i] for i, n in enumerate(names)})
    momenta, mask, sqrt_s, lumi = _stack(data)
    dtype = values.dtype
    keys = jax.random.split(key, len(data))
    sigma = jax.vmap(lambda k, rs: _sigma(proc, rs, k, n_points, p))(
        keys, jnp.asarray(sqrt_s, dtype))
    m2 = proc(jnp.asarray(momenta, dtype), p)
    log_m2 = jnp.where(mask, jnp.log(jnp.where(mask, m2, 1.0)), 0.0)
    return jnp.sum(jnp.asarray(lumi, dtype) * sigma) - jnp.sum(log_m2)


def fit_scan(data: Sequence[ScanPoint], proc: Process, start: dict, *, key,
             params: SMParams | None = None, n_points: int = 200_000, max_steps: int = 50,
             gtol: float = 1e-4, progress: bool = False) -> FitResult:
    """Minimise :func:`scan_nll` over the parameters in ``start`` (name -> initial value) with
    L-BFGS (optax, zoom line search) and take errors from the inverse Hessian (jax.hessian
    through the matrix element and the Monte Carlo cross sections).

    ``converged`` is True when the gradient norm fell below ``gtol`` (in units of the NLL per
    parameter unit). Raises ``ValueError`` if the Hessian at the minimum is not positive
    definite (no minimum: parameters unconstrained by the data)."""
    params = SMParams() if params is None else params
    if not data or sum(int(p.momenta.shape[0]) for p in data) == 0:
        raise ValueError("fit_scan needs at least one event")
    bad = [p.sqrt_s for p in data if not np.all(np.isfinite(np.asarray(p.momenta)))]
    if bad:
        raise ValueError(f"events with NaN or infinite momenta at sqrt_s = {bad} GeV")
    unknown = sorted(set(start) - set(SMParams.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown SMParams field(s) {unknown}")
    names = tuple(start)
    x = jnp.asarray([float(start[n]) for n in names], params.MZ.dtype)

    @jax.jit
    def f(v):
        return scan_nll(v, names, data, proc, key=key, params=params, n_points=n_points)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    @jax.jit
    def update(x, state):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counters and floats
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(x, updates), state, value, grad

    with jax.numpy_dtype_promotion("standard"):
        state = opt.init(x)
    history, converged, step = [], False, 0
    bar = progress_bar(progress, total=max_steps, desc="fit")
    for step in range(max_steps):
        bar.update(1)
        x_new, state, value, grad = update(x, state)
        history.append((step, float(value), dict(zip(names, map(float, x), strict=True))))
        if float(jnp.linalg.norm(grad)) < gtol:
            converged = True
            break
        x = x_new
        bar.set_postfix(nll=f"{float(value):.3f}")
    bar.close()
    hess = np.asarray(jax.jit(jax.hessian(f))(x))
    eig = np.linalg.eigvalsh(0.5 * (hess + hess.T))
    if eig[0] <= 0:
        raise ValueError(f"the NLL Hessian at the minimum is not positive definite "
                         f"(eigenvalues {eig}): the data do not constrain {names}")
    cov = np.linalg.inv(hess)
    errors = np.sqrt(np.diag(cov))
    return FitResult(names, dict(zip(names, map(float, x), strict=True)),
                     dict(zip(names, map(float, errors), strict=True)), cov, float(f(x)),
                     step, converged, history)
