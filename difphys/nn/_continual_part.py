"""A Particle Transformer for continual learning via neural pruning (CLNP; Golkar, Kagan and
Cho, arXiv:1903.04476): every hidden unit, attention head and residual channel has an owner
(a task index or :data:`FREE`), and a task's outputs depend on nothing that a later task can
change.

The units, in the order of :attr:`MultiTaskParT.unit_names` (one entry of
:class:`NeuronMasks` each):

* ``embed{i}``: the hidden widths of the particle embedding;
* ``residual``: the channels of the residual stream, shared by every block, the class token
  and the final LayerNorm (a channel is one unit everywhere);
* ``pair{i}`` and ``pair_bias``: the hidden widths of the pair MLP and its output, one bias
  channel per attention head;
* ``block{b}.heads`` / ``block{b}.ffn`` and ``cls{c}.heads`` / ``cls{c}.ffn``: the whole
  attention heads (their query, key and value channels) and the MLP hidden units of each
  particle- and class-attention block.

Isolation works as in :func:`difphys.nn.isolate` for the MLP (weights from younger or free
units into a unit are cut to zero and stay zero while frozen), plus three things a
transformer needs and an MLP does not:

* **masked LayerNorm**: each LayerNorm normalises every task's channels over that task's
  channels only (free channels form one more group). A plain LayerNorm's mean and variance
  would mix the channels of later tasks into an earlier task's outputs. The group sums are
  divided by the layer width, not the group size (the other channels count as zeros): a task
  trains with all free channels in its group, and pruning the ones its L1 penalty silenced
  then leaves its statistics nearly unchanged (with the group size they would jump by the
  ratio of the widths);
* **per-task BatchNorm**: every BatchNorm keeps one row of running statistics per task, and
  the BatchNorms and the first LayerNorm of the shared inputs have one affine row per task;
  training task ``t`` updates row ``t`` only;
* **pair-bias gating**: the bias channel of head ``h`` reaches head ``h`` of a block only when
  the channel is not younger than the head.

The layer structure is ParT's (particle embedding, pair embedding, NormFormer particle-
attention blocks with the pair bias, class attention, final LayerNorm) with a head per task;
two differences from :class:`difphys.nn.ParticleTransformer`: the per-head scale multiplies
each head's output before the output projection (NormFormer's head scaling; ParT applies it
after the projection, which would mix heads of different owners), and there is no dropout.
The layers are written plainly (not the CPU-tuned kernels of the main ParT): the model is for
the small configurations continual learning runs on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..kinematics import pairwise_features
from ._continual import FREE, NeuronMasks
from ._layers import _BN_MOMENTUM, _EPS, _gelu
from ._part import ParTConfig, check_jet_inputs

#: age of the shared network inputs (older than every task) and of free units in the cuts
_SHARED, _YOUNGEST = -(2**30), 2**30


class _Spec(NamedTuple):
    """The owners of a channel axis: unit group ``group`` (``None``: the shared inputs, of
    ``size`` channels), each unit repeated ``repeat`` times (a head's channels), the whole
    tiled ``tile`` times (query, key, value)."""

    group: str | None
    size: int = 0
    repeat: int = 1
    tile: int = 1


def _ages(owner: np.ndarray) -> np.ndarray:
    return np.where(owner == FREE, _YOUNGEST, owner)


class _Dense(nnx.Module):
    """``x @ kernel + bias`` from the channels of ``src`` to those of ``dst``."""

    def __init__(self, src: _Spec, dst: _Spec, n_in: int, n_out: int, *, rngs, param_dtype):
        self.src, self.dst = src, dst
        self.kernel = nnx.Param(jax.nn.initializers.lecun_normal()(rngs.params(), (n_in, n_out),
                                                                     param_dtype))
        self.bias = nnx.Param(jnp.zeros((n_out,), param_dtype))

    def __call__(self, x):
        return x @ self.kernel[...] + self.bias[...]


class _Vector(nnx.Module):
    """A per-channel parameter of ``spec`` (a per-head scale, the residual scale, the class
    token)."""

    def __init__(self, spec: _Spec, value):
        self.spec = spec
        self.value_ = nnx.Param(value)


class _Norm(nnx.Module):
    """LayerNorm over ``spec``'s channels: per owner group when ``masked`` (see the module
    docstring); over the shared inputs (``spec.group is None``) with one affine row per
    task."""

    def __init__(self, spec: _Spec, dim: int, n_tasks: int, masked: bool, *, param_dtype):
        self.spec, self.masked = spec, masked
        rows = (n_tasks,) if spec.group is None else ()
        self.scale = nnx.Param(jnp.ones((*rows, dim), param_dtype))
        self.bias = nnx.Param(jnp.zeros((*rows, dim), param_dtype))

    def __call__(self, x, ctx):
        if self.masked and self.spec.group is not None:
            # sums over each owner group, divided by the layer width: the other groups'
            # channels count as zeros, so pruning channels that the L1 penalty silenced
            # leaves the statistics of the kept ones (nearly) as they were in training
            onehot = ctx.groups(self.spec).astype(x.dtype)  # (C, K)
            width = jnp.asarray(x.shape[-1], x.dtype)
            mean = ((x @ onehot) / width) @ onehot.T
            d = x - mean
            var = (((d * d) @ onehot) / width) @ onehot.T
        else:
            mean = jnp.mean(x, axis=-1, keepdims=True)
            d = x - mean
            var = jnp.mean(d * d, axis=-1, keepdims=True)
        y = d * jax.lax.rsqrt(var + jnp.asarray(_EPS, x.dtype))
        scale, bias = self.scale[...], self.bias[...]
        if self.spec.group is None:
            scale, bias = scale[ctx.task], bias[ctx.task]
        return y * scale + bias


class _BatchNorm(nnx.Module):
    """BatchNorm over real rows with one row of running statistics per task; the affine
    part per task for the shared inputs, else per channel (owned with the channel)."""

    def __init__(self, spec: _Spec, dim: int, n_tasks: int, *, param_dtype):
        self.spec = spec
        rows = (n_tasks,) if spec.group is None else ()
        self.scale = nnx.Param(jnp.ones((*rows, dim), param_dtype))
        self.bias = nnx.Param(jnp.zeros((*rows, dim), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((n_tasks, dim), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((n_tasks, dim), param_dtype))
        self.use_running_average = False

    def __call__(self, x, weight, ctx):
        """``x (rows, C)``, ``weight (rows, 1)`` 1 on real rows (training mode only)."""
        t = ctx.task
        if self.use_running_average:
            mean, var = self.mean[...][t], self.var[...][t]
        else:
            count = jnp.maximum(jnp.sum(weight), 1.0)
            mean = jnp.sum(x * weight, axis=0) / count
            var = jnp.sum(weight * (x - mean) ** 2, axis=0) / count
            m = jnp.asarray(_BN_MOMENTUM, x.dtype)
            self.mean[...] = self.mean[...].at[t].set(
                jax.lax.stop_gradient(m * self.mean[...][t] + (1 - m) * mean))
            self.var[...] = self.var[...].at[t].set(
                jax.lax.stop_gradient(m * self.var[...][t] + (1 - m) * var))
        scale, bias = self.scale[...], self.bias[...]
        if self.spec.group is None:
            scale, bias = scale[t], bias[t]
        return (x - mean) * jax.lax.rsqrt(var + jnp.asarray(_EPS, x.dtype)) * scale + bias


class _Context:
    """What one forward pass needs of the masks: the task (its head and BatchNorm rows), the
    owner groups of each channel axis, and the activations to record."""

    def __init__(self, model: MultiTaskParT, task: int, record: bool):
        self.model, self.task, self.record = model, task, record
        self.acts: list[tuple[str, jax.Array, jax.Array]] = []

    def groups(self, spec: _Spec) -> np.ndarray:
        """``(C, n_tasks + 1)`` one-hot owner groups (the last column: free)."""
        owner = self.model._channel_owners(spec)
        k = len(self.model.heads)
        return np.eye(k + 1, dtype=bool)[np.where(owner == FREE, k, owner)]

    def log(self, group: str, units, weight):
        """Record ``units (rows, units_of_group)`` with ``weight (rows,)`` (1 on real rows)."""
        if self.record:
            self.acts.append((group, units, weight))


class MultiTaskParT(nnx.Module):
    """Particle Transformer with one classification head per task and CLNP unit ownership.

    Args:
        config: the architecture (:class:`ParTConfig`; its dropout fields are not used).
        n_tasks: number of tasks (heads and BatchNorm rows).
        n_classes: classes of every task's head, an int or one per task.
        rngs: ``nnx.Rngs`` for the initialisation.
        param_dtype: parameter dtype (float32; float64 for gradient checks).
        masked_norm: normalise each task over its own channels (``False`` is a plain
            LayerNorm: earlier tasks then change when later ones train; for tests).

    ``model(features, p4, mask, task)`` returns task ``task``'s logits ``(B, n_classes)`` for
    ``features (B, n, input_dim)``, four-momenta ``p4 (B, n, 4)`` (E, px, py, pz) GeV and
    ``mask (B, n)`` bool; ``task`` defaults to :attr:`task`, so that :func:`difphys.train.fit`
    and :func:`~difphys.train.predict` train and evaluate the task set there. The owners are
    installed by :func:`difphys.nn.isolate`.
    """

    def __init__(self, config: ParTConfig, n_tasks: int, n_classes: int | Sequence[int], *,
                 rngs: nnx.Rngs, param_dtype=jnp.float32, masked_norm: bool = True):
        cfg = config
        if int(n_tasks) < 1:
            raise ValueError(f"n_tasks must be >= 1; got {n_tasks}")
        classes = [int(n_classes)] * int(n_tasks) if np.ndim(n_classes) == 0 else \
            [int(c) for c in n_classes]
        if len(classes) != int(n_tasks) or min(classes) < 1:
            raise ValueError(f"n_classes must be >= 1, one value or one per task; got "
                             f"{n_classes!r}")
        self.config, self.param_dtype = cfg, jnp.dtype(param_dtype)
        self.masked_norm = bool(masked_norm)
        dim, heads = cfg.embed_dim, cfg.num_heads
        hd = dim // heads
        names, sizes = [], []

        def group(name, size):
            names.append(name)
            sizes.append(int(size))
            return _Spec(name)

        kw = dict(param_dtype=param_dtype)
        # particle embedding
        embed = [group(f"embed{i}", d) for i, d in enumerate(cfg.embed_dims[:-1])]
        res = group("residual", dim)
        src, width = _Spec(None, cfg.input_dim), cfg.input_dim
        self.input_bn = _BatchNorm(src, width, n_tasks, **kw)
        norms, dense = [], []
        for dst, d in zip([*embed, res], cfg.embed_dims, strict=True):
            norms.append(_Norm(src, width, n_tasks, masked_norm, **kw))
            dense.append(_Dense(src, dst, width, d, rngs=rngs, **kw))
            src, width = dst, d
        self.embed_norms, self.embed_dense = nnx.List(norms), nnx.List(dense)
        # pair embedding
        pair_bn, dense, bns = None, [], []
        if cfg.pair_embed_dims:
            pair = [group(f"pair{i}", d) for i, d in enumerate(cfg.pair_embed_dims)]
            pbias = group("pair_bias", heads)
            src, width = _Spec(None, cfg.pair_input_dim), cfg.pair_input_dim
            pair_bn = _BatchNorm(src, width, n_tasks, **kw)
            for dst, d in zip([*pair, pbias], (*cfg.pair_embed_dims, heads), strict=True):
                dense.append(_Dense(src, dst, width, d, rngs=rngs, **kw))
                bns.append(_BatchNorm(dst, d, n_tasks, **kw))
                src, width = dst, d
        self.pair_bn = pair_bn
        self.pair_dense, self.pair_bns = nnx.List(dense), nnx.List(bns)
        blocks = []
        for prefix, count in (("block", cfg.num_layers), ("cls", cfg.num_cls_layers)):
            for b in range(count):
                h = group(f"{prefix}{b}.heads", heads)
                f = group(f"{prefix}{b}.ffn", dim * cfg.ffn_ratio)
                blocks.append(_Block(res, h, f, dim, heads, dim * cfg.ffn_ratio, n_tasks,
                                     masked_norm, rngs=rngs, **kw))
        self.blocks = nnx.List(blocks[:cfg.num_layers])
        self.cls_blocks = nnx.List(blocks[cfg.num_layers:])
        self.cls_token = _Vector(res, 0.02 * jax.random.truncated_normal(
            rngs.params(), -2.0, 2.0, (dim,), param_dtype))
        self.norm = _Norm(res, dim, n_tasks, masked_norm, **kw)
        self.heads = nnx.List([nnx.Linear(dim, c, rngs=rngs, param_dtype=param_dtype)
                               for c in classes])
        self.unit_names, self.hidden = tuple(names), tuple(sizes)
        self.head_dim = hd
        self.owners = tuple((FREE,) * s for s in sizes)
        self.task = 0

    # -- masks ---------------------------------------------------------------------------
    @property
    def masks(self) -> NeuronMasks:
        """The installed owners as :class:`NeuronMasks`."""
        return NeuronMasks(tuple(jnp.asarray(o, jnp.int32) for o in self.owners))

    def _channel_owners(self, spec: _Spec) -> np.ndarray:
        if spec.group is None:
            return np.full((spec.size,), _SHARED, np.int64)
        owner = np.asarray(self.owners[self.unit_names.index(spec.group)], np.int64)
        return np.tile(np.repeat(owner, spec.repeat), spec.tile)

    def _install(self, masks: NeuronMasks) -> None:
        self.owners = tuple(tuple(int(v) for v in np.asarray(o)) for o in masks.owner)

    def _check_task(self, task) -> int:
        if not 0 <= int(task) < len(self.heads):
            raise ValueError(f"task must be in [0, {len(self.heads)}); got {task}")
        return int(task)

    # -- forward -------------------------------------------------------------------------
    def _forward(self, features, p4, mask, ctx: _Context):
        check_jet_inputs(self.config.input_dim, features, p4, mask)
        dtype = self.param_dtype
        mask = mask.astype(bool)
        features = jnp.where(mask[..., None], features, jnp.zeros_like(features)).astype(dtype)
        p4 = jnp.where(mask[..., None], p4, jnp.zeros_like(p4))
        b, n = mask.shape
        w = mask.reshape(-1).astype(dtype)
        x = self.input_bn(features.reshape(b * n, -1), w[:, None], ctx)
        for norm, dense in zip(self.embed_norms, self.embed_dense, strict=True):
            x = _gelu(dense(norm(x, ctx)))
            ctx.log(dense.dst.group, x, w)
        x = (x * w[:, None]).reshape(b, n, -1)
        bias = None
        if self.pair_bn is not None:
            pw = (mask[:, :, None] & mask[:, None, :]).reshape(-1).astype(dtype)
            y = pairwise_features(p4).astype(dtype).reshape(b * n * n, -1)
            y = self.pair_bn(y, pw[:, None], ctx)
            last = len(self.pair_dense) - 1
            for i, (dense, bn) in enumerate(zip(self.pair_dense, self.pair_bns, strict=True)):
                y = bn(dense(y), pw[:, None], ctx)
                if i < last:
                    y = _gelu(y)
                ctx.log(dense.dst.group, y, pw)
            y = y * pw[:, None]
            bias = jnp.moveaxis(y.reshape(b, n, n, -1), -1, -3)  # (B, heads, n, n)
        for block in self.blocks:
            x = block(x, mask, bias, ctx)
            ctx.log("residual", x.reshape(b * n, -1), w)
        cls = jnp.broadcast_to(self.cls_token.value_[...], (b, 1, x.shape[-1]))
        for block in self.cls_blocks:
            cls = block(x, mask, None, ctx, x_cls=cls)
            ctx.log("residual", cls[:, 0], jnp.ones((b,), dtype))
        return self.norm(cls[:, 0], ctx)

    def embed(self, features, p4, mask, task: int | None = None):
        """Class-token representation ``(B, embed_dim)`` for task ``task``."""
        ctx = _Context(self, self._check_task(self.task if task is None else task), False)
        return self._forward(features, p4, mask, ctx)

    def __call__(self, features, p4, mask, task: int | None = None, *, key=None):
        """Logits ``(B, n_classes)`` of task ``task`` (default :attr:`task`); ``key`` is
        accepted for the training loop's interface and unused (no dropout)."""
        del key
        t = self._check_task(self.task if task is None else task)
        return self.heads[t](self.embed(features, p4, mask, t))

    def unit_activations(self, features, p4, mask, task: int | None = None):
        """``(logits, [(group, activations (rows, units), weight (rows,)), ...])``: every
        recorded activation of the forward pass, with its unit group and the weight of its
        rows (1 on real particles or pairs, 0 on padding). Attention heads record the mean
        ``|output|`` over their channels; the residual stream is recorded after the
        embedding's last layer, after every block and for the class token."""
        t = self._check_task(self.task if task is None else task)
        ctx = _Context(self, t, True)
        logits = self.heads[t](self._forward(features, p4, mask, ctx))
        return logits, ctx.acts


class _Attention(nnx.Module):
    def __init__(self, res, heads_spec, dim, num_heads, *, rngs, param_dtype):
        hd = dim // num_heads
        self.num_heads, self.heads_group = num_heads, heads_spec.group
        self.in_proj = _Dense(res, _Spec(heads_spec.group, repeat=hd, tile=3), dim, 3 * dim,
                              rngs=rngs, param_dtype=param_dtype)
        self.out_proj = _Dense(_Spec(heads_spec.group, repeat=hd), res, dim, dim, rngs=rngs,
                               param_dtype=param_dtype)
        self.c_attn = _Vector(heads_spec, jnp.ones((num_heads,), param_dtype))

    def __call__(self, query, kv, key_mask, bias, ctx, weight):
        """``query (B, nq, dim)``, ``kv (B, nk, dim)``, ``key_mask (B, nk)``, ``bias``
        ``(B, heads, nq, nk)`` or None, ``weight (B * nq,)`` of the recorded rows."""
        bsz, nq, dim = query.shape
        h, hd = self.num_heads, dim // self.num_heads
        wk, bk = self.in_proj.kernel[...], self.in_proj.bias[...]
        q = (query @ wk[:, :dim] + bk[:dim]).reshape(bsz, nq, h, hd)
        kvp = (kv @ wk[:, dim:] + bk[dim:]).reshape(bsz, kv.shape[1], 2, h, hd)
        k, v = kvp[:, :, 0], kvp[:, :, 1]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.asarray(np.sqrt(hd), q.dtype)
        if bias is not None:
            logits = logits + bias
        logits = jnp.where(key_mask[:, None, None, :], logits,
                           jnp.asarray(jnp.finfo(logits.dtype).min, logits.dtype))
        out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
        out = out * self.c_attn.value_[...][:, None]
        ctx.log(self.heads_group, jnp.mean(jnp.abs(out), axis=-1).reshape(bsz * nq, h), weight)
        return self.out_proj(out.reshape(bsz, nq, dim))


class _Block(nnx.Module):
    """NormFormer block (particle or class attention) with owned heads and MLP units."""

    def __init__(self, res, heads_spec, ffn_spec, dim, num_heads, ffn, n_tasks, masked, *,
                 rngs, param_dtype):
        kw = dict(param_dtype=param_dtype)
        self.heads_spec = heads_spec
        self.pre_attn_norm = _Norm(res, dim, n_tasks, masked, **kw)
        self.attn = _Attention(res, heads_spec, dim, num_heads, rngs=rngs, **kw)
        self.post_attn_norm = _Norm(res, dim, n_tasks, masked, **kw)
        self.pre_fc_norm = _Norm(res, dim, n_tasks, masked, **kw)
        self.fc1 = _Dense(res, ffn_spec, dim, ffn, rngs=rngs, **kw)
        self.post_fc_norm = _Norm(ffn_spec, ffn, n_tasks, masked, **kw)
        self.fc2 = _Dense(ffn_spec, res, ffn, dim, rngs=rngs, **kw)
        self.w_resid = _Vector(res, jnp.ones((dim,), param_dtype))

    def _gate(self, ctx):
        """``(heads,)`` 1 where head ``h`` may read pair-bias channel ``h``."""
        model = ctx.model
        bias_age = _ages(model._channel_owners(_Spec("pair_bias")))
        head_age = _ages(model._channel_owners(self.heads_spec))
        return np.where(bias_age <= head_age, 1.0, 0.0)

    def __call__(self, x, mask, bias, ctx, x_cls=None):
        bsz, n, dim = x.shape
        if x_cls is None:
            residual = x
            u = self.pre_attn_norm(x, ctx)
            if bias is not None:
                bias = bias * jnp.asarray(self._gate(ctx), bias.dtype)[:, None, None]
            h = self.attn(u, u, mask, bias, ctx, mask.reshape(-1).astype(x.dtype))
        else:
            residual = x_cls
            u = self.pre_attn_norm(jnp.concatenate([x_cls, x], axis=1), ctx)
            key_mask = jnp.concatenate([jnp.ones_like(mask[:, :1]), mask], axis=1)
            h = self.attn(u[:, :1], u, key_mask, None, ctx, jnp.ones((bsz,), x.dtype))
        h = self.post_attn_norm(h, ctx) + residual
        rows = h.shape[1]
        weight = (mask.reshape(-1) if x_cls is None else jnp.ones((bsz,), bool)).astype(x.dtype)
        y = _gelu(self.fc1(self.pre_fc_norm(h, ctx)))
        ctx.log(self.fc1.dst.group, y.reshape(bsz * rows, -1), weight)
        y = self.fc2(self.post_fc_norm(y, ctx))
        out = y + self.w_resid.value_[...] * h
        if x_cls is None:
            out = out * mask[..., None].astype(out.dtype)
        return out


# -- the CLNP operations on a MultiTaskParT (called through nn.isolate, nn.trainable_masks,
#    train.neuron_activity, train.activation_l1 and train.capacity_report) -----------------

def _param_specs(model: MultiTaskParT):
    """``{path: spec}`` for every parameter: ``("dense", src, dst)``, ``("vector", spec)``,
    ``("task", )`` (one row per task) or ``("head", t)``."""
    specs = {}
    for path, module in nnx.iter_modules(model):
        path = tuple(str(p) for p in path)
        if isinstance(module, _Dense):
            specs[(*path, "kernel")] = ("dense", module.src, module.dst)
            specs[(*path, "bias")] = ("vector", module.dst)
        elif isinstance(module, _Vector):
            specs[(*path, "value_")] = ("vector", module.spec)
        elif isinstance(module, (_Norm, _BatchNorm)):
            for name in ("scale", "bias"):
                specs[(*path, name)] = ("task",) if module.spec.group is None else (
                    "vector", module.spec)
    for t in range(len(model.heads)):
        specs[("heads", str(t), "kernel")] = ("head", t)
        specs[("heads", str(t), "bias")] = ("head", t)
    return specs


def _path_key(path) -> tuple:
    """A tree path of ``nnx.state(model, nnx.Param)`` as strings, without the Variable's own
    ``value`` entry."""
    key = tuple(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)
    return key[:-1] if key and key[-1] == "value" else key


def _keep(model: MultiTaskParT, src: _Spec, dst: _Spec) -> np.ndarray:
    """``(in, out)`` the weights that isolation keeps: from units not younger than the
    destination (free destinations read everything; free sources feed free units only)."""
    s = _ages(model._channel_owners(src))
    d_owner = model._channel_owners(dst)
    return (s[:, None] <= _ages(d_owner)[None, :]) | (d_owner[None, :] == FREE)


def _head_keep(model: MultiTaskParT, t: int, open_task: bool) -> np.ndarray:
    owner = model._channel_owners(_Spec("residual"))
    return (_ages(owner) <= t) | (open_task & (owner == FREE))


def _task_is_open(model: MultiTaskParT, task: int) -> bool:
    return not any(task in o for o in model.owners)


def part_isolate(model: MultiTaskParT, masks: NeuronMasks) -> None:
    model._install(masks)
    specs = _param_specs(model)
    state = nnx.state(model, nnx.Param)

    def cut(path, x):
        spec = specs[_path_key(path)]
        if spec[0] == "dense":
            return jnp.where(jnp.asarray(_keep(model, spec[1], spec[2])), x, jnp.zeros_like(x))
        if spec[0] == "head" and _path_key(path)[-1] == "kernel":
            keep = _head_keep(model, spec[1], False)
            return jnp.where(jnp.asarray(keep)[:, None], x, jnp.zeros_like(x))
        return x

    nnx.update(model, jax.tree_util.tree_map_with_path(cut, state))


def part_trainable(model: MultiTaskParT, masks: NeuronMasks, task: int) -> nnx.State:
    model._install(masks)
    specs = _param_specs(model)
    open_task = _task_is_open(model, task)

    def flag(path, x):
        spec = specs[_path_key(path)]
        shape = np.shape(x)
        if spec[0] == "head":
            if spec[1] != task:
                return np.zeros(shape, bool)
            if _path_key(path)[-1] == "bias":
                return np.ones(shape, bool)
            return np.broadcast_to(_head_keep(model, task, open_task)[:, None], shape).copy()
        if spec[0] == "task":
            out = np.zeros(shape, bool)
            out[task] = True
            return out
        dst = spec[2] if spec[0] == "dense" else spec[1]
        owner = model._channel_owners(dst)
        open_units = (owner == FREE) | (owner == task)
        if spec[0] == "vector":
            return open_units.copy()
        return _keep(model, spec[1], spec[2]) & open_units[None, :]

    return jax.tree_util.tree_map_with_path(flag, nnx.state(model, nnx.Param))


@functools.lru_cache(maxsize=8)
def _activity_fn(graphdef, task):
    def run(state, features, p4, mask):
        model = nnx.merge(graphdef, state)
        _, acts = model.unit_activations(features, p4, mask, task)
        return _reduce(model, acts)

    return jax.jit(run)


def part_activity(model: MultiTaskParT, batch, task) -> tuple[jax.Array, ...]:
    """Mean ``|activation|`` per unit (compiled once per model structure and task; the
    batch statistics are not updated, even in training mode)."""
    task = model._check_task(model.task if task is None else task)
    graphdef, state = nnx.split(model)
    return _activity_fn(graphdef, task)(state, batch["features"], batch["p4"], batch["mask"])


def part_l1(model: MultiTaskParT, batch, masks: NeuronMasks, task) -> jax.Array:
    _, acts = model.unit_activations(batch["features"], batch["p4"], batch["mask"], task)
    return _l1_of(model, acts, masks)


def _l1_of(model: MultiTaskParT, acts, masks: NeuronMasks) -> jax.Array:
    total = jnp.zeros((), model.param_dtype)
    for group, a, w in acts:
        free = (jnp.asarray(masks.owner[model.unit_names.index(group)]) == FREE).astype(a.dtype)
        per_row = jnp.sum(jnp.abs(a) * free, axis=-1)
        total = total + jnp.sum(per_row * w) / jnp.maximum(jnp.sum(w), 1.0)
    return total


def _reduce(model, acts):
    """Mean ``|activation|`` per unit over the real rows, averaged over the places a group
    is recorded."""
    sums = {name: None for name in model.unit_names}
    counts = dict.fromkeys(model.unit_names, 0.0)
    for group, a, w in acts:
        s = jnp.sum(jnp.abs(a) * w[:, None], axis=0) / jnp.maximum(jnp.sum(w), 1.0)
        sums[group] = s if sums[group] is None else sums[group] + s
        counts[group] += 1.0
    return tuple(sums[name] / counts[name] for name in model.unit_names)


def part_reuse(model: MultiTaskParT, masks: NeuronMasks, layer: int, task: int
               ) -> tuple[int, float]:
    """``(count, weight)``: the units of group ``layer`` owned by tasks older than ``task``
    that a unit of ``task`` (or its head, for the residual stream) reads through a non-zero
    weight, and the fraction of the summed ``|weight|`` from the group into ``task``'s units
    that leaves older units."""
    model._install(masks)
    name = model.unit_names[layer]
    owner = np.asarray(model.owners[layer])
    reads = np.zeros(len(owner), bool)
    magnitude = np.zeros(len(owner))
    specs = _param_specs(model)
    state = nnx.state(model, nnx.Param)
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        spec = specs[_path_key(path)]
        if spec[0] == "dense" and spec[1].group == name:
            dst_owner = model._channel_owners(spec[2])
            w = np.abs(np.asarray(x)[:, dst_owner == task])
            per_unit = w.sum(axis=1).reshape(spec[1].tile, len(owner), spec[1].repeat)
            reads |= (per_unit > 0).any(axis=(0, 2))
            magnitude += per_unit.sum(axis=(0, 2))
        if spec[0] == "head" and spec[1] == task and name == "residual" and \
                _path_key(path)[-1] == "kernel":
            w = np.abs(np.asarray(x))
            reads |= np.any(w > 0, axis=1)
            magnitude += w.sum(axis=1)
    older = (owner != FREE) & (owner < task)
    total = magnitude.sum()
    return int(np.sum(reads & older)), float(magnitude[older].sum() / total) if total > 0 \
        else 0.0
