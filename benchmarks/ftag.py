"""Flavour tagging with and without a differentiable vertex-fit layer (the NDIVE comparison).

On generated Z-pole jets (``difphys generate zpole``: b, c and light jets with smeared helix
tracks at B = 2 T), the same track transformer is trained three times:

* ``none``: no vertex layer (the baseline);
* ``learned``: per-track weights -> implicit-differentiation Billoir fit -> vertex features,
  trained end to end through the fit;
* ``truth``: the fit of the true b/c-decay tracks (the ceiling of the vertex layer).

Reported on the held-out jets: light and c rejection at 70% (and 85%) b efficiency with the
discriminant ``log(p_b / (f_c p_c + (1 - f_c) p_light))`` (f_c = 0.05), ROC AUCs, and for b
jets the vertex residual and pull widths against the true b-hadron decay vertex in bins of
its decay length. One JSON line per model to ``--out`` and a PNG next to it.

    python benchmarks/ftag.py                      # 20k events, 1500 steps per model (~20 min, 2 CPU cores)
    python benchmarks/ftag.py --events 4000 --steps 200   # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np

from difphys.io import load_tracks
from difphys.train import b_discriminant, flavour_metrics, roc_curve, train_flavour_tagger

MODES = ("none", "learned", "truth")
COLOURS = {"none": "C0", "learned": "C1", "truth": "C2"}


def _rejections(logits, labels, eff):
    m = flavour_metrics(logits, labels, b_efficiency=eff)
    out = {}
    for name in ("light", "c"):
        rej = getattr(m, f"{name}_rejection")
        n_bkg = int(np.sum(labels == (2 if name == "light" else 1)))
        out[f"{name}_rejection_at_{round(100 * eff)}"] = rej if np.isfinite(rej) else None
        if not np.isfinite(rej):  # no background jet passes: only a lower bound is known
            out[f"{name}_rejection_at_{round(100 * eff)}_lower_bound"] = n_bkg
    return out


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, help="an existing zpole file (else one is generated)")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ftag_cpu.jsonl"))
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # the vertex fit runs in float64

    path = args.input
    if path is None:
        from difphys.data import generate

        path = Path("out") / "ftag" / f"zpole_{args.events}_{args.seed}.root"  # not in git
        if not path.exists():
            generate("zpole", args.events, args.seed, path, workers=args.workers)
    tracks = load_tracks(path)
    counts = np.bincount(tracks["label"], minlength=3)
    print(f"{len(tracks['label'])} jets (b {counts[0]}, c {counts[1]}, light {counts[2]}), "
          f"{tracks['mask'].sum(1).mean():.1f} tracks per jet", flush=True)
    rows, curves = [], {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for mode in MODES:
        t0 = time.perf_counter()
        result = train_flavour_tagger(tracks, vertex=mode, steps=args.steps,
                                      batch_size=args.batch_size, key=jax.random.key(args.seed))
        seconds = time.perf_counter() - t0
        labels = tracks["label"][result.held_out]
        logits = result.evaluation.logits
        m = result.metrics
        row = {"benchmark": "ftag", "model": mode, "steps": args.steps,
               "batch_size": args.batch_size, "train_jets": int(len(tracks["label"])
                                                                - len(labels)),
               "test_jets": int(len(labels)), "seconds": round(seconds, 1),
               "seconds_per_step": round(seconds / args.steps, 4),
               "auc_b_vs_light": m.auc_b_vs_light, "auc_b_vs_c": m.auc_b_vs_c,
               "accuracy": m.accuracy,
               **_rejections(logits, labels, 0.7), **_rejections(logits, labels, 0.85),
               "vertex": None if result.vertex is None else [
                   b._asdict() for b in result.vertex],
               "vertex_valid_fraction_b": result.vertex_valid_fraction_b,
               "device": jax.devices()[0].platform, "cpu": platform.processor() or "cpu"}
        print(json.dumps(row), flush=True)
        rows.append(row)
        d = b_discriminant(logits)
        curves[mode] = {name: roc_curve(d[(labels == 0) | (labels == k)],
                                        labels[(labels == 0) | (labels == k)] == 0)
                        for name, k in (("light", 2), ("c", 1))}
    with args.out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    _plot(args.out.with_suffix(".png"), rows, curves)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return rows


def _plot(path, rows, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for mode, c in curves.items():
        for ax, name in zip(axes[:2], ("light", "c"), strict=True):
            eff_b, eff_bkg = c[name]
            ok = (eff_bkg > 0) & (eff_b > 0.4)
            ax.plot(eff_b[ok], 1.0 / eff_bkg[ok], label=mode, color=COLOURS[mode])
    for ax, name in zip(axes[:2], ("light", "c"), strict=True):
        ax.set_yscale("log")
        ax.axvline(0.7, color="k", ls=":", lw=0.8)
        ax.set_xlabel("b-jet efficiency")
        ax.set_ylabel(f"{name}-jet rejection")
        ax.set_title(f"b vs {name} (Z pole, f_c = 0.05)")
        ax.legend()
    ax = axes[2]
    for row in rows:
        if not row["vertex"]:
            continue
        bins = [r for r in row["vertex"] if r["median_residual_mm"] is not None]
        centres = [0.5 * (r["L_min_mm"] + (r["L_max_mm"] or 2 * r["L_min_mm"])) for r in bins]
        ax.plot(centres, [r["median_residual_mm"] for r in bins], "o-", label=row["model"],
                color=COLOURS[row["model"]])
    ax.set_xscale("log")
    ax.set_xlabel("true b-hadron decay length (mm)")
    ax.set_ylabel("median |fit - true| (mm)")
    ax.set_title("secondary-vertex residual (b jets)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
