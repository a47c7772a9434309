"""The second half of ``difphys demo``: compact runs of the vertex fit, stochastic AD, FAB and
the foundation-model workflow, each with its own numerical check (see :mod:`difphys.jobs.demo`)."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import kinematics as kin
from .. import sim, stochad
from ..data import generate
from ..vertex import Perigee, fit, simulate_tracks
from .foundation import finetune_files, fit_tokenizer_files, pretrain_files
from .sample import sample_events


def vertex_step(key, n_jets: int = 2000, n_tracks: int = 6) -> dict:
    """Billoir fits of ``n_jets`` simulated displaced vertices (B = 2 T): pulls of the fitted
    position (unit width if the covariance is right) and the implicit gradient of the fitted x
    with respect to one track weight against a central finite difference."""
    k_dir, k_len, k_spread, k_mag, k_q, k_s = jax.random.split(key, 6)
    direction = jax.random.normal(k_dir, (n_jets, 3))
    direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
    vertex = direction * jax.random.exponential(k_len, (n_jets, 1)) * 3.0  # mm
    spread = 0.3 * jax.random.normal(k_spread, (n_jets, n_tracks, 3))
    momenta = (direction[:, None, :] + spread) * jax.random.uniform(
        k_mag, (n_jets, n_tracks, 1), minval=2.0, maxval=20.0)  # GeV
    charges = jnp.where(jax.random.bernoulli(k_q, 0.5, (n_jets, n_tracks)), 1.0, -1.0)
    keys = jax.random.split(k_s, n_jets)
    tracks, _ = jax.jit(jax.vmap(lambda k, v, p, q: simulate_tracks(k, v, p, q, 2.0)))(
        keys, vertex, momenta, charges)
    t0 = time.perf_counter()
    res = fit(tracks, bfield=2.0)
    jax.block_until_ready(res.position)
    seconds = time.perf_counter() - t0
    pulls = np.asarray((res.position - vertex) / jnp.sqrt(jnp.diagonal(res.cov, 0, -2, -1)))
    one = Perigee(tracks.params[0], tracks.cov[0])

    def x_of_w(w0):
        w = jnp.ones(n_tracks).at[0].set(w0)
        return fit(one, w, bfield=2.0).position[0]

    w0 = jnp.asarray(0.7)
    grad = float(jax.grad(x_of_w)(w0))
    # the fitted vertex carries ~1e-12 mm of rounding noise: a step of 1e-3 keeps the noise
    # (1e-12 / h) and the truncation error (h^2) of the central difference both below 1e-4
    h = 1e-3
    fd = float((x_of_w(w0 + h) - x_of_w(w0 - h)) / (2 * h))
    width = np.std(pulls[np.asarray(res.valid)], axis=0)
    return {
        "jets": n_jets, "tracks_per_jet": n_tracks,
        "converged_fraction": float(np.mean(np.asarray(res.converged))),
        "pull_std_xyz": [round(float(x), 3) for x in width],
        "fits_per_second_incl_compile": n_jets / seconds,
        "dx_dw0_implicit": grad, "dx_dw0_finite_difference": fd,
        "checks": {
            "vertex_pulls_unit_width": bool(np.all(np.abs(width - 1.0) < 0.1)),
            "implicit_gradient_equals_finite_difference": bool(np.isclose(grad, fd, rtol=1e-4,
                                                                          atol=1e-9)),
        },
    }


def stochad_step(key, n: int = 2000, steps: int = 30) -> dict:
    """Gradient of the toy detector's design loss at theta = 2.5 by stochastic AD and by the
    score function (both unbiased: they must agree), then ``steps`` Adam steps with stochad."""
    def f(theta, k):
        return sim.objective(theta, k)

    keys = jax.random.split(key, n)
    theta = jnp.asarray(2.5)
    out = {}
    for method in ("stochad", "score"):
        est = np.asarray(jax.jit(jax.vmap(
            lambda k, m=method: stochad.derivative_estimate(f, theta, key=k, method=m)))(keys))
        out[method] = (float(est.mean()), float(est.std() / np.sqrt(n)))
    run = sim.optimize_detector(jax.random.fold_in(key, 1), steps=steps, progress=False,
                                n_eval=500)
    (m1, e1), (m2, e2) = out["stochad"], out["score"]
    loss = np.asarray(run.loss)[0]
    return {
        "theta": 2.5, "showers": n,
        "dloss_dtheta_stochad": m1, "stochad_error": e1,
        "dloss_dtheta_score": m2, "score_error": e2,
        "variance_ratio_score_over_stochad": (e2 / e1) ** 2 if e1 > 0 else None,
        "adam_steps": steps, "theta_after": float(np.asarray(run.final_theta)[0]),
        "loss_first_5_steps": float(loss[:5].mean()), "loss_last_5_steps": float(loss[-5:].mean()),
        "checks": {"stochad_agrees_with_score_function": abs(m1 - m2) < 5 * np.hypot(e1, e2)},
    }


def fab_step(run_dir: Path, steps: int = 15, n_events: int = 200) -> tuple[dict, np.ndarray]:
    """A short FAB training on e+ e- -> W+ b W- b~ at 1 TeV, unweighted events to LHE."""
    summary, momenta = sample_events(
        method="fab", train_steps=steps, n_events=n_events, calibration=4000, batch=128,
        flow_layers=4, out=run_dir / "fab_events.lhe", progress=False)
    m_top = np.asarray(kin.mass(jnp.asarray(momenta[:, 2] + momenta[:, 3])))
    summary = {k: summary[k] for k in ("process", "sqrt_s", "sigma_pb", "sigma_error_pb",
                                       "sampling_efficiency", "unweighting_efficiency",
                                       "n_events", "n_target_values_training", "out")}
    summary["median_m_Wb_GeV"] = float(np.median(m_top))
    summary["checks"] = {"top_peak_in_unweighted_events": abs(float(np.median(m_top))
                                                                - 173.0) < 5.0,
                         "finite_cross_section": bool(np.isfinite(summary["sigma_pb"])
                                                      and summary["sigma_pb"] > 0)}
    return summary, m_top


def foundation_step(run_dir: Path, events: int = 1000, steps: int = 60) -> dict:
    """Generate a small Z-pole sample (Pythia 8 + FastJet), fit a K-means tokeniser, pretrain a
    tiny ParT by masked particle modelling, fine-tune it on b vs light; or report why not."""
    try:
        import fastjet  # noqa: F401
        import pythia8mc  # noqa: F401
    except ImportError as err:
        return {"skipped": f"needs the data extra (pip install 'difphys[data]'): {err}",
                "checks": {}}

    folder = run_dir / "foundation"
    sample = generate("zpole", events, 5, folder / "zpole.root", workers=1, progress=False)
    tok = fit_tokenizer_files(sample.path, folder / "tokenizer", method="kmeans",
                              codebook_size=32, max_particles=32, progress=False)
    pre = pretrain_files(sample.path, folder / "tokenizer", folder / "pretrained",
                         model_size="tiny", steps=steps, batch_size=64, max_particles=32,
                         progress=False)
    fine = finetune_files(sample.path, folder / "finetuned", pretrained=folder / "pretrained",
                          strategy="finetune", steps=steps, batch_size=64, max_particles=32,
                          learning_rate=3e-3, progress=False)
    auc = float(fine["test_auc"])
    return {
        "events": events, "jets": 2 * events, "tokenizer": tok["method"],
        "codebook_utilisation": tok["codebook_utilisation"],
        "token_entropy": pre["token_entropy"],
        "pretrain_loss_first": pre["first_loss"], "pretrain_loss_last": pre["final_loss"],
        "finetune_auc_b_vs_light": auc, "folder": str(folder),
        "checks": {"finetuned_tagger_beats_chance": auc > 0.6},
    }
