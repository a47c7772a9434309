"""VEGAS (Lepage's adaptive grid, the ``vegas`` package) as a weighted-event sampler with the
same interface as a trained flow, for comparisons and the ``vegas`` method of ``difphys sample``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_count


def vegas_sampler(log_p, dim: int, train_evals: int, *, key, box=(0.0, 1.0), nitn: int = 10):
    """Adapt a VEGAS grid (the ``vegas`` package) on ``box^dim`` with ``train_evals`` evaluations
    of ``exp(log_p)`` (``log_p``: batched, ``(n, dim) -> (n,)``) in ``nitn`` iterations; return
    ``weighted(n) -> (x (n, dim), log w (n,))`` drawing weighted events from the adapted grid.

    One pass over ``random_batch()`` is one VEGAS iteration and ``sum(wgt * f)`` over it
    estimates the integral, so one event's weight is ``wgt * f * (points in the pass)``;
    ``E[w]`` is the integral. ``key`` seeds the NumPy generator that ``vegas`` draws from
    (VEGAS runs outside JAX). Needs the ``vegas`` package (the ``bench`` extra).
    """
    check_count(dim, "dim")
    check_count(train_evals, "train_evals")
    try:
        import vegas
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the VEGAS sampler needs the 'vegas' package: pip install 'difphys[bench]'"
        ) from err

    @vegas.lbatchintegrand
    def f(x):
        return np.exp(np.asarray(log_p(jnp.asarray(x))))

    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    lo, hi = box
    integ = vegas.Integrator(dim * [[lo, hi]], ran_array_generator=np.random.default_rng(seed).random)
    integ(f, nitn=nitn, neval=max(int(train_evals) // nitn, 200))

    def weighted(n):
        us, lws = [], []
        while sum(len(u) for u in us) < n:
            xs, ws = [], []
            for x, wgt in integ.random_batch():
                xs.append(np.array(x))
                ws.append(np.array(wgt) * f(x))
            n_pass = sum(len(x) for x in xs)
            us.append(np.concatenate(xs))
            with np.errstate(divide="ignore"):
                lws.append(np.log(np.concatenate(ws) * n_pass))
        return np.concatenate(us)[:n], np.concatenate(lws)[:n]

    return weighted
