"""MINUIT (iminuit, the ``hep`` extra) on difphys's differentiable likelihoods: MIGRAD with
the exact gradient from ``jax.grad``, HESSE errors and, on request, MINOS intervals.

Why a bridge and not a minimiser of our own: MINUIT's error definitions (``errordef`` 0.5 for
a negative log-likelihood, MINOS profile intervals) are what HEP fits report, and iminuit is
the well-kept library for them; difphys supplies what MINUIT cannot compute well itself, the
gradient of an NLL written through matrix elements and Monte Carlo integrals."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._extras import require


class MinuitResult(NamedTuple):
    """Best-fit ``values``, HESSE ``errors`` (dicts by name), ``minos`` (name -> (lower,
    upper) signed intervals, or ``None``), the HESSE ``cov`` in the order of ``names``, the
    ``nll`` at the minimum, ``valid`` (MIGRAD's verdict), ``nfcn``/``ngrad`` (function and
    gradient calls) and the ``minuit`` object itself (for scans, contours, further MINOS)."""

    names: tuple[str, ...]
    values: dict
    errors: dict
    minos: dict | None
    cov: np.ndarray
    nll: float
    valid: bool
    nfcn: int
    ngrad: int
    minuit: object


def minuit_fit(nll: Callable, start: Mapping[str, float], *, minos: bool = False,
               limits: Mapping[str, tuple] | None = None, strategy: int = 1,
               tol: float = 0.1) -> MinuitResult:
    """Minimise ``nll(values) -> scalar`` (``values`` a float64 array ``(k,)`` in the order
    of ``start``; a negative log-likelihood, so ``errordef = 0.5``) with MIGRAD and its
    ``jax.grad`` gradient, then HESSE (and MINOS with ``minos``). ``limits`` bounds
    parameters by name (``(lo, hi)``, ``None`` for open). ``nll`` is compiled with
    ``jax.jit`` here. Raises ``ValueError`` when the NLL or its gradient is not finite at
    ``start``."""
    iminuit = require("iminuit", "hep", "minuit_fit")
    names = tuple(start)
    if not names:
        raise ValueError("minuit_fit needs at least one parameter in start")
    x0 = np.asarray([float(start[n]) for n in names], np.float64)
    value = jax.jit(lambda x: nll(x))
    grad = jax.jit(jax.grad(lambda x: nll(x)))

    def fcn(x):
        return float(value(jnp.asarray(x, jnp.float64)))

    def fcn_grad(x):
        return np.asarray(grad(jnp.asarray(x, jnp.float64)), np.float64)

    if not np.isfinite(fcn(x0)) or not np.all(np.isfinite(fcn_grad(x0))):
        raise ValueError(f"the NLL or its gradient is not finite at start {dict(start)}")
    m = iminuit.Minuit(fcn, x0, grad=fcn_grad, name=names)
    m.errordef = iminuit.Minuit.LIKELIHOOD
    m.strategy = strategy
    m.tol = tol
    for name, bounds in (limits or {}).items():
        if name not in names:
            raise ValueError(f"limits for {name!r}, which is not a parameter ({names})")
        m.limits[name] = bounds
    m.migrad()
    m.hesse()
    intervals = None
    if minos:
        m.minos()
        intervals = {n: (float(m.merrors[n].lower), float(m.merrors[n].upper)) for n in names}
    return MinuitResult(names, {n: float(m.values[n]) for n in names},
                        {n: float(m.errors[n]) for n in names}, intervals,
                        np.asarray(m.covariance, np.float64), float(m.fval), bool(m.valid),
                        int(m.nfcn), int(m.ngrad), m)
