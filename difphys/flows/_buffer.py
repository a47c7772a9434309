"""FAB's prioritised replay buffer (Midgley et al., arXiv:2208.01893, section 3.3).

A fixed-capacity FIFO of AIS samples ``x`` with their log-weights ``log_w`` (w.r.t. ``p^2/q``)
and the ``log q`` of the flow that produced them. Batches are drawn *without replacement* with
probability proportional to ``w`` (Gumbel top-k). After a gradient step the drawn entries'
weights are corrected for the change of the flow, ``log_w += log q_old - log q_new`` with the
increase clipped at ``log(max_adjust)``, and ``log q_old`` is replaced. Non-finite entries are
stored with ``log_w = -inf`` and are never drawn.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, is_concrete


class ReplayBuffer(NamedTuple):
    x: jax.Array  # (capacity, dim)
    log_w: jax.Array  # (capacity,), -inf for empty or dropped entries
    log_q: jax.Array  # (capacity,) log q of the flow that last touched the entry
    position: jax.Array  # next slot to overwrite (int32)
    size: jax.Array  # number of filled slots (int32)


def buffer_init(capacity: int, dim: int, dtype=None) -> ReplayBuffer:
    """An empty buffer of ``capacity`` points of dimension ``dim``."""
    check_count(capacity, "capacity")
    check_count(dim, "dim")
    dtype = jnp.result_type(float) if dtype is None else dtype
    return ReplayBuffer(
        x=jnp.zeros((capacity, dim), dtype),
        log_w=jnp.full((capacity,), -jnp.inf, dtype),
        log_q=jnp.zeros((capacity,), dtype),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def buffer_add(buf: ReplayBuffer, x, log_w, log_q) -> ReplayBuffer:
    """Append a batch (FIFO: the oldest entries are overwritten)."""
    capacity = buf.log_w.shape[0]
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != buf.x.shape[1]:
        raise ValueError(f"points must be (n, dim = {buf.x.shape[1]}); got shape {x.shape}")
    if np.shape(log_w) != (n,) or np.shape(log_q) != (n,):
        raise ValueError(f"log_w and log_q must be ({n},); got {np.shape(log_w)} and "
                         f"{np.shape(log_q)}")
    if n > capacity:
        raise ValueError(f"batch of {n} does not fit a buffer of capacity {capacity}")
    ok = jnp.isfinite(log_w) & jnp.isfinite(log_q) & jnp.all(jnp.isfinite(x), axis=-1)
    log_w = jnp.where(ok, log_w, -jnp.inf)
    log_q = jnp.where(ok, log_q, jnp.zeros_like(log_q))
    x = jnp.where(ok[:, None], x, jnp.zeros_like(x))
    idx = (buf.position + jnp.arange(n, dtype=jnp.int32)) % capacity
    return ReplayBuffer(
        x=buf.x.at[idx].set(x.astype(buf.x.dtype)),
        log_w=buf.log_w.at[idx].set(log_w.astype(buf.log_w.dtype)),
        log_q=buf.log_q.at[idx].set(log_q.astype(buf.log_q.dtype)),
        position=(buf.position + n) % capacity,
        size=jnp.minimum(buf.size + n, capacity),
    )


def buffer_sample(key, buf: ReplayBuffer, n: int):
    """Indices (n,) drawn without replacement with probability proportional to w.

    Outside ``jit`` asking for more entries than the buffer holds with a positive weight
    raises ``ValueError``. Inside ``jit`` the draw then also returns empty or dropped slots
    (``log_w = -inf``, after every usable one): test ``buf.log_w[idx] > -inf`` to mask them
    (FAB's trainer counts a step whose draw is all empty as skipped)."""
    capacity = buf.log_w.shape[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= capacity:
        raise ValueError(f"n must be an integer in [1, capacity = {capacity}]; got {n!r}")
    if is_concrete(buf.log_w):
        usable = int(np.sum(np.isfinite(np.asarray(buf.log_w))))
        if n > usable:
            raise ValueError(f"asked for {n} entries without replacement but the buffer holds "
                             f"only {usable} with a positive weight")
    gumbel = jax.random.gumbel(key, buf.log_w.shape, buf.log_w.dtype)
    _, idx = jax.lax.top_k(buf.log_w + gumbel, n)
    return idx


def buffer_adjust(buf: ReplayBuffer, idx, log_q_new, max_adjust: float = 10.0) -> ReplayBuffer:
    """Re-weight entries ``idx`` for the new flow: ``log_w += min(log q_old - log q_new, log max_adjust)``."""
    if not float(max_adjust) >= 1.0:
        raise ValueError(f"max_adjust must be >= 1 (a cap on the weight increase); got "
                         f"{max_adjust!r}")
    log_q_new = jnp.asarray(log_q_new, buf.log_q.dtype)
    delta = jnp.minimum(
        buf.log_q[idx] - log_q_new, jnp.log(jnp.asarray(max_adjust, buf.log_q.dtype))
    )
    ok = jnp.isfinite(delta)
    new_w = jnp.where(ok, buf.log_w[idx] + delta, -jnp.inf)
    return buf._replace(
        log_w=buf.log_w.at[idx].set(new_w),
        log_q=buf.log_q.at[idx].set(jnp.where(ok, log_q_new, buf.log_q[idx])),
    )
