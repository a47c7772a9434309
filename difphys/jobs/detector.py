"""``difphys optimize-detector``: gradient-based design of the toy ring detector with each
gradient estimator; writes ``summary.json`` and ``design.png``."""

from __future__ import annotations

import jax
import numpy as np

from ..sim import optimize_detector
from ..stochad import METHODS
from ._plots import plot_design
from ._report import Report
from ._runs import new_run_dir, write_json


def detector_study(
    out_root,
    *,
    methods=("stochad", "score", "score_baseline", "gumbel", "straight_through", "fd"),
    seed: int = 0,
    fd_step: float = 1e-3,
    progress: bool = True,
    **kwargs,
):
    """Run :func:`optimize_detector` for each method; write ``summary.json`` and ``design.png``.

    Each call writes a new ``optimize-detector-<timestamp>`` folder under ``out_root`` (nothing
    is overwritten) and returns a :class:`Report` (``values``: the summary). ``kwargs`` go to ``optimize_detector``;
    ``fd_step`` is the finite-difference step ``h``.
    """
    methods = list(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    key = jax.random.key(seed)
    results = []
    for method in methods:
        options = {"h": fd_step} if method == "fd" else {}
        results.append(
            optimize_detector(key, method=method, options=options, progress=progress, **kwargs)
        )
    folder = new_run_dir(out_root, "optimize-detector")
    summary = {
        "objective": "E[(mean interaction radius - 2.0)^2], Adam on the ring's inner radius",
        "results": [
            {
                "method": r.method,
                "options": r.options,
                "branching": r.branching,
                "theta0": r.theta0,
                "steps": r.steps,
                "batch": r.batch,
                "learning_rate": r.learning_rate,
                "final_theta": r.final_theta.tolist(),
                "final_loss": r.final_loss.tolist(),
                "median_final_loss": float(np.median(r.final_loss)),
            }
            for r in results
        ],
    }
    write_json(folder / "summary.json", summary)
    plot_design(folder / "design.png", results)
    lines = [f"{'method':18s} {'median final loss':>18s} {'median theta':>13s}"]
    lines += [f"{r['method']:18s} {r['median_final_loss']:18.4f} "
              f"{float(np.median(r['final_theta'])):13.3f}" for r in summary["results"]]
    lines.append(f"wrote {folder / 'summary.json'} and {folder / 'design.png'}")
    return Report("optimize-detector", folder, summary, tuple(lines))


