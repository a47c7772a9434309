"""Stochastic-AD benchmark on the toy detector (Kagan & Heinrich, arXiv:2308.16680, section 5).

Part 1: for the energy-loss-only and the branching shower at theta = 2.5, the standard
deviation of each gradient estimator over --runs independent estimates, and the cost of one
estimate relative to one plain run of the program (both vmapped over the same keys and timed
in this process). The paper's standard deviations are printed beside ours; its toy differs in
details (material profile, energy loss), so compare orders of magnitude and the ranking.

Part 2: the detector optimisation (Adam, one shower per gradient, 150 steps, lr 0.05, from
theta = 2.5) for 10 seeds per estimator; the median final loss E[(R - 2)^2] on 2000 showers.
The paper saw 0.003-0.107 for stochastic AD and 1.7-4.9 for finite differences.

One JSON line per result.

    python benchmarks/stochad.py [--runs 5000] [--seeds 10] [--steps 150]
"""

from __future__ import annotations

import argparse
import functools
import json

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from _timing import time_compiled  # noqa: E402

from difphys import sim  # noqa: E402
from difphys import stochad as sd  # noqa: E402

# standard deviations reported by Kagan & Heinrich (energy-loss variant, branching variant)
PAPER_STD = {
    "stochad": (10.6, 7.8),
    "score": (17.2, 12.6),
    "score_baseline": (6.9, 4.6),
    "fd": (145.0, 78.7),
}
METHODS = [
    ("stochad", {}),
    ("stochad", {"n_alternatives": 2}),
    ("score", {}),
    ("score_baseline", {}),
    ("gumbel", {}),
    ("straight_through", {}),
    ("fd", {"h": 1e-3}),
]


def variance_and_cost(runs: int) -> None:
    keys = jax.random.split(jax.random.key(0), runs)
    for branching in (False, True):
        variant = "branching" if branching else "energy-loss"
        f = functools.partial(sim.objective, branching=branching)
        plain = jax.jit(jax.vmap(lambda k, f=f: f(2.5, k)))
        _, t_plain = time_compiled(plain, keys)
        for method, options in METHODS:
            est_fn = jax.jit(
                jax.vmap(
                    lambda k, f=f, m=method, o=options: sd.derivative_estimate(f, 2.5, key=k, method=m, **o)
                )
            )
            _, t_est = time_compiled(est_fn, keys)
            est = np.asarray(est_fn(keys))
            paper = PAPER_STD.get(method) if not options.get("n_alternatives") else None
            print(
                json.dumps(
                    {
                        "bench": "stochad_variance",
                        "variant": variant,
                        "method": method,
                        "options": options,
                        "theta": 2.5,
                        "runs": runs,
                        "mean": round(float(est.mean()), 4),
                        "std_error_of_mean": round(float(est.std() / np.sqrt(runs)), 4),
                        "std": round(float(est.std()), 3),
                        "paper_std": None if paper is None else paper[int(branching)],
                        "cost_vs_plain_run": round(t_est / t_plain, 2),
                        "plain_runs_per_s": round(runs / t_plain),
                    }
                ),
                flush=True,
            )


def optimisation(seeds: int, steps: int) -> None:
    for method, options in METHODS:
        r = sim.optimize_detector(
            jax.random.key(0),
            method=method,
            options=options,
            steps=steps,
            batch=1,
            learning_rate=0.05,
            n_seeds=seeds,
            progress=False,
        )
        print(
            json.dumps(
                {
                    "bench": "stochad_optimisation",
                    "variant": "energy-loss",
                    "method": method,
                    "options": options,
                    "seeds": seeds,
                    "steps": steps,
                    "batch": 1,
                    "median_final_loss": round(float(np.median(r.final_loss)), 4),
                    "final_loss_range": [
                        round(float(r.final_loss.min()), 4),
                        round(float(r.final_loss.max()), 4),
                    ],
                    "median_final_theta": round(float(np.median(r.final_theta)), 3),
                    "converged_below_0.05": bool(np.median(r.final_loss) < 0.05),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    print(json.dumps({"bench": "stochad_device", "device": str(jax.devices()[0])}))
    variance_and_cost(args.runs)
    optimisation(args.seeds, args.steps)


if __name__ == "__main__":
    main()
