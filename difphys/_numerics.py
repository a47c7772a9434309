"""Gradient-safe elementary functions shared by the physics modules.

Each function returns a finite value *and* a finite derivative at the points where the
naive formula would give ``inf`` or ``nan`` (the "double-where" idiom): the unsafe branch is
evaluated on a harmless placeholder so that its derivative is never ``0 * inf``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


def safe_sqrt(x: ArrayLike) -> Array:
    """``sqrt(x)`` for ``x > 0`` and ``0`` otherwise, with zero gradient where ``x <= 0``."""
    x = jnp.asarray(x)
    positive = x > 0
    x_safe = jnp.where(positive, x, jnp.ones_like(x))
    return jnp.where(positive, jnp.sqrt(x_safe), jnp.zeros_like(x))


def safe_norm(v: ArrayLike, axis: int = -1) -> Array:
    """Euclidean norm along ``axis``; zero with zero gradient for the null vector."""
    v = jnp.asarray(v)
    return safe_sqrt(jnp.sum(v * v, axis=axis))


def signed_sqrt(x: ArrayLike) -> Array:
    """``sign(x) * sqrt(|x|)`` (the ROOT convention for a spacelike mass), zero gradient at 0."""
    x = jnp.asarray(x)
    return jnp.sign(x) * safe_sqrt(jnp.abs(x))


def kallen(a: ArrayLike, b: ArrayLike, c: ArrayLike) -> Array:
    """Källén triangle function ``lambda(a, b, c) = a^2 + b^2 + c^2 - 2ab - 2ac - 2bc``.

    Arguments are squared masses (GeV^2). Evaluated in the factorised form
    ``(a - (sb + sc)^2)(a - (sb - sc)^2)`` with ``sb = sqrt(b)``, ``sc = sqrt(c)``, which is free
    of cancellation near threshold for non-negative ``b`` and ``c``.
    """
    a, b, c = jnp.asarray(a), jnp.asarray(b), jnp.asarray(c)
    sb, sc = safe_sqrt(b), safe_sqrt(c)
    return (a - (sb + sc) ** 2) * (a - (sb - sc) ** 2)
