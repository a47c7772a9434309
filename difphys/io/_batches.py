"""A batched, shuffled, device-sharded iterator over in-memory training arrays (optionally
with jets of similar length batched together), and the trimming of a padded batch to its
longest jet."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import numpy as np

from .._checks import check_count
from ..sharding import shard_batch
from ._table import Table


def _size(arrays: Mapping) -> int:
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"arrays disagree on their leading size: {sorted(sizes)}")
    return sizes.pop()


def epoch_order(key, epoch: int, n: int) -> np.ndarray:
    """The permutation of ``n`` examples used in ``epoch`` (a function of ``key`` only)."""
    check_count(epoch, "epoch", 0)
    check_count(n, "n")
    return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))


def trim_padding(batch: Mapping[str, np.ndarray], multiple: int = 16, *,
                 quantile: float | tuple[float, float] | None = None,
                 rng: np.random.Generator | None = None) -> Table:
    """``batch`` (a :class:`Table` or mapping of arrays) as a :class:`Table` with its particle
    axis cut after the last real particle of any jet, rounded up
    to a multiple of ``multiple`` (never past the padded length).

    ``batch["mask"]`` ``(B, P)`` marks the real particles; every array whose first two axes are
    ``(B, P)`` is cut along axis 1, the others (labels, jet-level arrays) are returned as they
    are. A model whose output does not depend on the padding length (difphys's ParT) gives the
    same result on the trimmed batch, at the cost of the jets that are really there: the pair
    embedding's work grows as the square of the length. Rounding to ``multiple`` bounds the
    number of distinct shapes, hence of jit compilations, to ``ceil(P / multiple)``.

    ``quantile`` (training only; lossy) is weaver-core's ``SequenceTrimmer`` policy: the length
    is the ``quantile`` of the jets' particle counts (a pair ``(lo, hi)``: drawn uniformly per
    batch, clipped at 1; weaver-core uses ``(0.9, 1.02)``), rounded up to ``multiple``, and a
    longer jet keeps a random subset of that many of its particles (drawn with ``rng``), in
    their original order. Without it the cut is exact and nothing is dropped.
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
    if quantile is None:
        real = np.flatnonzero(mask.any(axis=0))
        last = int(real[-1]) + 1 if real.size else 1
    else:
        lo, hi = (quantile, quantile) if np.isscalar(quantile) else quantile
        if not 0.0 < lo <= hi:
            raise ValueError(f"quantile must be in (0, 1] or a pair 0 < lo <= hi; got "
                             f"{quantile!r}")
        if rng is None:
            raise ValueError("quantile trimming drops random particles: pass rng")
        q = min(1.0, rng.uniform(lo, hi) if hi > lo else lo)
        last = max(1, int(np.ceil(np.quantile(mask.sum(axis=1), q))))
    length = min(padded, -(-last // multiple) * multiple)
    if quantile is not None and length < padded:
        # the `length` particles of highest random priority per jet (real ones first), kept
        # in their original order: long jets lose random particles, short ones lose padding
        priority = np.where(mask, rng.random(mask.shape), -1.0)
        keep = np.sort(np.argsort(-priority, axis=1, kind="stable")[:, :length], axis=1)

        def cut(v):
            return np.take_along_axis(np.asarray(v), keep.reshape(
                n_jets, length, *([1] * (np.ndim(v) - 2))), axis=1)
    elif length == padded:
        return Table(batch)
    else:
        def cut(v):
            return v[:, :length]
    # only arrays with the (jets, particles) leading axes are cut
    return Table({k: (cut(v) if np.ndim(v) >= 2 and np.shape(v)[:2] == (n_jets, padded) else v)
                  for k, v in batch.items()})


def epoch_batches(key, epoch: int, n: int, batch_size: int, *,
                  lengths: np.ndarray | None = None, bucket: int | None = None) -> np.ndarray:
    """The example indices of every batch of ``epoch``, ``(n // batch_size, batch_size)``,
    each row sorted (a function of ``key`` and ``epoch`` only).

    Without ``bucket``: consecutive slices of ``epoch_order(key, epoch, n)`` (the last partial
    batch is skipped). With ``bucket = k`` and the examples' ``lengths (n,)`` (particle
    counts): that order is cut into pools of ``k`` batches, each pool sorted by length and cut
    into its ``k`` batches, and the batches are visited in a random order. Every example is
    still seen once per epoch, but a batch holds jets of similar length, so that
    :func:`trim_padding` cuts it close to them (length bucketing, as used for padded
    sequences in NLP); the pools keep the batches random within a length range.
    """
    check_count(batch_size, "batch_size")
    if batch_size > n:
        raise ValueError(f"batch_size must lie in [1, {n}] (the number of examples); "
                         f"got {batch_size}")
    per_epoch = n // batch_size
    order = epoch_order(key, epoch, n)[:per_epoch * batch_size]
    if bucket is not None:
        if not isinstance(bucket, (int, np.integer)) or bucket < 1:
            raise ValueError(f"bucket must be a positive number of batches; got {bucket!r}")
        if lengths is None or len(lengths) != n:
            raise ValueError(f"bucket needs the lengths of the {n} examples")
        pool = bucket * batch_size
        order = np.concatenate([
            chunk[np.argsort(np.asarray(lengths)[chunk], kind="stable")]
            for chunk in np.split(order, np.arange(pool, len(order), pool))])
        visit = np.asarray(jax.random.permutation(
            jax.random.fold_in(jax.random.fold_in(key, 0x6275636B), epoch), per_epoch))  # "buck"
        return np.sort(order.reshape(per_epoch, batch_size)[visit], axis=1)
    return np.sort(order.reshape(per_epoch, batch_size), axis=1)


def batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    key,
    start_step: int = 0,
    mesh=None,
    axis_name: str = "batch",
    trim: int | None = None,
    trim_quantile: float | tuple[float, float] | None = None,
    bucket: int | None = None,
) -> Iterator[tuple[int, Table]]:
    """Yield ``(step, batch)`` forever, from ``start_step`` on; ``batch`` is a :class:`Table`
    of the rows of ``arrays`` (a :class:`Table` or any mapping of equally long arrays).

    Each epoch visits the examples in a fresh random order (``epoch_order(key, epoch, n)``) in
    full batches of ``batch_size`` (the last partial batch of an epoch is skipped). Batch
    ``step`` depends only on ``(key, step)``, so a resumed run sees exactly the batches of an
    uninterrupted one. With ``mesh``, each batch is placed on the devices of ``mesh`` split
    along ``axis_name`` (``batch_size`` must be divisible by the number of devices). With
    ``trim``, each batch is first cut to its longest jet rounded up to a multiple of ``trim``
    (:func:`trim_padding`; needs a ``mask`` array); ``trim_quantile`` adds weaver-core's lossy
    training-time cut (random particles of the longest jets dropped, drawn from ``(key, step)``
    so that a resumed run sees the same batches). ``bucket = k`` (with ``trim``) groups jets
    of similar length into the same batch, pools of ``k`` batches at a time
    (:func:`epoch_batches`): less padding to compute on, at the price of batches that are
    less random.
    """
    n = _size(arrays)
    if trim_quantile is not None and trim is None:
        raise ValueError("trim_quantile needs trim (the multiple to round the length to)")
    if bucket is not None and trim is None:
        raise ValueError("bucket needs trim: grouping jets by length only pays when the "
                         "batches are cut to their longest jet")
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
    lengths = None
    if bucket is not None:
        mask = np.asarray(arrays["mask"])
        if mask.ndim != 2:
            raise ValueError(f"bucket needs a (jets, particles) mask; got shape {mask.shape}")
        lengths = mask.sum(axis=1)
    step, rows, rows_epoch = start_step, None, -1
    while True:
        epoch, within = divmod(step, per_epoch)
        if epoch != rows_epoch:
            rows, rows_epoch = epoch_batches(key, epoch, n, batch_size, lengths=lengths,
                                             bucket=bucket), epoch
        idx = rows[within]
        batch = Table({k: v[idx] for k, v in arrays.items()})
        if trim is not None:
            rng = None
            if trim_quantile is not None:
                seed = np.asarray(jax.random.key_data(jax.random.fold_in(
                    jax.random.fold_in(key, 0x7472696D), step)))  # "trim"
                rng = np.random.default_rng(seed.ravel().tolist())
            batch = trim_padding(batch, trim, quantile=trim_quantile, rng=rng)
        yield step, (shard_batch(batch, mesh, axis_name) if mesh is not None else batch)
        step += 1
