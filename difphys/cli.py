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
