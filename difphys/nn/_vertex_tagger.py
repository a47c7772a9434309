"""A jet-flavour tagger with a differentiable vertex-fit layer (the NDIVE idea: Smith, Kagan
et al., "Differentiable Vertex Fitting for Jet Flavour Tagging", arXiv:2310.12804).

A transformer over a jet's tracks predicts one weight in (0, 1) per track; the Billoir fit of
:func:`difphys.vertex.fit` (implicit gradients, float64 when x64 is on) turns the weighted
tracks into a secondary vertex; the classifier sees the pooled track embeddings plus
vertex features. The classification loss therefore trains the track weights *through* the fit.

Batch layout (:func:`difphys.io.jet_tracks`): ``features (B, T, F)``, ``mask (B, T)``,
``params (B, T, 5)``, ``cov (B, T, 5, 5)``, ``axis (B, 3)`` and, for ``vertex="truth"``,
``hf (B, T)`` (true heavy-flavour-decay tracks). The primary vertex is the origin.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._checks import check_count, is_concrete
from ..vertex import Perigee, fit

#: Vertex modes: no vertex layer (baseline), learned track weights, or true b/c-decay tracks.
VERTEX_MODES = ("none", "learned", "truth")
#: Names of the vertex features (what :meth:`VertexTagger.vertex_features` returns, in order).
VERTEX_FEATURES = ("asinh_Lsig", "asinh_L_100um", "asinh_Lxy_100um", "log1p_mass",
                   "log1p_sum_w", "log1p_chi2_ndf", "pt_fraction", "valid")
PION_MASS = 0.13957039  # GeV (PDG 2024)


class _Block(nnx.Module):
    """Pre-LayerNorm transformer block with masked multi-head self-attention."""

    def __init__(self, dim, heads, *, rngs, param_dtype):
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs, param_dtype=param_dtype)
        self.attn = nnx.MultiHeadAttention(heads, dim, decode=False, rngs=rngs,
                                           param_dtype=param_dtype)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs, param_dtype=param_dtype)
        self.fc1 = nnx.Linear(dim, 2 * dim, rngs=rngs, param_dtype=param_dtype)
        self.fc2 = nnx.Linear(2 * dim, dim, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x, mask):
        pair = mask[:, None, None, :] & mask[:, None, :, None]
        h = self.norm1(x)
        x = x + self.attn(h, h, h, mask=pair)
        x = x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))
        return jnp.where(mask[..., None], x, jnp.zeros_like(x))


class TaggerOutput(NamedTuple):
    """What :class:`VertexTagger` returns: flavour ``logits (B, C)``, per-track
    ``weight_logits (B, T)`` and ``weights (B, T)`` (0 on padding), and, unless
    ``vertex="none"``, the weighted ``vertex`` fit (:class:`difphys.vertex.VertexFit`) and its
    ``vertex_features (B, 8)`` (:data:`VERTEX_FEATURES`, zero where the fit is not valid)."""

    logits: jax.Array
    weight_logits: jax.Array
    weights: jax.Array
    vertex: object = None
    vertex_features: jax.Array | None = None


class VertexTagger(nnx.Module):
    """Track transformer + per-track weights + Billoir vertex fit + classifier.

    Args:
        num_features: per-track inputs (``len(difphys.io.TRACK_FEATURES)`` = 9).
        num_classes: output classes (3: b, c, light).
        vertex: ``"learned"`` (weights from the network, trained through the fit), ``"none"``
            (the same network without vertex features: the baseline) or ``"truth"`` (weights =
            true heavy-flavour tracks: the ceiling of the vertex layer).
        dim, heads, layers: transformer width, heads and depth.
        bfield: field along +z (T) used by the fit.
        max_iter, tol: at most ``max_iter`` Gauss-Newton iterations of the fit, stopping when
            the vertex step is below ``tol`` (mm); the implicit gradients are exact at that
            tolerance.
        param_dtype: network parameter dtype (float32; float64 for gradient checks).

    Calling ``model(batch)`` returns a :class:`TaggerOutput` (``logits (B, C)``,
    ``weight_logits (B, T)``, ``weights (B, T)`` and, unless ``vertex="none"``, ``vertex``, the
    :class:`difphys.vertex.VertexFit`, and ``vertex_features (B, 8)``).
    """

    def __init__(self, num_features: int = 9, num_classes: int = 3, *, vertex: str = "learned",
                 dim: int = 64, heads: int = 4, layers: int = 2, bfield: float = 2.0,
                 max_iter: int = 20, tol: float = 1e-6, rngs: nnx.Rngs, param_dtype=jnp.float32):
        if vertex not in VERTEX_MODES:
            raise ValueError(f"vertex must be one of {VERTEX_MODES}; got {vertex!r}")
        for name, value in (("num_features", num_features), ("dim", dim), ("heads", heads),
                            ("layers", layers), ("max_iter", max_iter)):
            check_count(value, name)
        check_count(num_classes, "num_classes", 2)
        if not (np.isfinite(bfield) and bfield != 0):
            raise ValueError(f"bfield must be finite and non-zero (T); got {bfield!r}")
        self.vertex = vertex
        self.bfield = float(bfield)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.num_features = int(num_features)
        self.embed = nnx.Linear(num_features, dim, rngs=rngs, param_dtype=param_dtype)
        self.blocks = nnx.List([_Block(dim, heads, rngs=rngs, param_dtype=param_dtype)
                                for _ in range(layers)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs, param_dtype=param_dtype)
        self.weight_head = nnx.Linear(dim, 1, rngs=rngs, param_dtype=param_dtype)
        n_vertex = len(VERTEX_FEATURES) if vertex != "none" else 0
        self.vertex_embed = (nnx.Linear(n_vertex, dim, rngs=rngs, param_dtype=param_dtype)
                             if n_vertex else None)
        self.head1 = nnx.Linear(2 * dim if n_vertex else dim, dim, rngs=rngs,
                                param_dtype=param_dtype)
        self.head2 = nnx.Linear(dim, num_classes, rngs=rngs, param_dtype=param_dtype)

    def _check(self, batch):
        missing = sorted({"features", "mask", "params", "cov", "axis"} - set(batch))
        if self.vertex == "truth" and "hf" not in batch:
            missing.append("hf")
        if missing:
            raise KeyError(f"VertexTagger batch lacks {missing} (see difphys.io.jet_tracks)")
        f, m = batch["features"], batch["mask"]
        if f.ndim != 3 or f.shape[-1] != self.num_features or m.shape != f.shape[:2]:
            raise ValueError(f"features must be (B, T, {self.num_features}) with mask (B, T); "
                             f"got {f.shape} and {m.shape}")
        if batch["params"].shape != f.shape[:2] + (5,) or batch["cov"].shape != f.shape[:2] + (
                5, 5):
            raise ValueError("params must be (B, T, 5) and cov (B, T, 5, 5) like the mask")
        if is_concrete(f, m, batch["params"]):  # outside jit: name bad inputs of real tracks
            real = np.asarray(m, bool)
            for name in ("features", "params"):
                if not np.all(np.isfinite(np.asarray(batch[name])[real])):
                    raise ValueError(f"NaN or infinity in {name} of real tracks")

    def encode(self, features, mask):
        """Per-track embeddings ``(B, T, dim)`` (zero on padding)."""
        x = self.embed(features.astype(self.embed.kernel.dtype))
        for block in self.blocks:
            x = block(x, mask)
        return jnp.where(mask[..., None], self.norm(x), jnp.zeros_like(x))

    def vertex_features(self, batch, weights):
        """Fit the vertex of the weighted tracks; return ``(VertexFit, features (B, 8))``.

        Features (``VERTEX_FEATURES``): signed decay-length significance, signed 3D and
        transverse decay lengths (sign from the jet axis; asinh of units of 100 um), the mass
        of the weighted tracks at the vertex (pion hypothesis, GeV), the weight sum, chi2/ndf,
        the weighted fraction of the track pT, and the fit's ``valid`` flag; all zero when the
        fit is not valid.
        """
        params, cov, axis = batch["params"], batch["cov"], batch["axis"]
        dtype = params.dtype
        w = weights.astype(dtype)
        res = fit(Perigee(params, cov), w, bfield=self.bfield, max_iter=self.max_iter,
                  tol=self.tol)
        v = res.position
        axis = axis.astype(dtype)
        length = jnp.sum(v * axis, axis=-1)
        var = jnp.einsum("bi,bij,bj->b", axis, res.cov, axis)
        sig = length / jnp.sqrt(jnp.maximum(var, 1e-30))
        axis_t = axis[:, :2] / jnp.maximum(jnp.linalg.norm(axis[:, :2], axis=-1,
                                                           keepdims=True), 1e-12)
        lxy = jnp.sum(v[:, :2] * axis_t, axis=-1)
        p3 = res.momenta
        energy = jnp.sqrt(jnp.sum(p3**2, axis=-1) + PION_MASS**2)
        e_sum = jnp.sum(w * energy, axis=-1)
        p_sum = jnp.sum(w[..., None] * p3, axis=-2)
        mass2 = e_sum**2 - jnp.sum(p_sum**2, axis=-1)
        mass = jnp.sqrt(jnp.maximum(mass2, 0.0) + 1e-12)
        pt = jnp.where(batch["mask"], jnp.hypot(p3[..., 0], p3[..., 1]), 0.0)
        pt_frac = jnp.sum(w * pt, axis=-1) / jnp.maximum(jnp.sum(pt, axis=-1), 1e-12)
        sum_w = jnp.sum(w, axis=-1)
        chi2_ndf = res.chi2 / jnp.maximum(res.ndf, 1.0)
        feats = jnp.stack([jnp.arcsinh(sig), jnp.arcsinh(length / 0.1), jnp.arcsinh(lxy / 0.1),
                           jnp.log1p(mass), jnp.log1p(sum_w), jnp.log1p(jnp.maximum(chi2_ndf,
                                                                                    0.0)),
                           pt_frac, jnp.ones_like(sum_w)], axis=-1)
        feats = jnp.where(res.valid[:, None], feats, jnp.zeros_like(feats))
        return res, feats

    def __call__(self, batch, *, key=None) -> TaggerOutput:
        del key  # no dropout
        self._check(batch)
        mask = batch["mask"]
        x = self.encode(batch["features"], mask)
        weight_logits = self.weight_head(x)[..., 0]
        if self.vertex == "truth":
            weights = jnp.where(batch["hf"] & mask, 1.0, 0.0).astype(x.dtype)
        else:
            weights = jnp.where(mask, jax.nn.sigmoid(weight_logits), 0.0)
        n = jnp.maximum(jnp.sum(mask, axis=-1, keepdims=True), 1).astype(x.dtype)
        pooled = jnp.sum(x, axis=1) / n
        res = vfeat = None
        if self.vertex != "none":
            res, vfeat = self.vertex_features(batch, weights)
            pooled = jnp.concatenate([pooled, jax.nn.gelu(self.vertex_embed(
                vfeat.astype(x.dtype)))], axis=-1)
        logits = self.head2(jax.nn.gelu(self.head1(pooled)))
        return TaggerOutput(logits, weight_logits, weights, res, vfeat)


class TaggerMetrics(NamedTuple):
    """Metrics of :func:`tagger_loss`: accuracy, the flavour cross entropy ``ce`` and the
    per-track auxiliary ``track_bce`` (``None`` without the auxiliary term)."""

    accuracy: jax.Array
    ce: jax.Array
    track_bce: jax.Array | None = None


def tagger_loss(model: VertexTagger, batch, *, key, aux_weight: float = 1.0
                ) -> tuple[jax.Array, TaggerMetrics]:
    """Cross entropy on ``batch["label"]`` plus ``aux_weight`` x the per-track binary cross
    entropy of the weight logits against ``batch["hf"]`` (track from a b or c decay) over real
    tracks. Returns ``(loss, metrics)`` for :func:`difphys.train.fit`."""
    out = model(batch, key=key)
    dtype = jnp.promote_types(out.logits.dtype, jnp.float32)  # bf16 nets: f32 losses
    logits = out.logits.astype(dtype)
    labels = batch["label"].astype(jnp.int32)
    ce = jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))
    accuracy = jnp.mean((jnp.argmax(logits, -1).astype(jnp.int32) == labels).astype(dtype))
    loss, aux = ce, None
    if aux_weight and "hf" in batch:
        mask = batch["mask"]
        z = out.weight_logits.astype(dtype)
        y = batch["hf"].astype(dtype)
        bce = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
        aux = jnp.sum(jnp.where(mask, bce, 0.0)) / jnp.maximum(jnp.sum(mask), 1).astype(dtype)
        loss = loss + aux_weight * aux
    return loss, TaggerMetrics(accuracy, ce, aux)
