"""``difphys train``: a Particle Transformer jet classifier trained on JetClass-schema files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from ._loop import fit, predict, save_history
from ._metrics import accuracy, binary_metrics, roc_curve


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(training, held-out)`` indices of ``n`` examples, the held-out fraction drawn
    by a seeded permutation (shared by ``difphys train`` and ``difphys finetune``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1); got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def class_logit(logits, k: int = 0) -> np.ndarray:
    """log(p_k / (1 - p_k)) of softmax(logits) in float64: a score for class ``k`` against
    the rest (``logits[:, 0] - logits[:, 1]`` for two classes) that does not saturate."""
    z = np.asarray(logits, dtype=np.float64)
    rest = np.delete(z, k, axis=1)
    top = rest.max(axis=1, keepdims=True)
    return z[:, k] - (top[:, 0] + np.log(np.exp(rest - top).sum(axis=1)))


def _plot_roc(path, eff_s, eff_b, auc, label):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    keep = eff_b > 0
    ax.semilogy(eff_s[keep], 1.0 / eff_b[keep], label=f"{label} (AUC {auc:.3f})")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background rejection 1 / eff_bkg")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
) -> dict:
    """Train a Particle Transformer to tell the ``labels`` classes apart (class 0 is the
    signal in the ROC metrics) and evaluate it on a held-out split.

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
    recorded configuration. Returns the metrics.
    """
    from ..io import load_jets
    from ..nn import ParTConfig, ParticleTransformer, count_params
    from ..sharding import make_mesh

    out = Path(out)
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
    if model_size not in ("small", "full"):
        raise ValueError(f"model_size must be 'small' or 'full'; got {model_size!r}")
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise FileExistsError(f"{out} exists; pass resume=True (--resume) to continue it")
        recorded = json.loads((out / "config.json").read_text())
        changed = {k for k in set(config) | set(recorded)
                   if k != "steps" and recorded.get(k) != config.get(k)}
        if changed:
            raise ValueError(f"--resume with a different configuration: {sorted(changed)} "
                             f"differ from {out / 'config.json'}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))

    data = load_jets(config["files"], labels, max_particles=max_particles)
    train_idx, val_idx = _split(len(data["label"]), val_fraction, seed)
    train = {k: v[train_idx] for k, v in data.items()}
    val = {k: v[val_idx] for k, v in data.items()}
    n_classes = len(labels)
    cfg = (ParTConfig.small(num_classes=n_classes) if model_size == "small"
           else ParTConfig(num_classes=n_classes))
    model = ParticleTransformer(cfg, rngs=nnx.Rngs(seed))
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
    score = class_logit(logits, 0)
    is_signal = val["label"] == 0
    eff_s, eff_b = roc_curve(score, is_signal)
    roc = binary_metrics(score, is_signal)
    metrics = {
        "labels": list(labels),
        "train_jets": int(len(train_idx)),
        "val_jets": int(len(val_idx)),
        "params": count_params(model),
        "devices": int(mesh.size) if mesh is not None else 1,
        "train_seconds_this_run": train_seconds,
        "val_auc": roc["auc"],
        "val_accuracy": accuracy(logits, val["label"]),
        "rejection_at_50": roc["rejection_at_50"],
        "rejection_at_30": roc["rejection_at_30"],
        "rejection_lower_bound": roc.get("rejection_lower_bound"),
        "final_train_loss": history[-1]["loss"] if history else None,
    }
    save_history(out / ("history.jsonl" if not resume else "history_resumed.jsonl"), history)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _plot_roc(out / "roc.png", eff_s, eff_b, metrics["val_auc"],
              f"{labels[0]} vs {', '.join(labels[1:])}")
    return metrics
