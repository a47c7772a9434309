"""Neural empirical Bayes benchmark: source estimation on the Gaussian closed form, two moons,
SLCP and the Pythia dimuon problem (exact and likelihood-free tiers).

Every fit writes one JSON line to ``benchmarks/results/neb.jsonl`` with at least ``problem``,
``estimator``, ``K``, ``c2st_auc`` (learned source against samples of the true source, held-out
ROC AUC; 0.5 = indistinguishable), its error and ``seconds`` (fit wall time on this machine).
The dimuon lines add the naive control (a flow fitted to the smeared observations as if they
were the source), the Z-window mean and width of sqrt(s') against the truth with their errors,
and the coverage of the posterior 68% intervals of 500 held-out observations.

    python benchmarks/neb.py                       # everything (about 30-40 minutes on 2 cores)
    python benchmarks/neb.py --problems dimuon     # one problem
    python benchmarks/neb.py --quick               # small plumbing run (not committed)
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from difphys import flows, sim  # noqa: E402
from difphys.provenance import provenance  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
SQRT_S = 91.1876


def _line(out, record):
    record = {**record, "machine": platform.machine(), "cpus": jax.local_device_count()}
    print(json.dumps(record), flush=True)
    if out is not None:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")


def _c2st(key, learned, truth, steps):
    res = flows.c2st_auc(key, np.asarray(learned), np.asarray(truth), steps=steps)
    return {"c2st_auc": round(res.auc, 4), "c2st_error": round(res.error, 4),
            "c2st_n_test": res.n_test}


def _flow(key, dim, loc, scale, n_bins=12, n_layers=6):
    return flows.make_spline_flow(key, dim, n_layers=n_layers, hidden=64, n_bins=n_bins,
                                  loc=loc, scale=scale)


def _recognition(key, dim_x, dim_y, loc, scale, y):
    y = np.asarray(y)
    return flows.make_conditional_spline_flow(
        key, dim_x, dim_y, n_layers=4, hidden=64, n_bins=8, loc=loc, scale=scale,
        context_loc=tuple(y.mean(0)), context_scale=tuple(y.std(0) + 1e-9))


def _fit(key, source, log_lik, y, estimator, k_draws, args, recognition=None, lr=1e-3):
    t0 = time.perf_counter()
    amortised = estimator in ("iw", "elbo")
    fit = flows.fit_source(key, source, log_lik, y, estimator=estimator, K=k_draws,
                           steps=args.iw_steps if amortised else args.steps,
                           optimizer=optax.adam(lr), batch=args.iw_batch if amortised else args.batch,
                           recognition=recognition, eval_every=args.eval_every,
                           patience=args.patience, progress=False, val_K=args.val_k,
                           shared_draws=estimator in ("biased", "roulette"))
    jax.block_until_ready(jax.tree_util.tree_leaves(fit.source))
    return fit, time.perf_counter() - t0


def run_benchmark_problem(name, args, out, key):
    """Gaussian, two moons or SLCP: each estimator's learned source against the prior."""
    problem = {"gaussian": flows.gaussian_problem, "two_moons": flows.two_moons_problem,
               "slcp": flows.slcp_problem}[name]()
    k_x, k_y, k_t, k_fits = jax.random.split(key, 4)
    y = problem.simulate(k_y, problem.sample_source(k_x, args.n_obs))
    truth = problem.sample_source(k_t, args.n_c2st)
    if name == "gaussian":
        runs = [("biased", 1), ("biased", 16), ("biased", 256), ("roulette", 4), ("iw", 16),
                ("elbo", 16)]
    else:
        runs = [("biased", 128), ("biased", 512), ("iw", 16), ("elbo", 16)]
    for i, (estimator, k_draws) in enumerate(runs):
        if args.estimators and estimator not in args.estimators:
            continue
        k_src, k_rec, k_fit, k_s, k_c = jax.random.split(jax.random.fold_in(k_fits, i), 5)
        source = _flow(k_src, max(problem.dim_x, 2), problem.loc, problem.scale) \
            if problem.dim_x >= 2 else flows.GaussianSource(jnp.zeros(1), jnp.zeros(1))
        rec = None
        if estimator in ("iw", "elbo"):
            rec = _recognition(k_rec, problem.dim_x, problem.dim_y, problem.loc, problem.scale, y)
        fit, seconds = _fit(k_fit, source, problem.log_lik, y, estimator, k_draws, args, rec,
                            lr=1e-2 if problem.dim_x == 1 else 1e-3)
        learned = fit.source.sample(k_s, args.n_c2st)
        record = {"problem": name, "estimator": estimator, "K": k_draws,
                  "shared_draws": estimator in ("biased", "roulette"),
                  **_c2st(k_c, learned, truth, args.c2st_steps), "seconds": round(seconds, 1),
                  "n_obs": args.n_obs, "steps_run": int(fit.history.n_rows),
                  "best_step": fit.best_step, "val_log_marginal": round(fit.best_val, 5),
                  "val_K": args.val_k or max(k_draws, 256)}
        if name == "gaussian":
            record["width"] = round(float(np.std(np.asarray(learned))), 4)
            record["width_ml"] = round(float(np.sqrt(np.var(np.asarray(y)) - 0.25)), 4)
        _line(out, record)


# ---------------------------------------------------------------------------- dimuons
# The source flow lives in z = (log(sqrt(s) - sqrt(s')), atanh(cos theta*)): no edges, so no mass
# above sqrt(s) or outside |cos| < 1. Comparisons are made in x = (sqrt(s'), cos theta*).
def _to_x(z):
    return jnp.stack([SQRT_S - jnp.exp(z[..., 0]), jnp.tanh(z[..., 1])], axis=-1)


def _widths(y):
    """The exact tier's resolution (sigma_m, sigma_cos) at an observation (CLD-like tracker)."""
    m, c = y[..., 0], jnp.clip(y[..., 1], -0.999999, 0.999999)
    p = jnp.maximum(m, 1.0) / 2
    rel = jnp.sqrt(0.002**2 + (2e-5 * p * jnp.sqrt(1 - c * c)) ** 2)
    ang = jnp.sqrt(1e-4**2 + (1.5e-3 / p) ** 2)
    return m * rel / np.sqrt(2), jnp.sqrt(1 - c * c) * ang / np.sqrt(2) + 1e-7


class _Recognition(eqx.Module):
    """``r(z | y)``: a conditional flow ``u ~ q(u | y)`` placed by a fixed affine map
    ``z = a(y) + b(y) u`` built from the resolution at ``y`` (the cos theta* posterior is
    ~1e-4 wide: too narrow for a flow to find from a unit scale). In the radiative tail
    ``z_1`` is centred on ``log(sqrt(s) - m_obs)`` with the mass resolution; near the peak,
    where the data cannot resolve ``sqrt(s) - sqrt(s')``, ``z_1`` is left broad."""

    flow: flows.ConditionalSplineFlow
    widen: float = eqx.field(static=True, default=3.0)

    def _affine(self, y):
        m, c = y[..., 0], jnp.clip(y[..., 1], -0.999999, 0.999999)
        s_m, s_c = _widths(y)
        gap = SQRT_S - m
        tail = gap > 4 * s_m
        d = jnp.where(tail, gap, 1.0)
        a1 = jnp.where(tail, jnp.log(d), -6.0)
        b1 = jnp.where(tail, self.widen * s_m / d, 5.0)
        a2 = jnp.arctanh(c)
        b2 = self.widen * s_c / (1 - c * c)
        return jnp.stack([a1, a2], -1), jnp.stack([b1, b2], -1)

    def sample_and_log_prob(self, key, y, n=None):
        u, log_u = self.flow.sample_and_log_prob(key, y, n)
        a, b = self._affine(y)
        return a + b * u, log_u - jnp.sum(jnp.log(b), -1)

    def log_prob(self, z, y):
        a, b = self._affine(y)
        return self.flow.log_prob((z - a) / b, y) - jnp.sum(jnp.log(b), -1)


class _ResidualLikelihood(eqx.Module):
    """``log p(y | x)`` from a conditional flow over the squashed standardised residual
    ``u = asinh(r / 2)``, ``r = (y - x) / sigma(x)`` (long radiative tails become short), plus
    the Jacobian ``log |du/dy|``."""

    flow: flows.ConditionalSplineFlow

    @staticmethod
    def residual(y, x):
        s_m, s_c = _widths(x)
        sig = jnp.stack([s_m, s_c], -1)
        r = (y - x) / sig
        u = jnp.arcsinh(r / 2)
        log_jac = jnp.sum(-jnp.log(sig) - 0.5 * jnp.log(r * r + 4), -1)
        return u, log_jac

    def __call__(self, y, x):
        ok = (x[0] > 0) & (jnp.abs(x[1]) < 1)
        x = jnp.where(ok, x, jnp.array([91.0, 0.0], x.dtype))
        u, log_jac = self.residual(y, x)
        return jnp.where(ok, self.flow.log_prob(u, x) + log_jac, -jnp.inf)


def _window_moments(x, lo=86.0):
    m = np.asarray(x)[:, 0]
    m = m[m > lo]
    mean, std = m.mean(), m.std()
    # errors: the standard error of the mean and of the standard deviation
    return mean, std, std / np.sqrt(len(m)), std / np.sqrt(2 * len(m))


def _coverage(key, source, log_lik_z, proposal, y_held, x_held, n_draws):
    keys = jax.random.split(key, len(y_held))

    def one(k, yi):
        post = flows.posterior(k, source, log_lik_z, yi, n_draws, proposal=proposal)
        post = post._replace(x=_to_x(post.x))
        lo, hi = flows.credible_interval(post, 0.68)
        return lo, hi, post.ess

    lo, hi, ess = jax.jit(jax.vmap(one))(keys, y_held)
    inside = (np.asarray(lo) <= np.asarray(x_held)) & (np.asarray(x_held) <= np.asarray(hi))
    return inside.mean(0), float(np.median(np.asarray(ess)))


def run_dimuon(args, out, key):
    from difphys.data import dimuon_sample

    resolution = sim.cld_like_resolution()
    n_total = args.n_obs + args.n_c2st + 500
    t0 = time.perf_counter()
    sample = dimuon_sample(n_total, 2026)
    gen_seconds = time.perf_counter() - t0
    x_all = jnp.asarray(sample.x)
    x_truth = x_all[args.n_obs:args.n_obs + args.n_c2st]
    x_held = x_all[args.n_obs + args.n_c2st:]
    k_smear, k_lab, k_fit, k_naive, k_flow = jax.random.split(key, 5)
    truth_mom = _window_moments(x_truth)
    for tier in args.tiers:
        if tier == "exact":
            y_all = sim.smear_dimuon(k_smear, x_all, resolution)
            log_lik, extra = sim.DimuonLikelihood(resolution), {}
        else:  # likelihood-free: p(y | x) learned from a separate simulated sample
            y_all = sim.reconstruct_dimuon(k_lab, jnp.asarray(sample.muons), resolution)
            t1 = time.perf_counter()
            sim_sample = dimuon_sample(args.n_sim, 7)
            k_s1, k_s2, k_s3 = jax.random.split(k_flow, 3)
            x_sim = jnp.asarray(sim_sample.x)
            y_sim = sim.reconstruct_dimuon(k_s1, jnp.asarray(sim_sample.muons), resolution)
            u_sim, _ = _ResidualLikelihood.residual(y_sim, x_sim)
            lik_flow = flows.make_conditional_spline_flow(
                k_s2, 2, 2, n_layers=5, hidden=64, n_bins=12, loc=(0.0, 0.0), scale=(1.0, 1.0),
                context_loc=(90.0, 0.0), context_scale=(3.0, 0.6))
            lik_flow, losses = _train_conditional(k_s3, lik_flow, x_sim, u_sim, args)
            log_lik = _ResidualLikelihood(lik_flow)
            extra = {"n_sim": args.n_sim, "likelihood_seconds": round(time.perf_counter() - t1, 1),
                     "likelihood_final_nll": round(float(losses[-1]), 4)}
        y_obs, y_held = y_all[:args.n_obs], y_all[args.n_obs + args.n_c2st:]

        def log_lik_z(y, z, log_lik=log_lik):
            return log_lik(y, _to_x(z))

        k_src, k_rec, k_f, k_s, k_c, k_cov = jax.random.split(jax.random.fold_in(k_fit, len(tier)), 6)
        source = _flow(k_src, 2, (-6.0, 0.0), (5.0, 1.0), n_bins=16, n_layers=6)
        rec = _Recognition(flows.make_conditional_spline_flow(
            k_rec, 2, 2, n_layers=4, hidden=64, n_bins=8, context_loc=(90.0, 0.0),
            context_scale=(2.0, 0.6)))
        t1 = time.perf_counter()
        fit = flows.fit_source(k_f, source, log_lik_z, y_obs, estimator="iw", K=args.iw_k,
                               steps=args.dimuon_steps, optimizer=optax.adam(1e-3),
                               batch=args.dimuon_batch, recognition=rec,
                               eval_every=args.eval_every, patience=args.patience, val_K=64,
                               progress=False)
        seconds = time.perf_counter() - t1
        learned = _to_x(fit.source.sample(k_s, args.n_c2st))
        mom = _window_moments(learned)
        cover, ess = _coverage(k_cov, fit.source, log_lik_z, fit.recognition, y_held,
                               x_held[:len(y_held)], args.posterior_draws)
        _line(out, {"problem": "dimuon", "tier": tier, "estimator": "iw", "K": args.iw_k,
                    **_c2st(k_c, learned, x_truth, args.c2st_steps),
                    "seconds": round(seconds, 1), "n_obs": args.n_obs,
                    "steps_run": int(fit.history.n_rows), "best_step": fit.best_step,
                    "val_log_marginal": round(fit.best_val, 5),
                    "window_mean": [round(float(mom[0]), 4), round(float(truth_mom[0]), 4)],
                    "window_mean_error": round(float(np.hypot(mom[2], truth_mom[2])), 4),
                    "window_width": [round(float(mom[1]), 4), round(float(truth_mom[1]), 4)],
                    "window_width_error": round(float(np.hypot(mom[3], truth_mom[3])), 4),
                    "coverage_68": [round(float(c), 3) for c in cover],
                    "posterior_median_ess": round(ess, 1),
                    "generation_seconds": round(gen_seconds, 1), **extra})
        # the naive control: a flow fitted directly to the smeared observations, as if they
        # were the source (in the same edge-free coordinates where the observation allows)
        t1 = time.perf_counter()
        naive = _flow(jax.random.fold_in(k_naive, len(tier)), 2, (90.0, 0.0), (2.0, 0.6), n_bins=16)
        naive, _ = _train_density(jax.random.fold_in(k_naive, 10 + len(tier)), naive, y_obs, args)
        naive_x = naive.sample(jax.random.fold_in(k_naive, 20 + len(tier)), args.n_c2st)
        mom = _window_moments(naive_x)
        if out is not None:
            _plot_dimuon(out.parent / f"neb_dimuon_{tier}.png", tier, x_truth, learned, naive_x,
                         y_obs[:args.n_c2st])
            np.savez_compressed(out.parent / f"neb_dimuon_{tier}_samples.npz",
                                truth=np.asarray(x_truth, np.float32),
                                learned=np.asarray(learned, np.float32),
                                naive=np.asarray(naive_x, np.float32),
                                observed=np.asarray(y_obs[:args.n_c2st], np.float32))
        _line(out, {"problem": "dimuon", "tier": tier, "estimator": "naive", "K": 0,
                    **_c2st(jax.random.fold_in(k_naive, 30 + len(tier)), naive_x, x_truth,
                            args.c2st_steps),
                    "seconds": round(time.perf_counter() - t1, 1), "n_obs": args.n_obs,
                    "window_mean": [round(float(mom[0]), 4), round(float(truth_mom[0]), 4)],
                    "window_width": [round(float(mom[1]), 4), round(float(truth_mom[1]), 4)]})


def _plot_dimuon(path, tier, truth, learned, naive, observed):
    """Learned vs true source (and the observations, and the naive control) in sqrt(s') near
    the peak, in the radiative tail, and in cos theta*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = {"Pythia truth": truth, "NEB (learned source)": learned,
               "naive (flow on observations)": naive, "observations": observed}
    styles = {"Pythia truth": dict(color="k", lw=2), "NEB (learned source)": dict(color="C0"),
              "naive (flow on observations)": dict(color="C3", ls="--"),
              "observations": dict(color="0.6", ls=":")}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((0, np.linspace(90.0, 91.6, 81), "sqrt(s') [GeV] (peak)", False),
              (0, np.linspace(40.0, 92.0, 105), "sqrt(s') [GeV] (radiative tail)", True),
              (1, np.linspace(-1.0, 1.0, 41), "cos theta*", False))
    for ax, (col, bins, label, log) in zip(axes, panels, strict=True):
        for name, values in samples.items():
            ax.hist(np.asarray(values)[:, col], bins=bins, histtype="step", density=True,
                    label=name, **styles[name])
        ax.set_xlabel(label)
        if log:
            ax.set_yscale("log")
    axes[0].axvline(SQRT_S, color="0.3", lw=0.8)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"e+ e- -> mu+ mu- with ISR at the Z: source estimation ({tier} likelihood)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _train_density(key, flow, data, args):
    """Maximum likelihood of an unconditional flow on ``data`` (forward KL)."""
    data = jnp.asarray(data)
    n = data.shape[0]
    _, state, hist = flows.train_flow(
        key, "fkl", flow, lambda v: jnp.zeros((), v.dtype), steps=args.steps,
        optimizer=optax.adam(1e-3), config=flows.TrainConfig(batch=args.batch),
        target_sampler=lambda k, m: data[jax.random.randint(k, (m,), 0, n)], progress=False)
    return flows.flow_from_state(flow, state), hist


def _train_conditional(key, flow, context, data, args):
    """Maximum likelihood of a conditional flow ``q(data | context)`` by Adam on minibatches."""
    params, static = eqx.partition(flow, eqx.is_inexact_array)
    opt = optax.adam(1e-3)
    with jax.numpy_dtype_promotion("standard"):
        opt_state = opt.init(params)
    n = context.shape[0]

    @jax.jit
    def step(params, opt_state, k):
        idx = jax.random.randint(k, (args.batch,), 0, n)

        def loss(p):
            return -jnp.mean(eqx.combine(p, static).log_prob(data[idx], context[idx]))

        value, grads = jax.value_and_grad(loss)(params)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, opt_state, value

    losses = []
    for i in range(args.likelihood_steps):
        params, opt_state, value = step(params, opt_state, jax.random.fold_in(key, i))
        if i % 100 == 0 or i == args.likelihood_steps - 1:
            losses.append(float(value))
    return eqx.combine(params, static), losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["gaussian", "two_moons", "slcp", "dimuon"])
    parser.add_argument("--tiers", nargs="+", default=["exact", "lab"])
    parser.add_argument("--n-obs", type=int, default=20_000)
    parser.add_argument("--n-c2st", type=int, default=10_000)
    parser.add_argument("--n-sim", type=int, default=60_000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--likelihood-steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--c2st-steps", type=int, default=2000)
    parser.add_argument("--posterior-draws", type=int, default=4000)
    parser.add_argument("--iw-k", type=int, default=16)
    parser.add_argument("--val-k", type=int, default=None,
                        help="draws per held-out observation (default max(K, 256))")
    parser.add_argument("--estimators", nargs="+", default=None,
                        help="run only these estimators (benchmark problems)")
    parser.add_argument("--iw-steps", type=int, default=2000)
    parser.add_argument("--iw-batch", type=int, default=128)
    parser.add_argument("--dimuon-steps", type=int, default=3000)
    parser.add_argument("--dimuon-batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny plumbing run, not written")
    parser.add_argument("--out", default=str(RESULTS / "neb.jsonl"))
    args = parser.parse_args(argv)
    out = None if args.quick else pathlib.Path(args.out)
    if args.quick:
        args.n_obs, args.n_c2st, args.n_sim, args.steps = 600, 400, 2000, 60
        args.likelihood_steps, args.eval_every, args.c2st_steps, args.posterior_draws = 60, 30, 100, 200
        args.dimuon_steps = args.iw_steps = 60
    if out is not None:
        _line(out, {"problem": "run", "provenance": provenance(), "args": vars(args)})
    key = jax.random.key(args.seed)
    for i, name in enumerate(args.problems):
        k = jax.random.fold_in(key, i)
        if name == "dimuon":
            run_dimuon(args, out, k)
        else:
            run_benchmark_problem(name, args, out, k)


if __name__ == "__main__":
    main()
