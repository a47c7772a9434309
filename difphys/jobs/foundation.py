"""``difphys tokenize``, ``difphys pretrain`` and ``difphys finetune``: each step reads
JetClass-schema files and writes a folder holding ``config.json``, a ``meta.json`` and the
module's state (orbax, through :mod:`difphys.train`'s checkpoint module)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..io import load_events, load_jets
from ..nn import (
    VQVAE,
    EventClassifier,
    JetClassifier,
    KMeansTokenizer,
    MaskedParticleModel,
    ParTConfig,
    ParticleTransformer,
)
from ..train import (
    STRATEGIES,
    binary_metrics,
    class_logit,
    codebook_utilisation,
    finetune,
    fit_vqvae,
    load_module,
    predict,
    pretrain_mpm,
    save_module,
    token_entropy,
)
from ..train._split import _split
from ._classes import SIGNAL_CLASS
from ._report import Report
from ._runs import prepare_run_dir


def _read_meta(folder, kind: str) -> dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a difphys {kind} folder (no meta.json)")
    meta = json.loads(path.read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{folder} holds a {meta.get('kind')!r}, not a {kind!r}")
    return meta


def load_tokenizer(folder):
    """The tokeniser saved by :func:`fit_tokenizer_files`."""
    meta = _read_meta(folder, "tokenizer")
    if meta["method"] == "kmeans":
        module = KMeansTokenizer(jnp.zeros((meta["codebook_size"], meta["input_dim"])))
    else:
        module = VQVAE(meta["input_dim"], codebook_size=meta["codebook_size"],
                       latent_dim=meta["latent_dim"], hidden=meta["hidden"], rngs=nnx.Rngs(0))
    return load_module(folder, module), meta


def fit_tokenizer_files(files, out, *, method: str = "vqvae", codebook_size: int = 512,
                        steps: int = 1000, max_particles: int = 64, seed: int = 0,
                        overwrite: bool = False, progress: bool = True) -> Report:
    """Fit a particle tokeniser (``vqvae`` or ``kmeans``) on the particles of ``files``
    and save it to ``out``; returns the metadata (with the codebook utilisation)."""
    if method not in ("vqvae", "kmeans"):
        raise ValueError(f"method must be 'vqvae' or 'kmeans'; got {method!r}")
    files = [str(f) for f in np.atleast_1d(files)]
    out = prepare_run_dir(out, dict(command="tokenize", files=files, method=method,
                                    codebook_size=codebook_size, steps=steps,
                                    max_particles=max_particles, seed=seed),
                          policy="overwrite" if overwrite else "new")
    jets = load_jets(files, None, max_particles=max_particles)
    key = jax.random.key(seed)
    meta = dict(kind="tokenizer", method=method, codebook_size=codebook_size, input_dim=17,
                files=files, max_particles=max_particles)
    if method == "kmeans":
        tok = KMeansTokenizer.fit(key, jets["features"], jets["mask"],
                                  codebook_size=codebook_size)
    else:
        meta.update(latent_dim=8, hidden=64)
        tok = VQVAE(17, codebook_size=codebook_size, latent_dim=8, hidden=64,
                    rngs=nnx.Rngs(seed))
        tok, history = fit_vqvae(tok, jets["features"], jets["mask"], key=key, steps=steps,
                                 progress=progress)
        meta["final_recon"] = history.last("recon") if history.n_rows else None
    n = min(len(jets["mask"]), 20_000)
    meta["codebook_utilisation"] = codebook_utilisation(tok, jets["features"][:n],
                                                        jets["mask"][:n])
    save_module(out, tok, meta)
    return Report("tokenize", out, meta, (
        f"{meta['method']} tokeniser with {meta['codebook_size']} codes: "
        f"{100 * meta['codebook_utilisation']:.1f}% of the codebook used; wrote {out}",))


def pretrain_files(files, tokenizer, out, *, model_size: str = "small", steps: int = 2000,
                   batch_size: int = 128, fraction: float = 0.4, max_particles: int = 64,
                   learning_rate: float = 1e-3, seed: int = 0, resume: bool = False,
                   progress: bool = True) -> Report:
    """Masked-particle-modelling pretraining on the (unlabelled) jets of ``files`` with the
    tokeniser saved in ``tokenizer``; checkpoints in ``out/checkpoints`` (``resume`` continues
    them), the backbone in ``out``. Returns the metadata with the loss history summary."""
    files = [str(f) for f in np.atleast_1d(files)]
    out = prepare_run_dir(out, dict(command="pretrain", files=files, tokenizer=str(tokenizer),
                                    model_size=model_size, steps=steps, batch_size=batch_size,
                                    fraction=fraction, max_particles=max_particles,
                                    learning_rate=learning_rate, seed=seed),
                          policy="resume" if resume else "new")
    cfg = ParTConfig.named(model_size, num_classes=0)
    tok, tok_meta = load_tokenizer(tokenizer)
    jets = load_jets(files, None, max_particles=max_particles)
    tokens = np.concatenate([
        np.asarray(tok.tokenize(jnp.asarray(jets["features"][i:i + 4096])))
        for i in range(0, len(jets["mask"]), 4096)])
    model = MaskedParticleModel(ParticleTransformer(cfg, rngs=nnx.Rngs(seed)),
                                tok_meta["codebook_size"], rngs=nnx.Rngs(seed + 1))
    _, history = pretrain_mpm(model, {**jets, "tokens": tokens}, steps=steps,
                              batch_size=batch_size, key=jax.random.key(seed), fraction=fraction,
                              learning_rate=learning_rate, checkpoint_dir=out / "checkpoints",
                              progress=progress)
    meta = dict(kind="backbone", model_size=model_size, config=dataclasses.asdict(cfg),
                tokenizer=str(tokenizer), jets=int(len(tokens)), steps=steps,
                token_entropy=token_entropy(tokens, jets["mask"]),
                first_loss=float(history.loss[0]) if history.n_rows else None,
                final_loss=history.last("loss") if history.n_rows else None,
                max_particles=max_particles)
    save_module(out / "backbone", model.backbone, meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return Report("pretrain", out, meta, (
        f"masked particle modelling on {meta['jets']} jets: loss {meta['first_loss']:.3f} -> "
        f"{meta['final_loss']:.3f} (token entropy {meta['token_entropy']:.3f}); "
        f"backbone in {out}/backbone",))


def finetune_files(files, out, *, labels=("label_b", "label_uds"), pretrained=None,
                   strategy: str = "finetune", event_level: bool = False,
                   model_size: str | None = None, budget: int | None = None,
                   steps: int = 500, batch_size: int = 64, learning_rate: float = 1e-3,
                   backbone_lr_factor: float = 0.1, frozen_warmup_steps: int = 0,
                   test_fraction: float = 0.3, max_particles: int = 64, seed: int = 0,
                   progress: bool = True, overwrite: bool = False) -> Report:
    """Train a jet classifier (``labels``, signal first) or, with ``event_level``, a DeepSets
    event classifier on ``label_signal`` (files with ``event_id``, e.g. ``hh4b``) with the
    backbone saved by :func:`pretrain_files` in ``pretrained`` and a fine-tuning ``strategy``
    (``frozen``, ``finetune``, ``scratch``). ``budget`` limits the labelled training examples.
    Evaluates ROC AUC and background rejection at 50% signal efficiency on a held-out split
    and writes ``metrics.json`` to ``out``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    if strategy != "scratch" and pretrained is None:
        raise ValueError(f"strategy {strategy!r} needs a pretrained backbone (--pretrained)")
    files = [str(f) for f in np.atleast_1d(files)]
    out = prepare_run_dir(out, dict(command="finetune", files=files, labels=list(labels),
                                    pretrained=None if pretrained is None else str(pretrained),
                                    strategy=strategy, event_level=event_level,
                                    model_size=model_size, budget=budget, steps=steps,
                                    batch_size=batch_size, learning_rate=learning_rate,
                                    backbone_lr_factor=backbone_lr_factor,
                                    frozen_warmup_steps=frozen_warmup_steps,
                                    test_fraction=test_fraction, max_particles=max_particles,
                                    seed=seed),
                          policy="overwrite" if overwrite else "new")
    if pretrained is not None:
        meta = _read_meta(Path(pretrained) / "backbone", "backbone")
        cfg = ParTConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in meta["config"].items()})
    else:
        cfg = ParTConfig.named(model_size or "small", num_classes=0)
    if event_level:
        events = load_events(files, max_particles=max_particles)
        # label_signal == 1 is the signal: class SIGNAL_CLASS (0), as in every job
        data = events.select("features", "p4", "mask").replace(
            label=(events["label"] != 1).astype(np.int32))
    else:  # class k is the k-th label; the first (the signal) is class SIGNAL_CLASS (0)
        data = load_jets(files, list(labels), max_particles=max_particles)
    train_idx, test_idx = _split(len(data["label"]), test_fraction, seed)
    if budget is not None:
        train_idx = train_idx[:budget]
    train, test = data.take(train_idx), data.take(test_idx)
    backbone = ParticleTransformer(cfg, rngs=nnx.Rngs(seed))
    if strategy != "scratch":
        load_module(Path(pretrained) / "backbone", backbone)
    model = (EventClassifier(backbone, 2, rngs=nnx.Rngs(seed + 1)) if event_level
             else JetClassifier(backbone, 2, rngs=nnx.Rngs(seed + 1)))
    _, history = finetune(model, train, strategy, steps=steps,
                          batch_size=min(batch_size, len(train_idx)), key=jax.random.key(seed),
                          learning_rate=learning_rate, backbone_lr_factor=backbone_lr_factor,
                          frozen_warmup_steps=frozen_warmup_steps, progress=progress)
    roc = binary_metrics(class_logit(predict(model, test), SIGNAL_CLASS),
                         test["label"] == SIGNAL_CLASS)
    record = roc.record()
    metrics = dict(strategy=strategy, event_level=event_level, train_examples=len(train_idx),
                   test_examples=len(test_idx), test_auc=record.pop("auc"), **record,
                   final_train_loss=history.last("loss") if history.n_rows else None)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    rej = metrics["rejection_at_50"]
    return Report("finetune", out, metrics, (
        f"{strategy}: {metrics['train_examples']} training examples, test ROC AUC "
        f"{metrics['test_auc']:.4f}, rejection at 50% signal efficiency "
        f"{'inf' if rej is None else f'{rej:.1f}'}; wrote {out}/metrics.json",))
