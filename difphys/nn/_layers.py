"""The layers of the Particle Transformer (:mod:`._part`): the LayerNorm core with a
closed-form derivative, masked BatchNorm statistics, the particle and pair embeddings (pair
MLP in a circulant layout), attention and the NormFormer block. Each CPU-specific choice is
measured in ``docs/nn.md``."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..kinematics import pairwise_features
from ._dropout import Dropout

if TYPE_CHECKING:  # annotation only: the model module imports this one
    from ._part import ParTConfig

_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1 in Flax's convention
_EPS = 1e-5  # PyTorch's LayerNorm / BatchNorm epsilon
_PAIR_CHUNK = 8192  # pairs per evaluation-mode MLP chunk: (8192, 64) float32 is 2 MiB


def _gelu(x):
    """Exact GELU in PyTorch's form ``x (1 + erf(x / sqrt 2)) / 2`` (weaver-core's nn.GELU).
    jax.nn.gelu(approximate=False) evaluates ``erfc``, which XLA:CPU computes with two
    branches and an exponential: twice the cost of ``erf`` on the (pairs, 64) activations,
    for the same float32 accuracy (about 1e-6 absolute)."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(1.0 / np.sqrt(2.0), x.dtype)))


def _rows(f, x):
    """Apply ``f`` to ``x`` flattened to a (rows, channels) matrix and restore the leading
    axes. Dense layers get 2-D operands this way: with the batch and particle axes left
    separate, XLA:CPU transposed every activation to contract over them for the weight
    gradient (about 6% of a ParT training step)."""
    y = f(x.reshape(-1, x.shape[-1]))
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _standardise_stats(x, epsilon):
    """``(x - mean) * r`` and ``r = 1 / sqrt(var + epsilon)`` over the last axis, with Flax's
    one-pass variance."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(x * x, axis=-1, keepdims=True) - mean * mean, 0.0)
    r = jax.lax.rsqrt(var + jnp.asarray(epsilon, x.dtype))
    return (x - mean) * r, r


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _standardise(x, epsilon):
    """LayerNorm without its affine part, ``y = (x - mean) / sqrt(var + epsilon)`` over the
    last axis. Its derivative is given in closed form (below), ``dy = r (dx - mean(dx)) -
    y r mean(y dx)``: the same value as autodiff of the formula, but the backward pass keeps
    only ``y`` and ``r`` and is two reductions and one elementwise pass; XLA:CPU's autodiff of
    the one-pass variance wrote out more (batch, particles, 512) arrays (3% of a full ParT
    training step, measured in ``docs/nn.md``). A custom JVP, unlike a custom VJP, keeps
    forward-mode differentiation."""
    return _standardise_stats(x, epsilon)[0]


@_standardise.defjvp
def _standardise_jvp(epsilon, primals, tangents):
    (x,), (dx,) = primals, tangents
    y, r = _standardise_stats(x, epsilon)
    dx_mean = jnp.mean(dx, axis=-1, keepdims=True)
    y_dx_mean = jnp.mean(y * dx, axis=-1, keepdims=True)
    return y, r * (dx - dx_mean) - y * (r * y_dx_mean)


def _fold(norm, kernel, bias):
    """``(W', b')`` with ``norm(x) @ W + b == standardise(x) @ W' + b'``: the LayerNorm's scale
    and offset folded into the dense layer that follows it. The product is the same, but
    XLA:CPU no longer materialises the scale broadcast to the activation's shape (about 4% of
    a full ParT training step)."""
    scale, offset = norm.scale[...], norm.bias[...]
    return scale[:, None] * kernel, offset @ kernel + bias


def _apply_norm(norm, x):
    """``norm(x)`` for a LayerNorm ``norm``, through :func:`_standardise`."""
    return _standardise(x, norm.epsilon) * norm.scale[...] + norm.bias[...]


def _norm_dense(norm, linear, x):
    """``linear(norm(x))`` for a LayerNorm ``norm``, via :func:`_fold`."""
    w, b = _fold(norm, linear.kernel[...], linear.bias[...])
    return _rows(lambda r: r @ w + b, _standardise(x, norm.epsilon))


def _layer_norm(dim, rngs, param_dtype):
    return nnx.LayerNorm(dim, epsilon=_EPS, rngs=rngs, param_dtype=param_dtype)


def _batch_norm(dim, rngs, param_dtype):
    bn = nnx.BatchNorm(dim, momentum=_BN_MOMENTUM, epsilon=_EPS, rngs=rngs,
                       param_dtype=param_dtype, dtype=param_dtype)
    # Flax keeps running statistics in float32; keep them in the parameters' dtype instead, so
    # a float64 model (gradient checks) stays float64 under strict dtype promotion.
    bn.mean = nnx.BatchStat(bn.mean[...].astype(param_dtype))
    bn.var = nnx.BatchStat(bn.var[...].astype(param_dtype))
    return bn


def _masked_batch_norm(bn, x, weight, count):
    """``bn(x, mask=weight > 0)`` in training mode for ``x (rows, channels)``, with the
    statistics as weighted sums: ``weight (rows, 1)`` is 1 on real rows and 0 on the rest,
    ``count`` its sum. Flax's masked BatchNorm takes each mean over ``where(mask, x, 0)``
    and counts the broadcast mask per channel; XLA:CPU wrote those selects out as
    (pairs, 64) arrays, forward and backward (1-2% of a full ParT training step: 2.06 ->
    2.04 s and 1.97 -> 1.93 s in two interleaved runs).
    The running statistics are updated exactly as Flax does (biased variance, momentum
    ``bn.momentum``) and the result is Flax's ``(x - mean) * a + bias`` (centred first: a
    column of nearly equal values, such as the self-pairs' ln Delta, stays exact). In
    evaluation mode (``bn.use_running_average``) it is ``bn(x)`` and ``weight`` is unused."""
    if bn.use_running_average:
        return bn(x)
    xw = x * weight
    mean = jnp.sum(xw, axis=0) / count
    var = jnp.maximum(jnp.sum(xw * x, axis=0) / count - mean * mean, 0.0)
    bn.mean[...] = jax.lax.stop_gradient(bn.momentum * bn.mean[...] + (1 - bn.momentum) * mean)
    bn.var[...] = jax.lax.stop_gradient(bn.momentum * bn.var[...] + (1 - bn.momentum) * var)
    a = bn.scale[...] * jax.lax.rsqrt(var + jnp.asarray(bn.epsilon, x.dtype))
    return (x - mean) * a + bn.bias[...]


def _batch_norm_rows(bn, x, mask):
    """A BatchNorm over the real rows of ``x (..., channels)`` (``mask`` broadcastable to
    ``x[..., :1]``): batch statistics via :func:`_masked_batch_norm` in training mode, the
    running ones otherwise."""
    weight = jnp.broadcast_to(mask, x.shape[:-1] + (1,)).reshape(-1, 1).astype(x.dtype)
    return _rows(lambda r: _masked_batch_norm(bn, r, weight, jnp.sum(weight)), x)


class _ParticleEmbed(nnx.Module):
    def __init__(self, input_dim, dims, *, rngs, param_dtype):
        self.input_bn = _batch_norm(input_dim, rngs, param_dtype)
        norms, linears = [], []
        for dim in dims:
            norms.append(_layer_norm(input_dim, rngs, param_dtype))
            linears.append(nnx.Linear(input_dim, dim, rngs=rngs, param_dtype=param_dtype))
            input_dim = dim
        self.norms, self.linears = nnx.List(norms), nnx.List(linears)

    def __call__(self, x, mask):
        x = _batch_norm_rows(self.input_bn, x, mask[..., None])
        for norm, linear in zip(self.norms, self.linears, strict=True):
            x = _gelu(_norm_dense(norm, linear, x))
        return jnp.where(mask[..., None], x, jnp.zeros_like(x))


class _PairEmbed(nnx.Module):
    def __init__(self, input_dim, dims, *, rngs, param_dtype):
        self.input_bn = _batch_norm(input_dim, rngs, param_dtype)
        linears, norms = [], []
        for dim in dims:
            linears.append(nnx.Linear(input_dim, dim, rngs=rngs, param_dtype=param_dtype))
            norms.append(_batch_norm(dim, rngs, param_dtype))
            input_dim = dim
        self.linears, self.norms = nnx.List(linears), nnx.List(norms)

    def _mlp(self, x, pair_mask):
        """The MLP on ``x (pairs, channels)``; ``pair_mask (pairs, 1)`` selects the pairs of
        the batch statistics in training mode (unused in evaluation mode)."""
        weight = count = None
        if not self.input_bn.use_running_average:
            weight = pair_mask.astype(x.dtype)
            count = jnp.sum(weight)
        x = _masked_batch_norm(self.input_bn, x, weight, count)
        last = len(self.linears) - 1
        for k, (linear, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            x = _masked_batch_norm(norm, linear(x), weight, count)
            if k < last:  # the bias is taken before the last activation
                x = _gelu(x)
        return x

    def __call__(self, p4, mask, dtype):
        n = p4.shape[-2]
        partners, weight, unique = _circulant_pairs(n)
        feats = pairwise_features(p4, partners).astype(dtype)  # (B, n, n//2 + 1, 4)
        shape = feats.shape[:-1]
        if self.input_bn.use_running_average:
            # Evaluation mode: every BatchNorm is a fixed affine map, so the MLP is applied
            # to a few jets' pairs at a time and their activations stay in the CPU caches
            # (twice as fast as streaming (pairs, 64) matrices through memory per layer).
            per_jet = feats.reshape(-1, shape[-2] * shape[-1], feats.shape[-1])
            chunk = max(1, _PAIR_CHUNK // per_jet.shape[1])
            x = jax.lax.map(lambda f: self._mlp(f, None), per_jet, batch_size=chunk)
        else:
            # Training mode needs the batch statistics of every layer first. The MLP runs on
            # a (pairs, channels) matrix: with the pair axes left separate, the weight
            # gradients' contraction over them made XLA:CPU transpose each activation.
            pair_mask = (mask[..., :, None] & mask[..., partners] & unique).reshape(-1, 1)
            x = self._mlp(feats.reshape(-1, feats.shape[-1]), pair_mask)
        x = jnp.moveaxis(x.reshape(*shape, -1), -1, -3)  # (B, heads, n, n//2 + 1)
        x = x * weight.astype(x.dtype)
        return _symmetrise_circulant(x, n)


def _circulant_pairs(n):
    """Each unordered pair ``{i, j}`` of ``n`` particles once, in a circulant layout: row ``i``
    holds the partners ``j = (i + d) mod n`` for ``d = 0 .. n // 2``. For even ``n`` the pairs
    at ``d = n / 2`` appear in two rows; ``unique`` keeps the first (rows ``i < n / 2``) for
    the batch statistics and the bias. ``weight`` is 1/2 on self-pairs (added twice by the
    symmetrisation), 1 on the other unique pairs and 0 on the duplicates."""
    half = n // 2
    offsets = np.arange(half + 1)
    partners = (np.arange(n)[:, None] + offsets[None, :]) % n
    unique = np.ones((n, half + 1), bool)
    if n % 2 == 0 and n > 0:
        unique[half:, half] = False
    weight = np.where(offsets[None, :] == 0, 0.5, 1.0) * unique
    return partners, jnp.asarray(weight), unique


def _symmetrise_circulant(c, n):
    """``(..., n, n//2 + 1)`` circulant-layout values -> the symmetric ``(..., n, n)`` matrix
    ``M[i, j] = A[i, j] + A[j, i]`` with ``A[i, j] = c[i, (j - i) mod n]`` (zero beyond
    ``n // 2``). The row shifts use the pad-and-reshape skew (no gather), so the backward
    pass is reshapes and slices too: the gather-based expansion's scatter-add and its layout
    change of the ``(B, heads, n, n)`` gradient were the slowest part of a training step."""
    d = jnp.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, n - c.shape[-1])])  # (..., n, n)
    # y[i, k] = d[i, k mod n] for k < 2n, one spare column so that rows of 2n + 1 read as
    # rows of 2n shift each row i by i: z[i, k] = y[i, k - i]
    y = jnp.concatenate([d, d, jnp.zeros_like(d[..., :1])], axis=-1)
    lead = y.shape[:-2]
    flat = y.reshape(*lead, n * (2 * n + 1))[..., : 2 * n * n]
    a = flat.reshape(*lead, n, 2 * n)[..., n:]  # a[i, j] = y[i, j + n - i] = d[i, (j - i) mod n]
    return a + jnp.swapaxes(a, -1, -2)


class _Attention(nnx.Module):
    """Multi-head attention with an additive logit bias and a key mask."""

    def __init__(self, dim, num_heads, attn_dropout, *, rngs, param_dtype):
        self.num_heads = num_heads
        self.in_proj = nnx.Linear(dim, 3 * dim, rngs=rngs, param_dtype=param_dtype)
        self.out_proj = nnx.Linear(dim, dim, rngs=rngs, param_dtype=param_dtype)
        self.dropout = Dropout(attn_dropout)

    def __call__(self, query, kv, key_mask, bias, key, norm=None):
        """``norm``: a LayerNorm applied to ``query`` and ``kv`` first (folded into the
        projection)."""
        dim = query.shape[-1]
        head_dim = dim // self.num_heads
        w, b = self.in_proj.kernel[...], self.in_proj.bias[...]
        if norm is not None:
            w, b = _fold(norm, w, b)
            same = query is kv
            query = _standardise(query, norm.epsilon)
            kv = query if same else _standardise(kv, norm.epsilon)
        # Heads are moved in front of the particle axis before the two attention products,
        # so that XLA:CPU runs them as plain batched matrix products; with the heads left
        # inside ("...qhd,...khd->...hqk") the forward pass was twice as slow.
        scale = jnp.asarray(1.0 / np.sqrt(head_dim), query.dtype)
        if query is kv:  # self-attention: one projection for q, k and v
            qkv = _rows(lambda r: r @ w + b, query).reshape(*query.shape[:-1], 3,
                                                            self.num_heads, head_dim)
            q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        else:
            q = (query @ w[:, :dim] + b[:dim]).reshape(*query.shape[:-1], self.num_heads,
                                                        head_dim)
            kv_ = _rows(lambda r: r @ w[:, dim:] + b[dim:], kv)
            kv_ = kv_.reshape(*kv.shape[:-1], 2, self.num_heads, head_dim)
            k, v = kv_[..., 0, :, :], kv_[..., 1, :, :]
        q = jnp.swapaxes(q * scale, -2, -3)  # (..., heads, nq, head_dim)
        k = jnp.moveaxis(k, -3, -1)  # (..., heads, head_dim, nk)
        v = jnp.swapaxes(v, -2, -3)  # (..., heads, nk, head_dim)
        logits = q @ k
        if bias is not None:
            logits = logits + bias
        logits = jnp.where(key_mask[..., None, None, :], logits,
                           jnp.asarray(jnp.finfo(logits.dtype).min, logits.dtype))
        weights = self.dropout(jax.nn.softmax(logits, axis=-1), key)
        out = jnp.swapaxes(weights @ v, -2, -3)  # (..., nq, heads, head_dim)
        return _rows(self.out_proj, out.reshape(*out.shape[:-2], dim))


class _Block(nnx.Module):
    """NormFormer-style transformer block of ParT (particle or class attention)."""

    def __init__(self, cfg: ParTConfig, *, dropout, attn_dropout, activation_dropout, rngs,
                 param_dtype):
        dim, ffn = cfg.embed_dim, cfg.embed_dim * cfg.ffn_ratio
        self.num_heads = cfg.num_heads
        self.pre_attn_norm = _layer_norm(dim, rngs, param_dtype)
        self.attn = _Attention(dim, cfg.num_heads, attn_dropout, rngs=rngs,
                               param_dtype=param_dtype)
        self.post_attn_norm = _layer_norm(dim, rngs, param_dtype)
        self.pre_fc_norm = _layer_norm(dim, rngs, param_dtype)
        self.fc1 = nnx.Linear(dim, ffn, rngs=rngs, param_dtype=param_dtype)
        self.post_fc_norm = _layer_norm(ffn, rngs, param_dtype)
        self.fc2 = nnx.Linear(ffn, dim, rngs=rngs, param_dtype=param_dtype)
        self.c_attn = nnx.Param(jnp.ones(cfg.num_heads, param_dtype))
        self.w_resid = nnx.Param(jnp.ones(dim, param_dtype))
        self.dropout = Dropout(dropout)
        self.act_dropout = Dropout(activation_dropout)

    def __call__(self, x, mask, bias, key, x_cls=None):
        keys = [None] * 4 if key is None else list(jax.random.split(key, 4))
        if x_cls is None:
            residual = x
            h = self.attn(x, x, mask, bias, keys[0], norm=self.pre_attn_norm)
        else:
            residual = x_cls
            u = _apply_norm(self.pre_attn_norm, jnp.concatenate([x_cls, x], axis=-2))
            cls_mask = jnp.concatenate([jnp.ones_like(mask[..., :1]), mask], axis=-1)
            h = self.attn(u[..., :1, :], u, cls_mask, None, keys[0])
        # learned per-head scale on the attention output, laid out as in weaver-core: the
        # (head, channel) split of the output is scaled per head and re-flattened channel-major
        dim = h.shape[-1]
        h = h.reshape(*h.shape[:-1], self.num_heads, dim // self.num_heads)
        h = jnp.swapaxes(h * self.c_attn[...][:, None], -1, -2).reshape(*h.shape[:-2], dim)
        h = self.dropout(_apply_norm(self.post_attn_norm, h), keys[1]) + residual
        residual = h
        y = _gelu(_norm_dense(self.pre_fc_norm, self.fc1, h))
        y = _norm_dense(self.post_fc_norm, self.fc2, self.act_dropout(y, keys[2]))
        y = self.dropout(y, keys[3])
        return y + self.w_resid[...] * residual
