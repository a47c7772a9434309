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

import equinox as eqx
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
    flows.train_flow(
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
        weighted = flows.vegas_sampler(log_p, target.dim, int(budget), box=box, key=jax.random.key(1))
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


def _chunked_log_weights(draw, log_p, n, chunk=100_000):
    """log w of ``n`` fresh draws in chunks (``draw(i) -> (x, log q)``), non-finite -> -inf."""
    out = []
    for i in range(-(-n // chunk)):
        x, log_q = draw(i)
        out.append(np.asarray(log_p(x) - log_q))
    lw = np.concatenate(out)[:n]
    return np.where(np.isfinite(lw), lw, -np.inf)


def _heavy_tail_stats(log_w, sigma_ref, n_boot=200):
    """ESS/N with a bootstrap 68% interval, sigma (pb) with its error and its pull against the
    reference, and the largest single-event share of the total weight."""
    w = np.exp(log_w - np.max(log_w))
    ess = w.sum() ** 2 / (len(w) * (w ** 2).sum())
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(n_boot):
        b = w[rng.integers(0, len(w), len(w))]
        boot.append(b.sum() ** 2 / (len(b) * (b ** 2).sum()))
    scale = np.exp(np.max(log_w))
    sigma, sigma_err = scale * w.mean(), scale * w.std() / np.sqrt(len(w))
    return dict(sampling_efficiency=float(ess),
                sampling_efficiency_lo=float(np.quantile(boot, 0.16)),
                sampling_efficiency_hi=float(np.quantile(boot, 0.84)),
                unweighting_efficiency=float(w.mean() / w.max()),
                sigma_pb=float(sigma), sigma_err_pb=float(sigma_err),
                sigma_pull=float((sigma - sigma_ref) / sigma_err), max_weight_share=float(w.max() / w.sum()))


def run_flat(rows, quick: bool, steps: int | None = None, n_eval: int = 1_000_000):
    """The harder parametrisation: the same process on the flat from_unit_cube map, where the
    two top resonances are curved ridges across the coordinates (plain MC: ESS/N ~ 5e-5).

    The weights here are heavy-tailed, so every efficiency is measured on ``n_eval`` (1M) fresh
    samples with a bootstrap interval, and each estimate carries the pull of its cross section
    against a reference (plain MC on the Breit-Wigner-mapped cube, 2M points): a sampler that
    misses part of the mass shows a negative pull, and its efficiency is then not trustworthy.
    VEGAS gets the FAB run's target-value budget and, separately, its values + gradients."""
    tgt = flows.matrix_element_target(mapping="flat")
    log_p = jax.jit(jax.vmap(tgt.log_prob))
    mapped = jax.jit(jax.vmap(flows.matrix_element_target().log_prob))
    ref_lw = _chunked_log_weights(
        lambda i: (jax.random.uniform(jax.random.key(10_000 + i), (100_000, 8), jnp.float64),
                   jnp.zeros(100_000)), mapped, 200_000 if quick else 2_000_000)
    w_ref = np.exp(ref_lw)
    sigma_ref, sigma_ref_err = w_ref.mean(), w_ref.std() / np.sqrt(len(w_ref))
    _record(rows, bench="sampling", target="eeWbWb-flat", method="reference (BW-mapped plain MC)",
            sigma_pb=float(sigma_ref), sigma_err_pb=float(sigma_ref_err), n=len(w_ref))
    n_eval = 100_000 if quick else n_eval
    steps = steps or (120 if quick else 2000)
    flow8 = flows.make_spline_flow(jax.random.key(1), 8, support="unit_cube", n_layers=8,
                                   hidden=64, n_bins=16)
    cfg = flows.TrainConfig(batch=256, n_levels=4, n_leapfrog=4, step_size=0.02,
                            buffer_capacity=8192, updates_per_ais=4)
    saved = []
    t0 = time.perf_counter()
    flows.train_flow(jax.random.key(0), "fab", flow8, tgt.log_prob, steps=steps,
                     optimizer=optax.adam(1e-3), config=cfg,
                     callback=lambda step, fl, st: saved.append(
                         (step, fl, float(st.n_target_values), float(st.n_target_grads),
                          time.perf_counter() - t0)),
                     callback_every=steps // 4, progress=True)
    sample = eqx.filter_jit(lambda fl, key: fl.sample_and_log_prob(key, 100_000))
    for step, fl, values, grads, seconds in saved:
        lw = _chunked_log_weights(lambda i, fl=fl: sample(fl, jax.random.key(20_000 + i)),
                                  log_p, n_eval)
        _record(rows, bench="sampling", target="eeWbWb-flat", method="fab+buffer", step=step,
                target_evaluations=values, target_gradients=grads, train_seconds=seconds,
                n_eval=n_eval, **_heavy_tail_stats(lw, sigma_ref))
    final_values, final_grads = saved[-1][2], saved[-1][3]
    for budget in sorted({saved[0][2], final_values, final_values + final_grads}):
        t1 = time.perf_counter()
        weighted = flows.vegas_sampler(log_p, 8, int(budget), key=jax.random.key(1))
        _, lw = weighted(n_eval)
        lw = np.where(np.isfinite(lw), lw, -np.inf)
        _record(rows, bench="sampling", target="eeWbWb-flat", method="vegas", step=None,
                target_evaluations=float(budget), target_gradients=0.0,
                train_seconds=time.perf_counter() - t1, n_eval=n_eval,
                **_heavy_tail_stats(lw, sigma_ref))


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
        pts_all = [r for r in rows if r["target"] == tgt and "target_evaluations" in r]
        for method in sorted({r["method"] for r in pts_all}):
            pts = sorted((r for r in pts_all if r["method"] == method),
                         key=lambda r: r["target_evaluations"])
            x = [r["target_evaluations"] for r in pts]
            y = [r["sampling_efficiency"] for r in pts]
            if "sampling_efficiency_lo" in pts[0]:
                err = [[r["sampling_efficiency"] - r["sampling_efficiency_lo"] for r in pts],
                       [r["sampling_efficiency_hi"] - r["sampling_efficiency"] for r in pts]]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
            else:
                ax.plot(x, y, marker="o", label=method)
        small = max(r["sampling_efficiency"] for r in pts_all) < 0.05
        ax.set(xscale="log", yscale="log" if small else "linear",
               xlabel="target evaluations (values)", ylabel="sampling efficiency (ESS/N)",
               title=tgt)
        if not small:
            ax.set_ylim(0, 1.02)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--png", default=None, help="write the curves to this PNG")
    parser.add_argument("--flat", action="store_true",
                        help="also the flat (non-Breit-Wigner) map of the physics target (~35 min)")
    parser.add_argument("--only-flat", action="store_true", help="only the flat-map comparison")
    parser.add_argument("--flat-steps", type=int, default=None, help="FAB steps on the flat map")
    args = parser.parse_args()
    rows = [] if args.only_flat else run(args.quick)
    if args.flat or args.only_flat:
        run_flat(rows, args.quick, args.flat_steps)
    if args.png:
        plot(rows, args.png)
    for tgt in sorted({r["target"] for r in rows}):
        last = {r["method"]: r for r in rows if r["target"] == tgt}  # largest budget per method
        fab = last.get("fab+buffer", last.get("fab"))
        if not fab:
            continue
        # VEGAS at the largest budget, and (flat map) at every budget >= FAB's target values
        vegas = [r for r in rows if r["target"] == tgt and r["method"] == "vegas"]
        matched = [r for r in vegas if r["target_evaluations"] >= fab["target_evaluations"]]
        for veg in matched or vegas[-1:]:
            summary = {
                "bench": "sampling_summary",
                "target": tgt,
                "fab_over_vegas_sampling_efficiency": round(
                    fab["sampling_efficiency"] / veg["sampling_efficiency"], 3),
                "fab_evaluations": fab["target_evaluations"],
                "fab_gradients": fab.get("target_gradients"),
                "vegas_evaluations": veg["target_evaluations"],
            }
            if "sampling_efficiency_lo" in fab:  # conservative: FAB's low edge over VEGAS's high
                summary["fab_lo_over_vegas_hi"] = round(
                    fab["sampling_efficiency_lo"] / veg["sampling_efficiency_hi"], 3)
                summary["fab_sigma_pull"] = round(fab["sigma_pull"], 2)
                summary["vegas_sigma_pull"] = round(veg["sigma_pull"], 2)
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
