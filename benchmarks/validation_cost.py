"""What the input validation of #29 costs on the three hot paths, measured against the same
computation without it, in this one command.

* |M|^2 (``e+ e- > mu+ mu-``, ``g g > t t~ g``): an eager call ``proc(p)`` (shape, finiteness,
  momentum conservation, on-shell masses in NumPy) against ``proc(p, check=False)``; and,
  inside ``jit``, the masked evaluation (non-finite events replaced by a reference point,
  zeroed after) against the unmasked colour sum.
* ``vertex.fit`` (2000 jets x 12 tracks): the public call (eager option/track checks, NaN
  weights dropped, invalid fits masked) against the internal fit it wraps, on both backends
  (on the kernel backend the eager call runs the compiled kernel directly, and the track
  checks come from the kernel's own preparation pass: the bare run is that direct call).
* ParT forward (the ``small`` model, batch 256 x 64 particles): the eager shape and
  finiteness check on real particles against the jitted forward it precedes.

Each line prints ``validated / bare`` (1.00 = free): the median over ``--repeats`` pairs of
timings taken alternately, its quartiles, and the ratio of the best times; the target is a
median < 1.05.

    python benchmarks/validation_cost.py [--repeats 25] [--out benchmarks/results/validation_cost.jsonl]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from difphys import amplitudes as amp  # noqa: E402
from difphys import vertex as vx  # noqa: E402
from difphys.vertex import _fit  # noqa: E402


def pair(validated, bare, repeats):
    """Timings of the two calls taken alternately, ``repeats`` pairs after one warm-up each (so
    that a slow spell of the machine hits both). Returns the best time of each, and the median
    and quartiles of the per-pair ratio validated / bare: the headline ``ratio`` is that median
    (on a shared 2-core machine single timings scatter by +-10%, the best-of ratio by +-5%)."""
    jax.block_until_ready(validated())
    jax.block_until_ready(bare())
    t_val, t_bare = [], []
    for _ in range(repeats):
        for fn, times in ((validated, t_val), (bare, t_bare)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - t0)
    t_val, t_bare = np.array(t_val), np.array(t_bare)
    q25, q50, q75 = np.percentile(t_val / t_bare, [25, 50, 75])
    return dict(validated_s=float(t_val.min()), bare_s=float(t_bare.min()), ratio=float(q50),
                ratio_q25=float(q25), ratio_q75=float(q75),
                ratio_best=float(t_val.min() / t_bare.min()), repeats=repeats)


def matrix_element(name, n, repeats):
    proc = amp.process(name)
    u = jax.random.uniform(jax.random.key(0), (n, proc.phase_space_dim), jnp.float64, 0.02, 0.98)
    p = jax.block_until_ready(proc.phase_space(u, 1000.0)[0])
    params = amp.SMParams()
    checked = pair(lambda: proc(p), lambda: proc(p, check=False), repeats)
    bare_jit = jax.jit(lambda q: proc._colour_summed(proc._amplitudes(q, params, None)))
    masked_jit = jax.jit(lambda q: proc._squared_once(q, params))
    masked = pair(lambda: masked_jit(p), lambda: bare_jit(p), repeats)
    return [
        dict(path=f"|M|^2 {name}", what="eager kinematic checks", n=n, **checked),
        dict(path=f"|M|^2 {name}", what="in-jit mask of bad events", n=n, **masked),
    ]


def vertex(n_jets, n_tracks, repeats, backend):
    key = jax.random.key(1)
    k1, k2, k3 = jax.random.split(key, 3)
    pt = jnp.exp(jax.random.uniform(k1, (n_jets, n_tracks), jnp.float64, 0.0, 3.0))
    phi = jax.random.uniform(k2, (n_jets, n_tracks), jnp.float64, -3.1, 3.1)
    mom = jnp.stack([pt * jnp.cos(phi), pt * jnp.sin(phi), 0.3 * pt], -1)
    charges = jnp.where(jnp.arange(n_tracks) % 2 == 0, 1.0, -1.0)
    keys = jax.random.split(k3, n_jets)
    sim = jax.vmap(lambda k, m: vx.simulate_tracks(k, jnp.array([0.3, -0.2, 1.0]), m, charges,
                                                   2.0)[0])
    tracks = sim(keys, mom)
    weights = jnp.ones((n_jets, n_tracks))
    dtype = tracks.params.dtype
    args = (tracks.params, tracks.cov, weights, None, jnp.asarray(2.0, dtype), jnp.zeros(3, dtype),
            jnp.eye(3, dtype=dtype) / _fit.WEAK_PRIOR_SIGMA**2, jnp.asarray(1e-9, dtype))
    if backend == "kernel":
        # the eager public call runs the kernel directly (no callback): the bare run is the
        # same direct call, with no option checks, no flags read and no mask
        from difphys.vertex import _cpu_kernel

        np_args = (np.asarray(tracks.params), np.asarray(tracks.cov), np.asarray(weights),
                   np.zeros((n_jets, 3)), np.float64(2.0), np.zeros(3),
                   np.eye(3) / _fit.WEAK_PRIOR_SIGMA**2, np.float64(1e-9))

        def bare():
            out = _cpu_kernel.fit_host(*np_args, max_iter=50, has_constraint=False,
                                       use_seeds=False)
            return jax.device_put(out[:9])
    else:
        def bare():
            return _fit._fit_batch(*args, max_iter=50, has_constraint=False, seeded_prior=False)
    stats = pair(lambda: vx.fit(tracks, weights, bfield=2.0, backend=backend), bare,
                         repeats)
    return dict(path=f"vertex.fit [{backend}]", what="eager checks + NaN-weight drop + mask",
                n=n_jets, **stats)


def part(batch, particles, repeats):
    from flax import nnx

    from difphys import nn

    model = nn.ParticleTransformer(nn.ParTConfig.named("small", num_classes=2), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, particles, 17)).astype(np.float32)
    p4 = np.abs(rng.normal(size=(batch, particles, 4))).astype(np.float32) + 1
    mask = rng.random((batch, particles)) < 0.7
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, a, b, c: nnx.merge(graphdef, s)(a, b, c))
    xj, pj, mj = jnp.asarray(x), jnp.asarray(p4), jnp.asarray(mask)
    def checked():
        model._check(x, p4, mask)
        return forward(state, xj, pj, mj)

    stats = pair(checked, lambda: forward(state, xj, pj, mj), repeats)
    return dict(path="ParT forward (small)", what="eager shape/finiteness check", n=batch,
                **stats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=25)
    ap.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    rows = []
    rows += matrix_element("e+ e- > mu+ mu-", 100_000, args.repeats)
    rows += matrix_element("g g > t t~ g", 10_000, args.repeats)
    rows.append(vertex(2000, 12, args.repeats, "xla"))
    from difphys.vertex import _cpu_kernel

    if _cpu_kernel.available():
        rows.append(vertex(2000, 12, args.repeats, "kernel"))
    rows.append(part(256, 64, args.repeats))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for r in rows:
        print(f"{r['path']:<28} {r['what']:<40} n={r['n']:<7} validated {r['validated_s']*1e3:9.3f} ms"
              f"  bare {r['bare_s']*1e3:9.3f} ms  ratio {r['ratio']:.3f}"
              f" [{r['ratio_q25']:.3f}, {r['ratio_q75']:.3f}]  best/best {r['ratio_best']:.3f}")
    worst = max(r["ratio"] for r in rows)
    print(f"worst median ratio {worst:.3f} (target < 1.05)")
    if args.out:
        with open(args.out, "a") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "time": stamp, "machine": platform.processor() or
                                     platform.machine(), "devices": jax.device_count()}) + "\n")


if __name__ == "__main__":
    main()
