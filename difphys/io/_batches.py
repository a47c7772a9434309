"""A batched, shuffled, device-sharded iterator over in-memory training arrays."""

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


def batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    *,
    key,
    start_step: int = 0,
    mesh=None,
    axis_name: str = "batch",
) -> Iterator[tuple[int, dict]]:
    """Yield ``(step, batch)`` forever, from ``start_step`` on.

    Each epoch visits the examples in a fresh random order (``epoch_order(key, epoch, n)``) in
    full batches of ``batch_size`` (the last partial batch of an epoch is skipped). Batch
    ``step`` depends only on ``(key, step)``, so a resumed run sees exactly the batches of an
    uninterrupted one. With ``mesh``, each batch is placed on the devices of ``mesh`` split
    along ``axis_name`` (``batch_size`` must be divisible by the number of devices).
    """
    from ..sharding import shard_batch

    n = _size(arrays)
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
        yield step, (shard_batch(batch, mesh, axis_name) if mesh is not None else batch)
        step += 1
