"""Particle Transformer (Qu, Li, Qian, "Particle Transformer for Jet Tagging", arXiv:2202.03772)
in Flax NNX.

The layer structure and parameter shapes follow the paper and weaver-core's reference
``ParticleTransformer`` (2,143,486 parameters for 17 inputs and 10 classes), so the two can be
compared size for size:

* particle embedding: input BatchNorm, then per width ``LayerNorm -> Linear -> GELU``;
* pair embedding of the four ``kinematics.pairwise_features``: input BatchNorm, then per width
  ``Linear -> BatchNorm -> GELU`` ending in one bias per attention head (no last GELU);
* ``num_layers`` particle-attention blocks (NormFormer style: LayerNorms before and after the
  attention and around the MLP's hidden layer, learned per-head and residual scales) with the
  pair bias added to the attention logits;
* ``num_cls_layers`` class-attention blocks updating a learned class token;
* LayerNorm and a linear head.

Two deliberate differences, neither of which changes a parameter: the BatchNorms take their
statistics over real particles (pairs) only, so that outputs do not depend on the padding
length even in training mode; and the pair MLP evaluates each of the ``n (n + 1) / 2``
unordered pairs once (the features are symmetric), as weaver-core does, but in a circulant
layout whose symmetrisation needs no gather (see ``_layers._symmetrise_circulant``).

The CPU-specific choices below (heads-first attention products, dense layers on 2-D
operands, LayerNorm affine folded into the next dense layer, a closed-form LayerNorm
derivative, erf-form GELU, hash-based dropout masks, chunked evaluation-mode pair MLP) are
each measured in ``docs/nn.md``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._checks import check_count, is_concrete
from ._dropout import Dropout
from ._layers import _apply_norm, _Block, _layer_norm, _PairEmbed, _ParticleEmbed

MODEL_SIZES = ("tiny", "small", "full")
"""The names :meth:`ParTConfig.named` knows, smallest first."""


@dataclasses.dataclass(frozen=True)
class ParTConfig:
    """Architecture of :class:`ParticleTransformer`; the defaults are the paper's full model."""

    input_dim: int = 17
    num_classes: int = 10
    pair_input_dim: int = 4
    embed_dims: tuple[int, ...] = (128, 512, 128)
    pair_embed_dims: tuple[int, ...] = (64, 64, 64)
    num_heads: int = 8
    num_layers: int = 8
    num_cls_layers: int = 2
    ffn_ratio: int = 4
    fc_dims: tuple[int, ...] = ()
    dropout: float = 0.1
    attn_dropout: float = 0.1
    activation_dropout: float = 0.1
    fc_dropout: float = 0.1

    def __post_init__(self):
        for name in ("input_dim", "pair_input_dim", "num_heads", "ffn_ratio"):
            check_count(getattr(self, name), name)
        for name in ("num_classes", "num_layers", "num_cls_layers"):
            check_count(getattr(self, name), name, 0)
        if not self.embed_dims or not all(isinstance(d, int) and d > 0 for d in self.embed_dims):
            raise ValueError(f"embed_dims must be positive integers; got {self.embed_dims!r}")
        if self.embed_dims[-1] % self.num_heads:
            raise ValueError(f"num_heads = {self.num_heads} must divide the embedding "
                             f"dimension {self.embed_dims[-1]}")
        for name in ("dropout", "attn_dropout", "activation_dropout", "fc_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1); got {getattr(self, name)!r}")

    @classmethod
    def small(cls, **overrides) -> ParTConfig:
        """A small model for CPU work and tests (about 3% of the full size)."""
        base = dict(embed_dims=(64, 128, 64), pair_embed_dims=(32, 32), num_heads=4,
                    num_layers=3, num_cls_layers=1)
        return cls(**{**base, **overrides})

    @classmethod
    def named(cls, size: str, **overrides) -> ParTConfig:
        """The configuration of a named size (:data:`MODEL_SIZES`): ``tiny`` (a few thousand
        parameters, for demos and tests), ``small`` (:meth:`small`) or ``full`` (the
        published ParT); ``overrides`` (e.g. ``num_classes``) replace fields. Every command
        that takes ``--model`` uses this one map."""
        if size == "tiny":
            base = dict(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4,
                        num_layers=2, num_cls_layers=1)
            return cls(**{**base, **overrides})
        if size == "small":
            return cls.small(**overrides)
        if size == "full":
            return cls(**overrides)
        raise ValueError(f"model size must be one of {MODEL_SIZES}; got {size!r}")

    @property
    def embed_dim(self) -> int:
        return self.embed_dims[-1]


class ParticleTransformer(nnx.Module):
    """Particle Transformer jet classifier (float32 by default: inputs are cast to
    ``param_dtype``; the pair features are computed in the dtype of ``p4`` first).

    Call with ``features (B, n, input_dim)`` (e.g. :func:`difphys.io.part_features`), four-
    momenta ``p4 (B, n, 4)`` (E, px, py, pz) GeV for the pair features, and ``mask (B, n)`` bool
    (False on padding); pass ``key`` to enable dropout (training), none for deterministic output.
    BatchNorms use batch statistics until ``model.eval()``. Returns logits
    ``(B, num_classes)``; :meth:`embed` returns the class-token representation
    ``(B, embed_dim)`` for heads built on top (fine-tuning, DeepSets event heads).
    """

    def __init__(self, config: ParTConfig = ParTConfig(), *, rngs: nnx.Rngs,
                 param_dtype=jnp.float32):
        cfg = config
        self.config = cfg
        self.param_dtype = jnp.dtype(param_dtype)
        self.embed_particles = _ParticleEmbed(cfg.input_dim, cfg.embed_dims, rngs=rngs,
                                              param_dtype=param_dtype)
        self.embed_pairs = (
            _PairEmbed(cfg.pair_input_dim, (*cfg.pair_embed_dims, cfg.num_heads), rngs=rngs,
                       param_dtype=param_dtype)
            if cfg.pair_embed_dims else None
        )
        self.blocks = nnx.List([
            _Block(cfg, dropout=cfg.dropout, attn_dropout=cfg.attn_dropout,
                   activation_dropout=cfg.activation_dropout, rngs=rngs, param_dtype=param_dtype)
            for _ in range(cfg.num_layers)
        ])
        self.cls_blocks = nnx.List([
            _Block(cfg, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0, rngs=rngs,
                   param_dtype=param_dtype)
            for _ in range(cfg.num_cls_layers)
        ])
        self.norm = _layer_norm(cfg.embed_dim, rngs, param_dtype)
        fcs, dim = [], cfg.embed_dim
        for out_dim in cfg.fc_dims:
            fcs.append(nnx.Linear(dim, out_dim, rngs=rngs, param_dtype=param_dtype))
            dim = out_dim
        self.fcs = nnx.List(fcs)
        self.fc_dropout = Dropout(cfg.fc_dropout)
        self.head = (nnx.Linear(dim, cfg.num_classes, rngs=rngs, param_dtype=param_dtype)
                     if cfg.num_classes else None)
        self.cls_token = nnx.Param(
            0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0,
                                               (1, cfg.embed_dim), param_dtype))

    def _check(self, features, p4, mask):
        check_jet_inputs(self.config.input_dim, features, p4, mask)

    def encode(self, features, p4, mask, *, key=None, hidden=None, mask_embedding=None):
        """Per-particle representations ``(B, n, embed_dim)`` after the particle-attention
        blocks.

        ``hidden (B, n)`` bool marks real particles whose inputs are hidden (masked particle
        modelling): their embedding is replaced by ``mask_embedding (embed_dim,)``, they are
        left out of the batch statistics, and every pair bias involving them is zero, so
        nothing of their features or momenta reaches the network. ``mask_embedding`` may also
        be per particle, ``(B, n, embed_dim)``.
        """
        self._check(features, p4, mask)
        mask = mask.astype(bool)
        visible = mask if hidden is None else mask & ~hidden.astype(bool)
        dtype = self.param_dtype  # network precision; physics inputs are cast at the boundary
        # padded slots are zeroed first, so whatever they hold (even NaN) cannot leak
        features = jnp.where(mask[..., None], features, jnp.zeros_like(features))
        p4 = jnp.where(mask[..., None], p4, jnp.zeros_like(p4))
        x = self.embed_particles(features.astype(dtype), visible)
        if hidden is not None:
            if mask_embedding is None:
                raise ValueError("hidden particles need a mask_embedding")
            x = jnp.where((mask & ~visible)[..., None], mask_embedding.astype(dtype), x)
        bias = None
        if self.embed_pairs is not None:
            bias = self.embed_pairs(p4, visible, dtype)
            if hidden is not None:
                pair_visible = visible[..., None, :, None] & visible[..., None, None, :]
                bias = jnp.where(pair_visible, bias, jnp.zeros_like(bias))
        keys = [None] * len(self.blocks) if key is None else list(
            jax.random.split(key, len(self.blocks)))
        for block, k in zip(self.blocks, keys, strict=True):
            x = block(x, mask, bias, k)
        return x

    def embed(self, features, p4, mask, *, key=None):
        """Class-token representation ``(B, embed_dim)`` after the final LayerNorm."""
        x = self.encode(features, p4, mask, key=key)
        mask = mask.astype(bool)
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype),
                               (*x.shape[:-2], 1, x.shape[-1]))
        for block in self.cls_blocks:
            cls = block(x, mask, None, None, x_cls=cls)
        return _apply_norm(self.norm, cls[..., 0, :])

    def __call__(self, features, p4, mask, *, key=None):
        """Logits ``(B, num_classes)``."""
        if self.head is None:
            raise ValueError("this ParticleTransformer has num_classes=0: use .embed()")
        fc_key = None if key is None else jax.random.fold_in(key, 1)
        h = self.embed(features, p4, mask, key=None if key is None else jax.random.fold_in(key, 0))
        for linear in self.fcs:
            h = self.fc_dropout(jax.nn.relu(linear(h)), fc_key)
        return self.head(h)


def check_jet_inputs(input_dim: int, features, p4, mask) -> None:
    """The shapes of a ParT call (``features (B, n, input_dim)``, ``p4 (B, n, 4)``, ``mask
    (B, n)``) and, outside ``jit``, finite features and momenta on the real particles."""
    if features.ndim != 3 or features.shape[-1] != input_dim:
        raise ValueError(f"features must be (batch, particles, {input_dim}); "
                         f"got {features.shape}")
    if p4.shape[:-1] != features.shape[:-1] or p4.shape[-1] != 4:
        raise ValueError(f"p4 must be {features.shape[:-1] + (4,)}; got {p4.shape}")
    if mask.shape != features.shape[:-1]:
        raise ValueError(f"mask must be {features.shape[:-1]}; got {mask.shape}")
    if is_concrete(features, p4, mask):  # outside jit: no silent NaN
        real = np.asarray(mask, dtype=bool)
        for name, x in (("features", features), ("p4", p4)):
            if not np.all(np.isfinite(np.asarray(x)[real])):
                raise ValueError(f"{name} contain NaN or infinity on real particles")


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` leaves; BatchNorm statistics excluded)."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"count_params needs a flax.nnx Module; got {type(model).__name__}")
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
