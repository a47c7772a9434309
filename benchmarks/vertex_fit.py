"""Vertex-fit throughput: difphys Billoir fit vs a faithful re-implementation of NDIVE's scheme.

NDIVE (arXiv:2310.12804) runs 10 fixed Newton iterations on the full chi2 of the vertex and all
track momenta, using the dense Hessian from ``jax.hessian`` and ``pinv``. Ours: Billoir block
elimination (3x3 solves per track, O(n)), convergence tolerance, implicit gradients. Both fit
the same batch of jets (15 tracks each) in the same process. Ours runs with both backends on a
CPU (``kernel``: the compiled CPU loop, ``xla``: the JAX iterations) at the default tolerance
and at 1e-6 mm; the kernel is also timed on one thread (the per-core rate). One JSON line per
result; ``speedup_vs_ndive_scheme`` is ours / theirs in fits per second. Also: cost of one
backward pass (gradient of a loss of all fitted vertices w.r.t. the track weights) relative
to the forward fit.

    python benchmarks/vertex_fit.py [--jets 10000] [--tracks 15]
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from _timing import time_compiled  # noqa: E402

from difphys import vertex as vx  # noqa: E402
from difphys.vertex import _cpu_kernel  # noqa: E402
from difphys.vertex import _fit as F  # noqa: E402

B = 2.0


def make_jets(key, n_jets, n_tracks, dtype):
    def one(k):
        k1, k2, k3, k4, k5 = jax.random.split(k, 5)
        v = jax.random.uniform(k1, (3,), minval=-5.0, maxval=5.0)
        pt = jnp.exp(jax.random.uniform(k2, (n_tracks,), minval=jnp.log(1.0), maxval=jnp.log(50.0)))
        eta = jax.random.uniform(k3, (n_tracks,), minval=-2.0, maxval=2.0)
        phi = jax.random.uniform(k4, (n_tracks,), minval=-jnp.pi, maxval=jnp.pi)
        mom = jnp.stack([pt * jnp.cos(phi), pt * jnp.sin(phi), pt * jnp.sinh(eta)], axis=-1)
        ch = jnp.where(jnp.arange(n_tracks) % 2 == 0, 1.0, -1.0)
        tracks, _ = vx.simulate_tracks(k5, v, mom, ch, B)
        return tracks

    tracks = jax.vmap(one)(jax.random.split(key, n_jets))
    return jax.tree.map(lambda x: x.astype(dtype), tracks)


def ndive_scheme(tracks, weights):
    """10 fixed Newton steps on the full (3 + 3n) parameter vector, dense Hessian + pinv."""

    def one(params, cov, w):
        wm = jnp.linalg.inv(cov)
        theta = F._Theta(
            params,
            wm,
            w,
            jnp.asarray(B, params.dtype),
            jnp.zeros(3, params.dtype),
            jnp.zeros((3, 3), params.dtype),
        )
        n = params.shape[0]
        d0, z0, phi0 = params[:, 0], params[:, 1], params[:, 2]
        v = jnp.zeros(3, params.dtype)
        q = jnp.stack([phi0, params[:, 3], params[:, 4]], axis=-1)
        x = jnp.concatenate([v, q.reshape(-1)])

        def chi2(x):
            return F._total_chi2(x[:3], x[3:].reshape(n, 3), theta)

        def step(x, _):
            g = jax.grad(chi2)(x)
            h = jax.hessian(chi2)(x)
            return x - jnp.linalg.pinv(h) @ g, None

        x, _ = jax.lax.scan(step, x, None, length=10)
        del d0, z0
        return x[:3]

    return jax.vmap(one)(tracks.params, tracks.cov, weights)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jets", type=int, default=10_000)
    parser.add_argument("--tracks", type=int, default=15)
    parser.add_argument(
        "--ndive-jets", type=int, default=2_000, help="jets for the (slow) reference"
    )
    parser.add_argument(
        "--float32", action="store_true", help="also run float32 (slow: see docs/vertex.md)"
    )
    args = parser.parse_args()
    on_cpu = jax.devices()[0].platform == "cpu"
    cores = os.cpu_count() if on_cpu else 1
    backends = ["kernel", "xla"] if on_cpu and _cpu_kernel.available() else ["xla"]
    for dtype in (jnp.float64, jnp.float32) if args.float32 else (jnp.float64,):
        tracks = make_jets(jax.random.key(0), args.jets, args.tracks, dtype)
        weights = jnp.ones(tracks.params.shape[:-1], dtype)
        small = jax.tree.map(lambda x: x[: args.ndive_jets], tracks)
        ref = jax.jit(ndive_scheme)
        c_r, t_r = time_compiled(ref, small, weights[: args.ndive_jets], repeats=1)
        ref_rate = args.ndive_jets / t_r
        for backend in backends:
            for tol in (None, 1e-6):
                fit = functools.partial(vx.fit, bfield=B, backend=backend, tol=tol)
                ours = jax.jit(lambda t, w, fit=fit: fit(t, w).position)
                c_o, t_o = time_compiled(ours, tracks, weights, repeats=7)
                ours_rate = args.jets / t_o
                row = {
                    "benchmark": "vertex_fit",
                    "backend": backend,
                    "dtype": jnp.dtype(dtype).name,
                    "tol_mm": tol if tol is not None else (1e-9 if dtype == jnp.float64 else 1e-4),
                    "jets": args.jets,
                    "tracks": args.tracks,
                    "fits_per_s": ours_rate,
                    "fits_per_s_per_core": ours_rate / cores,
                    "ndive_scheme_fits_per_s": ref_rate,
                    "speedup_vs_ndive_scheme": ours_rate / ref_rate,
                    "compile_s": round(c_o, 2),
                    "ndive_compile_s": round(c_r, 2),
                    "device": jax.devices()[0].platform,
                    "cores": cores,
                }
                if backend == "kernel":  # one thread: the per-core rate, measured
                    os.environ["DIFPHYS_VERTEX_THREADS"] = "1"
                    _, t_1 = time_compiled(ours, tracks, weights, repeats=7)
                    del os.environ["DIFPHYS_VERTEX_THREADS"]
                    row["fits_per_s_one_thread"] = args.jets / t_1
                if tol is None:
                    loss = lambda w, t, fit=fit: jnp.sum(fit(t, w).position ** 2)  # noqa: E731
                    grad = jax.jit(jax.grad(loss))
                    c_g, t_g = time_compiled(grad, weights, tracks)
                    _, t_vg = time_compiled(jax.jit(jax.value_and_grad(loss)), weights, tracks)
                    row.update(backward_over_forward=(t_vg - t_o) / t_o,
                               grad_call_over_forward=t_g / t_o, grad_compile_s=round(c_g, 2))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
