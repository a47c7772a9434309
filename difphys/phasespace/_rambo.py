"""RAMBO: flat n-body phase-space generator (Kleiss, Stirling, Ellis, CPC 40 (1986) 359)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._validate import prepare
from ._volume import massless_volume


def _solve_rescaling(energies: Array, masses: Array, sqrt_s: Array) -> Array:
    """Solve ``sum_i sqrt(m_i^2 + xi^2 E_i^2) = sqrt_s`` for ``xi`` in (0, 1].

    The residual is convex and increasing in ``xi`` and non-negative at ``xi = 1``, so Newton's
    method from ``xi = 1`` converges monotonically. Differentiated implicitly (``lax.custom_root``).
    """

    def residual(xi):
        return jnp.sum(jnp.sqrt(masses**2 + (xi * energies) ** 2)) - sqrt_s

    def newton(f, x0):
        tol = 8 * jnp.finfo(x0.dtype).eps

        def step(state):
            xi, _, it = state
            fx, dfx = jax.value_and_grad(f)(xi)
            dfx = jnp.where(dfx > 0, dfx, jnp.ones_like(dfx))
            new = jnp.clip(xi - fx / dfx, 0.0, 1.0)
            return new, jnp.abs(new - xi), it + 1

        def cond(state):
            _, delta, it = state
            return (delta > tol * jnp.maximum(state[0], tol)) & (it < 200)

        xi, _, _ = lax.while_loop(cond, step, (x0, jnp.ones_like(x0), 0))
        return xi

    def tangent_solve(g, y):
        return y / g(jnp.ones_like(y))

    return lax.custom_root(residual, jnp.ones_like(sqrt_s), newton, tangent_solve)


def rambo(
    key: PRNGKeyArray, sqrt_s: Float[ArrayLike, ""], masses: Float[ArrayLike, " n"]
) -> tuple[Float[Array, "n 4"], Float[Array, ""]]:
    """One RAMBO event: ``n`` final-state momenta in the centre-of-mass frame and its weight.

    Args:
        key: a JAX PRNG key (one event per key; ``jax.vmap`` over split keys for a batch).
        sqrt_s: centre-of-mass energy (GeV).
        masses: final-state masses ``(n,)`` (GeV), ``n >= 2``; zero and non-zero may be mixed.

    Returns:
        ``(momenta, weight)``: ``momenta`` of shape ``(n, 4)`` ordered (E, px, py, pz) summing to
        ``(sqrt_s, 0, 0, 0)``, and the phase-space weight such that
        ``E[weight * f(momenta)] = int f dPhi_n`` with
        ``dPhi_n = (2 pi)^4 delta^4(P - sum p) prod d^3p_i / ((2 pi)^3 2 E_i)``.
        For massless particles the weight is the constant ``massless_volume(n, sqrt_s)``;
        massive particles use RAMBO's momentum rescaling and its weight correction.

    Raises ``ValueError`` outside ``jit`` for NaN/negative masses or ``sqrt_s <= sum(masses)``.
    Inside ``jit`` such input returns zero momenta and zero weight.
    """
    sqrt_s, masses, valid = prepare(sqrt_s, masses)
    n = masses.shape[0]
    dtype = masses.dtype
    w = jnp.where(valid, sqrt_s, jnp.asarray(1.0, dtype) + jnp.sum(masses))

    tiny = jnp.finfo(dtype).tiny
    r = jax.random.uniform(key, (n, 4), dtype=dtype, minval=tiny, maxval=1.0)
    cos_t = 2.0 * r[:, 0] - 1.0
    sin_t = 2.0 * jnp.sqrt(r[:, 0] * (1.0 - r[:, 0]))
    azim = 2.0 * jnp.pi * r[:, 1]
    q0 = -jnp.log(r[:, 2] * r[:, 3])
    q = jnp.stack([q0, q0 * sin_t * jnp.cos(azim), q0 * sin_t * jnp.sin(azim), q0 * cos_t], axis=-1)

    # Conformal transformation of the massless q_i into momenta with total (w, 0, 0, 0).
    total = jnp.sum(q, axis=0)
    big_m = jnp.sqrt(total[0] ** 2 - jnp.sum(total[1:] ** 2))
    b = -total[1:] / big_m
    x = w / big_m
    gamma = total[0] / big_m
    a = 1.0 / (1.0 + gamma)
    bq = q[:, 1:] @ b
    e0 = x * (gamma * q[:, 0] + bq)
    vec0 = x * (q[:, 1:] + b[None, :] * q[:, :1] + a * bq[:, None] * b[None, :])

    # Massive rescaling: |k_i| = xi |p_i|, E_i = sqrt(m_i^2 + xi^2 |p_i|^2).
    xi = _solve_rescaling(e0, masses, w)
    vec = xi * vec0
    k_abs = jnp.sqrt(jnp.sum(vec**2, axis=-1))  # from the vector itself: massless is exact
    energy = jnp.sqrt(masses**2 + k_abs**2)
    momenta = jnp.concatenate([energy[:, None], vec], axis=-1)

    correction = (
        (jnp.sum(k_abs) / w) ** (2 * n - 3)
        * jnp.prod(k_abs / energy)
        * w
        / jnp.sum(k_abs**2 / energy)
    )
    weight = massless_volume(n, w) * correction
    momenta = jnp.where(valid, momenta, jnp.zeros_like(momenta))
    weight = jnp.where(valid, weight, jnp.zeros_like(weight))
    return momenta, weight
