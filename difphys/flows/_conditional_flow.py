"""Conditional rational-quadratic spline flows ``q(x | c)`` on R^d (Gaussian base).

The same coupling layers as :class:`difphys.flows.SplineFlow`, with the conditioner MLP of each
layer reading the kept coordinates *and* a context vector ``c`` (standardised with fixed
``context_loc`` / ``context_scale``), so every spline parameter depends on the context. Uses:
surrogate likelihoods ``p(y | x)`` learned from simulated pairs (context ``x``), and recognition
networks ``r(x | y)`` for importance-weighted source estimation (context ``y``). One-dimensional
``x`` is allowed: the single coordinate is transformed by every layer from the context alone.

The layers run in a Python loop (unrolled; the flows here are shallow), so there is no
``lax.scan`` and none of the XLA:CPU scan issue of the unconditional flow.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, is_concrete
from ._spline_flow import _as_standardisation, coupling_masks, rational_quadratic_spline


def _masks(dim: int, n_layers: int) -> np.ndarray:
    if dim == 1:
        return np.zeros((n_layers, 1))
    return coupling_masks(dim, n_layers)


class ConditionalSplineFlow(eqx.Module):
    """``q(x | context)``: a stack of context-conditioned spline couplings (a PyTree).

    Build with :func:`make_conditional_spline_flow`. Every method takes points ``x (..., dim)``
    and a context ``(..., context_dim)``; leading axes broadcast.
    """

    weights: tuple
    biases: tuple
    dim: int = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)
    n_layers: int = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    bound: float = eqx.field(static=True)
    loc: float | tuple = eqx.field(static=True)
    scale: float | tuple = eqx.field(static=True)
    context_loc: float | tuple = eqx.field(static=True)
    context_scale: float | tuple = eqx.field(static=True)

    def _check(self, x, context):
        x, context = jnp.asarray(x), jnp.asarray(context)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"this flow needs points with last axis {self.dim}; got shape {x.shape}")
        if context.ndim == 0 or context.shape[-1] != self.context_dim:
            raise ValueError(f"this flow needs a context with last axis {self.context_dim}; got "
                             f"shape {context.shape}")
        if is_concrete(context) and not np.all(np.isfinite(np.asarray(context))):
            raise ValueError("the context contains NaN or infinite values")
        shape = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        x = jnp.broadcast_to(x, (*shape, self.dim))
        context = jnp.broadcast_to(context, (*shape, self.context_dim)).astype(x.dtype)
        return x, context

    def _context(self, context):
        loc = jnp.asarray(self.context_loc, context.dtype)
        return (context - loc) / jnp.asarray(self.context_scale, context.dtype)

    def _layer(self, i, mask, x, ctx, inverse):
        h = jnp.concatenate([x * mask, ctx], axis=-1)
        n = len(self.weights)
        for j in range(n - 1):
            h = jax.nn.silu(h @ self.weights[j][i].astype(x.dtype) + self.biases[j][i].astype(x.dtype))
        out = h @ self.weights[-1][i].astype(x.dtype) + self.biases[-1][i].astype(x.dtype)
        params = out.reshape(*x.shape[:-1], self.dim, 3 * self.n_bins + 1)
        y, ld = rational_quadratic_spline(x, params, -self.bound, self.bound,
                                          identity_tails=True, inverse=inverse)
        y = mask * x + (1 - mask) * y
        return y, jnp.sum((1 - mask) * ld, axis=-1)

    def _standardisation(self, dtype):
        loc, scale = jnp.asarray(self.loc, dtype), jnp.asarray(self.scale, dtype)
        return loc, scale, jnp.sum(jnp.log(scale)) * (1 if scale.ndim else self.dim)

    def forward_and_log_det(self, z, context):
        """Base ``z (..., dim)`` -> ``x`` and ``log|det dx/dz|`` (...), given the context."""
        z, context = self._check(z, context)
        ctx = self._context(context)
        masks = jnp.asarray(_masks(self.dim, self.n_layers), z.dtype)
        ld = jnp.zeros(z.shape[:-1], z.dtype)
        x = z
        for i in range(self.n_layers):
            x, dld = self._layer(i, masks[i], x, ctx, inverse=False)
            ld = ld + dld
        loc, scale, log_scale = self._standardisation(z.dtype)
        return loc + scale * x, ld + log_scale

    def inverse_and_log_det(self, x, context):
        """``x (..., dim)`` -> base ``z`` and ``log|det dz/dx|`` (...), given the context."""
        x, context = self._check(x, context)
        ctx = self._context(context)
        masks = jnp.asarray(_masks(self.dim, self.n_layers), x.dtype)
        loc, scale, log_scale = self._standardisation(x.dtype)
        y = (x - loc) / scale
        ld = jnp.full(x.shape[:-1], -log_scale, x.dtype)
        for i in reversed(range(self.n_layers)):
            y, dld = self._layer(i, masks[i], y, ctx, inverse=True)
            ld = ld + dld
        return y, ld

    def _base_log_prob(self, z):
        """``log N(z; 0, I)`` over the last axis."""
        return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * self.dim * jnp.log(
            jnp.asarray(2 * np.pi, z.dtype))

    def log_prob(self, x, context):
        """``log q(x | context)``, shape the broadcast leading axes. A point with a NaN
        coordinate raises outside ``jit``."""
        if is_concrete(x) and np.any(np.isnan(np.asarray(x))):
            raise ValueError("log_prob: x contains NaN")
        z, ld = self.inverse_and_log_det(x, context)
        return self._base_log_prob(z) + ld

    def sample_and_log_prob(self, key, context, n: int | None = None):
        """Reparameterised samples ``x`` and ``log q(x | context)``: one per context row
        (``x (..., dim)``), or ``n`` per row (``x (n, ..., dim)``) when ``n`` is given."""
        context = jnp.asarray(context)
        dtype = self.weights[0].dtype
        lead = context.shape[:-1] if n is None else (check_count(n, "n"), *context.shape[:-1])
        z = jax.random.normal(key, (*lead, self.dim), dtype)
        x, ld = self.forward_and_log_det(z, context)
        return x, self._base_log_prob(z) - ld

    def sample(self, key, context, n: int | None = None):
        """Samples only (see :meth:`sample_and_log_prob`)."""
        return self.sample_and_log_prob(key, context, n)[0]


def make_conditional_spline_flow(key, dim: int, context_dim: int, *, n_layers: int = 4,
                                 hidden: int = 64, depth: int = 2, n_bins: int = 8,
                                 bound: float = 5.0, loc=0.0, scale=1.0, context_loc=0.0,
                                 context_scale=1.0, dtype=None) -> ConditionalSplineFlow:
    """A new conditional spline flow; it starts as ``N(loc, scale^2)`` for every context.

    Args:
      key: PRNG key for the conditioner weights.
      dim: dimension of ``x`` (>= 1); context_dim: dimension of the context (>= 1).
      n_layers, hidden, depth, n_bins: coupling layers, MLP width and hidden layers, spline bins.
      bound: spline interval ``[-bound, bound]`` in standardised coordinates (identity outside).
      loc, scale: ``x = loc + scale * y`` with ``y`` the flow's standardised coordinates
        (numbers or sequences of ``dim`` numbers, in the units of ``x``).
      context_loc, context_scale: the context enters the conditioners as
        ``(c - context_loc) / context_scale`` (numbers or sequences of ``context_dim``).
    """
    for value, name in ((dim, "dim"), (context_dim, "context_dim")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    check_count(n_layers, "n_layers")
    check_count(hidden, "hidden")
    check_count(depth, "depth", 0)
    check_count(n_bins, "n_bins")
    if not float(bound) > 0:
        raise ValueError(f"bound must be positive; got {bound!r}")
    dtype = jnp.result_type(float) if dtype is None else dtype
    keys = jax.random.split(key, depth + 1)
    sizes = [dim + context_dim] + [hidden] * depth + [dim * (3 * n_bins + 1)]
    weights, biases = [], []
    for i in range(depth + 1):
        if i == depth:
            w = jnp.zeros((n_layers, sizes[i], sizes[i + 1]), dtype)
        else:
            w = jax.random.normal(keys[i], (n_layers, sizes[i], sizes[i + 1]), dtype) * jnp.sqrt(
                jnp.asarray(1.0 / sizes[i], dtype))
        weights.append(w)
        biases.append(jnp.zeros((n_layers, sizes[i + 1]), dtype))
    return ConditionalSplineFlow(
        weights=tuple(weights), biases=tuple(biases), dim=int(dim), context_dim=int(context_dim),
        n_layers=int(n_layers), n_bins=int(n_bins), bound=float(bound),
        loc=_as_standardisation(loc, dim, "loc"), scale=_as_standardisation(scale, dim, "scale"),
        context_loc=_as_standardisation(context_loc, context_dim, "context_loc"),
        context_scale=_as_standardisation(context_scale, context_dim, "scale"),
    )
