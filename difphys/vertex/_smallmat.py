"""Closed-form linear algebra for batches of tiny matrices (3x3, 5x5).

XLA on CPU lowers ``jnp.linalg`` on batches of tiny matrices to a LAPACK call per matrix; for
3x3 and 5x5 blocks written out elementwise the whole batch runs as fused vector code instead.
All functions are differentiable and broadcast over leading axes.
"""

from __future__ import annotations

import jax.numpy as jnp


def inv3(a):
    """Inverse of ``(..., 3, 3)`` matrices by the adjugate (Cramer's rule)."""
    c00 = a[..., 1, 1] * a[..., 2, 2] - a[..., 1, 2] * a[..., 2, 1]
    c01 = a[..., 1, 2] * a[..., 2, 0] - a[..., 1, 0] * a[..., 2, 2]
    c02 = a[..., 1, 0] * a[..., 2, 1] - a[..., 1, 1] * a[..., 2, 0]
    det = a[..., 0, 0] * c00 + a[..., 0, 1] * c01 + a[..., 0, 2] * c02
    adj = jnp.stack([
        jnp.stack([c00, a[..., 0, 2] * a[..., 2, 1] - a[..., 0, 1] * a[..., 2, 2],
                   a[..., 0, 1] * a[..., 1, 2] - a[..., 0, 2] * a[..., 1, 1]], axis=-1),
        jnp.stack([c01, a[..., 0, 0] * a[..., 2, 2] - a[..., 0, 2] * a[..., 2, 0],
                   a[..., 0, 2] * a[..., 1, 0] - a[..., 0, 0] * a[..., 1, 2]], axis=-1),
        jnp.stack([c02, a[..., 0, 1] * a[..., 2, 0] - a[..., 0, 0] * a[..., 2, 1],
                   a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]], axis=-1),
    ], axis=-2)
    return adj / det[..., None, None]


def solve3(a, b):
    """``a^-1 b`` for ``a (..., 3, 3)`` and ``b (..., 3, k)``."""
    return inv3(a) @ b


def cholesky_spd(a):
    """Lower Cholesky factor of symmetric ``(..., n, n)`` matrices (n small, unrolled) and a
    flag ``(...,)`` that is True where the matrix is positive definite. Where it is not, the
    factor is garbage-free (pivots floored) but must not be used."""
    n = a.shape[-1]
    cols = [[None] * n for _ in range(n)]
    ok = jnp.ones(a.shape[:-2], bool)
    for j in range(n):
        s = a[..., j, j] - sum(cols[j][k] ** 2 for k in range(j)) if j else a[..., j, j]
        ok = ok & (s > 0)
        d = jnp.sqrt(jnp.where(s > 0, s, jnp.ones_like(s)))
        cols[j][j] = d
        for i in range(j + 1, n):
            t = a[..., i, j] - sum(cols[i][k] * cols[j][k] for k in range(j)) if j else a[..., i, j]
            cols[i][j] = t / d
    zero = jnp.zeros_like(a[..., 0, 0])
    rows = [jnp.stack([cols[i][j] if j <= i else zero for j in range(n)], axis=-1)
            for i in range(n)]
    return jnp.stack(rows, axis=-2), ok


def inv_spd(a):
    """Inverse of symmetric positive-definite ``(..., n, n)`` matrices through the unrolled
    Cholesky factor, and the positive-definiteness flag ``(...,)``."""
    n = a.shape[-1]
    low, ok = cholesky_spd(a)
    # invert the triangular factor by forward substitution, column by column
    inv_l = [[None] * n for _ in range(n)]
    zero = jnp.zeros_like(a[..., 0, 0])
    for j in range(n):
        inv_l[j][j] = 1.0 / low[..., j, j]
        for i in range(j + 1, n):
            s = sum(low[..., i, k] * inv_l[k][j] for k in range(j, i))
            inv_l[i][j] = -s / low[..., i, i]
    m = jnp.stack([jnp.stack([inv_l[i][j] if j <= i else zero for j in range(n)], axis=-1)
                   for i in range(n)], axis=-2)
    return jnp.swapaxes(m, -1, -2) @ m, ok


def eigvalsh3(a):
    """Smallest and largest eigenvalues ``(...,), (...,)`` of symmetric ``(..., 3, 3)`` matrices
    (trigonometric closed form; Smith, Commun. ACM 4 (1961) 168)."""
    q = (a[..., 0, 0] + a[..., 1, 1] + a[..., 2, 2]) / 3.0
    p1 = a[..., 0, 1] ** 2 + a[..., 0, 2] ** 2 + a[..., 1, 2] ** 2
    p2 = (a[..., 0, 0] - q) ** 2 + (a[..., 1, 1] - q) ** 2 + (a[..., 2, 2] - q) ** 2 + 2.0 * p1
    p = jnp.sqrt(p2 / 6.0)
    safe_p = jnp.where(p > 0, p, jnp.ones_like(p))
    eye = jnp.eye(3, dtype=a.dtype)
    b = (a - q[..., None, None] * eye) / safe_p[..., None, None]
    det_b = (b[..., 0, 0] * (b[..., 1, 1] * b[..., 2, 2] - b[..., 1, 2] * b[..., 2, 1])
             - b[..., 0, 1] * (b[..., 1, 0] * b[..., 2, 2] - b[..., 1, 2] * b[..., 2, 0])
             + b[..., 0, 2] * (b[..., 1, 0] * b[..., 2, 1] - b[..., 1, 1] * b[..., 2, 0]))
    phi = jnp.arccos(jnp.clip(det_b / 2.0, -1.0, 1.0)) / 3.0
    largest = q + 2.0 * p * jnp.cos(phi)
    smallest = q + 2.0 * p * jnp.cos(phi + 2.0 * jnp.pi / 3.0)
    return jnp.where(p > 0, smallest, q), jnp.where(p > 0, largest, q)
