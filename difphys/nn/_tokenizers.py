"""Particle tokenisers for masked particle modelling (Golling et al., arXiv:2401.13537):
a VQ-VAE over per-particle features and K-means as the cheap alternative.

Both map particle features ``(..., d)`` to integer tokens ``(...,)``; padded particles are
excluded from fitting through a mask.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .._checks import check_count, check_finite


def _nearest(z, codebook):
    """Index of the nearest codebook row for each row of ``z (..., k)``."""
    d2 = (jnp.sum(z * z, axis=-1, keepdims=True) - 2.0 * z @ codebook.T
          + jnp.sum(codebook * codebook, axis=-1))
    return jnp.argmin(d2, axis=-1)


class VQMetrics(NamedTuple):
    """Metrics of :meth:`VQVAE.loss`: reconstruction MSE and the fraction of codes used by
    the batch."""

    recon: jax.Array
    codebook_used_in_batch: jax.Array


class VQVAE(nnx.Module):
    """Vector-quantised auto-encoder of particle features (van den Oord et al.,
    arXiv:1711.00937): MLP encoder -> nearest of ``codebook_size`` codes (straight-through
    gradient) -> MLP decoder.

    Loss (:meth:`loss`): reconstruction MSE + codebook term ``|sg(z_e) - e|^2`` +
    ``commitment * |z_e - sg(e)|^2``. :meth:`restart_dead_codes` moves codes that no particle
    used since the last restart onto random encoder outputs (Dhariwal et al. style restarts).
    """

    def __init__(self, input_dim: int = 17, *, codebook_size: int = 512, latent_dim: int = 8,
                 hidden: int = 64, commitment: float = 0.25, rngs: nnx.Rngs):
        check_count(input_dim, "input_dim")
        check_count(codebook_size, "codebook_size", 2)
        check_count(latent_dim, "latent_dim")
        check_count(hidden, "hidden")
        self.input_dim, self.codebook_size, self.commitment = input_dim, codebook_size, commitment
        self.enc1 = nnx.Linear(input_dim, hidden, rngs=rngs)
        self.enc2 = nnx.Linear(hidden, latent_dim, rngs=rngs)
        self.dec1 = nnx.Linear(latent_dim, hidden, rngs=rngs)
        self.dec2 = nnx.Linear(hidden, input_dim, rngs=rngs)
        self.codebook = nnx.Param(jax.random.normal(rngs.params(), (codebook_size, latent_dim),
                                                    jnp.float32))
        # particles assigned to each code since the last restart (not a parameter)
        self.usage = nnx.BatchStat(jnp.zeros(codebook_size, jnp.float32))

    def encode(self, x):
        return self.enc2(jax.nn.gelu(self.enc1(x.astype(jnp.float32))))

    def decode(self, z):
        return self.dec2(jax.nn.gelu(self.dec1(z)))

    def tokenize(self, x):
        """Token ids ``(...,)`` int32 of particle features ``x (..., input_dim)``."""
        return _nearest(self.encode(x), self.codebook[...]).astype(jnp.int32)

    def loss(self, x, mask):
        """``(loss, metrics)`` over the real particles (``mask``) of ``x (..., input_dim)``;
        accumulates code usage."""
        x = x.astype(jnp.float32)
        w = mask.astype(jnp.float32)
        n = jnp.maximum(jnp.sum(w), 1.0)
        z = self.encode(x)
        codebook = self.codebook[...]
        idx = _nearest(jax.lax.stop_gradient(z), codebook)
        e = codebook[idx]
        z_q = z + jax.lax.stop_gradient(e - z)  # straight-through estimator
        recon = jnp.sum(w * jnp.mean((self.decode(z_q) - x) ** 2, axis=-1)) / n
        codebook_term = jnp.sum(w * jnp.sum((jax.lax.stop_gradient(z) - e) ** 2, -1)) / n
        commit = jnp.sum(w * jnp.sum((z - jax.lax.stop_gradient(e)) ** 2, -1)) / n
        counts = jnp.zeros(self.codebook_size, jnp.float32).at[idx.ravel()].add(w.ravel())
        self.usage[...] = self.usage[...] + counts
        used = jnp.mean((counts > 0).astype(jnp.float32))
        return recon + codebook_term + self.commitment * commit, VQMetrics(recon, used)

    def restart_dead_codes(self, key, x, mask):
        """Move every code with zero usage onto the encoding of a random real particle of
        ``x`` and reset the usage counters; returns the number of restarted codes."""
        z = jax.lax.stop_gradient(self.encode(x.reshape(-1, x.shape[-1])))
        w = mask.reshape(-1).astype(jnp.float32)
        pick = jax.random.categorical(key, jnp.log(w + 1e-30), shape=(self.codebook_size,))
        dead = self.usage[...] == 0
        self.codebook[...] = jnp.where(dead[:, None], z[pick], self.codebook[...])
        self.usage[...] = jnp.zeros_like(self.usage[...])
        return jnp.sum(dead)


class KMeansTokenizer(nnx.Module):
    """K-means (Lloyd's algorithm from a k-means++ start) over particle features."""

    def __init__(self, centroids):
        self.centroids = nnx.BatchStat(jnp.asarray(centroids, jnp.float32))

    @property
    def codebook_size(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def fit(cls, key, x, mask, *, codebook_size: int = 512, iterations: int = 25,
            max_points: int = 200_000) -> KMeansTokenizer:
        """Fit to the real particles (``mask``) of ``x (..., d)``; at most ``max_points``
        random particles are used."""
        check_count(codebook_size, "codebook_size", 2)
        check_count(iterations, "iterations")
        if np.shape(mask) != np.shape(x)[:-1]:
            raise ValueError(f"mask {np.shape(mask)} must match x {np.shape(x)} without its "
                             "feature axis")
        if not np.any(np.asarray(mask)):
            raise ValueError("K-means got no real particles (the mask is all False)")
        check_finite(np.asarray(x)[np.asarray(mask)], "x (real particles)")
        pts = jnp.asarray(x, jnp.float32).reshape(-1, x.shape[-1])[jnp.asarray(mask).reshape(-1)]
        if pts.shape[0] < codebook_size:
            raise ValueError(f"K-means needs at least codebook_size={codebook_size} particles; "
                             f"got {pts.shape[0]}")
        k_sub, k_init = jax.random.split(key)
        if pts.shape[0] > max_points:
            pts = pts[jax.random.choice(k_sub, pts.shape[0], (max_points,), replace=False)]
        return cls(_lloyd(k_init, pts, codebook_size, iterations))

    def tokenize(self, x):
        """Token ids ``(...,)`` int32 of ``x (..., d)``."""
        return _nearest(x.astype(jnp.float32), self.centroids[...]).astype(jnp.int32)


def _kmeanspp(key, pts, k):
    n = pts.shape[0]
    k0, key = jax.random.split(key)
    first = pts[jax.random.randint(k0, (), 0, n)]
    centres = jnp.zeros((k, pts.shape[1]), pts.dtype).at[0].set(first)
    d2 = jnp.sum((pts - first) ** 2, axis=-1)

    def body(i, carry):
        centres, d2, key = carry
        key, sub = jax.random.split(key)
        j = jax.random.categorical(sub, jnp.log(d2 + 1e-30))
        centres = centres.at[i].set(pts[j])
        d2 = jnp.minimum(d2, jnp.sum((pts - pts[j]) ** 2, axis=-1))
        return centres, d2, key

    centres, _, _ = jax.lax.fori_loop(1, k, body, (centres, d2, key))
    return centres


@functools.partial(jax.jit, static_argnums=(2, 3))
def _lloyd(key, pts, k, iterations):
    centres = _kmeanspp(key, pts, k)

    def step(_, centres):
        idx = _nearest(pts, centres)
        sums = jnp.zeros_like(centres).at[idx].add(pts)
        counts = jnp.zeros(k, pts.dtype).at[idx].add(1.0)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)

    return jax.lax.fori_loop(0, iterations, step, centres)
