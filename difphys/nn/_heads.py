"""Models built on a Particle Transformer backbone: masked particle modelling (pretraining),
a jet classifier head, and a DeepSets event classifier over several jets."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._checks import check_count, is_concrete
from ._part import ParticleTransformer

#: Indices in the ParT features (``difphys.io.PART_FEATURES``) of Delta R, Delta eta and
#: Delta phi: the angular position a hidden particle keeps by default.
ANGULAR_FEATURES = (4, 15, 16)

#: The ParT features a tokeniser uses by default: all but Delta R, Delta eta and Delta phi,
#: which :class:`difphys.nn.MaskedParticleModel` reveals for hidden particles.
TOKEN_FEATURES = (0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)


def check_token_features(token_features, reveal) -> tuple[int, ...]:
    """``token_features`` as a tuple, refusing any feature that is also revealed: a hidden
    particle whose revealed features enter its own token leaks the target, so a context-free
    lookup predicts the token without any jet context."""
    token_features = tuple(int(i) for i in token_features)
    overlap = sorted(set(token_features) & {int(i) for i in reveal})
    if overlap:
        raise ValueError(f"token features {overlap} are also revealed for hidden particles "
                         "(reveal=...): the tokens would leak into the input; tokenise on the "
                         "other features (difphys.nn.TOKEN_FEATURES)")
    if not token_features:
        raise ValueError("token_features is empty")
    return token_features


class MaskedParticleModel(nnx.Module):
    """Masked particle modelling (Golling et al., arXiv:2401.13537): hidden particles are
    replaced by a learned mask embedding and the backbone's representation of each hidden
    particle predicts its token (logits over ``codebook_size``). ParT has no positional
    encoding, so no ordering information reaches the prediction.

    Without any per-particle information, hidden particles are exchangeable and the best any
    set model can do is the jet's token distribution. By default a hidden particle therefore
    keeps its angular position in the jet (the ``reveal`` feature indices, Delta R, Delta eta,
    Delta phi), as a masked patch keeps its position in masked auto-encoders of images and
    point clouds; everything else (momentum, energy, type, charge, track parameters) is
    hidden. ``reveal=()`` hides particles entirely. ``token_features``, the feature indices
    the tokens were made from, must not overlap ``reveal`` (:func:`check_token_features`).
    """

    def __init__(self, backbone: ParticleTransformer, codebook_size: int, *,
                 reveal: tuple[int, ...] = ANGULAR_FEATURES,
                 token_features: tuple[int, ...] = TOKEN_FEATURES, rngs: nnx.Rngs):
        check_count(codebook_size, "codebook_size", 2)
        dim = backbone.config.embed_dim
        self.backbone = backbone
        self.token_features = check_token_features(token_features, reveal)
        self.reveal = tuple(reveal)
        self.mask_embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (dim,),
                                                                 backbone.param_dtype))
        self.reveal_proj = (nnx.Linear(len(self.reveal), dim, rngs=rngs) if self.reveal
                            else None)
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, rngs=rngs)
        self.head = nnx.Linear(dim, codebook_size, rngs=rngs)

    def __call__(self, features, p4, mask, hidden, *, key=None):
        """Token logits ``(B, n, codebook_size)`` for every particle (use the hidden ones)."""
        embedding = self.mask_embedding[...]
        if self.reveal_proj is not None:
            shown = features[..., jnp.asarray(self.reveal)].astype(embedding.dtype)
            embedding = embedding + self.reveal_proj(shown)
        x = self.backbone.encode(features, p4, mask, key=key, hidden=hidden,
                                 mask_embedding=embedding)
        return self.head(self.norm(x))


class MPMMetrics(NamedTuple):
    """Metrics of :func:`mpm_loss`: the token accuracy on the hidden particles."""

    token_accuracy: jax.Array


def mpm_loss(model: MaskedParticleModel, batch, *, key, fraction: float = 0.4
             ) -> tuple[jax.Array, MPMMetrics]:
    """Cross-entropy of the tokens (``batch["tokens"] (B, n)`` int) of a random ``fraction``
    of the real particles, hidden from the backbone. Every jet keeps at least one visible
    particle. Reports the token accuracy on hidden particles."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction (of particles hidden) must lie in (0, 1); got {fraction!r}")
    tokens_in = batch["tokens"]
    if is_concrete(tokens_in) and np.any((np.asarray(tokens_in) < 0)
                                         | (np.asarray(tokens_in) >= model.head.out_features)):
        raise ValueError(f"tokens must lie in [0, codebook_size = {model.head.out_features})")
    k_mask, k_drop = jax.random.split(key)
    mask = batch["mask"].astype(bool)
    u = jax.random.uniform(k_mask, mask.shape)
    hidden = mask & (u < fraction)
    # keep the particle with the largest u visible when a jet would be hidden entirely
    keep = jax.nn.one_hot(jnp.argmax(jnp.where(mask, u, -1.0), axis=-1), mask.shape[-1],
                          dtype=bool)
    hidden = hidden & ~(keep & jnp.all(hidden | ~mask, axis=-1, keepdims=True))
    logits = model(batch["features"], batch["p4"], mask, hidden, key=k_drop)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    tokens = batch["tokens"].astype(jnp.int32)
    nll = -jnp.take_along_axis(log_p, tokens[..., None], axis=-1)[..., 0]
    w = hidden.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(w), 1.0)
    loss = jnp.sum(w * nll) / n
    acc = jnp.sum(w * (jnp.argmax(log_p, -1).astype(jnp.int32) == tokens).astype(w.dtype)) / n
    return loss, MPMMetrics(acc)


class JetClassifier(nnx.Module):
    """A backbone's class-token embedding followed by a linear head (``backbone`` /
    ``head`` are the two parameter groups of the fine-tuning strategies)."""

    def __init__(self, backbone: ParticleTransformer, num_classes: int, *, rngs: nnx.Rngs):
        check_count(num_classes, "num_classes", 2)
        self.backbone = backbone
        self.head = nnx.Linear(backbone.config.embed_dim, num_classes, rngs=rngs)

    def __call__(self, features, p4, mask, *, key=None):
        return self.head(self.backbone.embed(features, p4, mask, key=key))


class DeepSetsHead(nnx.Module):
    """Permutation-invariant event head (Zaheer et al., arXiv:1703.06114) over a variable
    number of jet embeddings: ``rho(pool_j phi(x_j))`` with masked mean or sum pooling."""

    def __init__(self, in_dim: int, num_classes: int = 2, *, phi_dims=(64, 64), rho_dims=(64,),
                 pooling: str = "mean", rngs: nnx.Rngs):
        if pooling not in ("mean", "sum"):
            raise ValueError(f"pooling must be 'mean' or 'sum'; got {pooling!r}")
        check_count(in_dim, "in_dim")
        check_count(num_classes, "num_classes", 2)
        self.pooling = pooling
        dims, phi = in_dim, []
        for d in phi_dims:
            phi.append(nnx.Linear(dims, d, rngs=rngs))
            dims = d
        rho = []
        for d in rho_dims:
            rho.append(nnx.Linear(dims, d, rngs=rngs))
            dims = d
        self.phi, self.rho = nnx.List(phi), nnx.List(rho)
        self.out = nnx.Linear(dims, num_classes, rngs=rngs)

    def __call__(self, x, mask):
        """Logits ``(B, num_classes)`` from ``x (B, J, in_dim)`` and ``mask (B, J)``."""
        for layer in self.phi:
            x = jax.nn.gelu(layer(x))
        w = mask.astype(x.dtype)[..., None]
        pooled = jnp.sum(w * x, axis=-2)
        if self.pooling == "mean":
            pooled = pooled / jnp.maximum(jnp.sum(w, axis=-2), 1.0)
        for layer in self.rho:
            pooled = jax.nn.gelu(layer(pooled))
        return self.out(pooled)


class EventClassifier(nnx.Module):
    """Jet backbone + DeepSets head: ``features (B, J, n, d)``, ``p4 (B, J, n, 4)``,
    ``mask (B, J, n)`` -> event logits; a jet slot without particles is padding.

    ``jet_inputs = k > 0``: each jet's embedding is joined by ``k`` per-jet high-level inputs
    (``jet_inputs (B, J, k)`` at call time, e.g. a frozen tagger's score, log pT, eta,
    soft-drop mass). ``backbone=None`` with ``jet_inputs = k``: a DeepSets head on the
    high-level inputs alone (the "frozen-score" baseline of Vigl et al., arXiv:2401.13536).
    """

    def __init__(self, backbone: ParticleTransformer | None, num_classes: int = 2, *,
                 jet_inputs: int = 0, rngs: nnx.Rngs, **head_options):
        check_count(num_classes, "num_classes", 2)
        if backbone is None and jet_inputs < 1:
            raise ValueError("an EventClassifier without a backbone needs jet_inputs >= 1")
        self.backbone = backbone
        self.jet_inputs = int(jet_inputs)
        width = (0 if backbone is None else backbone.config.embed_dim) + self.jet_inputs
        self.head = DeepSetsHead(width, num_classes, rngs=rngs, **head_options)

    def __call__(self, features, p4, mask, *, jet_inputs=None, key=None):
        b, j = mask.shape[:2]
        jet_mask = jnp.any(mask, axis=-1)
        parts = []
        if self.backbone is not None:
            flat = lambda a: a.reshape(b * j, *a.shape[2:])  # noqa: E731
            emb = self.backbone.embed(flat(features), flat(p4), flat(mask), key=key)
            parts.append(emb.reshape(b, j, -1))
        if self.jet_inputs:
            if jet_inputs is None or jet_inputs.shape != (b, j, self.jet_inputs):
                got = None if jet_inputs is None else jet_inputs.shape
                raise ValueError(f"jet_inputs must have shape {(b, j, self.jet_inputs)}; "
                                 f"got {got}")
            dtype = parts[0].dtype if parts else jnp.float32
            parts.append(jnp.where(jet_mask[..., None], jet_inputs, 0).astype(dtype))
        elif jet_inputs is not None:
            raise ValueError("this EventClassifier was built with jet_inputs=0")
        return self.head(jnp.concatenate(parts, axis=-1), jet_mask)
