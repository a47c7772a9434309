"""Fitting a source distribution to observations by maximum marginal likelihood (neural
empirical Bayes), with early stopping on held-out observations.

``make_source_trainer`` is the ``init``/``step`` pair (a :class:`difphys.train.Trainer`);
``fit_source`` splits off a validation set, runs the pair, evaluates the held-out marginal
likelihood every ``eval_every`` steps and returns the parameters of the best evaluation. The
loop is its own (not :func:`difphys.train.training_loop`) because it stops early; it has the
same step keys (``fold_in(key, step)``) and progress bar.

Trained together, as one PyTree of arrays: the source; the recognition network of the
``"iw"`` / ``"elbo"`` estimators; and, with ``fit_likelihood=True``, the array leaves of
``log_lik`` (nuisance parameters of a resolution model, e.g. a
:class:`difphys.vertex.TrackResolution` inside an ``eqx.Module`` likelihood).

Loss per step on a batch of observations: ``-mean_i log p^(y_i) - entropy_weight * H[q]``
with ``H[q] = -E_q log q`` estimated from ``entropy_samples`` reparameterised draws (the
entropy regularisation of sourcerer, Vetter et al., arXiv:2402.07808). Observations whose
estimate is ``-inf`` (no draw with non-zero likelihood) are left out of the mean and counted
in ``SourceStepInfo.n_dead``; a step whose gradient is not finite is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import check_count, is_concrete
from ..progress import progress_bar
from ..train import History, Trainer
from ._source import ESTIMATORS, _check_obs, log_marginal


class SourceState(NamedTuple):
    """Parameters (the arrays of ``(source, recognition, log_lik)``; ``None`` where not
    trained), optimiser state, skipped-step counter and step."""

    params: tuple
    opt_state: object
    n_skipped: jax.Array
    step: jax.Array


class SourceStepInfo(NamedTuple):
    """One step: the loss, mean log-marginal of the batch, entropy estimate, gradient norm and
    the number of batch observations without a finite estimate."""

    loss: jax.Array
    log_marginal: jax.Array
    entropy: jax.Array
    grad_norm: jax.Array
    n_dead: jax.Array


class SourceFit(NamedTuple):
    """The result of :func:`fit_source`: the fitted source, recognition network (or ``None``)
    and likelihood (fitted nuisance parameters, or the one given), the final state, the
    history (``val_log_marginal`` NaN between evaluations), the step of the best held-out
    value and that value (mean log p(y) per held-out observation, nats)."""

    source: object
    recognition: object
    log_lik: object
    state: SourceState
    history: History
    best_step: int
    best_val: float


def _split(obj, train: bool):
    if obj is None or not train:
        return None, obj
    return eqx.partition(obj, eqx.is_inexact_array)


def _live_mean(lm):
    """Mean of the finite estimates and the number of ``-inf`` ones (no draw explains them)."""
    live = jnp.isfinite(lm)
    mean = jnp.sum(jnp.where(live, lm, 0.0)) / jnp.maximum(jnp.sum(live), 1).astype(lm.dtype)
    return mean, jnp.sum(~live)


def _combine(params, static):
    return static if params is None else eqx.combine(params, static)


def make_source_trainer(source, log_lik: Callable, y, *, estimator: str = "biased", K: int = 64,
                        batch: int = 256, optimizer: optax.GradientTransformation | None = None,
                        entropy_weight: float = 0.0, entropy_samples: int = 256,
                        recognition=None, fit_likelihood: bool = False,
                        max_depth: int = 64, shared_draws: bool = False) -> Trainer:
    """The ``(init, step)`` pair of source estimation on observations ``y (N, dy)``.

    ``init(key) -> SourceState``; ``step(key, state) -> (SourceState, SourceStepInfo)`` draws
    ``batch`` observations (with replacement) and makes one optimiser update;
    :func:`source_from_state` turns a state back into modules. See :func:`fit_source` for the
    arguments (``entropy_samples``: draws of the entropy estimate).
    """
    return _make(source, log_lik, y, estimator=estimator, K=K, batch=batch, optimizer=optimizer,
                 entropy_weight=entropy_weight, entropy_samples=entropy_samples,
                 recognition=recognition, fit_likelihood=fit_likelihood, max_depth=max_depth,
                 shared_draws=shared_draws)[0]


def source_from_state(state: SourceState, source, recognition=None, log_lik=None):
    """``(source, recognition, log_lik)`` with the trained arrays of ``state`` (the modules
    given to :func:`make_source_trainer` supply the structure; an untrained one is returned
    as given)."""
    out = []
    for params, obj in zip(state.params, (source, recognition, log_lik), strict=True):
        if params is None or obj is None:
            out.append(obj)
        else:
            out.append(eqx.combine(params, eqx.partition(obj, eqx.is_inexact_array)[1]))
    return tuple(out)


def _make(source, log_lik, y, *, estimator, K, batch, optimizer, entropy_weight,
          entropy_samples, recognition, fit_likelihood, max_depth, shared_draws=False):
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    if estimator in ("iw", "elbo") and recognition is None:
        raise ValueError(f"the {estimator!r} estimator needs a recognition network")
    check_count(K, "K")
    check_count(batch, "batch")
    check_count(entropy_samples, "entropy_samples")
    if not (np.isfinite(entropy_weight) and entropy_weight >= 0):
        raise ValueError(f"entropy_weight must be a finite number >= 0; got {entropy_weight!r}")
    if fit_likelihood and not jax.tree_util.tree_leaves(eqx.filter(log_lik, eqx.is_inexact_array)):
        raise ValueError("fit_likelihood=True needs a log_lik with array leaves (an eqx.Module "
                         "holding the nuisance parameters)")
    y = _check_obs(y)
    optimizer = optax.adam(1e-3) if optimizer is None else optimizer
    parts = (_split(source, True), _split(recognition, recognition is not None),
             _split(log_lik, fit_likelihood))
    params0 = tuple(p for p, _ in parts)
    statics = tuple(s for _, s in parts)
    n_obs = y.shape[0]

    def objective(params, key, y_batch):
        src, rec, lik = (_combine(p, s) for p, s in zip(params, statics, strict=True))
        k_est, k_ent = jax.random.split(key)
        lm = log_marginal(k_est, src, lik, y_batch, estimator=estimator, K=K, recognition=rec,
                          max_depth=max_depth, shared_draws=shared_draws)
        mean_lm, n_dead = _live_mean(lm)
        if entropy_weight > 0:
            _, log_q = src.sample_and_log_prob(k_ent, entropy_samples)
            entropy = -jnp.mean(log_q)
        else:
            entropy = jnp.asarray(jnp.nan, mean_lm.dtype)
        loss = -mean_lm - (entropy_weight * entropy if entropy_weight > 0 else 0.0)
        return loss, (mean_lm, entropy, n_dead)

    def init(key) -> SourceState:
        del key
        with jax.numpy_dtype_promotion("standard"):
            opt_state = optimizer.init(params0)
        return SourceState(params0, opt_state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

    def step(key, state: SourceState):
        k_idx, k_obj = jax.random.split(key)
        idx = jax.random.randint(k_idx, (batch,), 0, n_obs)
        (loss, (lm, ent, dead)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, k_obj, y[idx])
        norm = optax.tree.norm(grads)
        skip = ~jnp.isfinite(norm)
        grads = jax.tree_util.tree_map(lambda g: jnp.where(skip, jnp.zeros_like(g), g), grads)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda a, b: jnp.where(skip, b, a), new, old)
        state = SourceState(keep(params, state.params), keep(opt_state, state.opt_state),
                            state.n_skipped + skip.astype(jnp.int32), state.step + 1)
        return state, SourceStepInfo(loss, lm, ent, norm, dead)

    return Trainer(init, step), statics


def _unpack(state: SourceState, statics):
    return tuple(_combine(p, s) for p, s in zip(state.params, statics, strict=True))


def fit_source(key, source, log_lik: Callable, y, *, estimator: str = "biased", K: int = 64,
               steps: int = 2000, optimizer: optax.GradientTransformation | None = None,
               entropy_weight: float = 0.0, validation: float = 0.1, batch: int = 256,
               recognition=None, fit_likelihood: bool = False, max_depth: int = 64,
               eval_every: int = 100, patience: int = 5, val_K: int | None = None,
               shared_draws: bool = False, progress=True) -> SourceFit:
    """Fit ``source`` to observations ``y`` by maximising their marginal likelihood.

    Args:
      key: PRNG key (validation split, step keys, held-out evaluation).
      source: the initial source (``SplineFlow``, ``GaussianSource`` or any PyTree with
        ``sample_and_log_prob`` and ``log_prob``); its inexact arrays are trained.
      log_lik: ``log_lik(y (dy,), x (d,)) -> ()``, a JAX function or ``eqx.Module``.
      y: observations ``(N, dy)``, in the units ``log_lik`` expects.
      estimator: ``"biased"``, ``"roulette"``, ``"iw"`` or ``"elbo"``
        (:func:`difphys.flows.log_marginal`); K: draws per observation.
      steps: the most optimiser steps; optimizer: optax (default Adam 1e-3).
      entropy_weight: weight of the source's entropy in the objective (0: plain NEB).
      validation: fraction of ``y`` held out for early stopping (0 < validation < 1).
      batch: observations per step.
      recognition: ``r(x | y)`` for ``"iw"`` / ``"elbo"`` (trained jointly).
      fit_likelihood: also train the array leaves of ``log_lik`` (nuisance parameters).
      eval_every, patience: evaluate every ``eval_every`` steps; stop after ``patience``
        evaluations without improvement; the best evaluation's parameters are returned.
      val_K: draws per held-out observation (default ``max(K, 256)``); held-out values use the
        biased estimator (the importance-weighted one with a recognition network) and one fixed
        key, so successive evaluations are comparable; held-out observations whose estimate is
        ``-inf`` are left out of the mean, as in training.
      shared_draws: one set of source draws per step for the whole batch (and per held-out
        evaluation); see :func:`difphys.flows.log_marginal`.
      progress: a progress bar (``True``), none, or a bar factory.
    """
    check_count(steps, "steps")
    check_count(eval_every, "eval_every")
    check_count(patience, "patience")
    if not (0.0 < float(validation) < 1.0):
        raise ValueError(f"validation must be a fraction in (0, 1); got {validation!r}")
    y = _check_obs(y)
    n_val = max(1, int(round(validation * y.shape[0])))
    if y.shape[0] - n_val < 1:
        raise ValueError(f"{y.shape[0]} observations leave none to fit after holding out {n_val}")
    k_split, k_steps, k_val = jax.random.split(key, 3)
    perm = np.asarray(jax.random.permutation(k_split, y.shape[0]))
    y_val, y_fit = y[perm[:n_val]], y[perm[n_val:]]
    trainer, statics = _make(
        source, log_lik, y_fit, estimator=estimator, K=K, batch=batch, optimizer=optimizer,
        entropy_weight=entropy_weight, entropy_samples=256, recognition=recognition,
        fit_likelihood=fit_likelihood, max_depth=max_depth, shared_draws=shared_draws)
    val_K = max(K, 256) if val_K is None else check_count(val_K, "val_K")
    val_estimator = "iw" if recognition is not None else "biased"

    @jax.jit
    def evaluate_with(params, key):
        src, rec, lik = (_combine(p, s) for p, s in zip(params, statics, strict=True))
        lm = log_marginal(key, src, lik, y_val, estimator=val_estimator, K=val_K,
                          recognition=rec, shared_draws=shared_draws and rec is None)
        return _live_mean(lm)[0]  # as in training: observations no draw explains are left out

    def evaluate(params):  # one fixed key for every evaluation: comparable values
        return evaluate_with(params, jax.random.clone(k_val))

    step = jax.jit(trainer.step)
    state = trainer.init(k_steps)
    first = float(evaluate(state.params))
    best = (first if np.isfinite(first) else -np.inf, 0, state)
    rows, logged, since_best = [], [], 0
    with progress_bar(progress, total=steps, desc=f"fit source [{estimator}]") as bar:
        for i in range(steps):
            state, info = step(jax.random.fold_in(k_steps, i), state)
            val = np.nan
            if (i + 1) % eval_every == 0 or i + 1 == steps:
                val = float(evaluate(state.params))
                if np.isfinite(val) and val > best[0]:
                    best, since_best = (val, i + 1, state), 0
                else:
                    since_best += 1
                bar.set_postfix(val=f"{val:.4f}", best=f"{best[0]:.4f}")
            rows.append({**info._asdict(), "val_log_marginal": val})
            logged.append(i + 1)
            bar.update(1)
            if since_best >= patience:
                break
    if is_concrete(state.step) and int(state.n_skipped) == len(logged):
        raise FloatingPointError("every step of the source fit had a non-finite gradient")
    history = History.from_rows(logged, rows)
    src, rec, lik = _unpack(best[2], statics)
    return SourceFit(src, rec, lik, state, history, int(best[1]), float(best[0]))
