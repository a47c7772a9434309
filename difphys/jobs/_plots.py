"""Every figure the ``difphys`` jobs write (matplotlib, Agg backend, PNG with the provenance
in its metadata; optionally in an mplhep style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import kinematics as kin

_STYLE: list[str | None] = [None]
#: The mplhep styles ``--plot-style`` offers (mplhep's names).
PLOT_STYLES = ("CMS", "ATLAS", "ALICE", "LHCb2", "ROOT")


def set_plot_style(name: str | None) -> None:
    """Draw every later figure of the jobs in mplhep's ``name`` style (:data:`PLOT_STYLES`;
    the ``hep`` extra), or plain matplotlib (``None``, the default). ``difphys --plot-style``
    calls it."""
    if name is not None:
        if name not in PLOT_STYLES:
            raise ValueError(f"plot style must be one of {PLOT_STYLES}; got {name!r}")
        from .._extras import require

        require("mplhep", "hep", f"--plot-style {name}")
    elif _STYLE[0] is not None:  # back to plain matplotlib
        import matplotlib

        matplotlib.rcdefaults()
    _STYLE[0] = name


def _save(fig, path, dpi: int) -> None:
    """Save ``fig`` as PNG with the provenance (:func:`difphys.provenance.provenance`, JSON)
    in its ``Description`` text chunk and ``difphys <version>`` as its ``Software``, on
    process 0 only."""
    import json

    from .. import __version__
    from ..provenance import is_writer, provenance

    if is_writer():
        fig.savefig(path, dpi=dpi, metadata={"Software": f"difphys {__version__}",
                                             "Description": json.dumps(provenance())})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if _STYLE[0] is not None:
        import mplhep

        plt.style.use(getattr(mplhep.style, _STYLE[0]))
    return plt


def plot_roc(path, eff_s, eff_b, auc, label):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    keep = eff_b > 0
    ax.semilogy(eff_s[keep], 1.0 / eff_b[keep], label=f"{label} (AUC {auc:.3f})")
    ax.set_xlabel("signal efficiency")
    ax.set_ylabel("background rejection 1 / eff_bkg")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path, 120)
    plt.close(fig)


def plot_design(path, results):
    plt = _pyplot()
    fig, (ax_loss, ax_theta) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(results):
        colour = f"C{i}"
        steps = np.arange(1, r.loss.shape[1] + 1)
        loss = np.median(r.loss, axis=0)
        # a running mean makes the noisy per-step batch loss readable
        width = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(width) / width, mode="valid")
        ax_loss.plot(steps[width - 1 :], smooth, color=colour, label=r.method)
        ax_theta.plot(steps, np.median(r.theta, axis=0), color=colour, label=r.method)
        lo, hi = np.quantile(r.theta, [0.25, 0.75], axis=0)
        ax_theta.fill_between(steps, lo, hi, color=colour, alpha=0.15)
    ax_loss.set(
        xlabel="Adam step", ylabel="batch loss (median over seeds, running mean)", yscale="log"
    )
    ax_theta.set(xlabel="Adam step", ylabel="ring inner radius theta (median, IQR)")
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)


def plot_demo(path: Path, p, w, rs, exact) -> None:
    plt = _pyplot()
    s = float(rs) ** 2
    x = np.asarray(kin.mass2(p[:, 0] + p[:, 1])) / s
    y = np.asarray(kin.mass2(p[:, 1] + p[:, 2])) / s
    weights = np.asarray(w)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    h = ax1.hist2d(
        x, y, bins=40, weights=weights / weights.mean(), range=[[0, 1], [0, 1]], cmin=1e-9
    )
    fig.colorbar(h[3], ax=ax1, label="weighted events")
    ax1.set_xlabel(r"$s_{12}/s$")
    ax1.set_ylabel(r"$s_{23}/s$")
    ax1.set_title(r"massless 3-body Dalitz plot (flat in theory)")
    n = np.arange(1, weights.size + 1)
    running = np.cumsum(weights) / n
    sq = np.cumsum(weights**2) / n
    err = np.sqrt(np.maximum(sq - running**2, 0.0) / n)
    sel = np.unique(np.logspace(1, np.log10(weights.size), 200).astype(int)) - 1
    ax2.fill_between(n[sel], (running - err)[sel] / exact, (running + err)[sel] / exact, alpha=0.3)
    ax2.plot(n[sel], running[sel] / exact, label="unit-cube MC")
    ax2.axhline(1.0, color="k", ls="--", label=r"analytic $s/(256\pi^3)$")
    ax2.set_xscale("log")
    ax2.set_xlabel("points")
    ax2.set_ylabel(r"$\hat\Phi_3 / \Phi_3$")
    ax2.set_title(rf"$\Phi_3$ estimate at $\sqrt{{s}}={float(rs):.4g}$ GeV")
    ax2.legend()
    fig.tight_layout()
    _save(fig, path, 110)
    plt.close(fig)


def plot_story(path: Path, report: dict, m_top) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    v = report["vertex_fit"]
    axes[0].bar(["x", "y", "z"], v["pull_std_xyz"])
    axes[0].axhline(1.0, color="k", ls="--")
    axes[0].set_ylabel("std of (fit - true) / sigma")
    axes[0].set_title(f"vertex pulls, {v['jets']} fits")
    s = report["stochastic_ad"]
    axes[1].errorbar([0, 1], [s["dloss_dtheta_stochad"], s["dloss_dtheta_score"]],
                     yerr=[s["stochad_error"], s["score_error"]], fmt="o", capsize=4)
    axes[1].set_xticks([0, 1], ["stochastic AD", "score function"])
    axes[1].set_xlim(-0.5, 1.5)
    axes[1].set_ylabel(r"$d\,E[\mathrm{loss}]/d\theta$ at $\theta=2.5$")
    axes[1].set_title("unbiased gradient estimators of a discrete simulator")
    if m_top is not None:
        axes[2].hist(m_top, bins=np.linspace(150, 200, 26), histtype="step")
        axes[2].axvline(173.0, color="k", ls="--", label="m_t = 173 GeV")
        axes[2].set_xlabel("m(W+ b) of unweighted FAB events (GeV)")
        axes[2].legend()
        axes[2].set_title("e+ e- -> W+ b W- b~ at 1 TeV")
    fig.tight_layout()
    _save(fig, path, 100)
    plt.close(fig)
