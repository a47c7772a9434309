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
import optax
from flax import nnx

from ..io import load_events, load_jets
from ..nn import (
    ANGULAR_FEATURES,
    VQVAE,
    EventClassifier,
    JetClassifier,
    KMeansTokenizer,
    MaskedParticleModel,
    ParTConfig,
    ParticleTransformer,
)
from ..train import (
    IMPACT_FEATURES,
    STRATEGIES,
    RankGauss,
    TokenInputs,
    binary_metrics,
    class_logit,
    codebook_utilisation,
    context_free_baseline,
    finetune,
    fit,
    fit_vqvae,
    load_module,
    predict,
    pretrain_mpm,
    save_module,
    token_entropy,
    token_r2,
)
from ..train._split import _split
from ._classes import SIGNAL_CLASS
from ._report import Report
from ._runs import prepare_run_dir, write_json, write_run_config


def _read_meta(folder, kind: str) -> dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a difphys {kind} folder (no meta.json)")
    meta = json.loads(path.read_text())
    if meta.get("kind") != kind:
        raise ValueError(f"{folder} holds a {meta.get('kind')!r}, not a {kind!r}")
    return meta


def _save_token_inputs(folder: Path, inputs: TokenInputs) -> None:
    arrays = {"features": np.asarray(inputs.features)}
    if inputs.transform is not None:
        for i, (v, p) in enumerate(zip(*inputs.transform, strict=True)):
            arrays[f"values_{i}"], arrays[f"probs_{i}"] = v, p
    np.savez(folder / "token_inputs.npz", **arrays)


def _load_token_inputs(folder: Path) -> TokenInputs:
    path = folder / "token_inputs.npz"
    if not path.exists():  # written before token inputs existed: all 17 raw features
        return TokenInputs(tuple(range(17)), None)
    with np.load(path) as f:
        features = tuple(int(i) for i in f["features"])
        if "values_0" not in f:
            return TokenInputs(features, None)
        k = len(features)
        return TokenInputs(features, RankGauss(tuple(f[f"values_{i}"] for i in range(k)),
                                               tuple(f[f"probs_{i}"] for i in range(k))))


def load_tokenizer(folder):
    """``(tokeniser, meta, token_inputs)`` saved by :func:`fit_tokenizer_files`."""
    meta = _read_meta(folder, "tokenizer")
    if meta["method"] == "kmeans":
        module = KMeansTokenizer(jnp.zeros((meta["codebook_size"], meta["input_dim"])))
    else:
        module = VQVAE(meta["input_dim"], codebook_size=meta["codebook_size"],
                       latent_dim=meta["latent_dim"], hidden=meta["hidden"], rngs=nnx.Rngs(0))
    return load_module(folder, module), meta, _load_token_inputs(Path(folder))


def _tokens(tok, inputs: TokenInputs, features) -> np.ndarray:
    return np.concatenate([np.asarray(tok.tokenize(jnp.asarray(inputs.apply(features[i:i + 4096]))))
                           for i in range(0, len(features), 4096)])


def fit_tokenizer_files(files, out, *, method: str = "vqvae", codebook_size: int = 512,
                        steps: int = 1000, max_particles: int = 64, rank_gauss: bool = True,
                        seed: int = 0, overwrite: bool = False, progress: bool = True) -> Report:
    """Fit a particle tokeniser (``vqvae`` or ``kmeans``) on the particles of ``files``
    and save it to ``out``. Its input is :class:`difphys.train.TokenInputs`: the features
    that :class:`difphys.nn.MaskedParticleModel` does not reveal, rank-Gauss transformed
    unless ``rank_gauss=False``. Returns the metadata with the codebook utilisation and the
    tokens' R^2 of d0, d0 error, dz and dz error."""
    if method not in ("vqvae", "kmeans"):
        raise ValueError(f"method must be 'vqvae' or 'kmeans'; got {method!r}")
    files = [str(f) for f in np.atleast_1d(files)]
    run_config = dict(command="tokenize", files=files, method=method,
                      codebook_size=codebook_size, steps=steps,
                      max_particles=max_particles, rank_gauss=rank_gauss,
                      seed=seed)
    out = prepare_run_dir(out, run_config, policy="overwrite" if overwrite else "new", write=False)
    jets = load_jets(files, None, max_particles=max_particles)
    write_run_config(out, run_config)  # the inputs are readable: now the folder is made
    key = jax.random.key(seed)
    inputs = TokenInputs.fit(jets["features"], jets["mask"], rank_gauss=rank_gauss)
    x = inputs.apply(jets["features"])
    dim = len(inputs.features)
    meta = dict(kind="tokenizer", method=method, codebook_size=codebook_size, input_dim=dim,
                token_features=list(inputs.features), rank_gauss=rank_gauss, files=files,
                max_particles=max_particles)
    if method == "kmeans":
        tok = KMeansTokenizer.fit(key, x, jets["mask"], codebook_size=codebook_size)
    else:
        meta.update(latent_dim=8, hidden=64)
        tok = VQVAE(dim, codebook_size=codebook_size, latent_dim=8, hidden=64,
                    rngs=nnx.Rngs(seed))
        tok, history = fit_vqvae(tok, x, jets["mask"], key=key, steps=steps, progress=progress)
        meta["final_recon"] = history.last("recon") if history.n_rows else None
    n = min(len(jets["mask"]), 20_000)
    meta["codebook_utilisation"] = codebook_utilisation(tok, x[:n], jets["mask"][:n])
    tokens = _tokens(tok, inputs, jets["features"][:n])
    r2 = token_r2(tokens, jets["features"][:n][..., list(IMPACT_FEATURES)], jets["mask"][:n])
    meta["token_r2"] = dict(zip(("d0", "d0err", "dz", "dzerr"), (round(float(v), 4) for v in r2),
                                strict=True))
    save_module(out, tok, meta)
    _save_token_inputs(out, inputs)
    return Report("tokenize", out, meta, (
        f"{meta['method']} tokeniser with {meta['codebook_size']} codes on {dim} features "
        f"({'rank-Gauss' if rank_gauss else 'ParT-standardised'}): "
        f"{100 * meta['codebook_utilisation']:.1f}% of the codebook used, R^2 of d0 "
        f"{meta['token_r2']['d0']:.2f}, dz {meta['token_r2']['dz']:.2f}; wrote {out}",))


def _save_backbone(out: Path, backbone, history, **meta) -> dict:
    """Write ``out/backbone`` (the module and its meta) and ``out/meta.json``; returns the
    meta with the first and final logged loss."""
    meta = dict(kind="backbone", **meta,
                first_loss=float(history.loss[0]) if history.n_rows else None,
                final_loss=history.last("loss") if history.n_rows else None)
    save_module(out / "backbone", backbone, meta)
    write_json(out / "meta.json", meta)
    return meta


def pretrain_files(files, tokenizer, out, *, model_size: str = "small", steps: int = 2000,
                   batch_size: int = 128, fraction: float = 0.4, max_particles: int = 64,
                   learning_rate: float = 1e-3, seed: int = 0, resume: bool = False,
                   progress: bool = True) -> Report:
    """Masked-particle-modelling pretraining on the (unlabelled) jets of ``files`` with the
    tokeniser saved in ``tokenizer``; checkpoints in ``out/checkpoints`` (``resume`` continues
    them), the backbone in ``out``. Returns the metadata with the loss history summary."""
    files = [str(f) for f in np.atleast_1d(files)]
    run_config = dict(command="pretrain", files=files, tokenizer=str(tokenizer),
                      model_size=model_size, steps=steps, batch_size=batch_size,
                      fraction=fraction, max_particles=max_particles,
                      learning_rate=learning_rate, seed=seed)
    out = prepare_run_dir(out, run_config, policy="resume" if resume else "new", write=False)
    cfg = ParTConfig.named(model_size, num_classes=0)
    tok, tok_meta, inputs = load_tokenizer(tokenizer)
    jets = load_jets(files, None, max_particles=max_particles)
    model = MaskedParticleModel(ParticleTransformer(cfg, rngs=nnx.Rngs(seed)),
                                tok_meta["codebook_size"], token_features=inputs.features,
                                rngs=nnx.Rngs(seed + 1))
    write_run_config(out, run_config)
    tokens = _tokens(tok, inputs, jets["features"])
    m, half = jets["mask"], len(jets["mask"]) // 2
    rev = jets["features"][..., list(ANGULAR_FEATURES)]
    baseline = context_free_baseline(rev[:half][m[:half]], tokens[:half][m[:half]],
                                     rev[half:][m[half:]], tokens[half:][m[half:]],
                                     codebook_size=tok_meta["codebook_size"])
    _, history = pretrain_mpm(model, {**jets, "tokens": tokens}, steps=steps,
                              batch_size=batch_size, key=jax.random.key(seed), fraction=fraction,
                              learning_rate=learning_rate, checkpoint_dir=out / "checkpoints",
                              progress=progress)
    meta = _save_backbone(out, model.backbone, history, method="mpm", model_size=model_size,
                          config=dataclasses.asdict(cfg), tokenizer=str(tokenizer),
                          jets=int(len(tokens)), steps=steps, max_particles=max_particles,
                          token_entropy=token_entropy(tokens, jets["mask"]),
                          context_free_loss=baseline.cross_entropy)
    return Report("pretrain", out, meta, (
        f"masked particle modelling on {meta['jets']} jets: loss {meta['first_loss']:.3f} -> "
        f"{meta['final_loss']:.3f} (token entropy {meta['token_entropy']:.3f}, context-free "
        f"lookup from the revealed angles {meta['context_free_loss']:.3f}); "
        f"backbone in {out}/backbone",))


def pretrain_supervised_files(files, out, *, labels=("label_b", "label_uds"),
                              model_size: str = "small", steps: int = 2000,
                              batch_size: int = 128, max_particles: int = 64,
                              learning_rate: float = 1e-3, test_fraction: float = 0.1,
                              seed: int = 0, resume: bool = False,
                              progress: bool = True) -> Report:
    """Supervised pretraining (Vigl, Hartman, Heinrich, arXiv:2401.13536): a jet classifier
    on the labelled source task ``labels`` (class k = the k-th label) of ``files``; its
    backbone is saved in ``out/backbone`` in the format :func:`finetune_files` reads, so a
    related target task can start from it (frozen / finetune) or from scratch. The source
    test AUC (first label against the rest, on a ``test_fraction`` split) is recorded."""
    files = [str(f) for f in np.atleast_1d(files)]
    labels = list(labels)
    if len(labels) < 2:
        raise ValueError(f"supervised pretraining needs at least two labels; got {labels}")
    run_config = dict(command="pretrain", method="supervised", files=files,
                      labels=labels, model_size=model_size, steps=steps,
                      batch_size=batch_size, max_particles=max_particles,
                      learning_rate=learning_rate, test_fraction=test_fraction,
                      seed=seed)
    out = prepare_run_dir(out, run_config, policy="resume" if resume else "new", write=False)
    cfg = ParTConfig.named(model_size, num_classes=0)
    data = load_jets(files, labels, max_particles=max_particles)
    train_idx, test_idx = _split(len(data["label"]), test_fraction, seed)
    train, test = data.take(train_idx), data.take(test_idx)
    model = JetClassifier(ParticleTransformer(cfg, rngs=nnx.Rngs(seed)), len(labels),
                          rngs=nnx.Rngs(seed + 1))
    write_run_config(out, run_config)
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
    _, history = fit(model, train, steps=steps, batch_size=batch_size, key=jax.random.key(seed),
                     optimizer=optax.adamw(schedule), checkpoint_dir=out / "checkpoints",
                     progress=progress)
    roc = binary_metrics(class_logit(predict(model, test), SIGNAL_CLASS),
                         test["label"] == SIGNAL_CLASS)
    meta = _save_backbone(out, model.backbone, history, method="supervised",
                          model_size=model_size, config=dataclasses.asdict(cfg), labels=labels,
                          jets=int(len(train_idx)), steps=steps, max_particles=max_particles,
                          source_test_auc=float(roc.auc))
    return Report("pretrain", out, meta, (
        f"supervised pretraining on {meta['jets']} jets ({' vs '.join(labels)}): loss "
        f"{meta['first_loss']:.3f} -> {meta['final_loss']:.3f}, source test AUC "
        f"{meta['source_test_auc']:.4f}; backbone in {out}/backbone",))


def finetune_files(files, out, *, labels=("label_b", "label_uds"), pretrained=None,
                   strategy: str = "finetune", event_level: bool = False,
                   model_size: str | None = None, budget: int | None = None,
                   steps: int = 500, batch_size: int = 64, learning_rate: float = 1e-3,
                   backbone_lr_factor: float = 1.0, frozen_warmup_steps: int | None = None,
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
    run_config = dict(command="finetune", files=files, labels=list(labels),
                      pretrained=None if pretrained is None else str(pretrained),
                      strategy=strategy, event_level=event_level,
                      model_size=model_size, budget=budget, steps=steps,
                      batch_size=batch_size, learning_rate=learning_rate,
                      backbone_lr_factor=backbone_lr_factor,
                      frozen_warmup_steps=frozen_warmup_steps,
                      test_fraction=test_fraction, max_particles=max_particles,
                      seed=seed)
    out = prepare_run_dir(out, run_config, policy="overwrite" if overwrite else "new", write=False)
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
    write_run_config(out, run_config)
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
    write_json(out / "metrics.json", metrics)
    rej = metrics["rejection_at_50"]
    return Report("finetune", out, metrics, (
        f"{strategy}: {metrics['train_examples']} training examples, test ROC AUC "
        f"{metrics['test_auc']:.4f}, rejection at 50% signal efficiency "
        f"{'inf' if rej is None else f'{rej:.1f}'}; wrote {out}/metrics.json",))
