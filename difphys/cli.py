"""The ``difphys`` command line. Each subcommand parses arguments and calls one public function."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .demo import format_report, run_demo

    report = run_demo(
        args.out, seed=args.seed, n_points=args.points, sqrt_s=args.sqrt_s,
        progress=not args.quiet, story=not args.physics_only,
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


def _cmd_sample(args: argparse.Namespace) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .flows import sample_events

    summary, _ = sample_events(
        args.process,
        args.sqrt_s,
        method=args.method,
        n_events=args.events,
        out=args.out,
        train_steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        checkpoint=args.checkpoint,
        overwrite=args.overwrite,
        calibration=args.calibration,
        flow_layers=args.flow_layers,
        progress=not args.quiet,
    )
    print(f"process            {summary['process']} at sqrt(s) = {summary['sqrt_s']} GeV")
    print(f"method             {summary['method']} ({summary['devices']} device(s))")
    print(f"sigma              {summary['sigma_pb']:.6g} +- {summary['sigma_error_pb']:.2g} pb")
    print(f"sampling eff.      {summary['sampling_efficiency']:.4f}")
    print(f"unweighting eff.   {summary['unweighting_efficiency']:.4f} "
          f"(robust, 0.1% overweight: {summary['unweighting_efficiency_robust']:.4f})")
    print(f"target evaluations {summary['n_target_values_training']:.0f} values, "
          f"{summary['n_target_grads_training']:.0f} gradients (training)")
    print(f"wrote {summary['n_events']} unweighted events to {summary['out']} "
          f"in {summary['total_seconds']:.1f} s")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .data import generate

    report = generate(args.sample, args.events, args.seed, args.out, workers=args.workers,
                      bfield=args.bfield, progress=not args.quiet, overwrite=args.overwrite)
    print(f"generated {report.generated} {args.sample} events ({report.jets} jets) in "
          f"{report.seconds:.1f} s: {report.events_per_second:.0f} events/s "
          f"with {args.workers} process(es)")
    print(f"wrote {report.path}")
    return 0


def _quantile_arg(text: str):
    """``Q`` or ``LO,HI`` for --trim-quantile."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Q or LO,HI; got {text!r}") from None
    if len(values) not in (1, 2) or not 0.0 < values[0] <= values[-1]:
        raise argparse.ArgumentTypeError(f"expected 0 < Q or 0 < LO <= HI; got {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import train_jet_classifier

    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    m = train_jet_classifier(args.files, labels, args.out, model_size=args.model,
                             steps=args.steps, batch_size=args.batch, learning_rate=args.lr,
                             val_fraction=args.val_fraction, max_particles=args.max_particles,
                             seed=args.seed, resume=args.resume, progress=not args.quiet,
                             trim=args.trim, trim_quantile=args.trim_quantile,
                             bucket=args.bucket)
    print(f"{labels[0]} vs {', '.join(labels[1:])}: {m['train_jets']} training / "
          f"{m['val_jets']} validation jets, {m['params']} parameters, {m['devices']} device(s)")
    def rej(x):
        return f"> {m['rejection_lower_bound']} (no background passes)" if x is None else f"{x:.1f}"

    print(f"validation ROC AUC {m['val_auc']:.4f}, accuracy {m['val_accuracy']:.4f}, "
          f"rejection {rej(m['rejection_at_50'])} at 50% and {rej(m['rejection_at_30'])} at 30% "
          f"signal efficiency")
    print(f"wrote {args.out}/metrics.json, roc.png, history and checkpoints")
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from .train import fit_tokenizer_files

    meta = fit_tokenizer_files(args.files, args.out, method=args.method,
                               codebook_size=args.codebook, steps=args.steps,
                               max_particles=args.max_particles, seed=args.seed,
                               overwrite=args.overwrite, progress=not args.quiet)
    print(f"{meta['method']} tokeniser with {meta['codebook_size']} codes: "
          f"{100 * meta['codebook_utilisation']:.1f}% of the codebook used; wrote {args.out}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .train import pretrain_files

    meta = pretrain_files(args.files, args.tokenizer, args.out, model_size=args.model,
                          steps=args.steps, batch_size=args.batch, fraction=args.mask_fraction,
                          max_particles=args.max_particles, learning_rate=args.lr,
                          seed=args.seed, resume=args.resume, progress=not args.quiet)
    print(f"masked particle modelling on {meta['jets']} jets: loss {meta['first_loss']:.3f} -> "
          f"{meta['final_loss']:.3f} (token entropy {meta['token_entropy']:.3f}); "
          f"backbone in {args.out}/backbone")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .train import finetune_files

    labels = [x.strip() for x in args.labels.split(",") if x.strip()]
    m = finetune_files(args.files, args.out, labels=labels, pretrained=args.pretrained,
                       strategy=args.strategy, event_level=args.events, model_size=args.model,
                       budget=args.budget, steps=args.steps, batch_size=args.batch,
                       learning_rate=args.lr, backbone_lr_factor=args.backbone_lr_factor,
                       frozen_warmup_steps=args.frozen_warmup, max_particles=args.max_particles,
                       seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    rej = m["rejection_at_50"]
    print(f"{m['strategy']}: {m['train_examples']} training examples, test ROC AUC "
          f"{m['test_auc']:.4f}, rejection at 50% signal efficiency "
          f"{'inf' if rej is None else f'{rej:.1f}'}; wrote {args.out}/metrics.json")
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
        description="The whole story in a few minutes: phase-space volumes against closed forms, "
        "the gradient of a Lorentz-invariant observable, a cross section and d sigma/d MZ, "
        "vertex fits with implicit gradients, a stochastic-AD detector step, a short FAB run "
        "writing LHE events, and pretraining + fine-tuning on a small Pythia sample; writes "
        "report.json, demo.png and story.png to a new folder in --out.",
    )
    demo.add_argument("--out", default="out", help="parent folder for the run (default: out)")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    demo.add_argument("--points", type=int, default=1_000_000, help="MC points per integral")
    demo.add_argument("--sqrt-s", type=float, default=91.1876, help="centre-of-mass energy, GeV")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--physics-only", action="store_true",
                      help="only the phase-space and cross-section steps (1-4, seconds)")
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

    smp = sub.add_parser(
        "sample",
        help="train a phase-space sampler (FAB, reverse KL or VEGAS) and write unweighted LHE events",
        description="Train a sampler of |M|^2 on the process's unit-cube phase space (or resume "
        "it from --checkpoint), print the cross section with its error and the sampling and "
        "unweighting efficiencies, and write unweighted events to a Les Houches Event file.",
    )
    smp.add_argument("--process", default="e+ e- > w+ b w- b~", help="MadGraph-style process")
    smp.add_argument("--sqrt-s", type=float, default=1000.0, help="centre-of-mass energy, GeV")
    smp.add_argument("--method", default="fab", choices=["fab", "rkl", "vegas"])
    smp.add_argument("--events", type=int, default=10_000, help="unweighted events to write")
    smp.add_argument("--out", default="events.lhe", help="output LHE file (default: events.lhe)")
    smp.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    smp.add_argument("--batch", type=int, default=256, help="samples per training step")
    smp.add_argument("--flow-layers", type=int, default=8, help="coupling layers (default: 8)")
    smp.add_argument("--calibration", type=int, default=50_000,
                     help="weighted events for sigma and the maximum weight (default: 50000)")
    smp.add_argument("--checkpoint", default=None, help="orbax checkpoint folder (resume/save)")
    smp.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    smp.add_argument("--seed", type=int, default=0, help="PRNG seed (default: 0)")
    smp.add_argument("--quiet", action="store_true", help="no progress bars")
    smp.set_defaults(func=_cmd_sample)

    from .data import SAMPLES

    gen = sub.add_parser(
        "generate",
        help="generate a jet sample with Pythia 8 + FastJet into a JetClass-schema ROOT file",
        description="Generate events with Pythia 8, cluster jets with FastJet, simulate tracks "
        "(exact helices in --bfield, smeared perigees) and write one entry per jet in the "
        "JetClass branch schema plus truth (vertex, track origin, flavour labels). Deterministic "
        "per --seed, whatever --workers. Needs the 'data' extra.",
    )
    gen.add_argument("sample", choices=sorted(SAMPLES), help="zpole, hh4b (signal + QCD) or a half")
    gen.add_argument("--events", type=int, default=10_000, help="events (default: 10000)")
    gen.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    gen.add_argument("--out", required=True, help="output ROOT file")
    gen.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    gen.add_argument("--bfield", type=float, default=2.0, help="solenoid field, T (default: 2)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=_cmd_generate)

    trn = sub.add_parser(
        "train",
        help="train a Particle Transformer jet classifier on JetClass-schema ROOT files",
        description="Train ParT (Flax NNX) on the 17 JetClass_full particle features and the "
        "pair features, data-parallel over all devices, with orbax checkpoints (--resume "
        "continues exactly); evaluates ROC AUC and background rejection on a held-out split. "
        "The first label is the signal.",
    )
    trn.add_argument("files", nargs="+", help="JetClass-schema ROOT file(s)")
    trn.add_argument("--labels", default="label_b,label_uds",
                     help="comma-separated label branches, signal first (default: "
                          "label_b,label_uds)")
    trn.add_argument("--out", required=True, help="run folder (refused if it exists, "
                                                 "unless --resume)")
    trn.add_argument("--model", default="small", choices=["small", "full"])
    trn.add_argument("--steps", type=int, default=1000, help="training steps (default: 1000)")
    trn.add_argument("--batch", type=int, default=128, help="jets per step (default: 128)")
    trn.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    trn.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction")
    trn.add_argument("--max-particles", type=int, default=64, help="padding length")
    trn.add_argument("--trim", type=int, default=None, metavar="N",
                     help="cut each batch to its longest jet, rounded up to a multiple of N "
                          "(e.g. 16: less work on padded jets, one compilation per length)")
    trn.add_argument("--trim-quantile", type=_quantile_arg, default=None, metavar="Q|LO,HI",
                     help="with --trim, training batches are cut to this quantile of the jet "
                          "lengths, dropping random particles of longer jets (weaver-core's "
                          "default: 0.9,1.02); evaluation stays exact")
    trn.add_argument("--bucket", type=int, default=None, metavar="K",
                     help="with --trim, batch training jets of similar length together, "
                          "sorting pools of K batches by length (less padding, less random "
                          "batches)")
    trn.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    trn.add_argument("--resume", action="store_true", help="continue the run in --out")
    trn.add_argument("--quiet", action="store_true", help="no progress bar")
    trn.set_defaults(func=_cmd_train)

    tok = sub.add_parser("tokenize", help="fit a particle tokeniser (VQ-VAE or K-means) on files",
                         description="Fit a VQ-VAE (straight-through, commitment loss, dead-code "
                         "restarts) or K-means tokeniser to the ParT features of all particles "
                         "of the files; writes it to --out for difphys pretrain.")
    tok.add_argument("files", nargs="+", help="JetClass-schema ROOT file(s)")
    tok.add_argument("--out", required=True, help="output folder")
    tok.add_argument("--method", default="vqvae", choices=["vqvae", "kmeans"])
    tok.add_argument("--codebook", type=int, default=512, help="codebook size (default: 512)")
    tok.add_argument("--steps", type=int, default=1000, help="VQ-VAE steps (default: 1000)")
    tok.add_argument("--max-particles", type=int, default=64)
    tok.add_argument("--seed", type=int, default=0)
    tok.add_argument("--overwrite", action="store_true")
    tok.add_argument("--quiet", action="store_true")
    tok.set_defaults(func=_cmd_tokenize)

    pre = sub.add_parser("pretrain", help="masked particle modelling of a ParT backbone",
                         description="Pretrain a Particle Transformer backbone by masked "
                         "particle modelling (a fraction of each jet's particles hidden, their "
                         "tokens predicted) on unlabelled jets; orbax checkpoints, --resume.")
    pre.add_argument("files", nargs="+", help="JetClass-schema ROOT file(s); labels unused")
    pre.add_argument("--tokenizer", required=True, help="folder written by difphys tokenize")
    pre.add_argument("--out", required=True, help="output folder")
    pre.add_argument("--model", default="small", choices=["tiny", "small", "full"])
    pre.add_argument("--steps", type=int, default=2000)
    pre.add_argument("--batch", type=int, default=128)
    pre.add_argument("--mask-fraction", type=float, default=0.4)
    pre.add_argument("--lr", type=float, default=1e-3)
    pre.add_argument("--max-particles", type=int, default=64)
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--resume", action="store_true", help="continue the checkpoints in --out")
    pre.add_argument("--quiet", action="store_true")
    pre.set_defaults(func=_cmd_pretrain)

    fin = sub.add_parser("finetune", help="train a jet or event classifier on a backbone",
                         description="Train a jet classifier (--labels, signal first) or a "
                         "DeepSets event classifier (--events, on label_signal) with a frozen, "
                         "fine-tuned or from-scratch backbone; evaluates on a held-out split.")
    fin.add_argument("files", nargs="+", help="JetClass-schema ROOT file(s)")
    fin.add_argument("--out", required=True, help="output folder")
    fin.add_argument("--pretrained", default=None, help="folder written by difphys pretrain")
    fin.add_argument("--strategy", default="finetune", choices=["frozen", "finetune", "scratch"])
    fin.add_argument("--labels", default="label_b,label_uds")
    fin.add_argument("--events", action="store_true", help="event-level task (hh4b files)")
    fin.add_argument("--model", default=None, choices=["tiny", "small", "full"],
                     help="backbone size for --strategy scratch without --pretrained")
    fin.add_argument("--budget", type=int, default=None, help="labelled training examples")
    fin.add_argument("--steps", type=int, default=500)
    fin.add_argument("--batch", type=int, default=64)
    fin.add_argument("--lr", type=float, default=1e-3)
    fin.add_argument("--backbone-lr-factor", type=float, default=0.1)
    fin.add_argument("--frozen-warmup", type=int, default=0, help="steps with a fixed backbone")
    fin.add_argument("--max-particles", type=int, default=64)
    fin.add_argument("--seed", type=int, default=0)
    fin.add_argument("--overwrite", action="store_true")
    fin.add_argument("--quiet", action="store_true")
    fin.set_defaults(func=_cmd_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, KeyError) as err:
        print(f"difphys: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
