"""The one training loop of difphys: ``Trainer`` (a named ``init``/``step`` pair, as optax's
``GradientTransformation`` and blackjax's algorithms), the logged ``History``, and
``training_loop``, which :func:`difphys.train.fit` (Flax NNX models),
:func:`difphys.train.fit_vqvae` and :func:`difphys.flows.train_flow` all run.

The loop owns what every training run needs and nothing model-specific: a step key per step
(``fold_in(key, step)``, so a resumed run draws what an uninterrupted one would), batches from a
resumable source, orbax checkpoints of the whole state (``train/_checkpoint.py``), logging
every ``log_every`` steps without a device synchronisation per step, a progress bar and a
callback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from ..io import Table
from ..progress import progress_bar
from ..provenance import is_writer
from ._checkpoint import checkpoint_manager, restore_latest, save_step


class Trainer(NamedTuple):
    """An iterative training algorithm as a pair of pure functions.

    ``init(key) -> state`` and ``step(key, state[, batch]) -> (state, info)``: the key first,
    the state a PyTree with an integer ``step`` field, ``info`` a NamedTuple of scalars.
    """

    init: Callable[..., Any]
    step: Callable[..., tuple[Any, Any]]


def _flat(info) -> Mapping[str, Any]:
    """Columns of one step's ``info``: the fields of a NamedTuple (a nested NamedTuple or
    mapping of metrics contributes its own fields), or the items of a mapping."""
    items = info._asdict().items() if hasattr(info, "_asdict") else dict(info).items()
    out = {}
    for name, value in items:
        if hasattr(value, "_asdict") or isinstance(value, Mapping):
            out.update(_flat(value))
        elif value is not None:
            out[name] = value
    return out


class History(Table):
    """Metrics logged by :func:`training_loop`: a :class:`difphys.io.Table` with one float64
    column per name and one row per logged step. ``history.loss`` or ``history["loss"]`` is a
    column ``(n_logged,)``; ``history.step`` the steps (1-based) they were logged at;
    ``history.last("loss")`` the newest value; ``history.n_rows`` the number of logged steps."""

    __slots__ = ()

    def __init__(self, columns: Mapping[str, np.ndarray]):
        super().__init__({k: np.asarray(v, np.float64) for k, v in columns.items()})

    @classmethod
    def from_rows(cls, steps, rows) -> History:
        """A history from the logged ``steps`` and their rows of scalars (same names)."""
        rows = jax.device_get(list(rows))
        names = list(rows[0]) if rows else []
        cols = {"step": np.asarray(list(steps), np.float64)}
        cols.update({n: np.asarray([r[n] for r in rows], np.float64).reshape(len(rows))
                     for n in names})
        return cls(cols)

    def last(self, name: str) -> float:
        """The newest logged value of ``name``."""
        column = self[name]
        if not len(column):
            raise ValueError("nothing was logged")
        return float(column[-1])

    def rows(self) -> list[Mapping[str, float]]:
        """The logged rows, ``{"step": ..., name: value, ...}`` each (for JSON output)."""
        return [{k: (int(v[i]) if k == "step" else float(v[i])) for k, v in self.items()}
                for i in range(self.n_rows)]


def training_loop(
    step: Callable,
    state,
    *,
    key,
    steps: int,
    batches: Callable[[int], Iterator[tuple[int, Any]]] | None = None,
    log_every: int = 10,
    checkpoint_dir=None,
    checkpoint_every: int = 100,
    resume: bool = True,
    callback: Callable[[int, Any], None] | None = None,
    callback_every: int = 0,
    progress: bool = True,
    desc: str = "train",
) -> tuple[Any, History]:
    """Run ``step`` from ``state.step`` up to ``steps`` steps.

    Args:
      step: ``step(key_i, state, batch) -> (state, info)`` (``step(key_i, state)`` without
        ``batches``), already jit-compiled by the caller; ``key_i = fold_in(key, i)``.
      state: the initial state (a PyTree with an integer ``step`` leaf). With
        ``checkpoint_dir`` holding a checkpoint, the newest one replaces it (same structure).
      key: the root of the step keys.
      steps: the total number of steps (a resumed run does only the missing ones).
      batches: ``batches(start) -> iterator of (i, batch)`` from step ``start`` on (e.g.
        :func:`difphys.io.batches`); ``None`` for steps that draw their own samples.
      log_every: log ``info`` every ``log_every`` steps and at the last step.
      checkpoint_dir: orbax checkpoint folder, saved every ``checkpoint_every`` steps and at
        the end, and (``resume``) restored from at the start; ``resume=False`` is for a
        caller that restored ``state`` itself (e.g. to place it on a device mesh).
      callback: ``callback(i, state)`` after step ``i`` (1-based) every ``callback_every``.
      progress: a progress bar (``True``), none, or a bar factory (:mod:`difphys.progress`).

    Returns:
      ``(state, history)``: the final state and the :class:`History` of the logged steps.

    Raises ``FloatingPointError`` after a run in which every logged loss was non-finite, or in
    which every step was skipped (states with an ``n_skipped`` counter).
    """
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be positive; got {log_every}")
    if checkpoint_dir is not None:
        _check_run_key(checkpoint_dir, key)
    restored = restore_latest(checkpoint_dir, state) if resume else None
    if restored is not None:
        state = restored
    start = int(state.step)
    if start > steps:
        raise ValueError(f"the state is at step {start}, beyond the {steps} steps requested"
                         + (f" (checkpoint in {checkpoint_dir})" if checkpoint_dir else "")
                         + f"; ask for at least {start} steps")
    skipped_before = _n_skipped(state)
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    source = batches(start) if batches is not None else None
    logged_steps, rows = [], []
    bar = progress_bar(progress, total=steps, desc=desc, initial=min(start, steps))
    try:
        for i in range(start, steps):
            key_i = jax.random.fold_in(key, i)
            if source is None:
                state, info = step(key_i, state)
            else:
                j, batch = next(source)
                if j != i:
                    raise RuntimeError(f"the batch source yielded step {j} at step {i}")
                state, info = step(key_i, state, batch)
            done = i + 1
            if done % log_every == 0 or done == steps:
                row = _flat(info)
                logged_steps.append(done)
                rows.append(row)
                if "loss" in row and (len(rows) % max(1, 20 // log_every) == 0
                                      or done == steps):
                    bar.set_postfix(loss=f"{float(row['loss']):.4g}")
            bar.update(1)
            if manager is not None and (done % checkpoint_every == 0 or done == steps):
                save_step(manager, done, state)
            if callback is not None and callback_every and done % callback_every == 0:
                callback(done, state)
    finally:
        bar.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    history = History.from_rows(logged_steps, rows)
    _check_health(state, history, steps - start, skipped_before)
    return state, history


_RUN_FILE = "difphys_run.json"


def _key_record(key) -> list:
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) \
        else key
    return np.asarray(data).ravel().tolist()


def _check_run_key(checkpoint_dir, key) -> None:
    """A checkpoint folder belongs to one run: its root key is recorded in
    ``difphys_run.json`` on first use, and continuing it with another key (which would draw
    other batches and dropout masks than the run it resumes) is refused."""
    path = Path(checkpoint_dir) / _RUN_FILE
    record = _key_record(key)
    if path.exists():
        recorded = json.loads(path.read_text()).get("key")
        if recorded != record:
            raise ValueError(f"{checkpoint_dir} holds a run made with another key (recorded "
                             f"{recorded}, now {record}): resume it with the same key/seed or "
                             "use a new checkpoint folder")
        return
    if not is_writer():  # under jax.distributed, process 0 records the key
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"key": record}))
    partial.replace(path)  # atomic: another process never reads half a record


def _n_skipped(state):
    value = getattr(state, "n_skipped", None)
    return None if value is None else int(value)


def _check_health(state, history: History, n_run: int, skipped_before) -> None:
    """A run that learned nothing fails loudly: every logged loss non-finite, or (for states
    that count them, such as :class:`difphys.flows.FlowState`) every step skipped."""
    if n_run <= 0:
        return
    if "loss" in history and history.n_rows and not np.any(np.isfinite(history["loss"])):
        raise FloatingPointError(f"training failed: the loss was non-finite at every one of the "
                                 f"{history.n_rows} logged steps (a NaN/inf target, data or "
                                 "learning rate)")
    if skipped_before is not None and _n_skipped(state) - skipped_before >= n_run:
        raise FloatingPointError(f"training failed: all {n_run} steps were skipped (no finite "
                                 "target value or gradient in any step)")
