"""Neuron masks for continual learning via neural pruning (CLNP; Golkar, Kagan and Cho,
arXiv:1903.04476), and the multi-head MLP they act on.

A network learns tasks one after another. After task ``t`` its active hidden units are given to
``t`` and frozen; the weights from units it does not own (free units, units of later tasks) into
its units are cut to exactly zero, so nothing learned later can reach its outputs; the next task
trains in the free units, reading the frozen ones as fixed features. Units are identified per
hidden layer; :class:`NeuronMasks` records the owner of each (a task index, or
:data:`FREE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

#: owner value of a hidden unit that no task holds yet
FREE = -1


class NeuronMasks(NamedTuple):
    """Owner of every hidden unit: ``owner[l]`` is an int array ``(units_l,)`` holding the task
    index that owns unit ``u`` of hidden layer ``l`` (frozen for later tasks), or
    :data:`FREE`. A PyTree (its leaves are arrays)."""

    owner: tuple

    @classmethod
    def empty(cls, hidden: Sequence[int]) -> NeuronMasks:
        """All units free, for hidden layers of the given widths."""
        if not len(hidden) or any(int(h) < 1 for h in hidden):
            raise ValueError(f"NeuronMasks.empty needs hidden widths >= 1; got {hidden!r}")
        return cls(tuple(jnp.full((int(h),), FREE, jnp.int32) for h in hidden))


class MultiTaskMLP(nnx.Module):
    """ReLU MLP with one linear head per task: ``model(x, task) -> logits (..., n_classes)``.

    Args:
        in_features: input width.
        hidden: widths of the hidden layers.
        n_tasks: number of heads.
        n_classes: outputs per head.
        rngs: ``nnx.Rngs`` for the initialisation.

    ``model.hidden_activations(x)`` returns the post-ReLU activations of every hidden layer
    (the units that :class:`NeuronMasks` assigns), ``x (..., in_features)``.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_tasks: int, n_classes: int,
                 *, rngs: nnx.Rngs):
        widths = [int(in_features), *(int(h) for h in hidden)]
        if len(widths) < 2 or min(widths) < 1 or n_tasks < 1 or n_classes < 1:
            raise ValueError(f"MultiTaskMLP needs in_features, hidden widths, n_tasks and "
                             f"n_classes >= 1 (and at least one hidden layer); got "
                             f"{in_features}, {tuple(hidden)}, {n_tasks}, {n_classes}")
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1],
                                                                               widths[1:],
                                                                               strict=True)])
        self.heads = nnx.List([nnx.Linear(widths[-1], n_classes, rngs=rngs)
                               for _ in range(n_tasks)])
        self.hidden = tuple(widths[1:])
        self.in_features = widths[0]

    def hidden_activations(self, x) -> list[jax.Array]:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"MultiTaskMLP expects {self.in_features} input features; got "
                             f"shape {x.shape}")
        out = []
        for layer in self.layers:
            x = jax.nn.relu(layer(x))
            out.append(x)
        return out

    def __call__(self, x, task: int):
        if not 0 <= int(task) < len(self.heads):
            raise ValueError(f"task must be in [0, {len(self.heads)}); got {task}")
        return self.heads[int(task)](self.hidden_activations(x)[-1])


def _owners_in(masks: NeuronMasks, in_features: int):
    """Owner of the inputs of each layer: the network inputs are shared by every task
    (owner -inf, i.e. older than any task), then the hidden layers' owners."""
    first = np.full((in_features,), -(2**30), np.int64)
    return [first, *(np.asarray(o, np.int64) for o in masks.owner)]


def _age(owner):
    """Owner as an age: free units are 'younger' than any task (they may go to a later one)."""
    return np.where(owner == FREE, 2**30, owner)


def trainable_masks(model, masks: NeuronMasks, task: int) -> nnx.State:
    """Boolean masks, shaped as ``nnx.state(model, nnx.Param)``, of the parameters that task
    ``task`` may change: the incoming weights and biases of free units and of units it owns
    (they may read every unit of the layer below, frozen ones included: that is reuse), and
    its own head. Everything else (units of earlier tasks, other heads) is frozen.

    For a :class:`difphys.nn.MultiTaskParT` the same holds per unit group (whole heads,
    residual channels); weights that :func:`isolate` cuts stay frozen at zero, the per-task
    rows of the shared inputs' BatchNorm and LayerNorm are open for ``task`` only, and head
    ``task`` reads the free channels until ``task`` owns units. The masks are installed in
    the model (as by :func:`isolate`)."""
    _check_masks(model, masks)
    if not 0 <= int(task) < len(model.heads):
        raise ValueError(f"task must be in [0, {len(model.heads)}); got {task}")
    if _is_part(model):
        from ._continual_part import part_trainable

        return part_trainable(model, masks, int(task))
    owners = _owners_in(masks, model.in_features)
    state = nnx.state(model, nnx.Param)
    flags = jax.tree.map(lambda x: np.zeros(x.shape, bool), state)
    for i in range(len(model.hidden)):
        out_owner = owners[i + 1]
        open_units = (out_owner == FREE) | (out_owner == task)
        flags["layers"][i]["kernel"] = np.broadcast_to(open_units[None, :],
                                                       state["layers"][i]["kernel"].shape).copy()
        flags["layers"][i]["bias"] = open_units.copy()
    flags["heads"][int(task)]["kernel"] = np.ones(state["heads"][int(task)]["kernel"].shape,
                                                  bool)
    flags["heads"][int(task)]["bias"] = np.ones(state["heads"][int(task)]["bias"].shape, bool)
    return flags


def isolate(model, masks: NeuronMasks) -> None:
    """Cut, in place, every weight that would let a unit reach an older one: into a unit owned
    by task ``s`` only units of tasks ``<= s`` (and the inputs) may feed, and head ``s`` reads
    only units of tasks ``<= s``. Free units feed only free units and the heads of tasks that do
    not exist yet. Call it after :func:`allocate`; the cut weights stay zero while frozen.

    For a :class:`difphys.nn.MultiTaskParT` it also installs ``masks`` in the model: its
    masked LayerNorms group the channels by owner and each head reads pair-bias channels
    not younger than itself (see ``difphys.nn._continual_part``)."""
    _check_masks(model, masks)
    if _is_part(model):
        from ._continual_part import part_isolate

        part_isolate(model, masks)
        return
    owners = _owners_in(masks, model.in_features)
    for i, layer in enumerate(model.layers):
        src, dst = _age(owners[i]), _age(owners[i + 1])
        keep = (src[:, None] <= dst[None, :]) | (owners[i + 1][None, :] == FREE)
        kernel = layer.kernel[...]
        layer.kernel[...] = jnp.where(jnp.asarray(keep), kernel, jnp.zeros_like(kernel))
    last = _age(owners[-1])
    for s, head in enumerate(model.heads):
        keep = last <= s
        kernel = head.kernel[...]
        head.kernel[...] = jnp.where(jnp.asarray(keep)[:, None], kernel, jnp.zeros_like(kernel))


def reset_free_units(model: MultiTaskMLP, masks: NeuronMasks, *, key) -> None:
    """Re-draw, in place, the incoming weights of every free unit (LeCun normal, as
    ``nnx.Linear`` initialises them) and zero its bias. Call it before a new task: the L1
    penalty of the previous task leaves its unallocated units silent (ReLUs that never fire
    get no gradient), and a fresh draw gives the new task their capacity back. Frozen units
    and every weight into them are untouched, so earlier tasks do not change. For the
    ReLU :class:`MultiTaskMLP` only: the GELU units of a ``MultiTaskParT`` keep a gradient
    at zero activation."""
    _check_masks(model, masks)
    if _is_part(model):
        raise TypeError("reset_free_units is for the ReLU MultiTaskMLP; a MultiTaskParT's "
                        "GELU units are not silenced by the L1 penalty")
    for i, (layer, owner) in enumerate(zip(model.layers, masks.owner, strict=True)):
        free = jnp.asarray(np.asarray(owner) == FREE)
        kernel = layer.kernel[...]
        fresh = jax.nn.initializers.lecun_normal()(jax.random.fold_in(key, i), kernel.shape,
                                                   kernel.dtype)
        layer.kernel[...] = jnp.where(free[None, :], fresh, kernel)
        layer.bias[...] = jnp.where(free, jnp.zeros_like(layer.bias[...]), layer.bias[...])


def _is_part(model) -> bool:
    from ._continual_part import MultiTaskParT

    return isinstance(model, MultiTaskParT)


def _check_masks(model, masks: NeuronMasks) -> None:
    if not isinstance(masks, NeuronMasks):
        raise TypeError("masks must be a difphys.nn.NeuronMasks")
    if not isinstance(model, MultiTaskMLP) and not _is_part(model):
        raise TypeError("model must be a difphys.nn.MultiTaskMLP or MultiTaskParT")
    shapes = tuple(int(np.shape(o)[0]) if np.ndim(o) == 1 else -1 for o in masks.owner)
    if shapes != model.hidden:
        raise ValueError(f"masks hold units {shapes} but the model's hidden layers (unit "
                         f"groups) have {model.hidden}")
    for layer, owner in enumerate(masks.owner):
        owner = np.asarray(owner)
        if not np.issubdtype(owner.dtype, np.integer) or np.any(owner < FREE) or np.any(
                owner >= len(model.heads)):
            raise ValueError(f"masks layer {layer}: owners must be integers in "
                             f"[{FREE}, {len(model.heads)}) (FREE or a task index)")
