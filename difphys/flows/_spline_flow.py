"""Rational-quadratic spline coupling flows on R^d (Gaussian base) and on [0, 1]^d (uniform base).

A flow maps base samples ``z`` to ``x = f(z)``. Each of the ``n_layers`` coupling layers keeps
the coordinates selected by its mask and transforms the others elementwise with a
rational-quadratic spline (Durkan et al., arXiv:1906.04032; :func:`rational_quadratic_spline`) whose ``3K + 1`` parameters per coordinate come from an MLP
of the kept coordinates. The MLP's last layer starts at zero, so a new flow is the identity.
Layer parameters are stacked along a leading axis and the layers run under ``lax.scan`` (the
compile time does not grow with depth; on CPU the scan is unrolled to avoid an XLA:CPU bug).

* ``support="real"``: spline on ``[-bound, bound]`` with identity tails in standardised
  coordinates ``y = (x - loc) / scale``; optional ActNorm (elementwise affine per layer,
  identity at initialisation); base ``N(0, I)`` in ``y``.
* ``support="unit_cube"``: bounded splines mapping ``[0, 1]`` onto itself; base uniform, so
  ``log q`` is minus the log-Jacobian.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count, is_concrete


def coupling_masks(dim: int, n_layers: int) -> np.ndarray:
    """(n_layers, dim) 0/1 masks (1 = kept): alternating halves and parities, each coordinate
    is transformed by at least every other layer."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise ValueError(f"a coupling flow needs an integer dim >= 2; got {dim!r}")
    check_count(n_layers, "n_layers")
    idx = np.arange(dim)
    patterns = [idx < dim // 2, idx % 2 == 0]
    masks = []
    for layer in range(n_layers):
        m = patterns[(layer // 2) % 2]
        masks.append(m if layer % 2 == 0 else ~m)
    return np.asarray(masks, dtype=np.float64)


SCAN_MODES = ("auto", "rolled", "unrolled")


def _unroll(mode: str = "auto") -> bool:
    """Whether the layer scan is unrolled: ``"auto"`` unrolls on CPU only.

    XLA:CPU (jax 0.10.2) miscompiles the reverse-mode derivative of this scan for batches of a
    few thousand points (garbage or NaN gradients, reproducible, eager mode correct); unrolling
    avoids it at the cost of compile time linear in depth. Other backends keep the rolled scan.
    ``"rolled"`` / ``"unrolled"`` force one path (the tests run the rolled one on CPU too, at
    batch sizes the bug does not reach, so that the GPU path is exercised in CI).
    """
    if mode == "auto":
        return jax.default_backend() == "cpu"
    return mode == "unrolled"


_MIN_BIN = 1e-3
_MIN_SLOPE = 1e-3


def rational_quadratic_spline(x, params, lo, hi, *, identity_tails, inverse=False):
    """Elementwise monotone rational-quadratic spline on [lo, hi] (Durkan et al. 2019, eq. 4-8).

    ``params`` (..., 3K + 1): K bin widths, K bin heights (softmax-normalised, each at least
    1e-3 of the range) and K + 1 knot slopes (softplus, offset so that 0 gives slope 1; at
    least 1e-3). With ``identity_tails`` the end slopes are 1 and the map is the identity
    outside [lo, hi]; otherwise inputs must lie in [lo, hi]. All-zero parameters give the
    identity. Returns ``(y, log|dy/dx|)`` (or the inverse map and ``log|dx/dy|``). Bins are
    selected with one-hot sums rather than gathers.
    """
    k = (params.shape[-1] - 1) // 3
    if is_concrete(lo, hi) and not np.all(np.asarray(lo) < np.asarray(hi)):
        raise ValueError(f"the spline interval needs lo < hi; got lo = {lo!r}, hi = {hi!r}")
    dtype = x.dtype
    width = hi - lo
    w = _MIN_BIN + (1 - _MIN_BIN * k) * jax.nn.softmax(params[..., :k], axis=-1)
    h = _MIN_BIN + (1 - _MIN_BIN * k) * jax.nn.softmax(params[..., k : 2 * k], axis=-1)
    offset = float(np.log(np.expm1(1 - _MIN_SLOPE)))
    d = _MIN_SLOPE + jax.nn.softplus(params[..., 2 * k :] + offset)
    if identity_tails:
        one = jnp.ones_like(d[..., :1])
        d = jnp.concatenate([one, d[..., 1:-1], one], axis=-1)
    w, h = w * width, h * width
    zero = jnp.zeros_like(w[..., :1])
    xk = lo + jnp.concatenate([zero, jnp.cumsum(w, axis=-1)], axis=-1)
    yk = lo + jnp.concatenate([zero, jnp.cumsum(h, axis=-1)], axis=-1)
    inside = (x >= lo) & (x <= hi)
    xc = jnp.clip(x, lo, hi)
    knots = yk if inverse else xk
    idx = jnp.sum(xc[..., None] >= knots[..., 1:k], axis=-1)
    onehot = jax.nn.one_hot(idx, k, dtype=dtype)

    def sel(a):
        return jnp.sum(onehot * a, axis=-1)

    x_lo, y_lo = sel(xk[..., :k]), sel(yk[..., :k])
    w_k, h_k = sel(w), sel(h)
    d_k, d_k1 = sel(d[..., :k]), sel(d[..., 1:])
    s_k = h_k / w_k
    if inverse:
        dy = xc - y_lo
        c2 = d_k1 + d_k - 2 * s_k
        a = h_k * (s_k - d_k) + dy * c2
        b = h_k * d_k - dy * c2
        c = -s_k * dy
        disc = jnp.maximum(b**2 - 4 * a * c, 0.0)
        xi = 2 * c / (-b - jnp.sqrt(disc))
        out = x_lo + xi * w_k
    else:
        xi = (xc - x_lo) / w_k
    t = xi * (1 - xi)
    denom = s_k + (d_k1 + d_k - 2 * s_k) * t
    if not inverse:
        out = y_lo + h_k * (s_k * xi**2 + d_k * t) / denom
    log_slope = (
        2 * jnp.log(s_k)
        + jnp.log(d_k1 * xi**2 + 2 * s_k * t + d_k * (1 - xi) ** 2)
        - (2 * jnp.log(denom))
    )
    ld = -log_slope if inverse else log_slope
    if identity_tails:
        out = jnp.where(inside, out, x)
        ld = jnp.where(inside, ld, jnp.zeros_like(ld))
    return out, ld


def _standardisation(flow, dtype):
    """``(loc, scale)`` as arrays of ``dtype``: scalars, or ``(dim,)`` for per-coordinate values."""
    return jnp.asarray(flow.loc, dtype), jnp.asarray(flow.scale, dtype)


def _as_standardisation(value, dim: int, name: str):
    """A float, or a tuple of ``dim`` floats (hashable, for a static field)."""
    a = np.asarray(value, np.float64)
    if a.ndim == 0:
        out = float(a)
    elif a.shape == (dim,):
        out = tuple(float(v) for v in a)
    else:
        raise ValueError(f"{name} must be a number or a sequence of {dim} numbers; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if name == "scale" and not np.all(a > 0):
        raise ValueError(f"scale must be positive; got {value!r}")
    return out


def _dense_init(key, n_in, n_out, n_layers, dtype, zero=False):
    if zero:
        return jnp.zeros((n_layers, n_in, n_out), dtype), jnp.zeros((n_layers, n_out), dtype)
    w = jax.random.normal(key, (n_layers, n_in, n_out), dtype) * jnp.sqrt(
        jnp.asarray(1.0 / n_in, dtype)
    )
    return w, jnp.zeros((n_layers, n_out), dtype)


class SplineFlow(eqx.Module):
    """A stack of spline coupling layers; a PyTree usable under jit/grad/vmap.

    Build with :func:`make_spline_flow`. Methods: ``forward_and_log_det(z)``,
    ``inverse_and_log_det(x)``, ``log_prob(x)``, ``sample_and_log_prob(key, n)``; all work on
    batches ``(..., dim)``.
    """

    weights: tuple
    biases: tuple
    act_log_scale: jax.Array
    act_shift: jax.Array
    dim: int = eqx.field(static=True)
    n_layers: int = eqx.field(static=True)
    n_bins: int = eqx.field(static=True)
    support: str = eqx.field(static=True)
    bound: float = eqx.field(static=True)
    loc: float | tuple = eqx.field(static=True)
    scale: float | tuple = eqx.field(static=True)
    actnorm: bool = eqx.field(static=True)
    scan: str = eqx.field(static=True, default="auto")

    # ---------------------------------------------------------------- one coupling layer
    def _conditioner(self, layer_params, kept):
        w, b = layer_params
        h = kept
        if self.support == "unit_cube":
            h = 2.0 * h - 1.0
        for i in range(len(w) - 1):
            h = jax.nn.silu(h @ w[i] + b[i])
        out = h @ w[-1] + b[-1]
        return out.reshape(*kept.shape[:-1], self.dim, 3 * self.n_bins + 1)

    def _layer(self, layer_params, mask, x, inverse):
        kept = x * mask
        params = self._conditioner(layer_params, kept)
        if self.support == "unit_cube":
            y, ld = rational_quadratic_spline(
                x, params, 0.0, 1.0, identity_tails=False, inverse=inverse
            )
        else:
            y, ld = rational_quadratic_spline(
                x, params, -self.bound, self.bound, identity_tails=True, inverse=inverse
            )
        y = mask * x + (1 - mask) * y
        return y, jnp.sum((1 - mask) * ld, axis=-1)

    def _check(self, x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"this flow needs points with last axis {self.dim}; got shape {x.shape}")
        return x

    # ---------------------------------------------------------------- whole flow
    def _layer_stack(self, dtype):
        """Per-layer (weights, biases, mask, ActNorm log-scale, shift), stacked for lax.scan."""
        masks = jnp.asarray(coupling_masks(self.dim, self.n_layers), dtype)
        ws = tuple(w.astype(dtype) for w in self.weights)
        bs = tuple(b.astype(dtype) for b in self.biases)
        return ws, bs, masks, self.act_log_scale.astype(dtype), self.act_shift.astype(dtype)

    def forward_and_log_det(self, z):
        """Base ``z`` (..., dim) -> ``x`` and ``log|det dx/dz|`` (...)."""
        z = self._check(z)

        def step(carry, layer):
            x, ld = carry
            w, b, mask, s, t = layer
            x, dld = self._layer((w, b), mask, x, inverse=False)
            if self.actnorm:
                x = x * jnp.exp(s) + t
                dld = dld + jnp.sum(s)
            return (x, ld + dld), None

        (y, ld), _ = jax.lax.scan(
            step, (z, jnp.zeros(z.shape[:-1], z.dtype)), self._layer_stack(z.dtype),
            unroll=_unroll(self.scan),
        )
        if self.support == "real":
            loc, scale = _standardisation(self, z.dtype)
            y = loc + scale * y
            ld = ld + jnp.sum(jnp.log(scale)) * (1 if scale.ndim else self.dim)
        return y, ld

    def inverse_and_log_det(self, x):
        """``x`` (..., dim) -> base ``z`` and ``log|det dz/dx|`` (...)."""
        x = self._check(x)
        ld0 = jnp.zeros(x.shape[:-1], x.dtype)
        if self.support == "real":
            loc, scale = _standardisation(self, x.dtype)
            x = (x - loc) / scale
            ld0 = ld0 - jnp.sum(jnp.log(scale)) * (1 if scale.ndim else self.dim)

        def step(carry, layer):
            y, ld = carry
            w, b, mask, s, t = layer
            if self.actnorm:
                y = (y - t) * jnp.exp(-s)
                ld = ld - jnp.sum(s)
            y, dld = self._layer((w, b), mask, y, inverse=True)
            return (y, ld + dld), None

        (z, ld), _ = jax.lax.scan(
            step, (x, ld0), self._layer_stack(x.dtype), reverse=True, unroll=_unroll(self.scan)
        )
        return z, ld

    def base_log_prob(self, z):
        if self.support == "unit_cube":
            inside = jnp.all((z >= 0) & (z <= 1), axis=-1)
            return jnp.where(inside, jnp.zeros(z.shape[:-1], z.dtype), -jnp.inf)
        return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * self.dim * jnp.log(
            jnp.asarray(2 * np.pi, z.dtype)
        )

    def log_prob(self, x):
        """log q(x), shape ``x.shape[:-1]``. For the unit-cube support, -inf outside
        ``[0, 1]^dim``; a point with a NaN coordinate raises outside ``jit`` and gives -inf
        inside it. Points that give -inf have a zero gradient (they are evaluated at the
        cube's centre)."""
        x = self._check(x)
        if is_concrete(x) and np.any(np.isnan(np.asarray(x))):
            raise ValueError("log_prob: x contains NaN")
        if self.support == "unit_cube":
            inside = jnp.all((x >= 0) & (x <= 1), axis=-1)
        else:
            inside = jnp.all(jnp.isfinite(x), axis=-1)
        x_safe = jnp.where(inside[..., None], x, jnp.full_like(x, 0.5))
        z, ld = self.inverse_and_log_det(x_safe)
        value = self.base_log_prob(z) + ld
        return jnp.where(inside, value, jnp.full_like(value, -jnp.inf))

    def sample_and_log_prob(self, key, n: int, dtype=None):
        """``n`` samples (n, dim) and their log q (n,); reparameterised (differentiable)."""
        dtype = self.weights[0].dtype if dtype is None else dtype
        if self.support == "unit_cube":
            z = jax.random.uniform(key, (n, self.dim), dtype)
        else:
            z = jax.random.normal(key, (n, self.dim), dtype)
        x, ld = self.forward_and_log_det(z)
        return x, self.base_log_prob(z) - ld

    def sample(self, key, n: int, dtype=None):
        return self.sample_and_log_prob(key, n, dtype)[0]


def make_spline_flow(key, dim: int, *, support: str = "real", n_layers: int = 8, hidden: int = 64,
                     depth: int = 2, n_bins: int = 8, bound: float = 5.0, loc: float = 0.0,
                     scale: float = 1.0, actnorm: bool = False, dtype=None,
                     scan: str = "auto") -> SplineFlow:
    """A new identity-initialised spline coupling flow.

    Args:
      key: PRNG key for the conditioner weights.
      dim: event dimension (>= 2).
      support: ``"real"`` (Gaussian base, R^d) or ``"unit_cube"`` (uniform base, [0, 1]^d).
      n_layers, hidden, depth, n_bins: coupling layers, MLP width and hidden layers, spline bins.
      bound: spline interval ``[-bound, bound]`` in standardised coordinates (real support).
      loc, scale: the standardisation ``x = loc + scale * y`` (real support): numbers, or
        sequences of ``dim`` numbers for coordinates of different sizes.
      actnorm: add a learnable elementwise affine after each layer (real support only).
      scan: how the layers run: ``"auto"`` (a rolled ``lax.scan``, unrolled on CPU where
        XLA:CPU miscompiles its derivative for large batches), ``"rolled"`` or ``"unrolled"``.
        The three give the same values; ``dataclasses.replace(flow, scan=...)`` switches a
        trained flow.
    """
    if scan not in SCAN_MODES:
        raise ValueError(f"scan must be one of {SCAN_MODES}; got {scan!r}")
    if support not in ("real", "unit_cube"):
        raise ValueError(f"support must be 'real' or 'unit_cube'; got {support!r}")
    if actnorm and support == "unit_cube":
        raise ValueError("ActNorm would leave the unit cube; use it with support='real'")
    coupling_masks(dim, n_layers)  # validates dim and n_layers
    loc = _as_standardisation(loc, dim, "loc")
    scale = _as_standardisation(scale, dim, "scale")
    check_count(hidden, "hidden")
    check_count(depth, "depth", 0)
    check_count(n_bins, "n_bins")
    dtype = jnp.result_type(float) if dtype is None else dtype
    keys = jax.random.split(key, depth + 1)
    sizes = [dim] + [hidden] * depth + [dim * (3 * n_bins + 1)]
    weights, biases = [], []
    for i in range(depth + 1):
        w, b = _dense_init(keys[i], sizes[i], sizes[i + 1], n_layers, dtype, zero=(i == depth))
        weights.append(w)
        biases.append(b)
    return SplineFlow(
        weights=tuple(weights),
        biases=tuple(biases),
        act_log_scale=jnp.zeros((n_layers, dim), dtype),
        act_shift=jnp.zeros((n_layers, dim), dtype),
        dim=dim,
        n_layers=n_layers,
        n_bins=n_bins,
        support=support,
        bound=float(bound),
        loc=loc,
        scale=scale,
        actnorm=bool(actnorm),
        scan=scan,
    )
