"""``difphys train``: a Particle Transformer jet classifier trained on JetClass-schema files."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from .._checks import check_count
from ..io import load_jets
from ..nn import ParTConfig, ParticleTransformer, count_params
from ..sharding import make_mesh
from ..train import accuracy, binary_metrics, class_logit, fit, predict, roc_curve
from ..train._split import _split
from ._classes import SIGNAL_CLASS
from ._plots import plot_roc
from ._report import Report
from ._runs import prepare_run_dir, save_history, write_json, write_run_config


def train_jet_classifier(
    files,
    labels,
    out,
    *,
    model_size: str = "small",
    steps: int = 1000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    val_fraction: float = 0.2,
    max_particles: int = 64,
    seed: int = 0,
    resume: bool = False,
    sharded: bool = True,
    progress: bool = True,
    trim: int | None = None,
    trim_quantile: float | tuple[float, float] | None = None,
    bucket: int | None = None,
) -> Report:
    """Train a Particle Transformer to tell the ``labels`` classes apart (class 0, the first
    label, is the signal in the ROC metrics: :data:`SIGNAL_CLASS`) and evaluate it on a held-out split.

    Writes to the folder ``out``: ``config.json``, ``history.jsonl`` (loss, accuracy per
    logged step), ``checkpoints/`` (orbax, for ``resume``), ``metrics.json`` (validation ROC
    AUC, accuracy, background rejection at 50% and 30% signal efficiency) and ``roc.png``.
    With ``sharded`` the batch is split over all devices (``difphys.sharding.make_mesh``).
    With ``trim`` (e.g. 16) each batch is cut to its longest jet rounded up to a multiple of
    ``trim`` (:func:`difphys.io.trim_padding`): the same model, less work on padded jets.
    ``trim_quantile`` adds weaver-core's lossy training-time cut to a quantile of the jet
    lengths; evaluation stays exact (and batches the jets by length). ``bucket`` (with
    ``trim``) groups training jets of similar length into the same batch
    (:func:`difphys.io.epoch_batches`).
    An existing ``out`` is refused unless ``resume``, which continues its checkpoint with the
    recorded configuration. Returns a :class:`Report` with the metrics.
    """
    config = dict(files=[str(f) for f in ([files] if isinstance(files, (str, Path)) else files)],
                  labels=list(labels), model_size=model_size, steps=steps,
                  batch_size=batch_size, learning_rate=learning_rate,
                  val_fraction=val_fraction, max_particles=max_particles, seed=seed)
    if trim is not None:  # recorded only when used, so older run folders still resume
        config["trim"] = trim
    if trim_quantile is not None:
        config["trim_quantile"] = (list(trim_quantile) if isinstance(trim_quantile, tuple)
                                   else trim_quantile)  # as JSON reads it back
    if bucket is not None:
        config["bucket"] = bucket
    cfg = ParTConfig.named(model_size, num_classes=len(labels))  # refuses unknown sizes
    out = prepare_run_dir(out, config, policy="resume" if resume else "new", write=False)
    for name, value in (("steps", steps), ("batch_size", batch_size),
                        ("max_particles", max_particles)):
        check_count(value, name)
    if not (0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must lie in (0, 1); got {val_fraction!r}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and positive; got {learning_rate!r}")

    data = load_jets(config["files"], labels, max_particles=max_particles)
    train_idx, val_idx = _split(len(data["label"]), val_fraction, seed)
    train, val = data.take(train_idx), data.take(val_idx)
    model = ParticleTransformer(cfg, rngs=nnx.Rngs(seed))
    write_run_config(out, config)  # only a request that passed every check leaves a folder
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(100, steps // 10 + 1),
                                                  steps)
    mesh = make_mesh() if sharded and batch_size % jax.device_count() == 0 else None
    t0 = time.perf_counter()
    model, history = fit(model, train, steps=steps, batch_size=batch_size,
                         key=jax.random.key(seed), optimizer=optax.adamw(schedule),
                         checkpoint_dir=out / "checkpoints", checkpoint_every=max(1, steps // 10),
                         mesh=mesh, progress=progress, trim=trim,
                         trim_quantile=trim_quantile, bucket=bucket)
    train_seconds = time.perf_counter() - t0
    logits = predict(model, val, trim=trim)
    score = class_logit(logits, SIGNAL_CLASS)
    is_signal = val["label"] == SIGNAL_CLASS
    eff_s, eff_b = roc_curve(score, is_signal)
    roc = binary_metrics(score, is_signal)
    metrics = {
        "labels": list(labels),
        "train_jets": int(len(train_idx)),
        "val_jets": int(len(val_idx)),
        "params": count_params(model),
        "devices": int(mesh.size) if mesh is not None else 1,
        "train_seconds_this_run": train_seconds,
        "val_auc": roc.auc,
        "val_accuracy": accuracy(logits, val["label"]),
        "rejection_at_50": roc.rejection_at(0.5),
        "rejection_at_30": roc.rejection_at(0.3),
        "rejection_lower_bound": roc.rejection_lower_bound,
        "final_train_loss": history.last("loss") if history.n_rows else None,
    }
    save_history(out / "history.jsonl", history, append=resume)
    write_json(out / "metrics.json", metrics)
    plot_roc(out / "roc.png", eff_s, eff_b, metrics["val_auc"],
             f"{labels[0]} vs {', '.join(labels[1:])}")

    def rej(x):
        return f"> {metrics['rejection_lower_bound']} (no background passes)" if x is None \
            else f"{x:.1f}"

    lines = (f"{labels[0]} vs {', '.join(labels[1:])}: {metrics['train_jets']} training / "
             f"{metrics['val_jets']} validation jets, {metrics['params']} parameters, "
             f"{metrics['devices']} device(s)",
             f"validation ROC AUC {metrics['val_auc']:.4f}, accuracy "
             f"{metrics['val_accuracy']:.4f}, rejection {rej(metrics['rejection_at_50'])} at 50% "
             f"and {rej(metrics['rejection_at_30'])} at 30% signal efficiency",
             f"wrote {out}/metrics.json, roc.png, history and checkpoints")
    return Report("train", out, metrics, lines)
