"""Dirac algebra in the chiral (Weyl) basis, as in HELAS and Peskin & Schroeder.

``gamma^0 = [[0, 1], [1, 0]]``, ``gamma^i = [[0, sigma^i], [-sigma^i, 0]]``,
``gamma_5 = diag(-1, -1, 1, 1)``, so ``P_L = diag(1, 1, 0, 0)`` and ``P_R = diag(0, 0, 1, 1)``.
Metric ``(+, -, -, -)``; four-vectors are ``(..., 4)`` arrays ``(v^0, v^1, v^2, v^3)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._checks import check_finite, check_trailing_dim

_SIGMA = np.array([[[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]], dtype=np.complex128)
_I2 = np.eye(2, dtype=np.complex128)
_Z2 = np.zeros((2, 2), dtype=np.complex128)

#: gamma^mu, shape (4, 4, 4): GAMMA[mu] is the 4x4 matrix gamma^mu (upper index).
GAMMA = np.stack(
    [np.block([[_Z2, _I2], [_I2, _Z2]])] + [np.block([[_Z2, s], [-s, _Z2]]) for s in _SIGMA]
)
GAMMA5 = np.diag([-1.0, -1.0, 1.0, 1.0]).astype(np.complex128)
P_LEFT = np.diag([1.0, 1.0, 0.0, 0.0]).astype(np.complex128)
P_RIGHT = np.diag([0.0, 0.0, 1.0, 1.0]).astype(np.complex128)
METRIC = np.diag([1.0, -1.0, -1.0, -1.0])


def complex_dtype(dtype):
    """The complex dtype matching a real (or complex) dtype: float32 -> complex64, else complex128."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return dtype
    return jnp.dtype(jnp.complex64) if dtype == jnp.float32 else jnp.dtype(jnp.complex128)


def lorentz(x, name: str, what: str = "four-vector (E, px, py, pz) or Dirac spinor"):
    """``x`` as an array with trailing dimension 4, finite when concrete (the one input check
    of the HELAS building blocks; free under ``jit``, where shapes are static)."""
    x = jnp.asarray(x)
    check_trailing_dim(x, 4, name, what)
    check_finite(x, name)
    return x


def mdot(a, b):
    """Minkowski product of (complex) four-vectors, no conjugation: ``a^0 b^0 - a.b``."""
    a, b = lorentz(a, "a"), lorentz(b, "b")
    return a[..., 0] * b[..., 0] - jnp.sum(a[..., 1:] * b[..., 1:], axis=-1)


def lower(v):
    """Lower the index: ``v_mu = g_{mu nu} v^nu``."""
    return v * jnp.asarray(METRIC.diagonal(), dtype=v.dtype)


def slash(v):
    """``gamma^mu v_mu`` as a ``(..., 4, 4)`` matrix."""
    v = lorentz(v, "v")
    v_low = lower(v)
    gamma = jnp.asarray(GAMMA, dtype=complex_dtype(v.dtype))
    return jnp.einsum("...m,mij->...ij", v_low.astype(gamma.dtype), gamma)


def chiral(cl, cr, dtype):
    """``cl P_L + cr P_R`` (a ``(..., 4, 4)`` matrix; couplings broadcast over leading axes)."""
    cl, cr = jnp.asarray(cl, dtype), jnp.asarray(cr, dtype)
    return cl[..., None, None] * jnp.asarray(P_LEFT, dtype) + cr[..., None, None] * jnp.asarray(
        P_RIGHT, dtype
    )


def bar(spinor):
    """Dirac adjoint ``psi^dagger gamma^0`` of a column spinor ``(..., 4)`` (a row spinor)."""
    g0 = jnp.asarray(GAMMA[0], dtype=spinor.dtype)
    return jnp.conj(spinor) @ g0
