"""Phase-space generation throughput (events/s), one JSON line per result.

Reference in the same run: RAMBO (the flat generator every event generator ships). Reports the
unit-cube map's speed relative to RAMBO and the compile time separately.

    python benchmarks/phasespace.py [--n-events 1000000]
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from _timing import time_compiled  # noqa: E402

from difphys import phasespace as ps  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-events", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.n_events
    key = jax.random.key(0)
    for dtype in (jnp.float64, jnp.float32):
        for masses in ([0.0, 0.0, 0.0], [173.0, 0.0, 0.0, 0.0], [4.7, 4.7, 80.4, 80.4, 0.0]):
            m = jnp.asarray(masses, dtype=dtype)
            rs = jnp.asarray(1000.0, dtype=dtype)
            dim = ps.unit_cube_dim(len(masses))
            rambo = jax.jit(
                lambda k, rs=rs, m=m: jax.vmap(ps.rambo, (0, None, None))(
                    jax.random.split(k, n), rs, m
                )
            )
            cube = jax.jit(
                lambda k, rs=rs, m=m, dim=dim: ps.from_unit_cube(
                    jax.random.uniform(k, (n, dim), m.dtype), rs, m
                )
            )
            c_r, t_r = time_compiled(rambo, key)
            c_u, t_u = time_compiled(cube, key)
            for name, c, t in (("rambo", c_r, t_r), ("unit_cube", c_u, t_u)):
                print(
                    json.dumps(
                        {
                            "benchmark": "phasespace",
                            "sampler": name,
                            "n_particles": len(masses),
                            "massive": any(x > 0 for x in masses),
                            "dtype": jnp.dtype(dtype).name,
                            "n_events": n,
                            "events_per_s": n / t,
                            "compile_s": round(c, 3),
                            "ratio_to_rambo": t_r / t,
                            "device": jax.devices()[0].platform,
                        }
                    )
                )


if __name__ == "__main__":
    main()
