"""Flow training: FAB (alpha = 2, with or without replay buffer), reverse KL and forward KL.

``make_trainer(method, flow, log_p, optimizer, config)`` returns a
:class:`difphys.train.Trainer` of two pure functions, ``init(key) -> FlowState`` and
``step(key, state) -> (FlowState, FlowStepInfo)``, in the optax / blackjax style; ``step``
jit-compiles once. :func:`train_flow` runs it in :func:`difphys.train.training_loop`. Every update passes the running-median gradient
guard of FAB: the global gradient norm is clipped at ``clip_factor`` x the median of the last
``history`` accepted norms, and an update whose norm is non-finite or above ``skip_factor`` x
that median is skipped (parameters and optimiser state unchanged).

Losses (``w`` are AIS weights targeting ``p^2/q``, ``q_theta`` the flow being trained):

* ``"fab"`` (no buffer): ``-sum_i softmax(log w)_i log q_theta(x_i)`` for one AIS pass.
* ``"fab"`` with ``buffer_capacity > 0``: each step adds one AIS pass to the prioritised buffer,
  then makes ``updates_per_ais`` updates on batches drawn proportional to ``w`` with loss
  ``-mean log q_theta(x)``, re-weighting the drawn entries for the new flow.
* ``"rkl"``: ``mean(log q_theta(x) - log p(x))`` over reparameterised ``x ~ q_theta``.
* ``"fkl"``: ``-mean log q_theta(x)`` over samples of the target (``target_sampler``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import check_count, check_positive, is_concrete
from ..train import History, Trainer, training_loop
from ._ais import ais_init, ais_step
from ._buffer import ReplayBuffer, buffer_add, buffer_adjust, buffer_init, buffer_sample

METHODS = ("fab", "rkl", "fkl")


class TrainConfig(NamedTuple):
    batch: int = 256
    n_levels: int = 8
    transition: str = "hmc"
    n_leapfrog: int = 5
    n_mcmc: int = 1
    step_size: float = 0.1
    schedule: str = "geometric"
    buffer_capacity: int = 0
    updates_per_ais: int = 4
    max_adjust: float = 10.0
    clip_factor: float = 5.0
    skip_factor: float = 20.0
    history: int = 64


class FlowState(NamedTuple):
    """The state of flow training: the flow's arrays, optimiser, AIS and buffer states, the
    gradient-norm history of the guard, and float64 counters of target evaluations."""

    params: object  # the flow's arrays (eqx.partition)
    opt_state: object
    ais_state: object
    buffer: ReplayBuffer | None
    grad_norms: jax.Array  # (history,), NaN where empty
    n_target_values: jax.Array  # float64 counters (exact up to 2^53)
    n_target_grads: jax.Array
    n_skipped: jax.Array
    step: jax.Array


class FlowStepInfo(NamedTuple):
    """One flow-training step: the loss, the global gradient norm, the mean AIS acceptance
    (NaN for methods without AIS), the cumulative target-evaluation counters and the
    cumulative number of skipped updates (non-finite or outlier gradient, or no finite target
    value in the step)."""

    loss: jax.Array
    grad_norm: jax.Array
    acceptance: jax.Array
    n_target_values: jax.Array
    n_target_grads: jax.Array
    n_skipped: jax.Array


def _check_config(config: TrainConfig) -> None:
    """Every count of a :class:`TrainConfig` an integer in range, every factor positive."""
    for name in ("batch", "n_levels", "n_leapfrog", "n_mcmc", "updates_per_ais", "history"):
        check_count(getattr(config, name), f"TrainConfig.{name}")
    check_count(config.buffer_capacity, "TrainConfig.buffer_capacity", 0)
    for name in ("step_size", "clip_factor", "skip_factor"):
        check_positive(getattr(config, name), f"TrainConfig.{name}")
    if not float(config.max_adjust) >= 1.0:
        raise ValueError(f"TrainConfig.max_adjust must be >= 1; got {config.max_adjust!r}")


def _probe_target(key, flow, log_p, n: int) -> None:
    """Eagerly refuse a target that is non-finite at every one of ``n`` points drawn from the
    initial flow (a dead target trains to nothing: below threshold, outside its support)."""
    x = flow.sample(jax.random.fold_in(key, 0x7A6E7), n)
    values = np.asarray(jax.vmap(log_p)(x))
    if not np.any(np.isfinite(values)):
        kinds = sorted({str(v) for v in values[:8]})
        raise ValueError(f"the target log density is non-finite at all {n} points drawn from the "
                         f"initial flow (values {', '.join(kinds)}): nothing to train on; check "
                         "that the target has support inside the flow's domain (e.g. a process "
                         "below threshold)")


def _guarded_update(optimizer, config, loss_fn, params, static, opt_state, grad_norms):
    """One optimiser update, skipped (parameters and state kept) when the gradient is
    non-finite, an outlier against the recent median, or the step saw no finite target
    value at all (``loss_fn`` returns ``(loss, dead)``: a dead step's loss carries no
    information, masking makes it 0)."""
    (loss, dead), grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static)),
                                             has_aux=True)(params)
    norm = optax.tree.norm(grads)
    have = jnp.sum(jnp.isfinite(grad_norms)) >= 5
    median = jnp.nanmedian(grad_norms)
    skip = dead | ~jnp.isfinite(norm) | (have & (norm > config.skip_factor * median))
    scale = jnp.where(have, jnp.minimum(1.0, config.clip_factor * median / norm), 1.0)
    grads = jax.tree_util.tree_map(lambda g: jnp.where(skip, 0.0, g * scale).astype(g.dtype), grads)
    updates, new_opt = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
        lambda a, b: jnp.where(skip, b, a), new, old
    )
    grad_norms = jnp.where(skip, grad_norms, jnp.roll(grad_norms, 1).at[0].set(norm))
    return keep(new_params, params), keep(new_opt, opt_state), grad_norms, loss, skip, norm


def make_trainer(
    method: str,
    flow,
    log_p: Callable,
    optimizer: optax.GradientTransformation,
    config: TrainConfig = TrainConfig(),  # noqa: B008 - NamedTuple default is immutable
    *,
    target_sampler: Callable | None = None,
) -> Trainer:
    """A :class:`difphys.train.Trainer` ``(init, step)`` for training ``flow`` towards the
    density ``exp(log_p)``: ``init(key) -> FlowState``, ``step(key, state) -> (FlowState,
    FlowStepInfo)``.

    Args:
      method: ``"fab"``, ``"rkl"`` or ``"fkl"``.
      flow: initial flow (e.g. :func:`make_spline_flow`); its inexact arrays are trained.
      log_p: unnormalised target log density of one point ``(dim,) -> ()``.
      optimizer: an optax transformation (e.g. ``optax.adam(3e-4)``).
      config: :class:`TrainConfig`.
      target_sampler: ``(key, n) -> (n, dim)`` samples of the target (``"fkl"`` only).
    """
    if method not in METHODS:
        raise ValueError(f"unknown training method {method!r}; choose one of {METHODS}")
    if method == "fkl" and target_sampler is None:
        raise ValueError("forward KL needs target_sampler(key, n) -> samples of the target")
    params0, static = eqx.partition(flow, eqx.is_inexact_array)
    dtype = jax.tree_util.tree_leaves(params0)[0].dtype
    _check_config(config)
    use_buffer = method == "fab" and config.buffer_capacity > 0
    if use_buffer and config.buffer_capacity < config.batch:
        raise ValueError("buffer_capacity must be at least the batch size")

    def init(key) -> FlowState:
        if is_concrete(key):
            _probe_target(key, flow, log_p, max(config.batch, 256))
        return FlowState(
            params=params0,
            opt_state=optimizer.init(params0),
            ais_state=ais_init(config.n_levels, config.step_size, dtype),
            buffer=buffer_init(config.buffer_capacity, flow.dim, dtype) if use_buffer else None,
            grad_norms=jnp.full((config.history,), jnp.nan, dtype),
            n_target_values=jnp.zeros((), jnp.float64 if jax.config.x64_enabled else jnp.float32),
            n_target_grads=jnp.zeros((), jnp.float64 if jax.config.x64_enabled else jnp.float32),
            n_skipped=jnp.zeros((), jnp.int32),
            step=jnp.zeros((), jnp.int32),
        )

    def update(state, loss_fn):
        params, opt_state, norms, loss, skip, norm = _guarded_update(
            optimizer, config, loss_fn, state.params, static, state.opt_state, state.grad_norms
        )
        state = state._replace(
            params=params,
            opt_state=opt_state,
            grad_norms=norms,
            n_skipped=state.n_skipped + skip.astype(jnp.int32),
        )
        return state, loss, norm

    def count(state, values, grads):
        return state._replace(
            n_target_values=state.n_target_values + values,
            n_target_grads=state.n_target_grads + grads,
        )

    def step(key, state: FlowState):
        flow_now = eqx.combine(state.params, static)
        acceptance = jnp.asarray(jnp.nan, dtype)
        if method == "fab":
            k_ais, k_buf = jax.random.split(key)
            ais_state, res = ais_step(
                k_ais,
                state.ais_state,
                flow_now,
                log_p,
                config.batch,
                alpha=2.0,
                schedule=config.schedule,
                transition=config.transition,
                n_leapfrog=config.n_leapfrog,
                n_mcmc=config.n_mcmc,
            )
            state = count(
                state._replace(ais_state=ais_state), res.n_target_values, res.n_target_grads
            )
            acceptance = jnp.mean(res.acceptance).astype(dtype)
            if not use_buffer:
                w = jax.lax.stop_gradient(jax.nn.softmax(res.log_w))
                w = jnp.where(jnp.isfinite(w), w, 0.0)
                x = jax.lax.stop_gradient(res.x)

                def loss_fn(f):
                    lq = f.log_prob(x)
                    return (-jnp.sum(jnp.where(w > 0, w * lq, 0.0)),
                            ~jnp.any(jnp.isfinite(res.log_w)))

                state, loss, norm = update(state, loss_fn)
            else:
                buf = buffer_add(state.buffer, res.x, res.log_w, res.log_q)
                state = state._replace(buffer=buf)

                def one(carry, k):
                    st = carry
                    idx = buffer_sample(k, st.buffer, config.batch)
                    x = st.buffer.x[idx]

                    def loss_fn(f):
                        return -jnp.mean(f.log_prob(x)), ~jnp.any(jnp.isfinite(st.buffer.log_w[idx]))

                    st, loss, norm = update(st, loss_fn)
                    new_lq = eqx.combine(st.params, static).log_prob(x)
                    st = st._replace(
                        buffer=buffer_adjust(st.buffer, idx, new_lq, config.max_adjust)
                    )
                    return st, (loss, norm)

                state, (losses, norms) = jax.lax.scan(
                    one, state, jax.random.split(k_buf, config.updates_per_ais)
                )
                loss, norm = losses[-1], norms[-1]
        elif method == "rkl":

            def loss_fn(f):
                x, lq = f.sample_and_log_prob(key, config.batch)
                lp = jax.vmap(log_p)(x)
                ok = jnp.isfinite(lp) & jnp.isfinite(lq)
                n_ok = jnp.maximum(jnp.sum(ok), 1)
                return jnp.sum(jnp.where(ok, lq - jnp.where(ok, lp, 0.0), 0.0)) / n_ok, ~jnp.any(ok)

            state, loss, norm = update(state, loss_fn)
            state = count(state, config.batch, config.batch)
        else:
            x = target_sampler(key, config.batch)

            def loss_fn(f):
                return -jnp.mean(f.log_prob(x)), ~jnp.all(jnp.isfinite(x))

            state, loss, norm = update(state, loss_fn)
        info = FlowStepInfo(loss, norm, acceptance, state.n_target_values, state.n_target_grads,
                            state.n_skipped)
        return state._replace(step=state.step + 1), info

    def init_std(key):
        # optax mixes Python scalars with int32 counters: trace it under standard promotion
        with jax.numpy_dtype_promotion("standard"):
            return init(key)

    def step_std(key, state):
        with jax.numpy_dtype_promotion("standard"):
            return step(key, state)

    return Trainer(init_std, step_std)


def flow_from_state(flow, state: FlowState):
    """The trained flow: ``flow``'s structure with ``state.params``."""
    _, static = eqx.partition(flow, eqx.is_inexact_array)
    return eqx.combine(state.params, static)


def train_flow(
    key,
    method: str,
    flow,
    log_p: Callable,
    *,
    steps: int,
    optimizer: optax.GradientTransformation | None = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008
    target_sampler: Callable | None = None,
    state: FlowState | None = None,
    callback: Callable | None = None,
    callback_every: int = 0,
    progress: bool = True,
) -> tuple[object, FlowState, History]:
    """Train ``flow`` for ``steps`` steps (jit-compiled once) in
    :func:`difphys.train.training_loop`, with a progress bar.

    Returns ``(flow, state, history)``; ``history`` (a :class:`difphys.train.History`) holds
    per-step ``loss``, ``grad_norm``, ``acceptance`` and the cumulative target-evaluation
    counters. Pass a previous ``state`` to resume: the run continues from ``state.step`` up to
    ``steps`` in total. ``callback(step, flow, state)`` runs every ``callback_every`` steps
    (e.g. evaluation).
    """
    optimizer = optax.adam(3e-4) if optimizer is None else optimizer
    trainer = make_trainer(method, flow, log_p, optimizer, config, target_sampler=target_sampler)
    k_init, k_steps = jax.random.split(key)
    state = trainer.init(k_init) if state is None else state
    hook = None if callback is None else (
        lambda i, st: callback(i, flow_from_state(flow, st), st))
    state, history = training_loop(jax.jit(trainer.step), state, key=k_steps, steps=steps,
                                   log_every=1, callback=hook, callback_every=callback_every,
                                   progress=progress, desc=f"train [{method}]")
    return flow_from_state(flow, state), state, history
