"""Dropout with an explicit key and a mask that XLA can fuse.

``jax.random.bernoulli`` materialises one Threefry draw per element. On the CPU that is the
most expensive single operation of a ParT training step: the attention weights alone are
``(batch, heads, n, n)`` = 8.4 M elements per block at batch 64, n = 128, about 90 ms per
block with ``jax.random`` and still about 100 ms per block (draw plus copy) with XLA's own
``RngBitGenerator``. Here ``key`` is drawn from once (two 32-bit words, Threefry), and the
per-element bits come from a counter-based integer hash of the element index, evaluated
inside the fused elementwise loop that applies the mask, so no bit array is ever written.

The hash is Chris Wellons' ``lowbias32`` (xor-shift-multiply with the constants
0x7feb352d and 0x846ca68b found by his hash-prospector search), applied twice with the two
seed words mixed in. It is a bijection of the 32-bit counter for each seed, so the keep
fraction of any block of 2^32 elements is exact up to the threshold's rounding, and its
avalanche bias is small; dropout needs independence between elements and between keys,
which ``tests/test_nn_dropout.py`` checks statistically, not cryptographic strength.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def _lowbias32(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def dropout_keep_mask(key, shape, keep: float):
    """Boolean mask of ``shape`` with each entry True with probability ``keep`` (to 2^-32),
    a deterministic function of ``key`` (a JAX PRNG key). Entries are indexed by their flat
    position modulo 2^32."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep probability must be in (0, 1]; got {keep}")
    if keep == 1.0:
        return jnp.ones(shape, bool)
    seed = jax.random.bits(key, (2,), jnp.uint32)
    counter = jnp.arange(math.prod(shape), dtype=jnp.uint32).reshape(shape)
    bits = _lowbias32(_lowbias32(counter ^ seed[0]) + seed[1])
    return bits < jnp.uint32(min(round(keep * 2.0**32), 2**32 - 1))


class Dropout(nnx.Module):
    """Dropout driven by an explicit key passed at call time (no key, or ``model.eval()``:
    identity). Kept entries are scaled by ``1 / (1 - rate)``."""

    def __init__(self, rate: float):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1); got {rate}")
        self.rate = rate
        self.deterministic = False  # set by nnx's model.eval() / model.train()

    def __call__(self, x, key):
        if key is None or self.rate == 0.0 or self.deterministic:
            return x
        keep = dropout_keep_mask(key, x.shape, 1.0 - self.rate)
        return jnp.where(keep, x / jnp.asarray(1.0 - self.rate, x.dtype), jnp.zeros_like(x))
