"""Gradient-based design of the toy detector: Adam on the ring radius with any estimator."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import stochad
from ..progress import progress_bar
from ._shower import DetectorConfig, objective


def _history_chunk(method, options, config, branching, optimizer, batch, n_steps):
    f = functools.partial(objective, config=config, branching=branching)

    def one_step(carry, key):
        theta, opt_state = carry
        keys = jax.random.split(key, batch)
        grads = jax.vmap(
            lambda k: stochad.derivative_estimate(f, theta, key=k, method=method, **options)
        )(keys)
        grad = jnp.mean(grads)
        # a non-finite estimate (possible for the relaxed estimators) skips the update
        grad = jnp.where(jnp.isfinite(grad), grad, jnp.zeros_like(grad))
        loss = jnp.mean(jax.vmap(lambda k: f(theta, k))(keys))
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        theta = optax.apply_updates(theta, updates)
        return (theta, opt_state), (theta, loss, grad)

    def run(theta, opt_state, key):
        return jax.lax.scan(one_step, (theta, opt_state), jax.random.split(key, n_steps))

    return run


class DesignResult(NamedTuple):
    """What :func:`optimize_detector` returns: the settings it ran with, the ``theta`` and
    ``loss`` histories ``(n_seeds, steps)`` (``loss`` is the batch mean of the objective at
    each step), and ``final_theta`` / ``final_loss`` ``(n_seeds,)`` (the loss on ``n_eval``
    fixed showers)."""

    method: str
    options: dict
    branching: bool
    theta0: float
    steps: int
    batch: int
    learning_rate: float
    theta: np.ndarray
    loss: np.ndarray
    final_theta: np.ndarray
    final_loss: np.ndarray


def optimize_detector(
    key,
    *,
    method: str = "stochad",
    options: dict | None = None,
    theta0: float = 2.5,
    steps: int = 200,
    batch: int = 8,
    learning_rate: float = 0.05,
    n_seeds: int = 1,
    branching: bool = False,
    config: DetectorConfig | None = None,
    n_eval: int = 2000,
    chunk: int = 20,
    progress: bool = True,
) -> DesignResult:
    """Minimise E[(mean interaction radius - 2)^2] over the ring's inner radius with Adam.

    Args:
      key: PRNG key; seed ``i`` uses ``fold_in(key, i)``.
      method, options: the :func:`difphys.stochad.derivative_estimate` estimator.
      theta0: starting inner radius; steps, batch: Adam steps and showers per gradient.
      n_seeds: independent optimisations run side by side (vmapped).
      n_eval: showers (fixed keys, shared by all methods) for the final loss.

    Returns:
      :class:`DesignResult`: the ``theta`` and ``loss`` histories ``(n_seeds, steps)``,
      ``final_theta`` and ``final_loss`` ``(n_seeds,)``, and the settings.
    """
    if steps < 1 or batch < 1 or n_seeds < 1:
        raise ValueError("steps, batch and n_seeds must be >= 1")
    options = dict(options or {})
    config = DetectorConfig() if config is None else config
    dtype = jnp.result_type(float)
    optimizer = optax.adam(learning_rate)
    seed_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_seeds))
    theta = jnp.full((n_seeds,), theta0, dtype)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = jax.vmap(optimizer.init)(theta)
    chunk = max(1, min(chunk, steps))
    thetas, losses = [], []
    done = 0
    runners = {}
    bar = progress_bar(progress, total=steps, desc=f"optimize-detector [{method}]")
    while done < steps:
        n = min(chunk, steps - done)
        if n not in runners:
            run = _history_chunk(method, options, config, branching, optimizer, batch, n)
            runners[n] = jax.jit(jax.vmap(run))
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(seed_keys, done)
        # optax mixes Python scalars and int32 step counts; allow standard promotion there
        with jax.numpy_dtype_promotion("standard"):
            (theta, opt_state), (th_hist, loss_hist, _) = runners[n](theta, opt_state, keys)
        thetas.append(np.asarray(th_hist))
        losses.append(np.asarray(loss_hist))
        done += n
        bar.update(n)
        bar.set_postfix(theta=f"{float(jnp.median(theta)):.3f}")
    bar.close()

    eval_keys = jax.random.split(jax.random.key(20231), n_eval)
    f = functools.partial(objective, config=config, branching=branching)
    final_loss = jax.jit(jax.vmap(lambda th: jnp.mean(jax.vmap(lambda k: f(th, k))(eval_keys))))(
        theta
    )
    return DesignResult(method, options, branching, theta0, steps, batch, learning_rate,
                        np.concatenate(thetas, axis=1), np.concatenate(losses, axis=1),
                        np.asarray(theta), np.asarray(final_loss))
