"""Discrete distributions sampled by inverse CDF, with the rules every estimator needs.

Each distribution is drawn as ``x = #{k >= 0 : F(k) < u}`` from one uniform ``u`` per draw
(``F`` is the CDF). Sampling through a single monotone uniform has two uses: the primal and the
perturbed ("alternative") program of stochastic AD see *coupled* draws, and the relaxed
estimator smooths the very same step functions.

For every distribution we keep, as pure elementwise functions of arrays:

- ``alternatives(x, params, dparams)``: the stochastic-derivative rule of Arya et al.
  (arXiv:2210.08572): a list of ``(alt_value, weight)`` with ``weight >= 0`` such that
  ``d/dtheta E f(X) = E[sum_i weight_i (f(alt_i) - f(X))]`` for the directional change
  ``dparams`` of the parameters. Derivations are in ``docs/stochad.md``.
- ``log_prob(x, params)`` for the score-function estimator,
- ``mean(params)`` for straight-through,
- ``relaxed(u, x, params, tau)``: the inverse-CDF step functions replaced by logistic
  sigmoids of temperature ``tau`` (for Bernoulli this is exactly the binary Concrete /
  Gumbel-softmax relaxation).

Values are returned in the floating dtype of the parameters so that they can carry derivative
information; convert with ``astype(int)`` where an integer is needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy import special

#: the prefix of the jitted sampler functions; the estimators recognise draws by this name
SAMPLER_PREFIX = "difphys_stochad__"

# half-width (in counts) of the window of inverse-CDF steps smoothed by the relaxed estimator
_RELAX_WINDOW = 10


def _logit(x):
    return jnp.log(x) - jnp.log1p(-x)


def _safe_div(num, den, where):
    """num / den where ``where`` holds, else 0, with no NaN in either branch's gradient."""
    den = jnp.where(where, den, jnp.ones_like(den))
    return jnp.where(where, num / den, jnp.zeros_like(num))


def _uniform(key, shape, dtype):
    tiny = jnp.finfo(dtype).tiny
    return jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)


def _count_search(u, log_pmf0, log_ratio, kmax):
    """Smallest k with CDF(k) >= u for a count distribution given P(0) and P(k+1)/P(k)."""
    dtype = u.dtype

    def cond(c):
        k, _, cdf = c
        return jnp.any((u > cdf) & (k < kmax))

    def body(c):
        k, log_pmf, cdf = c
        active = (u > cdf) & (k < kmax)
        log_next = log_pmf + log_ratio(k)
        k = jnp.where(active, k + 1, k)
        log_pmf = jnp.where(active, log_next, log_pmf)
        cdf = jnp.where(active, cdf + jnp.exp(log_next), cdf)
        return k, log_pmf, cdf

    k0 = jnp.zeros_like(u)
    k, _, _ = jax.lax.while_loop(cond, body, (k0, log_pmf0, jnp.exp(log_pmf0)))
    return k.astype(dtype)


def _relaxed_counts(u, x, cdf, tau, kmax=None):
    """Sum of sigmoid((logit u - logit F(k)) / tau) over a window of k around the hard draw x."""
    offsets = jnp.arange(-_RELAX_WINDOW, _RELAX_WINDOW + 1, dtype=u.dtype)
    k = x[..., None] + offsets
    valid = k >= 0
    if kmax is not None:
        valid = valid & (k < kmax[..., None])
    k_safe = jnp.where(valid, k, jnp.zeros_like(k))
    f = jnp.clip(cdf(k_safe), jnp.finfo(u.dtype).eps, 1 - jnp.finfo(u.dtype).eps)
    steps = jax.nn.sigmoid((_logit(u)[..., None] - _logit(f)) / tau)
    below = jnp.maximum(x - _RELAX_WINDOW, jnp.zeros_like(x))
    return below + jnp.sum(jnp.where(valid, steps, jnp.zeros_like(steps)), axis=-1)


@dataclasses.dataclass(frozen=True)
class Discrete:
    """The rules of one discrete family (see the module docstring)."""

    name: str
    inverse_cdf: Callable
    log_prob: Callable
    mean: Callable
    alternatives: Callable
    relaxed: Callable
    event_ndim: int = 0  # trailing parameter axes consumed per draw (1 for categorical)

    def draw(self, key, *params):
        """(u, x): the uniform and the sample, shape = batch shape of ``params``."""
        p0 = params[0]
        shape = p0.shape[: p0.ndim - self.event_ndim]
        u = _uniform(key, shape, p0.dtype)
        return u, self.inverse_cdf(u, *params)


# ---------------------------------------------------------------------------- Bernoulli(p)
def _bern_alt(x, p, dp):
    up = (x == 0) & (dp > 0)
    down = (x == 1) & (dp < 0)
    return [
        (jnp.ones_like(x), _safe_div(dp, 1 - p, up)),
        (jnp.zeros_like(x), _safe_div(-dp, p, down)),
    ]


BERNOULLI = Discrete(
    name="bernoulli",
    inverse_cdf=lambda u, p: (u > 1 - p).astype(p.dtype),
    log_prob=lambda x, p: jnp.where(x > 0.5, jnp.log(p), jnp.log1p(-p)),
    mean=lambda p: p,
    alternatives=_bern_alt,
    relaxed=lambda u, x, p, tau: jax.nn.sigmoid(
        (_logit(u) - _logit(jnp.clip(1 - p, jnp.finfo(p.dtype).eps, 1 - jnp.finfo(p.dtype).eps)))
        / tau
    ),
)


# ------------------------------------------------------------------------- Binomial(n, p)
def _binom_inverse_cdf(u, n, p):
    # Search from the more probable end: for p > 1/2 count the failures of Binomial(n, 1 - p)
    # from v = 1 - u (the same monotone map up to ties, since F'(k) < 1 - u <=> F(n-k-1) > u).
    # This keeps P(0) = (1 - p)^n away from underflow and makes p = 1 give exactly n.
    flip = p > 0.5
    p_small = jnp.where(flip, 1 - p, p)
    v = jnp.where(flip, 1 - u, u)
    q = 1 - p_small
    log_pmf0 = n * jnp.log(q)

    def log_ratio(k):
        return jnp.log(n - k) - jnp.log(k + 1) + jnp.log(p_small) - jnp.log(q)

    k = _count_search(v, log_pmf0, log_ratio, n)
    return jnp.where(flip, n - k, k)


def _binom_alt(x, n, p, dn, dp):
    del dn  # the number of trials is not differentiable
    up = (x < n) & (dp > 0)
    down = (x > 0) & (dp < 0)
    return [
        (x + 1, _safe_div(dp * (n - x), 1 - p, up)),
        (x - 1, _safe_div(-dp * x, p, down)),
    ]


BINOMIAL = Discrete(
    name="binomial",
    inverse_cdf=_binom_inverse_cdf,
    log_prob=lambda x, n, p: x * jnp.log(p) + (n - x) * jnp.log1p(-p),
    mean=lambda n, p: n * p,
    alternatives=_binom_alt,
    relaxed=lambda u, x, n, p, tau: _relaxed_counts(
        u, x, lambda k: special.betainc(jnp.maximum(n - k, 1e-3), k + 1, 1 - p), tau, kmax=n
    ),
)


# --------------------------------------------------------------- Geometric(p) (failures)
def _geom_inverse_cdf(u, p):
    # P(X >= k) = (1 - p)^k; with v = 1 - u uniform, X = floor(log v / log(1 - p))
    v = jnp.maximum(1 - u, jnp.finfo(u.dtype).tiny)
    return jnp.floor(jnp.log(v) / jnp.log1p(-p)).astype(p.dtype)


def _geom_alt(x, p, dp):
    down = (x > 0) & (dp > 0)
    up = dp < 0
    return [
        (x - 1, _safe_div(dp * x, p * (1 - p), down)),
        (x + 1, _safe_div(-dp * (x + 1), p, up)),
    ]


GEOMETRIC = Discrete(
    name="geometric",
    inverse_cdf=_geom_inverse_cdf,
    log_prob=lambda x, p: x * jnp.log1p(-p) + jnp.log(p),
    mean=lambda p: (1 - p) / p,
    alternatives=_geom_alt,
    relaxed=lambda u, x, p, tau: _relaxed_counts(
        u, x, lambda k: -jnp.expm1((k + 1) * jnp.log1p(-p)), tau
    ),
)


# ------------------------------------------------------------------------ Poisson(rate)
def _poisson_inverse_cdf(u, rate):
    kmax = jnp.ceil(rate + 30 * jnp.sqrt(rate) + 50)
    return _count_search(u, -rate, lambda k: jnp.log(rate) - jnp.log(k + 1), kmax)


def _poisson_alt(x, rate, drate):
    up = drate > 0
    down = (x > 0) & (drate < 0)
    return [
        (x + 1, jnp.where(up, drate, jnp.zeros_like(drate))),
        (x - 1, _safe_div(-drate * x, rate, down)),
    ]


POISSON = Discrete(
    name="poisson",
    inverse_cdf=_poisson_inverse_cdf,
    log_prob=lambda x, rate: x * jnp.log(rate) - rate - special.gammaln(x + 1),
    mean=lambda rate: rate,
    alternatives=_poisson_alt,
    relaxed=lambda u, x, rate, tau: _relaxed_counts(
        u, x, lambda k: special.gammaincc(k + 1, rate), tau
    ),
)


# ------------------------------------------------------------------ Categorical(probs)
def _cat_inverse_cdf(u, probs):
    cdf = jnp.cumsum(probs, axis=-1)[..., :-1]
    return jnp.sum(u[..., None] > cdf, axis=-1).astype(probs.dtype)


def _cat_alt(x, probs, dprobs):
    """Every category j the outcome x can jump to, with the rate at which it does.

    With the CDF boundaries ``c_k`` (``c_{-1} = 0``) moving at ``d_k = dc_k``, the uniforms in
    x's interval ``[c_{x-1}, c_x)`` that land in j's new interval have measure
    ``|overlap| = rate_j * dt``. Only categories whose boundaries coincide with one of x's move
    into it: the neighbour x -+ 1, and past it any run of *empty* categories (p = 0) whose
    boundaries sit at the same point, so a move of ``c_{x-1}`` can carry x straight to x - 2.
    Proposing only x -+ 1 (the rule of a category-wise Bernoulli chain) is biased as soon as a
    category is empty. Rates (divided by p_x) for j < x, where ``c_j = c_{x-1} = L``:
    ``max(0, d_j - max(a_j, 0))``, ``a_j = d_{j-1}`` if ``c_{j-1} = L`` else ``-inf``; for j > x,
    where ``c_{j-1} = c_x = U``: ``max(0, min(b_j, 0) - d_{j-1})``, ``b_j = d_j`` if ``c_j = U``
    else ``+inf``.
    """
    n = probs.shape[-1]
    zero = jnp.zeros(probs.shape[:-1] + (1,), probs.dtype)
    cdf = jnp.concatenate([zero, jnp.cumsum(probs, axis=-1)], axis=-1)  # c_{-1} .. c_{n-1}
    dcdf = jnp.concatenate([zero, jnp.cumsum(dprobs, axis=-1)], axis=-1)
    xi = x.astype(jnp.int32)
    lower = jnp.take_along_axis(cdf, xi[..., None], axis=-1)  # c_{x-1}
    upper = jnp.take_along_axis(cdf, xi[..., None] + 1, axis=-1)  # c_x
    p_x = jnp.take_along_axis(probs, xi[..., None], axis=-1)[..., 0]
    c_lo, c_hi = cdf[..., :-1], cdf[..., 1:]  # c_{j-1}, c_j for j = 0..n-1
    d_lo, d_hi = dcdf[..., :-1], dcdf[..., 1:]
    j = jnp.arange(n, dtype=jnp.int32)
    big = jnp.full_like(d_lo, jnp.inf)
    below = (j < xi[..., None]) & (c_hi == lower)
    a = jnp.where((c_lo == lower) & (j > 0), d_lo, -big)
    rate_below = jnp.maximum(d_hi - jnp.maximum(a, 0), 0)
    above = (j > xi[..., None]) & (c_lo == upper)
    b = jnp.where((c_hi == upper) & (j < n - 1), d_hi, big)
    rate_above = jnp.maximum(jnp.minimum(b, 0) - d_lo, 0)
    rate = jnp.where(below, rate_below, jnp.where(above, rate_above, jnp.zeros_like(d_lo)))
    has = rate > 0
    weights = _safe_div(rate, jnp.broadcast_to(p_x[..., None], rate.shape), has)
    return [(jnp.full_like(x, k), weights[..., k]) for k in range(n)]


def _cat_relaxed(u, x, probs, tau):
    del x
    eps = jnp.finfo(probs.dtype).eps
    cdf = jnp.clip(jnp.cumsum(probs, axis=-1)[..., :-1], eps, 1 - eps)
    return jnp.sum(jax.nn.sigmoid((_logit(u)[..., None] - _logit(cdf)) / tau), axis=-1)


CATEGORICAL = Discrete(
    name="categorical",
    inverse_cdf=_cat_inverse_cdf,
    log_prob=lambda x, probs: jnp.log(
        jnp.take_along_axis(probs, x.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    ),
    mean=lambda probs: jnp.sum(probs * jnp.arange(probs.shape[-1], dtype=probs.dtype), axis=-1),
    alternatives=_cat_alt,
    relaxed=_cat_relaxed,
    event_ndim=1,
)

DISTRIBUTIONS = {d.name: d for d in (BERNOULLI, BINOMIAL, GEOMETRIC, POISSON, CATEGORICAL)}
