"""|M|^2 throughput (matrix elements per second) versus batch size, one JSON line per result.

Reference: madgraph4gpu (CUDACPP) published single-core C++ throughputs, "EvtsPerSec[MECalcOnly]"
in the repository's tput logs (madgraph5/madgraph4gpu, epochX/cudacpp/tput/):
  e+ e- > mu+ mu- : logs_eemumu_mad/log_eemumu_mad_d_inl0_hrd0.txt (2024-03-03, AMD EPYC 7A53):
                    sse4 2.43e6/s, avx2 3.55e6/s (double)
  g g > t t~      : logs_ggtt_mad/log_ggtt_mad_d_inl0_hrd0.txt (2025-10-24, Xeon Silver 4216):
                    none 1.80e5/s, avx2 5.37e5/s (double)
  g g > t t~ g    : logs_ggttg_mad/log_ggttg_mad_d_inl0_hrd0.txt (2024-03-03, AMD EPYC 7A53):
                    none 2.96e4/s, avx2 1.28e5/s (double)
Ours is measured on all cores of this machine (XLA uses them); the printed ratio divides by the
number of CPU cores to compare per core. Different CPUs: treat the ratio as indicative.

    python benchmarks/matrix_elements.py [--max-batch 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from _timing import time_compiled  # noqa: E402

from difphys import amplitudes as amp  # noqa: E402

MG4GPU_PER_CORE = {
    "e+ e- > mu+ mu-": {"avx2": 3.55e6, "sse4": 2.43e6},
    "g g > t t~": {"avx2": 5.37e5, "none": 1.80e5},
    "g g > t t~ g": {"avx2": 1.28e5, "none": 2.96e4},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-batch", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", nargs="*", default=list(MG4GPU_PER_CORE))
    args = parser.parse_args()
    cores = os.cpu_count() if jax.devices()[0].platform == "cpu" else 1
    params64 = amp.SMParams()
    for name in args.processes:
        proc = amp.process(name)
        for dtype in (jnp.float64, jnp.float32):
            params = jax.tree.map(lambda x, dtype=dtype: x.astype(dtype), params64)
            fn = jax.jit(proc.__call__)
            batch = 1
            while batch <= args.max_batch:
                u = jax.random.uniform(
                    jax.random.key(batch), (batch, proc.phase_space_dim), dtype, 0.01, 0.99
                )
                momenta = proc.phase_space(u, jnp.asarray(1500.0, dtype), params)[0]
                compile_s, best = time_compiled(fn, momenta, params, repeats=args.repeats)
                rate = batch / best
                record = {
                    "benchmark": "matrix_elements",
                    "process": name,
                    "dtype": jnp.dtype(dtype).name,
                    "batch": batch,
                    "me_per_s": rate,
                    "compile_s": round(compile_s, 3),
                    "device": jax.devices()[0].platform,
                    "cores": cores,
                    "n_helicities": proc.n_helicities,
                }
                if dtype == jnp.float64:
                    for isa, ref in MG4GPU_PER_CORE[name].items():
                        record[f"ratio_per_core_vs_mg4gpu_{isa}"] = rate / cores / ref
                print(json.dumps(record), flush=True)
                batch *= 10


if __name__ == "__main__":
    main()
