"""Training and evaluation of the vertex-fit flavour tagger (:class:`difphys.nn.VertexTagger`):
b-tagging discriminant, rejections at a b-efficiency working point, and vertex residuals and
pulls against the true b-hadron decay vertex."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .._checks import check_count
from ..io import Table, concatenate
from ..nn import VertexTagger, tagger_loss
from ._loop import fit
from ._metrics import background_rejection, roc_auc
from ._run import History
from ._split import _split

#: Inputs the tagger reads from :func:`difphys.io.jet_tracks` arrays.
TAGGER_INPUTS = ("features", "mask", "params", "cov", "axis", "hf", "label")


def b_discriminant(logits, f_c: float = 0.05) -> np.ndarray:
    """``D_b = log(p_b / (f_c p_c + (1 - f_c) p_light))`` from logits ``(n, 3)`` ordered
    (b, c, light) (the DL1/GN1 form; ``f_c`` is the charm fraction of the background)."""
    if not 0.0 <= f_c <= 1.0:
        raise ValueError(f"f_c must lie in [0, 1]; got {f_c}")
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or z.shape[1] != 3:
        raise ValueError(f"logits must be (n, 3) ordered (b, c, light); got {z.shape}")
    logp = z - z.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    bkg = np.logaddexp(np.log(f_c) + logp[:, 1] if f_c > 0 else -np.inf,
                       np.log1p(-f_c) + logp[:, 2] if f_c < 1 else -np.inf)
    return logp[:, 0] - bkg


class FlavourMetrics(NamedTuple):
    """b-tagging figures of merit (:func:`flavour_metrics`)."""

    light_rejection: float
    c_rejection: float
    auc_b_vs_light: float
    auc_b_vs_c: float
    accuracy: float
    b_efficiency: float
    f_c: float


class VertexBin(NamedTuple):
    """Vertex residuals and pulls in one bin of true decay length (:func:`vertex_performance`);
    ``median_residual_mm`` and ``pull_width_xyz`` are ``None`` for bins of fewer than 5 jets,
    ``L_max_mm`` for the open last bin."""

    L_min_mm: float
    L_max_mm: float | None
    jets: int
    median_residual_mm: float | None = None
    pull_width_xyz: tuple[float, float, float] | None = None


class TaggerResult(NamedTuple):
    """What :func:`train_flavour_tagger` returns: the trained model, its training
    :class:`History`, the held-out :class:`FlavourMetrics`, with a vertex layer the b jets'
    :func:`vertex_performance` and the fraction of b jets with a valid fit, the held-out
    ``evaluation`` (:func:`evaluate_tagger`) and the held-out row indices."""

    model: Any
    history: History
    metrics: FlavourMetrics
    vertex: list[VertexBin] | None
    vertex_valid_fraction_b: float | None
    evaluation: Table
    held_out: np.ndarray


def flavour_metrics(logits, labels, *, b_efficiency: float = 0.7,
                    f_c: float = 0.05) -> FlavourMetrics:
    """b-tagging figures of merit for labels (0 b, 1 c, 2 light): light and c rejection
    (1 / mistag efficiency) at ``b_efficiency``, ROC AUCs of b vs light and b vs c on
    :func:`b_discriminant`, and the 3-class accuracy."""
    labels = np.asarray(labels)
    d = b_discriminant(logits, f_c)
    b, c, light = labels == 0, labels == 1, labels == 2
    if not (b.any() and c.any() and light.any()):
        raise ValueError("flavour_metrics needs b, c and light jets")
    bl, bc = b | light, b | c
    return FlavourMetrics(
        light_rejection=background_rejection(d[bl], b[bl], b_efficiency),
        c_rejection=background_rejection(d[bc], b[bc], b_efficiency),
        auc_b_vs_light=roc_auc(d[bl], b[bl]),
        auc_b_vs_c=roc_auc(d[bc], b[bc]),
        accuracy=float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels)),
        b_efficiency=b_efficiency,
        f_c=f_c,
    )


def vertex_performance(position, cov, valid, sv, has_sv, *,
                       edges=(0.0, 0.5, 1.0, 2.0, 5.0, 10.0, np.inf)) -> list[VertexBin]:
    """Residuals and pulls of fitted vertices against the true decay vertex, in bins of the
    true decay length |sv| (mm). Per bin: jets, median 3D residual (mm), and the robust width
    (1.4826 x median absolute deviation) of the x, y, z pulls ``(fit - true) / sigma``; a
    well-calibrated unbiased fit has pull widths near 1. Uses jets with ``valid & has_sv``."""
    edges = np.asarray(edges, np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0:
        raise ValueError(f"edges must be >= 2 increasing decay lengths >= 0 (mm); got {edges!r}")
    position, cov, sv = (np.asarray(a, np.float64) for a in (position, cov, sv))
    use = np.asarray(valid, bool) & np.asarray(has_sv, bool)
    length = np.linalg.norm(sv, axis=-1)
    residual = position - sv
    sigma = np.sqrt(np.maximum(np.diagonal(cov, axis1=-2, axis2=-1), 1e-30))
    pulls = residual / sigma
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = use & (length >= lo) & (length < hi)
        row = VertexBin(float(lo), float(hi) if np.isfinite(hi) else None, int(sel.sum()))
        if sel.sum() >= 5:
            p = pulls[sel]
            width = 1.4826 * np.median(np.abs(p - np.median(p, axis=0)), axis=0)
            row = row._replace(
                median_residual_mm=float(np.median(np.linalg.norm(residual[sel], axis=-1))),
                pull_width_xyz=tuple(round(float(x), 3) for x in width))
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=8)
def _forward(graphdef):
    @jax.jit
    def run(state, batch):
        model = nnx.merge(graphdef, state)
        out = model(batch)
        keep = {"logits": out.logits, "weights": out.weights}
        if out.vertex is not None:
            keep.update(position=out.vertex.position, cov=out.vertex.cov,
                        valid=out.vertex.valid)
        return keep

    return run


def evaluate_tagger(model: VertexTagger, data: Mapping, *, batch_size: int = 1024) -> Table:
    """Run ``model`` over ``data`` (:func:`difphys.io.jet_tracks` arrays) in batches; returns
    a :class:`~difphys.io.Table` of numpy ``logits``, ``weights`` and, with a vertex layer,
    ``position``, ``cov``, ``valid``, one row per jet."""
    check_count(batch_size, "batch_size")
    n = len(data["mask"])
    if n == 0:
        raise ValueError("no jets to evaluate")
    graphdef, state = nnx.split(model)
    run = _forward(graphdef)
    keys = [k for k in TAGGER_INPUTS if k in data and k != "label"]
    parts = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        idx = np.r_[start:stop, np.full(batch_size - (stop - start), start)]  # fixed shapes
        out = run(state, {k: jnp.asarray(data[k][idx]) for k in keys})
        parts.append(Table({k: np.asarray(v)[: stop - start] for k, v in out.items()}))
    return concatenate(parts)


def train_flavour_tagger(data: Mapping, *, vertex: str = "learned", steps: int = 1000,
                         batch_size: int = 256, key, learning_rate: float = 1e-3,
                         aux_weight: float = 1.0, dim: int = 64, layers: int = 2,
                         heads: int = 4, val_fraction: float = 0.25, split_seed: int = 0,
                         bfield: float = 2.0, mesh=None, progress: bool = True
                         ) -> TaggerResult:
    """Train a :class:`difphys.nn.VertexTagger` on b / c / light jets and evaluate it on a
    held-out split.

    Args:
        data: :func:`difphys.io.jet_tracks` arrays with labels (0 b, 1 c, 2 light).
        vertex: ``"learned"``, ``"none"`` or ``"truth"`` (see :class:`VertexTagger`).
        steps, batch_size, learning_rate: Adam with cosine decay, gradient clipping at 1.
        aux_weight: weight of the track-origin auxiliary loss (0 switches it off).
        key: PRNG key (initialisation, batch order).
        mesh: optional ``difphys.sharding.make_mesh()``: batches split over its devices.

    Returns a :class:`TaggerResult`: the model, its history, :func:`flavour_metrics` on the
    held-out jets, with a vertex layer :func:`vertex_performance` of the b jets, and the
    held-out ``evaluation``.
    """
    missing = sorted(set(TAGGER_INPUTS) - set(data))
    if missing:
        raise KeyError(f"tagger data lacks {missing} (see difphys.io.jet_tracks)")
    train_idx, val_idx = _split(len(data["label"]), val_fraction, split_seed)
    train = Table({k: data[k][train_idx] for k in TAGGER_INPUTS})
    k_init, k_fit = jax.random.split(key)
    model = VertexTagger(data["features"].shape[-1], 3, vertex=vertex, dim=dim, heads=heads,
                         layers=layers, bfield=bfield,
                         rngs=nnx.Rngs(int(jax.random.randint(k_init, (), 0, 2**31 - 1))))
    schedule = optax.cosine_decay_schedule(learning_rate, max(steps, 1))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    loss_fn = _loss_with(float(aux_weight))
    model, history = fit(model, train, steps=steps, batch_size=batch_size, key=k_fit,
                         optimizer=optimizer, loss_fn=loss_fn, mesh=mesh,
                         progress=progress)
    held = Table(data).take(val_idx)
    ev = evaluate_tagger(model, held)
    metrics = flavour_metrics(ev["logits"], held["label"])
    vertex_bins = valid_b = None
    if "position" in ev:
        b = held["label"] == 0
        vertex_bins = vertex_performance(ev["position"][b], ev["cov"][b], ev["valid"][b],
                                         held["sv"][b], held["has_sv"][b])
        valid_b = float(np.mean(ev["valid"][b]))
    return TaggerResult(model, history, metrics, vertex_bins, valid_b, ev, val_idx)


@functools.lru_cache(maxsize=8)
def _loss_with(aux_weight: float):
    """One loss function object per auxiliary weight (so compiled steps are reused)."""
    return functools.partial(tagger_loss, aux_weight=aux_weight)
