"""Foundation-model workflow: fit a particle tokeniser, pretrain a backbone by masked particle
modelling, and fine-tune it with one of three strategies (frozen / finetune / scratch) through
optax parameter partitioning."""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .._checks import check_count
from ..nn import mpm_loss
from ._loop import TrainState, _modes, _restore_modes, fit, init_state, make_train_step
from ._run import History, training_loop

STRATEGIES = ("frozen", "finetune", "scratch")


class VQStepInfo(NamedTuple):
    """One VQ-VAE step: the loss, ``skipped``, the reconstruction MSE and the fraction of codes
    used since the last restart (measured before a restart moves the dead ones)."""

    loss: jax.Array
    skipped: jax.Array
    recon: jax.Array
    codes_used: jax.Array


def _vq_loss(model, x, *, key):
    del key
    return model.loss(x, jnp.ones(x.shape[:-1], bool))


@functools.lru_cache(maxsize=8)
def _vq_step(graphdef, optimizer, restart_every: int, steps: int):
    """The jitted VQ-VAE step: a :func:`make_train_step` update, then every ``restart_every``
    steps (not after the last) :meth:`VQVAE.restart_dead_codes` on the batch."""
    update = make_train_step(graphdef, _vq_loss, optimizer)

    def restart(key, state: TrainState, x):
        model = nnx.merge(graphdef, state.params, state.rest)
        model.restart_dead_codes(key, x, jnp.ones(x.shape[:-1], bool))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return state._replace(params=params, rest=rest)

    def step(key, state: TrainState, x):
        k_update, k_restart = jax.random.split(key)
        state, info = update(k_update, state, x)
        used = jnp.mean((state.rest["usage"][...] > 0).astype(jnp.float32))
        due = (state.step % restart_every == 0) & (state.step < steps)
        state = jax.lax.cond(due, restart, lambda k, s, b: s, k_restart, state, x)
        return state, VQStepInfo(info.loss, info.skipped, info.metrics.recon, used)

    return jax.jit(step)


def fit_vqvae(model, features, mask, *, key, steps: int = 500, batch_size: int = 4096,
              learning_rate: float = 2e-3, restart_every: int = 50, progress: bool = False,
              checkpoint_dir=None) -> tuple[nnx.Module, History]:
    """Train a :class:`difphys.nn.VQVAE` on the real particles of ``features (N, n, d)`` /
    ``mask (N, n)`` in :func:`training_loop`: Adam on batches of ``batch_size`` particles
    (drawn from ``(key, step)``, so a run resumed from ``checkpoint_dir`` draws the same ones),
    dead codes restarted every ``restart_every`` steps. Returns ``(model, history)``, logged
    at every restart: ``loss``, ``recon`` and ``codes_used`` (the fraction of codes used)."""
    check_count(steps, "steps")
    check_count(batch_size, "batch_size")
    check_count(restart_every, "restart_every")
    pts = np.asarray(features, np.float32).reshape(-1, features.shape[-1])
    pts = pts[np.asarray(mask).reshape(-1)]
    if len(pts) < batch_size:
        raise ValueError(f"VQ-VAE training needs at least batch_size={batch_size} particles; "
                         f"got {len(pts)}")
    opt = _vq_optimizer(learning_rate)
    graphdef, state = init_state(model, opt)
    data_key, step_key = jax.random.split(key)

    def source(start):
        for i in itertools.count(start):
            idx = jax.random.randint(jax.random.fold_in(data_key, i), (batch_size,), 0, len(pts))
            yield i, jnp.asarray(pts[np.asarray(idx)])

    state, history = training_loop(
        _vq_step(graphdef, opt, int(restart_every), int(steps)), state, key=step_key,
        steps=steps, batches=source, log_every=restart_every, checkpoint_dir=checkpoint_dir,
        progress=progress, desc="vq-vae")
    nnx.update(model, state.params, state.rest)
    return model, history


@functools.lru_cache(maxsize=8)
def _vq_optimizer(learning_rate: float) -> optax.GradientTransformation:
    """One Adam object per learning rate, so that repeated calls reuse the compiled step."""
    return optax.adam(learning_rate)


def codebook_utilisation(tokenizer, features, mask) -> float:
    """Fraction of the codebook used by the real particles of ``features``."""
    if np.shape(mask) != np.shape(features)[:-1]:
        raise ValueError(f"mask {np.shape(mask)} must match features {np.shape(features)} "
                         "without the feature axis")
    tokens = np.asarray(tokenizer.tokenize(jnp.asarray(features)))[np.asarray(mask)]
    return float(len(np.unique(tokens)) / tokenizer.codebook_size)


def token_entropy(tokens, mask) -> float:
    """Shannon entropy (nats) of the token distribution over the real particles: the loss of
    a masked-particle model that predicts only the marginal frequencies."""
    if np.shape(tokens) != np.shape(mask):
        raise ValueError(f"tokens {np.shape(tokens)} and mask {np.shape(mask)} must have one "
                         "shape")
    real = np.asarray(tokens)[np.asarray(mask, dtype=bool)]
    if real.size == 0:
        raise ValueError("token_entropy: no real particles (the mask is all False)")
    if np.any(real < 0):
        raise ValueError("tokens must be non-negative codebook indices")
    freq = np.bincount(real) / len(real)
    freq = freq[freq > 0]
    return float(-np.sum(freq * np.log(freq)))


def pretrain_mpm(model, data: dict, *, steps: int, batch_size: int, key, fraction: float = 0.4,
                 learning_rate: float = 1e-3, checkpoint_dir=None, progress: bool = True,
                 mesh=None):
    """Masked-particle-modelling pretraining of a :class:`difphys.nn.MaskedParticleModel` on
    ``data`` (``features``, ``p4``, ``mask``, ``tokens``; labels are not used). Returns
    ``(model, history)``."""
    check_count(steps, "steps")
    check_count(batch_size, "batch_size")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction (of particles hidden) must lie in (0, 1); got {fraction!r}")

    loss = functools.partial(mpm_loss, fraction=fraction)
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
    return fit(model, {k: data[k] for k in ("features", "p4", "mask", "tokens")}, steps=steps,
               batch_size=batch_size, key=key, optimizer=optax.adamw(schedule), loss_fn=loss,
               checkpoint_dir=checkpoint_dir, progress=progress, mesh=mesh)


@functools.lru_cache(maxsize=8)
def _masked_loss_fn(graphdef, fraction: float):
    @jax.jit
    def run(state, batch, key):
        loss, _ = mpm_loss(nnx.merge(graphdef, state), batch, key=key, fraction=fraction)
        n = jnp.sum(batch["mask"]).astype(jnp.float32)  # weight: particles in the batch
        return loss * n, n

    return run


def masked_loss(model, data, *, key, fraction: float = 0.4, batch_size: int = 256) -> float:
    """The masked-particle cross entropy (nats) of ``model`` on held-out ``data``
    (``features``, ``p4``, ``mask``, ``tokens``) in evaluation mode, hiding a random
    ``fraction`` drawn from ``key`` per batch: the number to compare with
    :func:`context_free_baseline` (the "context gain" is the difference). Batches are weighted
    by their real particles; the last partial batch is dropped. Modes are restored."""
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction (of particles hidden) must lie in (0, 1); got {fraction!r}")
    check_count(batch_size, "batch_size")
    n = len(data["mask"])
    if n < batch_size:
        raise ValueError(f"masked_loss needs at least batch_size={batch_size} jets; got {n}")
    modes = _modes(model)
    model.eval()
    graphdef, state = nnx.split(model)
    run = _masked_loss_fn(graphdef, float(fraction))
    total = count = 0.0
    for i, start in enumerate(range(0, n - batch_size + 1, batch_size)):
        batch = {k: jnp.asarray(data[k][start:start + batch_size])
                 for k in ("features", "p4", "mask", "tokens")}
        s, c = run(state, batch, jax.random.fold_in(key, i))
        total, count = total + float(s), count + float(c)
    _restore_modes(modes)
    return total / count


#: Sub-modules of a ParticleTransformer that masked particle modelling trains: the
#: "backbone" parameter group of the fine-tuning strategies. The class-attention pooling
#: (``cls_blocks``, ``cls_token``, ``norm``) is not pretrained and belongs to the head group.
PRETRAINED_PARTS = ("embed_particles", "embed_pairs", "blocks")


def _key_name(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def _group_labels(params):
    def label(path, _):
        names = [_key_name(p) for p in path[:2]]
        in_backbone = len(names) == 2 and names[0] == "backbone" and names[1] in PRETRAINED_PARTS
        return "backbone" if in_backbone else "head"

    return jax.tree_util.tree_map_with_path(label, params)


@functools.lru_cache(maxsize=32)
def strategy_optimizer(strategy: str, *, learning_rate: float, steps: int,
                       backbone_lr_factor: float = 1.0, frozen_warmup_steps: int = 0,
                       weight_decay: float = 1e-4) -> optax.GradientTransformation:
    """The optimiser of a fine-tuning ``strategy`` for a model with a ``backbone``
    (:class:`difphys.nn.JetClassifier`, :class:`difphys.nn.EventClassifier`). The backbone
    group is the part masked particle modelling pretrains (:data:`PRETRAINED_PARTS`: particle
    and pair embeddings, particle-attention blocks); everything else (class-attention pooling,
    heads) is the head group:

    * ``frozen``: the backbone gets exactly zero updates; AdamW on the head;
    * ``finetune``: AdamW on both, the backbone at ``backbone_lr_factor`` times the rate and
      held fixed for the first ``frozen_warmup_steps`` steps;
    * ``scratch``: AdamW on both at the same rate (pair it with a fresh backbone).

    Equal arguments return the same (stateless) optimiser object, so repeated runs reuse one
    compiled training step.
    """
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0; got {learning_rate!r}")
    check_count(steps, "steps")
    if not (np.isfinite(backbone_lr_factor) and backbone_lr_factor >= 0):
        raise ValueError(f"backbone_lr_factor must be finite and >= 0; got {backbone_lr_factor!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {STRATEGIES}")
    head_lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 10), steps)
    head = optax.adamw(head_lr, weight_decay=weight_decay)
    if strategy == "frozen":
        backbone = optax.set_to_zero()
    else:
        factor = backbone_lr_factor if strategy == "finetune" else 1.0
        warm = frozen_warmup_steps if strategy == "finetune" else 0
        base = optax.warmup_cosine_decay_schedule(0.0, learning_rate * factor,
                                                  max(1, (steps - warm) // 10),
                                                  max(1, steps - warm))
        sched = optax.join_schedules([optax.constant_schedule(0.0), base], [warm]) if warm \
            else base
        backbone = optax.adamw(sched, weight_decay=weight_decay)
    return optax.multi_transform({"backbone": backbone, "head": head}, _group_labels)


#: Default head-only warm-up of ``finetune``: this fraction of the steps trains the head with
#: the backbone fixed, so a random head does not push large gradients into pretrained weights.
HEAD_WARMUP_FRACTION = 0.2


def finetune(model, data: dict, strategy: str, *, steps: int, batch_size: int, key,
             learning_rate: float = 1e-3, backbone_lr_factor: float = 1.0,
             frozen_warmup_steps: int | None = None, progress: bool = False,
             masks=None, task: int | None = None, l1: float = 0.0, **fit_options):
    """Train ``model`` (a ``backbone`` + head model) on labelled ``data`` with one of
    :data:`STRATEGIES`; in ``frozen`` mode the pretrained parts also run in evaluation mode, so
    their batch statistics stay fixed too. The ``finetune`` recipe: the head alone for
    ``frozen_warmup_steps`` (default :data:`HEAD_WARMUP_FRACTION` of ``steps``), then head and
    backbone at one peak rate (``backbone_lr_factor = 1``), each with warm-up + cosine decay.
    A smaller factor for a fixed number of steps handicaps the pretrained backbone (at 0.3x a
    fresh backbone also loses ~0.02 AUC). Returns ``(model, history)``.

    ``strategy="continual"`` trains task ``task`` of a :class:`difphys.nn.MultiTaskParT`
    under CLNP ``masks`` (:class:`difphys.nn.NeuronMasks`): the masks are installed and
    isolated, the optimiser is :func:`continual_optimizer` (what earlier tasks own gets
    exactly zero updates) and the loss :func:`continual_loss` with penalty ``l1`` on the
    free units; ``model.task`` is set to ``task``. Allocate afterwards with
    :func:`neuron_activity` and :func:`allocate` (see ``docs/continual.md``)."""
    if strategy == "continual":
        return _finetune_continual(model, data, steps=steps, batch_size=batch_size, key=key,
                                   learning_rate=learning_rate, masks=masks, task=task, l1=l1,
                                   progress=progress, **fit_options)
    if masks is not None or task is not None or l1:
        raise ValueError("masks, task and l1 belong to strategy='continual'")
    if frozen_warmup_steps is None:
        frozen_warmup_steps = int(round(HEAD_WARMUP_FRACTION * steps))
    if not 0 <= frozen_warmup_steps < steps:
        raise ValueError(f"frozen_warmup_steps must lie in [0, steps={steps}); "
                         f"got {frozen_warmup_steps}")
    opt = strategy_optimizer(strategy, learning_rate=learning_rate, steps=steps,
                             backbone_lr_factor=backbone_lr_factor,
                             frozen_warmup_steps=frozen_warmup_steps)
    if strategy == "frozen":
        for part in PRETRAINED_PARTS:
            sub = getattr(model.backbone, part)
            for module in (sub if isinstance(sub, (list, tuple, nnx.List)) else [sub]):
                if module is not None:
                    module.eval()
    return fit(model, data, steps=steps, batch_size=batch_size, key=key, optimizer=opt,
               progress=progress, **fit_options)


def _finetune_continual(model, data, *, steps, batch_size, key, learning_rate, masks, task, l1,
                        progress, **fit_options):
    from ..nn import MultiTaskParT, NeuronMasks, isolate
    from ._continual import continual_loss, continual_optimizer

    if not isinstance(model, MultiTaskParT):
        raise TypeError(f"strategy='continual' trains a difphys.nn.MultiTaskParT; got "
                        f"{type(model).__name__}")
    if not isinstance(masks, NeuronMasks):
        raise ValueError("strategy='continual' needs masks (difphys.nn.NeuronMasks; "
                         "NeuronMasks.empty(model.hidden) before the first task)")
    if task is None:
        raise ValueError("strategy='continual' needs the task index")
    task = model._check_task(task)
    labels = np.asarray(data["label"])
    classes = model.heads[task].out_features
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                        or labels.max() >= classes):
        raise ValueError(f"labels must be integers in [0, {classes}) for task {task}'s head")
    check_count(steps, "steps")
    isolate(model, masks)
    model.task = task
    opt = continual_optimizer(model, masks, task, learning_rate=learning_rate, steps=steps)
    return fit(model, data, steps=steps, batch_size=batch_size, key=key, optimizer=opt,
               loss_fn=continual_loss(float(l1)), progress=progress, **fit_options)
