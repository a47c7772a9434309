"""Input validation that runs outside ``jax.jit`` and is skipped for traced values.

Shapes are static and therefore always checked. Value checks (NaN, sign, thresholds) need
concrete numbers: they raise ``ValueError`` in eager mode and are skipped under ``jit``/``vmap``
tracing, where the physics functions return their documented masked results instead.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(*xs) -> bool:
    """True when none of ``xs`` is a JAX tracer (i.e. we are not inside a transformation)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_trailing_dim(x, dim: int, name: str, what: str) -> None:
    shape = np.shape(x)
    if len(shape) == 0 or shape[-1] != dim:
        raise ValueError(f"{name} must have trailing dimension {dim} ({what}); got shape {shape}")


def check_finite(x, name: str) -> None:
    """``ValueError`` naming ``name``, the count and the first bad index when a concrete
    ``x`` has a NaN or infinite entry (skipped for traced values)."""
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if np.issubdtype(a.dtype, np.inexact) or a.dtype == object:
        bad = ~np.isfinite(a)
        if np.any(bad):
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name} contains NaN or infinite values ({int(bad.sum())} of "
                             f"them; the first at index {first}: {a[first]!r})")


def check_nonnegative(x, name: str) -> None:
    if is_concrete(x) and np.any(np.asarray(x) < 0):
        raise ValueError(f"{name} must be non-negative; got {np.asarray(x)!r}")


def check_positive(x, name: str) -> None:
    """``ValueError`` unless a concrete ``x`` is finite and > 0 everywhere."""
    if is_concrete(x):
        a = np.asarray(x)
        if not (np.all(np.isfinite(a)) and np.all(a > 0)):
            raise ValueError(f"{name} must be finite and > 0; got {a!r}")


def check_count(n, name: str, low: int = 1) -> int:
    """``n`` as an int, or ``ValueError`` unless it is an integer >= ``low`` (bools refused)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {n!r}")
    return int(n)


def check_unit_interval(x, name: str) -> None:
    """``ValueError`` unless a concrete ``x`` is finite and in [0, 1]."""
    if is_concrete(x):
        a = np.asarray(x)
        if not (np.all(np.isfinite(a)) and np.all((a >= 0) & (a <= 1))):
            raise ValueError(f"{name} must be finite and lie in [0, 1]; got {a!r}")
