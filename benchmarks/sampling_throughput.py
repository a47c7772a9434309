"""FAB training throughput on the physics target, e+ e- > w+ b w- b~ at 1 TeV (8D unit cube,
the target of ``benchmarks/sampling.py``), at CPU and GPU batch sizes and with both layer-scan
paths of the spline flow.

For each (batch, scan) it compiles one FAB step (AIS with HMC over ``--levels`` levels, the
replay buffer, ``--updates`` flow updates per AIS batch), times ``--steps`` steps after one
warm step, and then measures the trained flow's sampling efficiency (ESS/N) on
``--eval`` fresh points. Rows: target values per second (FAB counts each HMC step's value and
gradient), the step's compile time, ESS/N; a summary line per batch gives the rolled / unrolled
speed ratio (``rolled`` is what a GPU runs by default, ``unrolled`` what a CPU runs) measured in
this same command. One JSON line per row.

    python benchmarks/sampling_throughput.py [--batches 256 4096] [--steps 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import optax

jax.config.update("jax_enable_x64", True)

from difphys import flows  # noqa: E402


def run(batch: int, scan: str, steps: int, levels: int, updates: int, n_eval: int) -> dict:
    target = flows.matrix_element_target()
    flow = flows.make_spline_flow(jax.random.key(1), 8, support="unit_cube", n_layers=8,
                                  hidden=64, n_bins=10)
    flow = dataclasses.replace(flow, scan=scan)
    config = flows.TrainConfig(batch=batch, n_levels=levels, n_leapfrog=4, step_size=0.02,
                               buffer_capacity=16 * batch, updates_per_ais=updates)
    trainer = flows.make_trainer("fab", flow, target.log_prob, optax.adam(1e-3), config)
    step = jax.jit(trainer.step)
    state = trainer.init(jax.random.key(2))
    t0 = time.perf_counter()
    state, info = step(jax.random.key(3), state)
    jax.block_until_ready(info)
    compile_s = time.perf_counter() - t0
    print(json.dumps({"note": "compiled", "batch": batch, "scan": scan,
                      "compile_s": round(compile_s, 2)}), flush=True)
    n0 = float(state.n_target_values)
    t0 = time.perf_counter()
    for i in range(steps):
        state, info = step(jax.random.fold_in(jax.random.key(4), i), state)
    jax.block_until_ready(info)
    seconds = time.perf_counter() - t0
    values = float(state.n_target_values) - n0
    trained = flows.flow_from_state(flow, state)
    _, log_w = flows.importance_log_weights(jax.random.key(5), trained, target.log_prob, n_eval)
    return {
        "benchmark": "sampling_throughput", "target": "eeWbWb", "method": "fab+buffer",
        "batch": batch, "scan": scan, "steps": steps, "n_levels": levels,
        "updates_per_ais": updates, "compile_s": round(compile_s, 2),
        "seconds_per_step": seconds / steps, "target_values_per_s": values / seconds,
        "sampling_efficiency": float(flows.sampling_efficiency(log_w)), "eval_points": n_eval,
        "device": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--scans", nargs="+", default=["rolled", "unrolled"],
                        choices=["rolled", "unrolled"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--levels", type=int, default=4, help="AIS levels")
    parser.add_argument("--updates", type=int, default=4, help="flow updates per AIS batch")
    parser.add_argument("--eval", type=int, default=100_000, help="points for ESS/N")
    args = parser.parse_args()
    for batch in args.batches:
        rows = {}
        for scan in args.scans:
            rows[scan] = run(batch, scan, args.steps, args.levels, args.updates, args.eval)
            print(json.dumps(rows[scan]), flush=True)
        if len(rows) == 2:
            print(json.dumps({
                "benchmark": "sampling_throughput_summary", "batch": batch,
                "rolled_over_unrolled_speed": rows["rolled"]["target_values_per_s"]
                / rows["unrolled"]["target_values_per_s"],
                "rolled_over_unrolled_compile": rows["rolled"]["compile_s"]
                / max(rows["unrolled"]["compile_s"], 1e-9),
                "device": rows["rolled"]["device"]}), flush=True)


if __name__ == "__main__":
    main()
