"""``derivative_estimate``: one unbiased (or documented-biased) sample of d/dtheta E[f(theta, key)].

Methods
-------
``"stochad"`` (default)
    Stochastic triples (Arya et al., arXiv:2210.08572) in two passes over the traced program.
    Pass 1 carries the pathwise tangent (``jax.jvp`` semantics) and, at every discrete draw,
    the possible perturbations with their weights; a reservoir keeps a single one with
    probability proportional to its weight, which is the unbiased pruning rule of the paper
    applied to the whole program, and accumulates the total weight ``W``. Pass 2 re-runs the
    program with the same key and that one draw changed (all other draws coupled through their
    common uniforms). The estimate is ``tangent + W * (f_alternative - f_primal)``. With
    ``n_alternatives=K`` K reservoirs and K alternative runs are averaged (variance down ~1/K).
``"score"``
    REINFORCE: ``tangent + f * d/dtheta sum_j log P(x_j)`` (unbiased, high variance).
``"score_baseline"``
    The same with ``f - b``; ``b`` is the ``baseline`` option or, by default, the mean of
    ``n_baseline`` (default 8) runs with independent keys, which keeps it unbiased.
``"gumbel"``
    Relaxation: every inverse-CDF step of a draw becomes a logistic sigmoid of temperature
    ``temperature`` (default 0.5), the binary Concrete / Gumbel-softmax relaxation for a
    Bernoulli. With ``hard=False`` (default) the program runs on the relaxed values; with
    ``hard=True`` it runs on the hard draws and only the tangent is relaxed (straight-through
    Gumbel). **Biased** for any temperature > 0.
``"straight_through"``
    Hard draws, tangent of the draw's mean (``d E[x] / d theta``). **Biased** unless ``f`` is
    linear in the draws.
``"fd"``
    Central finite differences with common random numbers, step ``h`` (default 1e-2):
    ``(f(theta + h, key) - f(theta - h, key)) / 2h``. Biased by O(h^2) and of high variance for
    discrete programs.

Randomness: the estimators draw their own random numbers (reservoir choices, baseline keys)
from ``key`` through ``fold_in``; the program itself sees exactly ``key``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .._checks import check_finite
from ._interpreter import Interpreter, _instantiate

METHODS = ("stochad", "score", "score_baseline", "gumbel", "straight_through", "fd")

_OPTIONS = {
    "stochad": {"n_alternatives": 1},
    "score": {},
    "score_baseline": {"n_baseline": 8},
    "gumbel": {"temperature": 0.5, "hard": False},
    "straight_through": {},
    "fd": {"h": 1e-2},
}

_SELECT_SALT = 0x57AD
_BASELINE_SALT = 0xBA5E


def _key_batch_ndim(key) -> int:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim
    return key.ndim - 1  # raw uint32 keys carry a trailing key-data axis


def _draw(dist, key, params, dparams, shape):
    """(u, x, params, dparams) of one draw equation, also when ``vmap`` batched its keys.

    Under ``vmap`` inside the program a sampler sees a batch of keys and parameters that may or
    may not carry the batch axes; parameters (and tangents) are broadcast to the draw's shape
    and the inverse CDF runs once per key, exactly as the sampler itself does.
    """
    nb = _key_batch_ndim(key)
    if nb == 0:
        u, x = dist.draw(key, *params)
        return u, x, list(params), list(dparams)
    ev = dist.event_ndim

    def bcast(p):
        return None if p is None else jnp.broadcast_to(p, shape + p.shape[p.ndim - ev :])

    params = [bcast(p) for p in params]
    dparams = [bcast(d) for d in dparams]
    fn = dist.draw
    for _ in range(nb):
        fn = jax.vmap(fn)
    u, x = fn(key, *params)
    return u, x, params, dparams


def _zeros_if_none(ts, xs):
    return [t if t is not None else jnp.zeros_like(x) for t, x in zip(ts, xs, strict=True)]


class _Select(Interpreter):
    """Pass 1 of stochastic AD: pathwise tangents plus a reservoir of K single perturbations."""

    def draw(self, dist, key, params, dparams, state, shape):
        u, x, params, dparams = _draw(dist, key, params, dparams, shape)
        n = x.size
        if all(d is None for d in dparams):
            return x, None, {**state, "counter": state["counter"] + n}
        dps = _zeros_if_none(dparams, params)
        cands = dist.alternatives(x, *params, *dps)
        dtype = state["alt"].dtype
        alts = jnp.concatenate([a.reshape(-1).astype(dtype) for a, _ in cands])
        ws = jnp.concatenate([w.reshape(-1).astype(dtype) for _, w in cands])
        ids = jnp.tile(state["counter"] + jnp.arange(n, dtype=jnp.int32), len(cands))
        total = jnp.sum(ws)
        w_new = state["weight"] + total
        k_next, k_replace, k_pick = jax.random.split(state["key"], 3)
        n_alt = state["chosen"].shape[0]
        replace = jax.random.uniform(k_replace, (n_alt,), dtype) * w_new < total
        cdf = jnp.cumsum(ws)
        v = jax.random.uniform(k_pick, (n_alt,), dtype) * total
        pick = jnp.minimum(jnp.sum(cdf[None, :] <= v[:, None], axis=1), ws.shape[0] - 1)
        return (
            x,
            None,
            {
                "counter": state["counter"] + n,
                "weight": w_new,
                "chosen": jnp.where(replace, ids[pick], state["chosen"]),
                "alt": jnp.where(replace, alts[pick], state["alt"]),
                "key": k_next,
            },
        )


class _Alternative(Interpreter):
    """Pass 2 of stochastic AD: the same program with one draw (by index) replaced."""

    tangents = False

    def draw(self, dist, key, params, dparams, state, shape):
        _, x, _, _ = _draw(dist, key, params, dparams, shape)
        ids = state["counter"] + jnp.arange(x.size, dtype=jnp.int32).reshape(x.shape)
        x = jnp.where(ids == state["chosen"], state["alt"].astype(x.dtype), x)
        return x, None, {**state, "counter": state["counter"] + x.size}


class _Score(Interpreter):
    """Pathwise tangent plus the accumulated score d/dtheta sum log P(x_j)."""

    def draw(self, dist, key, params, dparams, state, shape):
        _, x, params, dparams = _draw(dist, key, params, dparams, shape)
        if all(d is None for d in dparams):
            return x, None, state
        dps = _zeros_if_none(dparams, params)
        _, ds = jax.jvp(lambda *ps: jnp.sum(dist.log_prob(x, *ps)), list(params), dps)
        return x, None, {"score": state["score"] + ds.astype(state["score"].dtype)}


class _Relaxed(Interpreter):
    def __init__(self, temperature, hard):
        self.temperature, self.hard = temperature, hard

    def draw(self, dist, key, params, dparams, state, shape):
        u, x, params, dparams = _draw(dist, key, params, dparams, shape)
        dps = _zeros_if_none(dparams, params)
        soft, t = jax.jvp(lambda *ps: dist.relaxed(u, x, *ps, self.temperature), list(params), dps)
        return (x if self.hard else soft.astype(x.dtype)), t.astype(x.dtype), state


class _StraightThrough(Interpreter):
    def draw(self, dist, key, params, dparams, state, shape):
        _, x, params, dparams = _draw(dist, key, params, dparams, shape)
        dps = _zeros_if_none(dparams, params)
        _, t = jax.jvp(lambda *ps: dist.mean(*ps), list(params), dps)
        return x, t.astype(x.dtype), state


def _trace(f, theta, key):
    closed, out_shape = jax.make_jaxpr(f, return_shape=True)(theta, jax.random.clone(key))
    if not isinstance(out_shape, jax.ShapeDtypeStruct):
        raise TypeError("derivative_estimate: f(theta, key) must return a single array")
    if not jnp.issubdtype(out_shape.dtype, jnp.floating):
        raise TypeError(f"derivative_estimate: f must return floats; got {out_shape.dtype}")
    return closed


def _run(interp, closed, theta, key, v, state):
    # every run replays the program on the same key (the coupling of stochastic AD): say so
    # to JAX's key-reuse checker with a clone
    key_leaves = jax.tree_util.tree_leaves(jax.random.clone(key))
    outs, touts, state = interp.eval(
        closed.jaxpr,
        list(closed.consts),
        [theta, *key_leaves],
        [v, *([None] * len(key_leaves))],
        state,
    )
    touts = _instantiate(outs, touts) if interp.tangents else touts
    return outs[0], touts[0], state


def _direction_estimate(method, opts, f, closed, theta, key, v, baseline):
    dtype = theta.dtype
    if method == "stochad":
        k = int(opts["n_alternatives"])
        state = {
            "counter": jnp.zeros((), jnp.int32),
            "weight": jnp.zeros((), dtype),
            "chosen": jnp.full((k,), -1, jnp.int32),
            "alt": jnp.zeros((k,), dtype),
            "key": jax.random.fold_in(key, _SELECT_SALT),
        }
        f0, t0, sel = _run(_Select(), closed, theta, key, v, state)

        def alternative(chosen, alt):
            st = {"counter": jnp.zeros((), jnp.int32), "chosen": chosen, "alt": alt}
            return _run(_Alternative(), closed, theta, key, None, st)[0]

        f_alt = jax.vmap(alternative)(sel["chosen"], sel["alt"])
        delta = jnp.where(sel["weight"] > 0, jnp.mean(f_alt, axis=0) - f0, jnp.zeros_like(f0))
        return t0 + sel["weight"].astype(f0.dtype) * delta
    if method in ("score", "score_baseline"):
        f0, t0, st = _run(_Score(), closed, theta, key, v, {"score": jnp.zeros((), dtype)})
        b = jnp.zeros_like(f0) if method == "score" else baseline
        return t0 + (f0 - b) * st["score"].astype(f0.dtype)
    if method == "gumbel":
        interp = _Relaxed(opts["temperature"], bool(opts["hard"]))
        return _run(interp, closed, theta, key, v, {})[1]
    if method == "straight_through":
        return _run(_StraightThrough(), closed, theta, key, v, {})[1]
    if method == "fd":
        h = jnp.asarray(opts["h"], dtype)
        return (f(theta + h * v, jax.random.clone(key))
                - f(theta - h * v, jax.random.clone(key))) / (2 * h)
    raise AssertionError(method)  # pragma: no cover


def _estimate(f, method, opts, theta, key, baseline):
    closed = _trace(f, theta, key)
    if method == "score_baseline" and baseline is None:
        n = int(opts["n_baseline"])
        keys = jax.random.split(jax.random.fold_in(key, _BASELINE_SALT), n)
        baseline = jnp.mean(jax.vmap(lambda k: f(theta, k))(keys), axis=0)
    basis = jnp.eye(theta.size, dtype=theta.dtype).reshape(theta.size, *theta.shape)
    est = jax.vmap(lambda v: _direction_estimate(method, opts, f, closed, theta, key, v, baseline))(
        basis
    )
    if theta.ndim == 0:
        return est[0]
    # jacobian layout (like jax.jacfwd): output axes first, then theta's axes
    est = jnp.moveaxis(est, 0, -1)
    return est.reshape(*est.shape[:-1], *theta.shape)


@functools.lru_cache(maxsize=256)
def _compiled(f, method, opts_items):
    opts = dict(opts_items)
    return jax.jit(lambda theta, key, baseline: _estimate(f, method, opts, theta, key, baseline))


def derivative_estimate(f, theta, *, key, method: str = "stochad", **options):
    """One sample of d/dtheta E[f(theta, key)] for a program with discrete randomness.

    Args:
      f: ``f(theta, key) -> array`` written with :mod:`difphys.stochad` samplers (and any
        jnp / lax code: ``lax.cond``, ``lax.while_loop``, ``lax.scan``, ``vmap`` inside).
      theta: float scalar or array of parameters.
      key: PRNG key; the program is called with exactly this key.
      method: one of ``"stochad"`` (default), ``"score"``, ``"score_baseline"``, ``"gumbel"``,
        ``"straight_through"``, ``"fd"`` (see the module docstring for bias and options).
      **options: ``n_alternatives`` (stochad), ``baseline`` / ``n_baseline``
        (score_baseline), ``temperature`` / ``hard`` (gumbel), ``h`` (fd).

    Returns:
      an array of shape ``f.shape + theta.shape`` (the gradient for scalar ``f``). Average
      over keys (``jax.vmap``) for the expectation; works under ``jax.jit`` and ``jax.vmap``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    baseline = options.pop("baseline", None) if method == "score_baseline" else None
    unknown = set(options) - set(_OPTIONS[method])
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; "
            f"allowed: {sorted(_OPTIONS[method]) + (['baseline'] if method == 'score_baseline' else [])}"
        )
    opts = {**_OPTIONS[method], **options}
    if method == "stochad" and int(opts["n_alternatives"]) < 1:
        raise ValueError("n_alternatives must be >= 1")
    if method == "gumbel" and not float(opts["temperature"]) > 0:
        raise ValueError("temperature must be > 0")
    theta = jnp.asarray(theta)
    if not jnp.issubdtype(theta.dtype, jnp.floating):
        theta = theta.astype(jnp.result_type(float))
    check_finite(theta, "theta")
    if baseline is not None:
        baseline = jnp.asarray(baseline, theta.dtype)
    return _compiled(f, method, tuple(sorted(opts.items())))(theta, key, baseline)
