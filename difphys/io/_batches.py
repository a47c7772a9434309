"""A batched, shuffled, device-sharded iterator over in-memory training arrays, and the
trimming of a padded batch to its longest jet."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np


def _size(arrays: dict) -> int:
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"arrays disagree on their leading size: {sorted(sizes)}")
    return sizes.pop()


def epoch_order(key, epoch: int, n: int) -> np.ndarray:
    """The permutation of ``n`` examples used in ``epoch`` (a function of ``key`` only)."""
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))


def trim_padding(batch: dict[str, np.ndarray], multiple: int = 16) -> dict[str, np.ndarray]:
    """``batch`` with its particle axis cut after the last real particle of any jet, rounded up
    to a multiple of ``multiple`` (never past the padded length).

    ``batch["mask"]`` ``(B, P)`` marks the real particles; every array whose first two axes are
    ``(B, P)`` is cut along axis 1, the others (labels, jet-level arrays) are returned as they
    are. A model whose output does not depend on the padding length (difphys's ParT) gives the
    same result on the trimmed batch, at the cost of the jets that are really there: the pair
    embedding's work grows as the square of the length. Rounding to ``multiple`` bounds the
    number of distinct shapes, hence of jit compilations, to ``ceil(P / multiple)``. This is
    what weaver-core does per batch (to the exact length; jit prefers a few fixed shapes).
    """
    if not isinstance(multiple, (int, np.integer)) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer; got {multiple!r}")
    if "mask" not in batch:
        raise KeyError(f"trim_padding needs the particle mask under 'mask'; the batch holds "
                       f"{sorted(batch)}")
    mask = np.asarray(batch["mask"])
    if mask.ndim != 2:
        raise ValueError(f"mask must be (jets, particles); got shape {mask.shape}")
    n_jets, padded = mask.shape
    real = np.flatnonzero(mask.any(axis=0))
    last = int(real[-1]) + 1 if real.size else 1
    length = min(padded, -(-last // multiple) * multiple)
    if length == padded:
        return dict(batch)
    return {k: (v[:, :length] if np.ndim(v) >= 2 and np.shape(v)[:2] == (n_jets, padded) else v)
            for k, v in batch.items()}


def batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    key,
    start_step: int = 0,
    mesh=None,
    axis_name: str = "batch",
    trim: int | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(step, batch)`` forever, from ``start_step`` on.

    Each epoch visits the examples in a fresh random order (``epoch_order(key, epoch, n)``) in
    full batches of ``batch_size`` (the last partial batch of an epoch is skipped). Batch
    ``step`` depends only on ``(key, step)``, so a resumed run sees exactly the batches of an
    uninterrupted one. With ``mesh``, each batch is placed on the devices of ``mesh`` split
    along ``axis_name`` (``batch_size`` must be divisible by the number of devices). With
    ``trim``, each batch is first cut to its longest jet rounded up to a multiple of ``trim``
    (:func:`trim_padding`; needs a ``mask`` array).
    """
    from ..sharding import shard_batch

    n = _size(arrays)
    if trim is not None and "mask" not in arrays:
        raise KeyError(f"trim needs the particle mask under 'mask'; the arrays hold "
                       f"{sorted(arrays)}")
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size must lie in [1, {n}] (the number of examples); "
                         f"got {batch_size}")
    if mesh is not None and batch_size % mesh.shape[axis_name]:
        raise ValueError(f"batch_size {batch_size} is not divisible by the "
                         f"{mesh.shape[axis_name]} devices of the mesh")
    per_epoch = n // batch_size
    step, order, order_epoch = start_step, None, -1
    while True:
        epoch, within = divmod(step, per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(key, epoch, n), epoch
        idx = np.sort(order[within * batch_size:(within + 1) * batch_size])
        batch = {k: v[idx] for k, v in arrays.items()}
        if trim is not None:
            batch = trim_padding(batch, trim)
        yield step, (shard_batch(batch, mesh, axis_name) if mesh is not None else batch)
        step += 1
