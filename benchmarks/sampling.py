"""Sampling efficiency versus target evaluations: FAB (with / without buffer), reverse KL, VEGAS.

Targets: the FAB paper's 40-mode Gaussian mixture (2D) and the physics target of
FAB-meets-diffME (arXiv:2411.16234), |M|^2(e+ e- > w+ b w- b~) at sqrt(s) = 1000 GeV on the 8D
unit cube of the Breit-Wigner-mapped phase space. At checkpoints along training (counted in
target evaluations: values; FAB's HMC also uses as many gradients) the sampling efficiency
(ESS/N), unweighting efficiency (mean w / max w, and with 0.1% overweight) and log Z are measured
on fresh samples that are not counted. VEGAS (the ``vegas`` package) is adapted with the same
number of evaluations (10 iterations) for each checkpoint budget.

One JSON line per point and a PNG of the curves (``--png``).

    python benchmarks/sampling.py [--quick] [--png sampling.png] [--flat]

``--flat`` adds the same process on the flat ``from_unit_cube`` map (no Breit-Wigner mapping),
where the resonances are not aligned with the coordinates.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from difphys import flows  # noqa: E402

N_EVAL = 20_000


def _record(rows, **row):
    rows.append(row)
    print(json.dumps(row), flush=True)


def _flow_curve(rows, target_name, target, flow, method, config, steps, every, lr):
    def callback(step, fl, state):
        _, log_w = flows.importance_log_weights(jax.random.key(123), fl, target.log_prob, N_EVAL)
        lz = flows.log_z_estimate(log_w)
        _record(
            rows,
            bench="sampling",
            target=target_name,
            method=method + ("+buffer" if method == "fab" and config.buffer_capacity else ""),
            step=step,
            target_evaluations=float(state.n_target_values),
            target_gradients=float(state.n_target_grads),
            sampling_efficiency=float(flows.sampling_efficiency(log_w)),
            unweighting_efficiency=float(flows.unweighting_efficiency(log_w)),
            unweighting_efficiency_robust=float(flows.unweighting_efficiency(log_w, 1e-3)),
            log_z=float(lz.log_z),
            log_z_error=float(lz.log_z_error),
            seconds=time.perf_counter() - t0,
        )

    t0 = time.perf_counter()
    flows.train(
        jax.random.key(0),
        method,
        flow,
        target.log_prob,
        steps=steps,
        optimizer=optax.adam(lr),
        config=config,
        callback=callback,
        callback_every=every,
        progress=False,
    )


def _vegas_curve(rows, target_name, target, budgets, box):
    log_p = jax.jit(jax.vmap(target.log_prob))
    for budget in budgets:
        t0 = time.perf_counter()
        weighted = flows.vegas_sampler(log_p, target.dim, int(budget), box=box, seed=1)
        _, log_w = weighted(N_EVAL)
        log_w = jnp.asarray(log_w)
        lz = flows.log_z_estimate(log_w)
        _record(
            rows, bench="sampling", target=target_name, method="vegas", step=None,
            target_evaluations=float(budget), target_gradients=0.0,
            sampling_efficiency=float(flows.sampling_efficiency(log_w)),
            unweighting_efficiency=float(flows.unweighting_efficiency(log_w)),
            unweighting_efficiency_robust=float(flows.unweighting_efficiency(log_w, 1e-3)),
            log_z=float(lz.log_z), log_z_error=float(lz.log_z_error),
            seconds=time.perf_counter() - t0,
        )


def run_flat(rows, quick: bool):
    """The harder parametrisation: the same process on the flat from_unit_cube map."""
    tgt = flows.matrix_element_target(mapping="flat")
    flow8 = flows.make_spline_flow(jax.random.key(1), 8, support="unit_cube", n_layers=8,
                                   hidden=64, n_bins=10)
    steps = 120 if quick else 480
    cfg = flows.TrainConfig(batch=256, n_levels=4, n_leapfrog=4, step_size=0.02,
                            buffer_capacity=4096, updates_per_ais=4)
    _flow_curve(rows, "eeWbWb-flat", tgt, flow8, "fab", cfg, steps, steps // 4, 1e-3)
    budget = steps * 256 * (1 + 4 * 4)
    _vegas_curve(rows, "eeWbWb-flat", tgt, [budget * f for f in (0.25, 0.5, 1.0)], (0.0, 1.0))


def run(quick: bool):
    rows: list[dict] = []
    print(json.dumps({"bench": "sampling_device", "device": str(jax.devices()[0])}))
    # -------- 40-mode GMM
    gmm = flows.gmm40()
    gmm_flow = flows.make_spline_flow(
        jax.random.key(1), 2, n_layers=6, hidden=32, n_bins=12, scale=20.0, bound=4.0
    )
    steps = 100 if quick else 300
    cfg = flows.TrainConfig(batch=128, n_levels=4, n_leapfrog=5, step_size=0.5)
    _flow_curve(rows, "gmm40", gmm, gmm_flow, "fab", cfg, steps, steps // 4, 1e-3)
    _flow_curve(
        rows,
        "gmm40",
        gmm,
        gmm_flow,
        "fab",
        cfg._replace(buffer_capacity=4096),
        steps,
        steps // 4,
        1e-3,
    )
    fab_budget = steps * 128 * (1 + 4 * 5)
    _flow_curve(
        rows, "gmm40", gmm, gmm_flow, "rkl", cfg, fab_budget // 128, fab_budget // 128 // 4, 1e-3
    )
    _vegas_curve(
        rows, "gmm40", gmm, [fab_budget * f for f in (0.25, 0.5, 0.75, 1.0)], (-50.0, 50.0)
    )
    # -------- e+ e- > w+ b w- b~ at 1 TeV
    tgt = flows.matrix_element_target()
    flow8 = flows.make_spline_flow(
        jax.random.key(1), 8, support="unit_cube", n_layers=8, hidden=64, n_bins=10
    )
    steps = 50 if quick else 200
    cfg = flows.TrainConfig(
        batch=256, n_levels=4, n_leapfrog=4, step_size=0.02, buffer_capacity=4096, updates_per_ais=4
    )
    _flow_curve(rows, "eeWbWb", tgt, flow8, "fab", cfg, steps, steps // 4, 1e-3)
    budget = steps * 256 * (1 + 4 * 4)
    _flow_curve(rows, "eeWbWb", tgt, flow8, "rkl", cfg, budget // 256, budget // 256 // 4, 1e-3)
    _vegas_curve(rows, "eeWbWb", tgt, [budget * f for f in (0.25, 0.5, 0.75, 1.0)], (0.0, 1.0))
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({r["target"] for r in rows})
    fig, axes = plt.subplots(1, len(targets), figsize=(5.5 * len(targets), 4))
    for ax, tgt in zip(np.atleast_1d(axes), targets, strict=True):
        for method in sorted({r["method"] for r in rows if r["target"] == tgt}):
            pts = sorted(
                (r["target_evaluations"], r["sampling_efficiency"])
                for r in rows
                if r["target"] == tgt and r["method"] == method
            )
            ax.plot(*zip(*pts, strict=True), marker="o", label=method)
        ax.set(
            xscale="log",
            xlabel="target evaluations",
            ylabel="sampling efficiency (ESS/N)",
            title=tgt,
            ylim=(0, 1.02),
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--png", default=None, help="write the curves to this PNG")
    parser.add_argument("--flat", action="store_true",
                        help="also the flat (non-Breit-Wigner) map of the physics target (~12 min)")
    args = parser.parse_args()
    rows = run(args.quick)
    if args.flat:
        run_flat(rows, args.quick)
    if args.png:
        plot(rows, args.png)
    for tgt in sorted({r["target"] for r in rows}):
        last = {r["method"]: r for r in rows if r["target"] == tgt}  # largest budget per method
        fab = last.get("fab+buffer", last.get("fab"))
        veg = last.get("vegas")
        if fab and veg:
            print(
                json.dumps(
                    {
                        "bench": "sampling_summary",
                        "target": tgt,
                        "fab_over_vegas_sampling_efficiency": round(
                            fab["sampling_efficiency"] / veg["sampling_efficiency"], 3
                        ),
                        "fab_evaluations": fab["target_evaluations"],
                        "vegas_evaluations": veg["target_evaluations"],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
