"""A generic, sharded training loop for Flax NNX models with optax and orbax.

The step is a pure function of ``(TrainState, batch, key)``: the model enters as
``nnx.split`` pieces and is merged inside, so ``jax.jit`` compiles it once and XLA partitions
it over a device mesh when the batch is sharded (data parallelism: parameters replicated, the
batch split along the mesh axis, gradients and batch statistics reduced by XLA). The same code
runs on one CPU, several GPUs, or several hosts after ``difphys.sharding.initialize_distributed``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ..io import batches, trim_padding
from ..sharding import replicated
from ._checkpoint import restore_latest
from ._run import History, training_loop

DEFAULT_OPTIMIZER = optax.adamw(1e-3)
"""The optimiser of :func:`fit` when none is given, built once: the compiled step is cached
per (model structure, loss, optimiser), so a fresh ``optax.adamw`` per call would recompile."""


class TrainState(NamedTuple):
    """Step counter, trainable parameters, other model state (batch statistics) and the
    optimiser state of an NNX model; a PyTree that orbax checkpoints as a whole."""

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any


class StepInfo(NamedTuple):
    """What one training step reports: the loss, ``skipped = 1`` where a non-finite loss or
    gradient skipped the update, and the loss function's own ``metrics``."""

    loss: jax.Array
    skipped: jax.Array
    metrics: Any


class ClassifierMetrics(NamedTuple):
    """Metrics of :func:`classifier_loss`: the batch accuracy."""

    accuracy: jax.Array


LossFn = Callable[..., tuple[jax.Array, Any]]


def init_state(model: nnx.Module, optimizer: optax.GradientTransformation):
    """``(graphdef, TrainState)`` of ``model`` at step 0."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = optimizer.init(params)
    return graphdef, TrainState(jnp.zeros((), jnp.int32), params, rest, opt_state)


def make_train_step(graphdef, loss_fn: LossFn, optimizer: optax.GradientTransformation):
    """The pure training step ``step(key, state, batch) -> (state, StepInfo)``.

    ``loss_fn(model, batch, *, key) -> (loss, metrics)`` sees the merged model in training mode;
    the key drives dropout. Non-finite losses or gradients skip the update (the step counter
    still advances) and report ``skipped = 1``.
    """

    def step(key, state: TrainState, batch):
        def objective(params, rest):
            model = nnx.merge(graphdef, params, rest)
            loss, metrics = loss_fn(model, batch, key=key)
            return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

        # The other state (batch statistics) is traced along with the parameters, because NNX
        # lets a module update it only at the trace level it was created in; its gradient is
        # discarded.
        (loss, (metrics, rest)), (grads, _) = jax.value_and_grad(
            objective, argnums=(0, 1), has_aux=True)(state.params, state.rest)
        finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
            [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        # optax mixes Python floats with its int32 step count: run it under standard promotion
        # so that callers may use strict promotion everywhere else.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
        keep = lambda new, old: jax.tree.map(  # noqa: E731
            lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = TrainState(state.step + 1, keep(params, state.params),
                               keep(rest, state.rest), keep(opt_state, state.opt_state))
        return new_state, StepInfo(loss, (~finite).astype(jnp.int32), metrics)

    return step


def classifier_loss(model, batch, *, key) -> tuple[jax.Array, ClassifierMetrics]:
    """Mean softmax cross-entropy of ``model(features, p4, mask, key=key)`` (with
    ``jet_inputs=`` when the batch has them, :class:`difphys.nn.EventClassifier`) against the
    integer ``label`` (weighted by ``weight (B,)`` when the batch has it: ``sum w l / sum w``);
    reports the batch accuracy."""
    extra = {"jet_inputs": batch["jet_inputs"]} if "jet_inputs" in batch else {}
    logits = model(batch["features"], batch["p4"], batch["mask"], key=key, **extra)
    labels = batch["label"]
    per_jet = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if "weight" in batch:  # per-jet weights (a data config's precomputed weights)
        w = batch["weight"].astype(per_jet.dtype)
        loss = jnp.sum(w * per_jet) / jnp.maximum(jnp.sum(w), jnp.finfo(per_jet.dtype).tiny)
    else:
        loss = jnp.mean(per_jet)
    acc = jnp.mean((jnp.argmax(logits, axis=-1).astype(labels.dtype) == labels).astype(logits.dtype))
    return loss, ClassifierMetrics(acc)


@functools.lru_cache(maxsize=8)
def _compiled_step(graphdef, loss_fn, optimizer):
    """One jitted step per (model structure, loss, optimiser): repeated ``fit`` calls in a
    notebook, or a resumed run, reuse the compilation."""
    return jax.jit(make_train_step(graphdef, loss_fn, optimizer), donate_argnums=1)


@functools.lru_cache(maxsize=8)
def _compiled_forward(graphdef):
    return jax.jit(lambda s, f, p, m, extra: nnx.merge(graphdef, s)(f, p, m, **extra))


def _check_labels(model, data) -> None:
    """Integer labels in range of the model's classes (when it has a classification head):
    an out-of-range label would index past the logits and train on garbage."""
    if "label" not in data:
        return
    labels = np.asarray(data["label"])
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError("labels must be non-negative integer class indices")
    classes = getattr(getattr(model, "head", None), "out_features", None)
    if classes is not None and labels.size and labels.max() >= classes:
        raise ValueError(f"label {int(labels.max())} is out of range for a model with {classes} "
                         "classes")


def fit(
    model: nnx.Module,
    data: Mapping[str, np.ndarray],
    *,
    steps: int,
    batch_size: int,
    key,
    optimizer: optax.GradientTransformation | None = None,
    loss_fn: LossFn = classifier_loss,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    mesh=None,
    progress: bool = True,
    log_every: int = 10,
    trim: int | None = None,
    trim_quantile: float | tuple[float, float] | None = None,
    bucket: int | None = None,
) -> tuple[nnx.Module, History]:
    """Train ``model`` for ``steps`` steps on shuffled batches of ``data`` (a
    :class:`difphys.io.Table` or mapping of arrays with a common leading axis, see
    :func:`difphys.io.batches`; or a :class:`difphys.io.JetStream` of files, which orders its
    batches with its own key), in :func:`training_loop`.

    With ``checkpoint_dir``, the full :class:`TrainState` is saved with orbax every
    ``checkpoint_every`` steps and at the end, and a later call resumes from the newest
    checkpoint: batch order and dropout keys are functions of ``(key, step)``, so a resumed
    run ends with bit-identical parameters. With ``mesh`` (``difphys.sharding.make_mesh()``),
    batches are split over its devices. With ``trim`` (e.g. 16), each batch is cut to its
    longest jet rounded up to a multiple of ``trim`` (:func:`difphys.io.trim_padding`): the
    same result for a padding-invariant model such as ParT, with one compilation per distinct
    length. ``trim_quantile`` (e.g. ``(0.9, 1.02)``) adds weaver-core's lossy training-time
    cut to a quantile of the jet lengths (:func:`difphys.io.trim_padding`). ``bucket`` (e.g.
    16, with ``trim``) puts jets of similar length into the same batch, pools of ``bucket``
    batches at a time (:func:`difphys.io.epoch_batches`). Returns the trained model (updated
    in place) and the :class:`History` of the logged steps (``loss``, ``skipped``, the loss
    function's metrics such as ``accuracy``).
    """
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    streamed = hasattr(data, "batch_source")  # a difphys.io.JetStream
    if streamed and (trim is not None or bucket is not None):
        raise ValueError("trim and bucket apply to in-memory data, not to a JetStream")
    if not streamed:
        _check_labels(model, data)
    graphdef, state = init_state(model, optimizer)
    restored = restore_latest(checkpoint_dir, state)
    # the step donates its input buffers: never donate arrays the caller still holds
    state = restored if restored is not None else jax.tree.map(jnp.copy, state)
    if mesh is not None:
        state = jax.device_put(state, replicated(mesh))
    data_key, dropout_key = jax.random.split(key)

    def source(start):
        return batches(data, batch_size, key=data_key, start_step=start, mesh=mesh, trim=trim,
                       trim_quantile=trim_quantile, bucket=bucket)

    if streamed:
        if data.batch_size != batch_size:
            raise ValueError(f"batch_size {batch_size} differs from the stream's "
                             f"{data.batch_size}")
        source = data.batch_source(mesh)

    state, history = training_loop(
        _compiled_step(graphdef, loss_fn, optimizer), state, key=dropout_key, steps=steps,
        batches=source, log_every=log_every, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=False, progress=progress)
    nnx.update(model, state.params, state.rest)
    return model, history


#: The attributes by which NNX modules (and difphys's Dropout) hold their train/eval mode.
_MODE_ATTRIBUTES = ("deterministic", "use_running_average")


def _modes(model: nnx.Module) -> list:
    """``(module, attribute, value)`` of every mode flag in ``model``."""
    return [(m, a, getattr(m, a)) for _, m in nnx.iter_modules(model)
            for a in _MODE_ATTRIBUTES if hasattr(m, a)]


def _restore_modes(modes: list) -> None:
    for module, attribute, value in modes:
        setattr(module, attribute, value)


def predict(model: nnx.Module, data: Mapping[str, np.ndarray], *, batch_size: int = 512,
            trim: int | None = None, by_length: bool | None = None) -> np.ndarray:
    """Logits of ``model`` (evaluation mode: running statistics, no dropout) over ``data``
    in batches; returns a float32 NumPy array ``(n, num_classes)`` in the order of ``data``.

    ``trim`` cuts each batch to its longest jet as in :func:`fit`. ``by_length`` (default: on
    whenever ``trim`` is given) batches the jets in order of their particle count, so that
    each batch holds jets of similar length and the cut removes nearly all padding: on Z-pole
    jets (20 particles on average, 128 padded) the batches shrink from the longest of 512
    random jets to about their own length. In evaluation mode every jet's logits depend on
    that jet alone, so the order changes nothing but float32 rounding (tested). Each
    module's train/eval mode is restored afterwards (a frozen backbone stays in eval mode)."""
    modes = _modes(model)
    model.eval()
    graphdef, state = nnx.split(model)
    forward = _compiled_forward(graphdef)
    n = len(data["mask"])
    if n == 0:
        raise ValueError("predict got no jets (data['mask'] is empty)")
    if by_length is None:
        by_length = trim is not None
    order = (np.argsort(np.asarray(data["mask"]).sum(axis=1), kind="stable") if by_length
             else np.arange(n))
    out = []
    for start in range(0, n, batch_size):
        sl = order[start:start + batch_size]
        f, p, m = data["features"][sl], data["p4"][sl], data["mask"][sl]
        extra = {"jet_inputs": data["jet_inputs"][sl]} if "jet_inputs" in data else {}
        pad = batch_size - len(m)  # one compiled shape: pad the last batch, drop the padding
        if pad:
            f, p, m = (np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
                       for a in (f, p, m))
            extra = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)])
                     for k, v in extra.items()}
            m[len(m) - pad:, 0] = True  # padded jets get one dummy particle
        if trim is not None:
            cut = trim_padding({"features": f, "p4": p, "mask": m}, trim)
            f, p, m = cut["features"], cut["p4"], cut["mask"]
        out.append(np.asarray(forward(state, f, p, m, extra))[:batch_size - pad])
    _restore_modes(modes)
    logits = np.empty((n, out[0].shape[-1]), np.float32)
    logits[order] = np.concatenate(out)
    return logits
