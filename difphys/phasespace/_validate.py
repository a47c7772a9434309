"""Shared argument handling for the phase-space generators."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete


def prepare(sqrt_s, masses):
    """Return ``(sqrt_s, masses, valid)`` as arrays of a common float dtype.

    ``masses`` must be 1-D with at least two entries (static shape, always checked). Values are
    checked outside ``jit``; under tracing ``valid`` is a boolean array that the callers use to
    return a masked result (zero momenta, zero weight).
    """
    masses = jnp.asarray(masses)
    sqrt_s = jnp.asarray(sqrt_s)
    if masses.ndim != 1 or masses.shape[0] < 2:
        raise ValueError(
            f"masses must be a 1-D array of n >= 2 final-state masses (GeV); got shape {masses.shape}"
        )
    # The masses' float dtype sets the precision (float64 physics under x64); sqrt_s follows.
    if jnp.issubdtype(masses.dtype, jnp.floating):
        dtype = masses.dtype
    elif jnp.issubdtype(sqrt_s.dtype, jnp.floating):
        dtype = sqrt_s.dtype
    else:
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    masses, sqrt_s = masses.astype(dtype), sqrt_s.astype(dtype)
    if is_concrete(masses):
        m = np.asarray(masses)
        if not np.all(np.isfinite(m)):
            raise ValueError(f"masses contain NaN or infinite values: {m!r}")
        if np.any(m < 0):
            raise ValueError(f"masses must be non-negative (GeV); got {m!r}")
    if is_concrete(sqrt_s):
        e = np.asarray(sqrt_s)
        if not np.all(np.isfinite(e)):
            raise ValueError(f"sqrt_s contains NaN or infinite values: {e!r}")
        if is_concrete(masses) and np.any(e <= np.sum(np.asarray(masses))):
            raise ValueError(
                f"sqrt_s = {e!r} GeV is not above the production threshold sum(masses) = "
                f"{float(np.sum(np.asarray(masses)))!r} GeV"
            )
    total = jnp.sum(masses)
    valid = (
        jnp.all(jnp.isfinite(masses))
        & jnp.all(masses >= 0)
        & jnp.isfinite(sqrt_s)
        & (sqrt_s > total)
    )
    return sqrt_s, masses, valid
