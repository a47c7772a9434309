"""The ``difphys demo`` job: a short, real end-to-end computation with a report and a plot.

Steps (all float64):
1. the massless 3-body phase-space volume at sqrt(s) = mZ by Monte Carlo through the
   differentiable unit-cube map, against the closed form ``s / (256 pi^3)``;
2. the same for e+ e- -> b b~ g kinematics (m_b = 4.7 GeV) with two independent samplers
   (RAMBO and the unit-cube map), which must agree;
3. the gradient d/d sqrt(s) of the integrated Lorentz-invariant observable
   ``I(sqrt s) = int s_12 dPhi_3`` by autodiff through the sampler, against the analytic
   ``4 I / sqrt(s)`` (massless: I = s^2 / (768 pi^3)) and a common-random-number finite difference;
4. sigma(e+ e- -> mu+ mu-) at sqrt(s) from the differentiable matrix element against the
   analytic gamma + Z result, and d sigma / d MZ by autodiff against a finite difference;
5. Billoir vertex fits of simulated displaced vertices: pull widths, and the implicit gradient
   of the fitted vertex with respect to a track weight against a finite difference;
6. stochastic AD on the toy detector: the design-loss gradient by stochastic AD and by the
   score function (must agree; the variance ratio is reported), then Adam steps;
7. a short FAB training on e+ e- -> W+ b W- b~ at 1 TeV: cross section, efficiencies and
   unweighted LHE events (the top peak must be there);
8. a Z-pole sample from Pythia 8 + FastJet, a K-means tokeniser, masked-particle pretraining of
   a tiny Particle Transformer and b-vs-light fine-tuning (needs the ``data`` extra).
The report (JSON) and figures (PNG) are written to a new directory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import amplitudes as amp
from .. import kinematics as kin
from .. import phasespace as ps
from . import _story as st
from ._plots import plot_demo, plot_story
from ._report import Report
from ._runs import new_run_dir, write_json


def _s12(p):
    return kin.mass2(p[..., 0, :] + p[..., 1, :])


def _ones(p):
    return jnp.ones(p.shape[:-2], dtype=p.dtype)


def _sigma_mumu(sqrt_s: float, params) -> float:
    """Analytic sigma(e+ e- > mu+ mu-) with gamma + Z (massless), in pb."""
    s = sqrt_s**2
    e2 = float(params.ee) ** 2
    sw2, cw2 = float(params.sw2), float(params.cw) ** 2
    chi = s / (s - float(params.MZ) ** 2 + 1j * float(params.MZ) * float(params.WZ))
    g = {"L": -0.5 + sw2, "R": sw2}
    total = sum(abs(e2 + g[i] * g[j] * e2 / (sw2 * cw2) * chi) ** 2 for i in "LR" for j in "LR")
    return total / (48 * math.pi * s) * amp.GEV2_TO_PB


def _pull(value, error, expected):
    return float((value - expected) / error) if error > 0 else 0.0


def run_demo(
    out_root: str | Path = "out",
    *,
    seed: int = 0,
    n_points: int = 1_000_000,
    sqrt_s: float = 91.1876,
    progress: bool = True,
    story: bool = True,
) -> Report:
    """Run the demo and return its :class:`Report` (``values``: the JSON report); also write ``report.json``, ``demo.png`` and (with
    ``story``) ``story.png``.

    Args:
        out_root: parent directory; each run writes a new ``demo-<timestamp>`` folder in it.
        seed: PRNG seed.
        n_points: Monte Carlo points per integral.
        sqrt_s: centre-of-mass energy (GeV).
        progress: show progress bars.
        story: also run steps 5-8 (vertex fit, stochastic AD, FAB, foundation model).
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the demo computes physics in float64: enable jax_enable_x64 first")
    if n_points < 1000:
        raise ValueError(f"n_points must be at least 1000 for a meaningful error; got {n_points}")
    t0 = time.perf_counter()
    key = jax.random.key(seed)
    k_vol, k_bbg_r, k_bbg_u, k_grad, k_plot = jax.random.split(key, 5)
    rs = jnp.asarray(sqrt_s, dtype=jnp.float64)
    massless = jnp.zeros(3)
    report: dict = {"sqrt_s_GeV": sqrt_s, "n_points": n_points, "seed": seed, "checks": {}}

    # 1. massless 3-body volume.
    vol = ps.integrate(_ones, n_points, rs, massless, key=k_vol, sampler="unit_cube", progress=progress)
    exact = float(ps.massless_volume(3, rs))
    report["massless_3body_volume"] = {
        "monte_carlo": float(vol.value),
        "error": float(vol.error),
        "analytic": exact,
        "pull": _pull(float(vol.value), float(vol.error), exact),
        "units": "GeV^2",
    }

    # 2. b b~ g: two independent samplers agree.
    mbbg = jnp.array([4.7, 4.7, 0.0])
    r = ps.integrate(_ones, n_points, rs, mbbg, key=k_bbg_r, sampler="rambo", progress=progress)
    u = ps.integrate(_ones, n_points, rs, mbbg, key=k_bbg_u, sampler="unit_cube", progress=progress)
    report["bbg_volume"] = {
        "rambo": float(r.value),
        "rambo_error": float(r.error),
        "unit_cube": float(u.value),
        "unit_cube_error": float(u.error),
        "pull": _pull(float(r.value - u.value), math.hypot(float(r.error), float(u.error)), 0.0),
        "ratio_to_massless": float(r.value) / exact,
        "units": "GeV^2",
    }

    # 3. gradient of I(sqrt s) = int s12 dPhi_3 through the sampler (common random numbers).
    def integral(e):
        return ps.integrate(_s12, n_points, e, massless, key=k_grad, sampler="unit_cube").value

    value, grad = jax.value_and_grad(integral)(rs)
    h = 1e-3 * sqrt_s
    fd = (integral(rs + h) - integral(rs - h)) / (2 * h)
    analytic_i = float(rs**4 / (768 * math.pi**3))
    report["gradient"] = {
        "observable": "I(sqrt_s) = int s12 dPhi_3 (massless)",
        "I_monte_carlo": float(value),
        "I_analytic": analytic_i,
        "dI_dsqrt_s_autodiff": float(grad),
        "dI_dsqrt_s_finite_difference": float(fd),
        "dI_dsqrt_s_analytic_of_estimate": float(4 * value / rs),
        "dI_dsqrt_s_analytic": 4 * analytic_i / sqrt_s,
        "units": "GeV^3",
    }

    # 4. a cross section and its derivative with respect to a model parameter.
    proc = amp.process("e+ e- > mu+ mu-")
    params = amp.SMParams()
    k_xs = jax.random.fold_in(key, 4)
    n_xs = max(n_points // 10, 1000)

    def sigma_of_mz(mz):
        return amp.cross_section(proc, rs, n_xs, params.replace(MZ=mz), key=k_xs).value

    xs = amp.cross_section(proc, rs, n_xs, params, key=k_xs, progress=progress)
    dsig = float(jax.grad(sigma_of_mz)(params.MZ))
    h_mz = 1e-3
    dsig_fd = float((sigma_of_mz(params.MZ + h_mz) - sigma_of_mz(params.MZ - h_mz)) / (2 * h_mz))
    exact_xs = _sigma_mumu(float(rs), params)
    report["cross_section"] = {
        "process": proc.name,
        "sigma_pb": float(xs.value),
        "error_pb": float(xs.error),
        "analytic_pb": exact_xs,
        "pull": _pull(float(xs.value), float(xs.error), exact_xs),
        "dsigma_dMZ_autodiff_pb_per_GeV": dsig,
        "dsigma_dMZ_finite_difference_pb_per_GeV": dsig_fd,
    }

    checks = report["checks"]
    checks["cross_section_within_3_sigma"] = abs(report["cross_section"]["pull"]) < 3
    checks["dsigma_dMZ_autodiff_equals_finite_difference"] = bool(
        np.isclose(dsig, dsig_fd, rtol=1e-4)
    )
    checks["volume_within_3_sigma"] = abs(report["massless_3body_volume"]["pull"]) < 3
    checks["samplers_agree_within_3_sigma"] = abs(report["bbg_volume"]["pull"]) < 3
    checks["autodiff_equals_scaling_law"] = bool(
        np.isclose(float(grad), float(4 * value / rs), rtol=1e-10)
    )
    checks["autodiff_equals_finite_difference"] = bool(
        np.isclose(float(grad), float(fd), rtol=1e-6)
    )
    # Figure: Dalitz plot (flat for massless 3-body) and convergence of the volume estimate.
    p, w = ps.sample_batch(k_plot, 200_000, rs, massless, "unit_cube")
    run_dir = new_run_dir(Path(out_root), "demo")
    plot_demo(run_dir / "demo.png", p, w, rs, exact)
    report["figure"] = str(run_dir / "demo.png")
    report["seconds_physics"] = round(time.perf_counter() - t0, 2)

    if story:
        steps = [("vertex_fit", lambda: st.vertex_step(jax.random.fold_in(key, 5))),
                 ("stochastic_ad", lambda: st.stochad_step(jax.random.fold_in(key, 6))),
                 ("fab", lambda: st.fab_step(run_dir)),
                 ("foundation", lambda: st.foundation_step(run_dir))]
        m_top = None
        for name, step in steps:
            if progress:
                print(f"[demo] {name} ...", flush=True)
            t_step = time.perf_counter()
            result = step()
            if name == "fab":
                result, m_top = result
            result["seconds"] = round(time.perf_counter() - t_step, 1)
            report[name] = result
            checks.update({f"{name}:{k}": bool(v) for k, v in result.pop("checks").items()})
        plot_story(run_dir / "story.png", report, m_top)
        report["story_figure"] = str(run_dir / "story.png")
    report["all_checks_pass"] = all(checks.values())
    report["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(run_dir / "report.json", report)
    report["report"] = str(run_dir / "report.json")
    return Report("demo", run_dir, report, tuple(format_report(report).splitlines()))


def format_report(report) -> str:
    """Human-readable summary of a demo report (:func:`run_demo`)."""
    needed = ("massless_3body_volume", "bbg_volume", "gradient", "cross_section")
    if not isinstance(report, Mapping) or any(k not in report for k in needed):
        command = getattr(report, "command", type(report).__name__)
        raise ValueError(f"format_report formats the report of difphys demo (run_demo); got "
                         f"{command!r} without {[k for k in needed if k not in report] if isinstance(report, Mapping) else list(needed)}")
    v, b, g = report["massless_3body_volume"], report["bbg_volume"], report["gradient"]
    x = report["cross_section"]
    lines = [
        f"difphys demo  (sqrt(s) = {report['sqrt_s_GeV']} GeV, {report['n_points']:,} points, seed {report['seed']})",
        f"  massless Phi_3   MC {v['monte_carlo']:.6e} +- {v['error']:.1e}   analytic {v['analytic']:.6e}   pull {v['pull']:+.2f}",
        f"  b b~ g   Phi_3   RAMBO {b['rambo']:.6e} +- {b['rambo_error']:.1e}   unit cube {b['unit_cube']:.6e} +- {b['unit_cube_error']:.1e}   pull {b['pull']:+.2f}",
        f"  d/dsqrt(s) int s12 dPhi_3   autodiff {g['dI_dsqrt_s_autodiff']:.8e}   finite diff {g['dI_dsqrt_s_finite_difference']:.8e}   analytic {g['dI_dsqrt_s_analytic']:.6e}",
        f"  sigma(e+ e- > mu+ mu-)  MC {x['sigma_pb']:.5g} +- {x['error_pb']:.2g} pb   analytic {x['analytic_pb']:.5g} pb"
        f"   dsigma/dMZ autodiff {x['dsigma_dMZ_autodiff_pb_per_GeV']:.6g} pb/GeV (finite diff {x['dsigma_dMZ_finite_difference_pb_per_GeV']:.6g})",
    ]
    if "vertex_fit" in report:
        vf, sa, fab, fo = (report[k] for k in ("vertex_fit", "stochastic_ad", "fab", "foundation"))
        lines += [
            f"  vertex fit   {vf['jets']} jets x {vf['tracks_per_jet']} tracks, converged {vf['converged_fraction']:.3f}, "
            f"pull std {vf['pull_std_xyz']}, dx/dw implicit {vf['dx_dw0_implicit']:.6g} vs finite diff {vf['dx_dw0_finite_difference']:.6g} mm",
            f"  stochastic AD   dE[loss]/dtheta = {sa['dloss_dtheta_stochad']:+.4f} +- {sa['stochad_error']:.4f} (score function "
            f"{sa['dloss_dtheta_score']:+.4f} +- {sa['score_error']:.4f}, {sa['variance_ratio_score_over_stochad']:.0f}x the variance); "
            f"Adam: loss {sa['loss_first_5_steps']:.3f} -> {sa['loss_last_5_steps']:.3f}",
            f"  FAB   sigma(e+e- > W+ b W- b~, 1 TeV) = {fab['sigma_pb']:.4f} +- {fab['sigma_error_pb']:.4f} pb, sampling eff "
            f"{fab['sampling_efficiency']:.3f}, {fab['n_events']} unweighted events (median m_Wb {fab['median_m_Wb_GeV']:.1f} GeV) -> {fab['out']}",
            ("  foundation   " + fo["skipped"]) if "skipped" in fo else
            f"  foundation   {fo['jets']} Pythia jets, K-means tokens (utilisation {fo['codebook_utilisation']:.2f}), "
            f"MPM loss {fo['pretrain_loss_first']:.3f} -> {fo['pretrain_loss_last']:.3f}, fine-tuned b-vs-light AUC {fo['finetune_auc_b_vs_light']:.3f}",
        ]
    lines += [
        "  checks: "
        + ", ".join(f"{k}={'ok' if ok else 'FAIL'}" for k, ok in report["checks"].items()),
        f"  wrote {report['report']} and the figures in {report['seconds']} s",
    ]
    return "\n".join(lines)
