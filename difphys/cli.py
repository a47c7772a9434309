"""The ``difphys`` command line. Each subcommand parses arguments and calls one public function."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .demo import format_report, run_demo

    report = run_demo(
        args.out, seed=args.seed, n_points=args.points, sqrt_s=args.sqrt_s, progress=not args.quiet
    )
    print(format_report(report))
    return 0 if report["all_checks_pass"] else 1


def _cmd_optimize_detector(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from .sim import DetectorConfig, detector_study
    from .stochad import METHODS

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    folder, summary = detector_study(
        args.out,
        methods=methods,
        key=jax.random.key(args.seed),
        fd_step=args.fd_step,
        progress=not args.quiet,
        theta0=args.theta0,
        steps=args.steps,
        batch=args.batch,
        learning_rate=args.lr,
        n_seeds=args.seeds,
        branching=args.branching,
        config=DetectorConfig(),
    )
    print(f"{'method':18s} {'median final loss':>18s} {'median theta':>13s}")
    for r in summary["results"]:
        print(f"{r['method']:18s} {r['median_final_loss']:18.4f} "
              f"{float(np.median(r['final_theta'])):13.3f}")
    print(f"wrote {folder / 'summary.json'} and {folder / 'design.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="difphys",
        description="difphys: differentiable high-energy physics in JAX (GeV, mm, Tesla).",
    )
    parser.add_argument("--version", action="version", version=f"difphys {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the embedded default and write a report under out/",
        description="Phase-space volumes by Monte Carlo against closed forms and the gradient of a "
        "Lorentz-invariant observable; writes report.json and demo.png to a new folder in --out.",
    )
    demo.add_argument("--out", default="out", help="parent folder for the run (default: out)")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    demo.add_argument("--points", type=int, default=1_000_000, help="MC points per integral")
    demo.add_argument("--sqrt-s", type=float, default=91.1876, help="centre-of-mass energy, GeV")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    opt = sub.add_parser(
        "optimize-detector",
        help="gradient-based design of the toy ring detector with each gradient estimator",
        description="Adam on the ring's inner radius minimising E[(mean interaction radius - 2)^2] "
        "of the toy shower (difphys.sim), once per estimator; writes summary.json and "
        "design.png (loss and theta versus step) to a new folder in --out.",
    )
    opt.add_argument("--methods", default="stochad,score,score_baseline,gumbel,straight_through,fd",
                     help="comma-separated estimators (default: all)")
    opt.add_argument("--branching", action="store_true", help="the branching shower variant")
    opt.add_argument("--theta0", type=float, default=2.5, help="starting inner radius")
    opt.add_argument("--steps", type=int, default=150, help="Adam steps (default: 150)")
    opt.add_argument("--batch", type=int, default=1, help="showers per gradient (default: 1)")
    opt.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    opt.add_argument("--seeds", type=int, default=10, help="independent runs per method")
    opt.add_argument("--fd-step", type=float, default=1e-3, help="finite-difference step h")
    opt.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    opt.add_argument("--out", default="out", help="parent folder for the run (default: out)")
    opt.add_argument("--quiet", action="store_true", help="no progress bars")
    opt.set_defaults(func=_cmd_optimize_detector)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ValueError as err:
        print(f"difphys: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
