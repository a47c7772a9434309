"""Checkpoints: the one module of difphys's libraries that talks to orbax.

Three uses share it: the training loop's step checkpoints (:func:`checkpoint_manager`,
:func:`restore_latest`, :func:`save_step`), a trained module's state
(:func:`save_module` / :func:`load_module`) and any PyTree of arrays, such as a flow's
training state (:func:`save_pytree` / :func:`restore_pytree`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from ..provenance import is_writer


def checkpoint_manager(directory, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """An orbax manager of numbered step checkpoints in ``directory`` (created if missing),
    keeping the newest ``max_to_keep``."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save_step(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Save ``state`` (any PyTree of arrays) as step ``step`` (asynchronous; the manager's
    ``wait_until_finished`` makes it durable)."""
    manager.save(step, args=ocp.args.StandardSave(state))


def restore_latest(directory, state: Any) -> Any | None:
    """The newest intact step checkpoint in ``directory`` restored into the structure of
    ``state``, or None when there is none. A step that cannot be read (a save cut short, a
    truncated file) is skipped with a ``UserWarning`` naming it, and the next older one that
    orbax kept is used; when none can be read a ``ValueError`` gives the newest one's error."""
    if directory is None or not Path(directory).exists():
        return None
    manager = checkpoint_manager(directory)
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        errors = []
        for step in steps:
            try:
                restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as err:  # noqa: BLE001 - any unreadable step falls back
                errors.append(f"step {step}: {type(err).__name__}: {err}")
                warnings.warn(f"checkpoint step {step} in {directory} cannot be read "
                              f"({type(err).__name__}: {str(err)[:200]}); trying an older one",
                              stacklevel=2)
                continue
            return restored
        raise ValueError(f"no readable checkpoint in {directory}: " + "; ".join(errors)[:2000])
    finally:
        manager.close()


def save_pytree(directory, tree: Any) -> Path:
    """Write ``tree`` (a PyTree of arrays) to the new folder ``directory`` and wait until it
    is on disk; an existing ``directory`` is refused (save to a fresh name, then rename, so
    that a crash never loses the previous copy)."""
    directory = Path(directory).absolute()
    if directory.exists():
        raise FileExistsError(f"{directory} exists; checkpoints are written to new folders")
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(directory, tree)
    ckpt.wait_until_finished()
    return directory


def restore_pytree(directory, like: Any) -> Any:
    """The PyTree saved by :func:`save_pytree` in ``directory``, restored into the structure,
    shapes and dtypes of ``like``."""
    directory = Path(directory).absolute()
    if not directory.exists():
        raise FileNotFoundError(f"no saved state in {directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return ocp.StandardCheckpointer().restore(directory, abstract)


def save_module(folder, module: nnx.Module, meta: dict) -> Path:
    """Write ``module``'s state (orbax, ``folder/state``) and ``meta`` (``folder/meta.json``).

    An existing ``folder/state`` is replaced only when it is one this function wrote (a
    ``meta.json`` beside it); anything else raises ``FileExistsError`` and is left alone.
    Under ``jax.distributed`` every process calls it (orbax saves global arrays together)
    and process 0 writes ``meta.json``."""
    folder = Path(folder).absolute()
    if (folder / "state").exists() and not (folder / "meta.json").exists():
        raise FileExistsError(f"{folder / 'state'} exists and is not a module saved by difphys "
                              "(no meta.json beside it); refusing to replace it")
    state = nnx.state(module)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(folder / "state", state, force=True)
    if is_writer():  # under jax.distributed every process saves, one writes
        (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return folder


def load_module(folder, module: nnx.Module) -> nnx.Module:
    """Restore the state saved by :func:`save_module` into ``module`` (same structure)."""
    folder = Path(folder).absolute()
    if not (folder / "state").exists():
        raise FileNotFoundError(f"no saved module state in {folder}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state(module))
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(folder / "state", abstract)
    nnx.update(module, state)
    return module
