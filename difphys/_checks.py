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
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or infinite values: {np.asarray(x)!r}")


def check_nonnegative(x, name: str) -> None:
    if is_concrete(x) and np.any(np.asarray(x) < 0):
        raise ValueError(f"{name} must be non-negative; got {np.asarray(x)!r}")
