"""Annealed importance sampling from a flow q towards p^alpha q^(1 - alpha) (FAB's AIS).

Intermediate densities ``log pi_b = log q + beta_b alpha (log p - log q)`` on a ladder
``0 = beta_0 < ... < beta_B = 1`` (linear or geometric). Starting from ``x_0 ~ q``, level ``b``
adds ``(beta_b - beta_{b-1}) alpha (log p - log q)(x_{b-1})`` to the log-weight and then moves
``x`` with Metropolis-corrected HMC (leapfrog) or random-walk Metropolis targeting ``pi_b``.
Proposals outside the support (``log p = -inf``, e.g. outside the unit cube) are rejected. The
step size of each level is adapted towards a target acceptance after every pass.

``alpha = 2`` gives FAB's target ``p^2 / q``; ``alpha = 1`` plain AIS towards ``p`` (then
``mean(exp(log_w))`` estimates ``Z_p``). Pure functions: :func:`ais_init` and :func:`ais_step`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._checks import check_count, check_positive


class AISState(NamedTuple):
    """Per-level step sizes (n_levels,), adapted between passes."""

    log_step_size: jax.Array


class AISResult(NamedTuple):
    """One AIS pass.

    x: (n, dim) final points; log_w: (n,) log-weights w.r.t. ``p^alpha q^(1-alpha)``
    (``-inf`` for points that left the support); log_q: (n,) log q of the final points;
    log_p: (n,) log p of the final points; acceptance: (n_levels,) mean acceptance per level;
    n_target_values, n_target_grads: evaluations of log p and of its gradient in this pass.
    """

    x: jax.Array
    log_w: jax.Array
    log_q: jax.Array
    log_p: jax.Array
    acceptance: jax.Array
    n_target_values: int
    n_target_grads: int


def beta_ladder(n_levels: int, schedule: str = "geometric", dtype=None):
    """(n_levels + 1,) betas from 0 to 1."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1; got {n_levels}")
    if schedule == "linear":
        return jnp.linspace(0.0, 1.0, n_levels + 1, dtype=dtype)
    if schedule == "geometric":
        tail = jnp.geomspace(jnp.asarray(1e-2, dtype), 1.0, n_levels, dtype=dtype)
        return (
            jnp.concatenate([jnp.zeros((1,), dtype), tail])
            if n_levels > 1
            else jnp.array([0.0, 1.0], dtype)
        )
    raise ValueError(f"schedule must be 'linear' or 'geometric'; got {schedule!r}")


def ais_init(n_levels: int, step_size: float = 0.1, dtype=None) -> AISState:
    """Per-level HMC/RWM step sizes (log, adapted by :func:`ais_step`), all ``step_size``."""
    check_count(n_levels, "n_levels")
    check_positive(step_size, "step_size")
    dtype = jnp.result_type(float) if dtype is None else dtype
    return AISState(log_step_size=jnp.full((n_levels,), jnp.log(step_size), dtype))


def _select(accept, a, b):
    """Per-chain choice: ``a`` where ``accept`` (n,) holds, else ``b``; any trailing axes."""
    return jnp.where(accept.reshape(accept.shape + (1,) * (a.ndim - 1)), a, b)


def _batched_value_and_grad(fn):
    """(n, d) -> values (n,) and per-point gradients (n, d) of a batched log density.

    The gradient is taken of the *sum* over the batch (points are independent, so this is the
    per-point gradient). ``vmap(grad(...))`` of the spline flow is miscompiled by XLA:CPU for
    some batch sizes (NaN gradients, jax 0.10.2); the summed form is not.
    Non-finite values become ``-inf`` with zero gradient.
    """

    def summed(y):
        v = fn(y)
        return jnp.sum(jnp.where(jnp.isfinite(v), v, jnp.zeros_like(v))), v

    def wrapped(x):
        grads, vals = jax.grad(summed, has_aux=True)(x)
        ok = jnp.isfinite(vals) & jnp.all(jnp.isfinite(grads), axis=-1)
        return jnp.where(ok, vals, -jnp.inf), jnp.where(ok[:, None], grads, jnp.zeros_like(grads))

    return wrapped


def ais_step(
    key,
    state: AISState,
    flow,
    log_p,
    n: int,
    *,
    alpha: float = 2.0,
    schedule: str = "geometric",
    transition: str = "hmc",
    n_leapfrog: int = 5,
    n_mcmc: int = 1,
    target_acceptance: float | None = None,
    adapt_rate: float = 0.2,
):
    """One AIS pass of ``n`` chains; returns ``(new_state, AISResult)``.

    Args:
      key: PRNG key.
      state: per-level step sizes from :func:`ais_init` (its length is the number of levels).
      flow: the proposal (``sample_and_log_prob``, ``log_prob``); treated as constant.
      log_p: unnormalised target log density of one point ``(dim,) -> ()``, ``-inf`` outside
        the support.
      alpha: 2 for FAB (target ``p^2/q``), 1 for AIS towards ``p``.
      transition: ``"hmc"`` (``n_leapfrog`` steps) or ``"rwm"``; ``n_mcmc`` moves per level.
      target_acceptance: default 0.65 (HMC) or 0.3 (RWM).
    """
    if transition not in ("hmc", "rwm"):
        raise ValueError(f"transition must be 'hmc' or 'rwm'; got {transition!r}")
    check_count(n, "n")
    n_levels = state.log_step_size.shape[0]
    flow = jax.lax.stop_gradient(flow)
    target_acceptance = (
        (0.65 if transition == "hmc" else 0.3) if target_acceptance is None else (target_acceptance)
    )
    k0, k_levels = jax.random.split(key)
    x0 = flow.sample(k0, n)
    dtype = x0.dtype
    betas = beta_ladder(n_levels, schedule, dtype)
    alpha = jnp.asarray(alpha, dtype)

    def batched_log_p(x):
        return jax.vmap(log_p)(x)

    def finite(v):
        return jnp.where(jnp.isfinite(v), v, -jnp.inf)

    log_q_vg = _batched_value_and_grad(flow.log_prob)
    log_p_vg = _batched_value_and_grad(batched_log_p)
    lp0, glp0 = log_p_vg(x0)
    lq0, glq0 = log_q_vg(x0)

    def log_pi(beta, lp, lq, glp, glq):
        v = lq + beta * alpha * (lp - lq)
        g = glq + beta * alpha * (glp - glq)
        return jnp.where(jnp.isfinite(lp) & jnp.isfinite(lq), v, -jnp.inf), g

    def hmc_move(key, beta, eps, x, lp, lq, glp, glq):
        k_mom, k_acc = jax.random.split(key)
        mom0 = jax.random.normal(k_mom, x.shape, dtype)
        v0, g0 = log_pi(beta, lp, lq, glp, glq)

        def leap(carry, _):
            y, m, g, *_ = carry
            m = m + 0.5 * eps * g
            y = y + eps * m
            lp_y, glp_y = log_p_vg(y)
            lq_y, glq_y = log_q_vg(y)
            v, g = log_pi(beta, lp_y, lq_y, glp_y, glq_y)
            m = m + 0.5 * eps * g
            return (y, m, g, v, lp_y, lq_y, glp_y, glq_y), None

        init = (x, mom0, g0, v0, lp, lq, glp, glq)
        (y, m, _, v, lp_y, lq_y, glp_y, glq_y), _ = jax.lax.scan(leap, init, None, n_leapfrog)
        log_ratio = (v - 0.5 * jnp.sum(m**2, -1)) - (v0 - 0.5 * jnp.sum(mom0**2, -1))
        log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
        accept = jnp.log(jax.random.uniform(k_acc, (x.shape[0],), dtype)) < log_ratio

        def pick(a, b):
            return _select(accept, a, b)

        return (
            pick(y, x),
            pick(lp_y, lp),
            pick(lq_y, lq),
            pick(glp_y, glp),
            pick(glq_y, glq),
            accept.astype(dtype),
        )

    def rwm_move(key, beta, eps, x, lp, lq, glp, glq):
        k_prop, k_acc = jax.random.split(key)
        y = x + eps * jax.random.normal(k_prop, x.shape, dtype)
        lp_y, lq_y = finite(batched_log_p(y)), finite(flow.log_prob(y))
        v0 = log_pi(beta, lp, lq, glp, glq)[0]
        v = log_pi(beta, lp_y, lq_y, glp, glq)[0]
        log_ratio = jnp.where(jnp.isfinite(v - v0), v - v0, -jnp.inf)
        accept = jnp.log(jax.random.uniform(k_acc, (x.shape[0],), dtype)) < log_ratio

        def pick(a, b):
            return _select(accept, a, b)

        return pick(y, x), pick(lp_y, lp), pick(lq_y, lq), glp, glq, accept.astype(dtype)

    move = hmc_move if transition == "hmc" else rwm_move

    def level(carry, inputs):
        x, lp, lq, glp, glq, log_w = carry
        key, beta_prev, beta, log_eps = inputs
        log_w = log_w + (beta - beta_prev) * alpha * (lp - lq)
        eps = jnp.exp(log_eps)
        acc = jnp.zeros((n,), dtype)
        for i in range(n_mcmc):
            x, lp, lq, glp, glq, a = move(
                jax.random.fold_in(key, i), beta, eps, x, lp, lq, glp, glq
            )
            acc = acc + a / n_mcmc
        return (x, lp, lq, glp, glq, log_w), jnp.mean(acc)

    keys = jax.random.split(k_levels, n_levels)
    init = (x0, lp0, lq0, glp0, glq0, jnp.zeros((n,), dtype))
    (x, lp, lq, _, _, log_w), acceptance = jax.lax.scan(
        level, init, (keys, betas[:-1], betas[1:], state.log_step_size)
    )
    log_w = jnp.where(jnp.isfinite(log_w) & jnp.isfinite(lp), log_w, -jnp.inf)
    new_state = AISState(
        log_step_size=state.log_step_size + adapt_rate * (acceptance - target_acceptance)
    )
    per_move = n_leapfrog if transition == "hmc" else 1
    n_values = n * (1 + n_levels * n_mcmc * per_move)
    n_grads = n_values if transition == "hmc" else n
    return new_state, AISResult(
        x=x,
        log_w=log_w,
        log_q=lq,
        log_p=lp,
        acceptance=acceptance,
        n_target_values=n_values,
        n_target_grads=n_grads,
    )
