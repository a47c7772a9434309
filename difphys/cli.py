"""The ``difphys`` command line. Each subcommand parses arguments and calls one public function."""

from __future__ import annotations

import argparse
import inspect
import sys


def _x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _cmd_demo(args: argparse.Namespace) -> int:
    """run the end-to-end demo on the embedded default and write a report under out/

    The whole story in a few minutes: phase-space volumes against closed forms, the
    gradient of a Lorentz-invariant observable, a cross section and d sigma/d MZ, vertex
    fits with implicit gradients, a stochastic-AD detector step, a short FAB run writing
    LHE events, and pretraining + fine-tuning on a small Pythia sample; writes
    report.json, demo.png and story.png to a new folder in --out.
    """
    _x64()
    from .jobs import run_demo

    report = run_demo(
        args.out, seed=args.seed, n_points=args.points, sqrt_s=args.sqrt_s,
        progress=not args.quiet, story=not args.physics_only,
    )
    print(report.summary())
    return 0 if report["all_checks_pass"] else 1


def _cmd_optimize_detector(args: argparse.Namespace) -> int:
    """gradient-based design of the toy ring detector with each gradient estimator

    Adam on the ring's inner radius minimising E[(mean interaction radius - 2)^2] of the
    toy shower (difphys.sim), once per estimator; writes summary.json and design.png
    (loss and theta versus step) to a new folder in --out.
    """
    _x64()
    from .jobs import detector_study
    from .sim import DetectorConfig

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    report = detector_study(
        args.out, methods=methods, seed=args.seed, fd_step=args.fd_step,
        progress=not args.quiet, theta0=args.theta0, steps=args.steps, batch=args.batch,
        learning_rate=args.lr, n_seeds=args.seeds, branching=args.branching,
        config=DetectorConfig(),
    )
    print(report.summary())
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    """train a phase-space sampler (FAB, reverse KL or VEGAS) and write unweighted LHE events

    Train a sampler of |M|^2 on the process's unit-cube phase space (with --pdf and --scale:
    a proton-proton collider, multiparticle processes such as "p p > t t~"; or resume it from
    --checkpoint), print the cross section with its error and the sampling and
    unweighting efficiencies, and write unweighted events to a Les Houches Event file.
    """
    _x64()
    from .jobs import sample_events

    report, _ = sample_events(
        args.process, args.sqrt_s, method=args.method, n_events=args.events, out=args.out,
        train_steps=args.steps, batch=args.batch, seed=args.seed, checkpoint=args.checkpoint,
        overwrite=args.overwrite, calibration=args.calibration, flow_layers=args.flow_layers,
        progress=not args.quiet, pdf=args.pdf, scale=args.scale, alpha_s_mz=args.alpha_s,
    )
    print(report.summary())
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    """generate a jet sample with Pythia 8 + FastJet into a JetClass-schema ROOT file

    Generate events with Pythia 8, cluster jets with FastJet, simulate tracks (exact
    helices in --bfield, smeared perigees) and write one entry per jet in the JetClass
    branch schema plus truth (vertex, track origin, flavour labels). Deterministic per
    --seed, whatever --workers. Needs the 'data' extra.
    """
    from .jobs import generate

    report = generate(args.sample, args.events, args.seed, args.out, workers=args.workers,
                      bfield=args.bfield, progress=not args.quiet, overwrite=args.overwrite,
                      bb_fraction=args.bb_fraction)
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


def _labels(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _cmd_train(args: argparse.Namespace) -> int:
    """train a Particle Transformer jet classifier on JetClass-schema ROOT files

    Train ParT (Flax NNX) on the 17 JetClass_full particle features and the pair
    features, data-parallel over all devices, with orbax checkpoints (--resume continues
    exactly); evaluates ROC AUC and background rejection on a held-out split. Class k is
    the k-th label; the first label is the signal. With --data-config (a weaver-core YAML
    data config) the inputs, labels and selection come from the config, the files
    (--data-train/--data-val/--data-test, ROOT or parquet, globs allowed) are streamed in
    chunks with bounded memory, and the folder gets model/ for difphys predict.
    """
    from .jobs import train_from_data_config, train_jet_classifier

    if args.data_config is not None:
        if args.files:
            raise ValueError("with --data-config, give the files with --data-train (and "
                             "--data-val, --data-test), not as positional arguments")
        if not args.data_train:
            raise ValueError("--data-config needs --data-train FILES (paths or globs)")
        report = train_from_data_config(
            args.data_config, args.data_train, args.out, data_val=args.data_val,
            data_test=args.data_test, model_size=args.model, steps=args.steps,
            batch_size=args.batch, learning_rate=args.lr, seed=args.seed, resume=args.resume,
            chunk_size=args.chunk_size, buffer_chunks=args.buffer_chunks, lanes=args.lanes,
            progress=not args.quiet)
        print(report.summary())
        return 0
    for flag in ("data_train", "data_val", "data_test"):
        if getattr(args, flag):
            raise ValueError(f"--{flag.replace('_', '-')} needs --data-config")
    if not args.files:
        raise ValueError("give JetClass-schema ROOT files, or --data-config with --data-train")
    report = train_jet_classifier(
        args.files, _labels(args.labels), args.out, model_size=args.model, steps=args.steps,
        batch_size=args.batch, learning_rate=args.lr, val_fraction=args.val_fraction,
        max_particles=args.max_particles, seed=args.seed, resume=args.resume,
        progress=not args.quiet, trim=args.trim, trim_quantile=args.trim_quantile,
        bucket=args.bucket)
    print(report.summary())
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """write a trained model's scores and the observers for every jet of files

    Read the run folder of difphys train --data-config (its model and resolved data
    config), score every jet of --data that passes the config's test-time selection, and
    write score_<label>, the labels and the observers to --out (.root: tree Events;
    .parquet), chunk by chunk.
    """
    from .jobs import predict_files

    report = predict_files(args.run, args.data, args.out, data_config=args.data_config,
                           chunk_size=args.chunk_size, overwrite=args.overwrite,
                           progress=not args.quiet)
    print(report.summary())
    return 0


def _cmd_tokenize(args: argparse.Namespace) -> int:
    """fit a particle tokeniser (VQ-VAE or K-means) on files

    Fit a VQ-VAE (straight-through, commitment loss, dead-code restarts) or K-means
    tokeniser to the particles of the files: the ParT features a masked particle keeps hidden
    (all but Delta R, Delta eta, Delta phi), rank-Gauss transformed; writes it to --out for
    difphys pretrain.
    """
    from .jobs import fit_tokenizer_files

    report = fit_tokenizer_files(args.files, args.out, method=args.method,
                                 codebook_size=args.codebook, steps=args.steps,
                                 max_particles=args.max_particles,
                                 rank_gauss=not args.no_rank_gauss, seed=args.seed,
                                 overwrite=args.overwrite, progress=not args.quiet)
    print(report.summary())
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    """pretrain a ParT backbone (masked particle modelling or supervised)

    Pretrain a Particle Transformer backbone by masked particle modelling (--method mpm: a
    fraction of each jet's particles hidden, their tokens predicted, on unlabelled jets with
    --tokenizer) or on a labelled source task (--method supervised --labels, Vigl et al.);
    orbax checkpoints, --resume. difphys finetune --pretrained reads either.
    """
    from .jobs import pretrain_files, pretrain_supervised_files

    if args.method == "supervised":
        if args.tokenizer is not None:
            raise ValueError("--tokenizer is for --method mpm only")
        report = pretrain_supervised_files(
            args.files, args.out, labels=args.labels.split(","), model_size=args.model,
            steps=args.steps, batch_size=args.batch, max_particles=args.max_particles,
            learning_rate=args.lr, seed=args.seed, resume=args.resume, progress=not args.quiet)
        print(report.summary())
        return 0
    if args.tokenizer is None:
        raise ValueError("--method mpm needs --tokenizer (a folder written by difphys tokenize)")
    report = pretrain_files(args.files, args.tokenizer, args.out, model_size=args.model,
                            steps=args.steps, batch_size=args.batch,
                            fraction=args.mask_fraction, max_particles=args.max_particles,
                            learning_rate=args.lr, seed=args.seed, resume=args.resume,
                            progress=not args.quiet)
    print(report.summary())
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    """train a jet or event classifier on a backbone

    Train a jet classifier (--labels, signal first: class 0) or a DeepSets event
    classifier (--events, on label_signal) with a frozen, fine-tuned or from-scratch
    backbone; evaluates on a held-out split.
    """
    from .jobs import finetune_files

    report = finetune_files(
        args.files, args.out, labels=_labels(args.labels), pretrained=args.pretrained,
        strategy=args.strategy, event_level=args.events, model_size=args.model,
        budget=args.budget, steps=args.steps, batch_size=args.batch, learning_rate=args.lr,
        backbone_lr_factor=args.backbone_lr_factor, frozen_warmup_steps=args.frozen_warmup,
        max_particles=args.max_particles, seed=args.seed, progress=not args.quiet,
        overwrite=args.overwrite)
    print(report.summary())
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``difphys sample: error: ...``) and exit status 2,
    the form every bad request of the command line takes."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parents() -> dict[str, argparse.ArgumentParser]:
    """Option blocks shared by several subcommands (argparse parent parsers); a subcommand
    changes a default with ``set_defaults`` and keeps the one definition."""
    from .nn import MODEL_SIZES

    def block():
        return argparse.ArgumentParser(add_help=False)

    common = block()
    common.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    out_root = block()
    out_root.add_argument("--out", default="out",
                          help="parent folder; each run writes a new timestamped folder in it "
                               "(default: out)")
    run_dir = block()
    run_dir.add_argument("--out", required=True,
                         help="run folder (refused if it exists, unless --resume or "
                              "--overwrite)")
    overwrite = block()
    overwrite.add_argument("--overwrite", action="store_true",
                           help="replace an existing output (a difphys run folder or file)")
    resume = block()
    resume.add_argument("--resume", action="store_true",
                        help="continue the run in --out (the same configuration)")
    jets = block()
    jets.add_argument("files", nargs="+", help="JetClass-schema ROOT file(s)")
    jets.add_argument("--max-particles", type=int, default=64, help="padding length")
    model = block()
    model.add_argument("--model", default="small", choices=list(MODEL_SIZES),
                       help="Particle Transformer size (default: small)")
    optim = block()
    optim.add_argument("--steps", type=int, default=1000, help="training steps")
    optim.add_argument("--batch", type=int, default=128, help="examples per step")
    optim.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    return dict(common=common, out_root=out_root, run_dir=run_dir, overwrite=overwrite,
                resume=resume, jets=jets, model=model, optim=optim)


def _command(sub, func, name: str, parents):
    """One subcommand ``name`` calling ``func``, with the shared option blocks ``parents``;
    its ``--help`` is ``func``'s docstring (first line: the summary in ``difphys --help``)."""
    summary, _, description = inspect.cleandoc(func.__doc__ or name).partition("\n\n")
    parser = sub.add_parser(name, parents=parents, help=summary,
                            description=" ".join(description.split()))
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .data import SAMPLES

    parser = _Parser(
        prog="difphys",
        description="difphys: differentiable high-energy physics in JAX (GeV, mm, Tesla).",
    )
    parser.add_argument("--version", action="version", version=f"difphys {__version__}")
    parser.add_argument("--plot-style", default=None, metavar="STYLE",
                        help="draw the figures in an mplhep style (CMS, ATLAS, ALICE, LHCb2, "
                             "ROOT; needs the 'hep' extra)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    P = _parents()

    demo = _command(sub, _cmd_demo, "demo", [P["common"], P["out_root"]])
    demo.add_argument("--points", type=int, default=1_000_000, help="MC points per integral")
    demo.add_argument("--sqrt-s", type=float, default=91.1876, help="centre-of-mass energy, GeV")
    demo.add_argument("--physics-only", action="store_true",
                      help="only the phase-space and cross-section steps (1-4, seconds)")

    opt = _command(sub, _cmd_optimize_detector, "optimize-detector", [P["common"], P["out_root"]])
    opt.add_argument("--methods", default="stochad,score,score_baseline,gumbel,straight_through,fd",
                     help="comma-separated estimators (default: all)")
    opt.add_argument("--branching", action="store_true", help="the branching shower variant")
    opt.add_argument("--theta0", type=float, default=2.5, help="starting inner radius")
    opt.add_argument("--steps", type=int, default=150, help="Adam steps (default: 150)")
    opt.add_argument("--batch", type=int, default=1, help="showers per gradient (default: 1)")
    opt.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    opt.add_argument("--seeds", type=int, default=10, help="independent runs per method")
    opt.add_argument("--fd-step", type=float, default=1e-3, help="finite-difference step h")

    smp = _command(sub, _cmd_sample, "sample", [P["common"], P["overwrite"]])
    smp.add_argument("--process", default="e+ e- > t t~, t > w+ b, t~ > w- b~",
                     help="MadGraph-style process (decay chains and multiparticles allowed)")
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
    smp.add_argument("--pdf", default=None,
                     help="LHAPDF set (name or path): a proton-proton collider at --sqrt-s")
    smp.add_argument("--scale", type=float, default=None,
                     help="factorisation = renormalisation scale in GeV (with --pdf)")
    smp.add_argument("--alpha-s", type=float, default=None,
                     help="alpha_s(MZ) of a --pdf set without .info metadata")

    gen = _command(sub, _cmd_generate, "generate", [P["common"], P["overwrite"]])
    gen.add_argument("sample", choices=sorted(SAMPLES), help="zpole, hh4b (signal + QCD) or a half")
    gen.add_argument("--events", type=int, default=10_000, help="events (default: 10000)")
    gen.add_argument("--out", required=True, help="output ROOT file")
    gen.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    gen.add_argument("--bfield", type=float, default=2.0, help="solenoid field, T (default: 2)")
    gen.add_argument("--bb-fraction", type=float, default=0.0,
                     help="hh4b: fraction of the QCD half generated as QCD b b~ (default: 0)")

    trn = _command(sub, _cmd_train, "train",
                   [P["run_dir"], P["model"], P["optim"], P["resume"], P["common"]])
    trn.add_argument("files", nargs="*", help="JetClass-schema ROOT file(s) (without "
                                              "--data-config)")
    trn.add_argument("--max-particles", type=int, default=64, help="padding length")
    trn.add_argument("--data-config", default=None, metavar="YAML",
                     help="a weaver-core data config (inputs, labels, selection, observers)")
    trn.add_argument("--data-train", nargs="+", default=None, metavar="FILES",
                     help="training files or globs (ROOT or parquet; with --data-config)")
    trn.add_argument("--data-val", nargs="+", default=None, metavar="FILES",
                     help="validation files or globs (with --data-config)")
    trn.add_argument("--data-test", nargs="+", default=None, metavar="FILES",
                     help="test files or globs (with --data-config)")
    trn.add_argument("--chunk-size", type=int, default=4096,
                     help="entries read at a time (with --data-config; default 4096)")
    trn.add_argument("--buffer-chunks", type=int, default=8,
                     help="chunks shuffled together (with --data-config; default 8)")
    trn.add_argument("--lanes", type=int, default=None,
                     help="independent streams the processes share (default: the number of "
                          "processes; fixes the batches, so runs on 1 or N processes with "
                          "the same --lanes are equal)")
    trn.add_argument("--labels", default="label_b,label_uds",
                     help="comma-separated label branches, signal first (default: "
                          "label_b,label_uds)")
    trn.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction")
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

    prd = _command(sub, _cmd_predict, "predict", [P["overwrite"], P["common"]])
    prd.add_argument("run", help="run folder written by difphys train --data-config")
    prd.add_argument("--data", nargs="+", required=True, metavar="FILES",
                     help="files or globs to score (ROOT or parquet)")
    prd.add_argument("--out", required=True, help="output file (.root or .parquet)")
    prd.add_argument("--data-config", default=None, metavar="YAML",
                     help="replace the run's resolved data config (same inputs)")
    prd.add_argument("--chunk-size", type=int, default=10_000, help="entries per chunk")

    tok = _command(sub, _cmd_tokenize, "tokenize",
                   [P["jets"], P["run_dir"], P["overwrite"], P["common"]])
    tok.add_argument("--method", default="vqvae", choices=["vqvae", "kmeans"])
    tok.add_argument("--codebook", type=int, default=512, help="codebook size (default: 512)")
    tok.add_argument("--steps", type=int, default=1000, help="VQ-VAE steps (default: 1000)")
    tok.add_argument("--no-rank-gauss", action="store_true",
                     help="tokenise ParT's standardised features instead of their rank-Gauss "
                          "transform")

    pre = _command(sub, _cmd_pretrain, "pretrain",
                   [P["jets"], P["run_dir"], P["model"], P["optim"], P["resume"], P["common"]])
    pre.add_argument("--method", default="mpm", choices=["mpm", "supervised"],
                     help="masked particle modelling (default) or a labelled source task")
    pre.add_argument("--tokenizer", default=None,
                     help="folder written by difphys tokenize (--method mpm)")
    pre.add_argument("--labels", default="label_b,label_uds",
                     help="source-task labels, signal first (--method supervised)")
    pre.add_argument("--mask-fraction", type=float, default=0.4)
    pre.set_defaults(steps=2000)

    fin = _command(sub, _cmd_finetune, "finetune",
                   [P["jets"], P["run_dir"], P["model"], P["optim"], P["overwrite"], P["common"]])
    fin.add_argument("--pretrained", default=None, help="folder written by difphys pretrain")
    fin.add_argument("--strategy", default="finetune", choices=["frozen", "finetune", "scratch"])
    fin.add_argument("--labels", default="label_b,label_uds")
    fin.add_argument("--events", action="store_true", help="event-level task (hh4b files)")
    fin.add_argument("--budget", type=int, default=None, help="labelled training examples")
    fin.add_argument("--backbone-lr-factor", type=float, default=1.0,
                     help="backbone rate / head rate after the warm-up (default 1)")
    fin.add_argument("--frozen-warmup", type=int, default=None,
                     help="head-only steps with a fixed backbone (default 20%% of --steps)")
    # --model: the backbone size for --strategy scratch without --pretrained (default small)
    fin.set_defaults(model=None, steps=500, batch=64)
    return parser


def _check_multiprocess(args: argparse.Namespace) -> None:
    """Under ``jax.distributed`` with several processes only ``train --data-config`` runs
    (each process streams its own lanes, process 0 writes); every other command would have
    each process compute and write the same outputs, so it is refused by name."""
    import jax

    if jax.process_count() > 1 and not (args.command == "train" and args.data_config):
        raise ValueError(f"difphys {args.command} runs in one process; under a multi-process "
                         f"launch ({jax.process_count()} processes) use difphys train "
                         "--data-config, which streams each process's own share of the files")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        from .sharding import initialize_distributed

        if initialize_distributed():  # a no-op unless launched by SLURM/MPI/coordinator vars
            _check_multiprocess(args)
        if args.plot_style is not None:
            from .jobs._plots import set_plot_style

            set_plot_style(args.plot_style)
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, KeyError, FloatingPointError,
            NotImplementedError, ModuleNotFoundError) as err:
        print(f"difphys: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
