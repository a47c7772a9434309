"""Continual learning via neural pruning (CLNP; Golkar, Kagan and Cho, arXiv:1903.04476) and
the elastic-weight-consolidation baseline (EWC; Kirkpatrick et al., PNAS 114 (2017) 3521).

The CLNP cycle for task ``t`` on a :class:`difphys.nn.MultiTaskMLP` with
:class:`difphys.nn.NeuronMasks`:

1. train with :func:`frozen` around the optimiser (``nn.trainable_masks(model, masks, t)``)
   and the L1 activation penalty :func:`activation_l1` on the free units, so that the task
   uses few of them;
2. measure :func:`neuron_activity` on training data and choose a threshold, either fixed or
   with :func:`graceful_threshold` (the largest that loses at most ``eps`` of validation
   accuracy: "graceful forgetting");
3. :func:`allocate` gives the active free units to ``t``; ``nn.isolate`` cuts the weights
   from units ``t`` does not own into its units. From then on task ``t``'s outputs are fixed
   bit for bit: its weights are frozen (exactly zero update, weight decay and Adam moments
   included) and nothing younger reaches them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..nn._continual import FREE, MultiTaskMLP, NeuronMasks, _check_masks


def frozen(inner: optax.GradientTransformation, trainable) -> optax.GradientTransformation:
    """Wrap ``inner`` so that every element where ``trainable`` (a PyTree of boolean arrays
    shaped like the parameters) is False gets an update of exactly zero.

    The gradient is zeroed before ``inner`` (its moments see 0 there) and the update after it
    (``jnp.where``, so even a non-finite inner update gives 0). That is what decoupled weight
    decay and Adam's momentum need: ``optax.masked`` masks whole leaves, not elements, and
    zeroing only the gradient would still let momentum and decay move a frozen weight."""
    # matched leaf by leaf (an nnx.State of masks may hold Variable wrappers where the
    # gradient holds plain arrays)
    masks = [jnp.asarray(m, bool) for m in jax.tree.leaves(trainable)]

    def apply(tree):
        leaves, treedef = jax.tree.flatten(tree)
        if len(leaves) != len(masks):
            raise ValueError(f"frozen: the masks have {len(masks)} leaves, the parameters "
                             f"{len(leaves)}")
        for x, m in zip(leaves, masks, strict=True):
            if np.shape(x) != m.shape:
                raise ValueError(f"frozen: a mask of shape {m.shape} for a parameter of shape "
                                 f"{np.shape(x)}")
        return jax.tree.unflatten(treedef, [jnp.where(m, x, jnp.zeros_like(x))
                                            for x, m in zip(leaves, masks, strict=True)])

    def init(params):
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counters and floats
            return inner.init(params)

    def update(updates, state, params=None):
        masked = apply(updates)
        with jax.numpy_dtype_promotion("standard"):
            updates, state = inner.update(masked, state, params)
        return apply(updates), state

    return optax.GradientTransformation(init, update)


def _part_batch(x):
    """The ``features``, ``p4`` and ``mask`` of a ParT batch (a mapping or Table)."""
    try:
        batch = {k: x[k] for k in ("features", "p4", "mask")}
    except (KeyError, TypeError, IndexError):
        raise ValueError("a MultiTaskParT batch must be a mapping with 'features', 'p4' and "
                         "'mask'") from None
    if np.shape(batch["mask"])[0] == 0 or not np.any(np.asarray(batch["mask"])):
        raise ValueError("the batch holds no real particle")
    return batch


def neuron_activity(model, x, task: int | None = None) -> tuple[jax.Array, ...]:
    """Mean ``|activation|`` of every hidden unit over the batch ``x (batch, in_features)``:
    one ``(units_l,)`` array per hidden layer.

    For a :class:`difphys.nn.MultiTaskParT`, ``x`` is a batch ``{"features", "p4",
    "mask"}`` and the result has one array per unit group (``model.unit_names``): the mean
    over real particles (pairs, jets for the class token) of ``|activation|``, averaged over
    the places a group is recorded (the residual stream after every block); ``task``
    (default ``model.task``) picks the head and BatchNorm row. Evaluate it in the mode you
    want (``model.eval()`` for the running statistics)."""
    from ..nn._continual import _is_part

    if _is_part(model):
        from ..nn._continual_part import part_activity

        return part_activity(model, _part_batch(x), task)
    x = jnp.asarray(x)
    if not isinstance(model, MultiTaskMLP):
        raise TypeError("model must be a difphys.nn.MultiTaskMLP")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"neuron_activity needs a non-empty batch (batch, features); got "
                         f"shape {x.shape}")
    return tuple(jnp.mean(jnp.abs(h), axis=0) for h in model.hidden_activations(x))


def activation_l1(model, x, masks: NeuronMasks, task: int | None = None) -> jax.Array:
    """The sparsity penalty of CLNP: the mean over the batch of ``sum |activation|`` of the
    free hidden units (frozen units carry earlier tasks and are not penalised). For a
    :class:`difphys.nn.MultiTaskParT` (``x`` a batch as in :func:`neuron_activity`) the sum
    runs over every recorded activation of the free units, each averaged over real rows."""
    _check_masks(model, masks)
    from ..nn._continual import _is_part

    if _is_part(model):
        from ..nn._continual_part import part_l1

        return part_l1(model, _part_batch(x), masks, task)
    terms = []
    for h, owner in zip(model.hidden_activations(x), masks.owner, strict=True):
        free = (jnp.asarray(owner) == FREE).astype(h.dtype)
        terms.append(jnp.mean(jnp.sum(jnp.abs(h) * free, axis=-1)))
    return sum(terms[1:], terms[0])


def allocate(masks: NeuronMasks, activity: Sequence, threshold: float, task: int, *,
             exhausted: str = "raise", max_fraction: float = 1.0) -> NeuronMasks:
    """Give task ``task`` the free units whose activity exceeds ``threshold`` times the largest
    activity of the layer's free units (``threshold`` in [0, 1): 0 keeps every free unit that
    fired at all). Raises ``ValueError`` when a layer has no free unit left (the network's
    capacity is exhausted) or when ``task`` already owns units; with ``exhausted="skip"`` a
    layer without free units gives ``task`` nothing there (the task then reads only older
    units of that layer, e.g. the attention heads of earlier tasks).

    ``max_fraction`` in (0, 1] caps what one task takes: at most ``ceil(max_fraction * free)``
    units of each layer, the most active ones. A transformer's residual stream is dense (every
    channel carries the LayerNorm'd signal), so an activity threshold alone gives the first
    task every channel; a cap keeps room for the tasks after it."""
    if exhausted not in ("raise", "skip"):
        raise ValueError(f"exhausted must be 'raise' or 'skip'; got {exhausted!r}")
    if not 0 < float(max_fraction) <= 1:
        raise ValueError(f"max_fraction must lie in (0, 1]; got {max_fraction!r}")
    if not 0 <= float(threshold) < 1:
        raise ValueError(f"threshold must lie in [0, 1) (a fraction of the layer's largest "
                         f"activity); got {threshold!r}")
    if len(activity) != len(masks.owner):
        raise ValueError(f"activity has {len(activity)} layers, masks {len(masks.owner)}")
    new = []
    for layer, (owner, act) in enumerate(zip(masks.owner, activity, strict=True)):
        owner, act = np.asarray(owner), np.asarray(act, np.float64)
        if act.shape != owner.shape:
            raise ValueError(f"layer {layer}: activity has shape {act.shape}, masks "
                             f"{owner.shape}")
        if not np.all(np.isfinite(act)):
            raise ValueError(f"layer {layer}: the activity contains NaN or infinite values")
        if np.any(owner == task):
            raise ValueError(f"task {task} already owns units of layer {layer}")
        free = owner == FREE
        if not free.any() and exhausted == "skip":
            new.append(jnp.asarray(owner, jnp.int32))
            continue
        if not free.any():
            raise ValueError(f"capacity exhausted: hidden layer {layer} has no free unit left "
                             f"for task {task} (widen the layer or forget gracefully)")
        scale = act[free].max()
        active = free & (act > float(threshold) * scale) & (act > 0)
        cap = int(np.ceil(float(max_fraction) * free.sum()))
        if active.sum() > cap:  # keep the `cap` most active (ties: the lower index)
            order = np.argsort(-np.where(active, act, -np.inf), kind="stable")
            active = np.zeros_like(active)
            active[order[:cap]] = True
        new.append(jnp.asarray(np.where(active, task, owner), jnp.int32))
    return NeuronMasks(tuple(new))


class GracefulChoice(NamedTuple):
    """Result of :func:`graceful_threshold`: the chosen ``threshold``, the validation
    ``accuracy`` at each tried threshold (and ``reference``, that of the unpruned network),
    and the ``freed`` fraction of the free units each threshold leaves free."""

    threshold: float
    thresholds: np.ndarray
    accuracy: np.ndarray
    freed: np.ndarray
    reference: float


def graceful_threshold(evaluate: Callable[[NeuronMasks], float], masks: NeuronMasks,
                       activity: Sequence, task: int, eps: float,
                       thresholds: Sequence[float] = tuple(np.linspace(0, 0.9, 19)), *,
                       exhausted: str = "raise", max_fraction: float = 1.0) -> GracefulChoice:
    """The largest threshold whose allocation loses at most ``eps`` validation accuracy.

    ``evaluate(candidate_masks)`` returns the validation accuracy of the network after
    ``allocate(masks, activity, th, task)`` and ``nn.isolate`` (the caller isolates a copy);
    ``evaluate(None)`` that of the network as trained. ``eps`` is an absolute accuracy
    (0.01 = one point). ``exhausted`` and ``max_fraction`` are passed to :func:`allocate`."""
    if not 0 <= eps < 1:
        raise ValueError(f"eps must lie in [0, 1); got {eps!r}")
    reference = float(evaluate(None))
    ths = np.sort(np.asarray(thresholds, np.float64))
    accs, freed = [], []
    n_free = sum(int(np.sum(np.asarray(o) == FREE)) for o in masks.owner)
    for th in ths:
        cand = allocate(masks, activity, float(th), task, exhausted=exhausted,
                        max_fraction=max_fraction)
        accs.append(float(evaluate(cand)))
        freed.append(sum(int(np.sum(np.asarray(o) == FREE)) for o in cand.owner)
                     / max(n_free, 1))
    accs, freed = np.asarray(accs), np.asarray(freed)
    ok = reference - accs <= eps
    chosen = float(ths[ok].max()) if ok.any() else float(ths[0])
    return GracefulChoice(chosen, ths, accs, freed, reference)


class LayerCapacity(NamedTuple):
    """One hidden layer in :func:`capacity_report`: ``free`` units, ``used[t]`` units owned by
    task ``t``, ``reused[t]``: units of earlier tasks that task ``t``'s units (or head, for
    the last layer) read through a non-zero weight, and ``reuse_weight[t]``: the fraction of
    the summed ``|weight|`` from this layer into task ``t``'s units (or head) that comes from
    units of earlier tasks (a count saturates once every older unit is read at all; the
    weight fraction says how much a task leans on them)."""

    units: int
    free: int
    used: tuple
    reused: tuple
    reuse_weight: tuple


def capacity_report(model, masks: NeuronMasks) -> tuple[LayerCapacity, ...]:
    """Per hidden layer: free units, units per task, and reuse of older units by each task.

    For a :class:`difphys.nn.MultiTaskParT` one entry per unit group (``model.unit_names``);
    a task reuses an older unit when a unit of the task (or its head, for the residual
    stream) reads it through a non-zero weight."""
    _check_masks(model, masks)
    n_tasks = len(model.heads)
    from ..nn._continual import _is_part

    if _is_part(model):
        from ..nn._continual_part import part_reuse

        out = []
        for i, owner in enumerate(masks.owner):
            owner = np.asarray(owner)
            used = tuple(int(np.sum(owner == t)) for t in range(n_tasks))
            reuse = [part_reuse(model, masks, i, t) for t in range(n_tasks)]
            out.append(LayerCapacity(len(owner), int(np.sum(owner == FREE)), used,
                                     tuple(r[0] for r in reuse), tuple(r[1] for r in reuse)))
        return tuple(out)
    out = []
    owners = [np.asarray(o) for o in masks.owner]
    for i, owner in enumerate(owners):
        used = tuple(int(np.sum(owner == t)) for t in range(n_tasks))
        reused, weight = [], []
        for t in range(n_tasks):
            if i + 1 < len(owners):
                readers = owners[i + 1] == t
                w = np.asarray(model.layers[i + 1].kernel[...])[:, readers]
            else:
                w = np.asarray(model.heads[t].kernel[...]) if used[t] else np.zeros((len(owner), 0))
            older = (owner != FREE) & (owner < t)
            reads = np.any(w != 0, axis=1) if w.size else np.zeros(len(owner), bool)
            reused.append(int(np.sum(older & reads)))
            weight.append(_older_fraction(np.abs(w).sum(axis=1), older))
        out.append(LayerCapacity(len(owner), int(np.sum(owner == FREE)), used, tuple(reused),
                                 tuple(weight)))
    return tuple(out)


def _older_fraction(per_unit, older) -> float:
    """``sum(per_unit[older]) / sum(per_unit)``, 0 where nothing is read."""
    total = float(np.sum(per_unit)) if np.size(per_unit) else 0.0
    return float(np.sum(per_unit[older])) / total if total > 0 else 0.0


def fisher_diagonal(loss_fn: Callable, params, batches) -> object:
    """Empirical Fisher information, the EWC weight: the mean over ``batches`` (an iterable
    of per-example argument tuples, one example each) of the squared gradient of
    ``loss_fn(params, *example)`` (the negative log-likelihood of one example)."""
    grad = jax.jit(jax.grad(loss_fn))
    total, count = None, 0
    for example in batches:
        g = grad(params, *example)
        sq = jax.tree.map(jnp.square, g)
        total = sq if total is None else jax.tree.map(jnp.add, total, sq)
        count += 1
    if not count:
        raise ValueError("fisher_diagonal needs at least one example")
    return jax.tree.map(lambda x: x / count, total)


def ewc_penalty(params, anchors: Sequence, fishers: Sequence, strength: float) -> jax.Array:
    """``strength / 2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` over the earlier tasks
    ``k`` (their optimum ``anchors[k]`` and Fisher diagonal ``fishers[k]``)."""
    if len(anchors) != len(fishers):
        raise ValueError(f"ewc_penalty needs one Fisher diagonal per anchor; got "
                         f"{len(anchors)} anchors and {len(fishers)} Fisher diagonals")
    if not np.isfinite(float(strength)) or float(strength) < 0:
        raise ValueError(f"strength must be finite and >= 0; got {strength!r}")
    total = jnp.zeros(())
    for anchor, fisher in zip(anchors, fishers, strict=True):
        terms = jax.tree.map(lambda p, a, f: jnp.sum(f * (p - a) ** 2), params, anchor, fisher)
        total = total + sum(jax.tree.leaves(terms))
    return 0.5 * strength * total


class ContinualMetrics(NamedTuple):
    """Metrics of :func:`continual_loss`: the batch ``accuracy`` and the ``l1`` penalty."""

    accuracy: jax.Array
    l1: jax.Array


@functools.lru_cache(maxsize=16)
def continual_loss(l1: float):
    """The CLNP training loss of a :class:`difphys.nn.MultiTaskParT` for
    :func:`difphys.train.fit`: the softmax cross-entropy of task ``model.task``'s head plus
    ``l1`` times :func:`activation_l1` of the free units under the installed masks (one
    forward pass for both). Equal ``l1`` values return the same function, so repeated runs
    reuse one compiled step."""
    if not (np.isfinite(l1) and l1 >= 0):
        raise ValueError(f"l1 must be finite and >= 0; got {l1!r}")

    def loss_fn(model, batch, *, key):
        del key  # no dropout
        from ..nn._continual_part import _l1_of

        logits, acts = model.unit_activations(batch["features"], batch["p4"], batch["mask"])
        labels = batch["label"]
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        penalty = _l1_of(model, acts, model.masks)
        acc = jnp.mean((jnp.argmax(logits, axis=-1).astype(labels.dtype) == labels
                        ).astype(logits.dtype))
        return ce + jnp.asarray(l1, logits.dtype) * penalty, ContinualMetrics(acc, penalty)

    return loss_fn


def continual_optimizer(model, masks: NeuronMasks, task: int, *, learning_rate: float,
                        steps: int, weight_decay: float = 1e-4
                        ) -> optax.GradientTransformation:
    """AdamW with warm-up and cosine decay inside :func:`frozen`: only what task ``task`` may
    change (:func:`difphys.nn.trainable_masks`) moves."""
    from ..nn import trainable_masks

    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0; got {learning_rate!r}")
    sched = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
    return frozen(optax.adamw(sched, weight_decay=weight_decay),
                  trainable_masks(model, masks, task))
