"""Label efficiency of pretrained backbones under one protocol (issue #22), on generated jets.

Arms (Z pole, target task b vs c jets, a harder task than b vs light):
* ``A1``: supervised pretraining (Vigl, Hartman, Heinrich, arXiv:2401.13536) of a jet
  classifier on the source task b vs uds, then ``sup_finetune`` / ``sup_frozen``;
* ``B``: masked particle modelling (Golling et al., arXiv:2401.13537) on an unlabelled pool,
  tokens from the non-revealed features after rank-Gauss, then ``mpm_finetune`` /
  ``mpm_frozen``, with ``random_frozen`` (a frozen untrained backbone) as the probe control;
* ``scratch``: the same network from a fresh initialisation, shared by both arms.
(Arm A2, the hh4b event task against a b-enriched QCD background, is not run by this script.)

Protocol: every sample role (unlabelled pool, labelled pool, test, tuning, source) comes from
its own generator seed; each strategy's learning rate is chosen on the tuning sample (at one
budget, from a small grid), never on the test set; strategies are paired (same label subset,
head initialisation and dropout key per seed); training steps scale with the epochs over the
budget. Per arm x budget x strategy: mean +- s.e. of the test AUC and the background rejection
at 50% and 30% signal efficiency; paired differences with 95% t intervals; the label-efficiency
factor (labels scratch needs for the same AUC / budget, log-linear interpolation) with a
bootstrap 5-95% interval over seeds; gates G1-G4 (a failed gate makes the arm
"inconclusive"). Pretraining diagnostics: token entropy, codebook use, tokens' R^2 of d0 and dz,
held-out masked loss against the context-free lookup (the "context gain").

    python benchmarks/label_efficiency.py --quick   # ~40 min on 2 CPU cores, "indicative"
    python benchmarks/label_efficiency.py           # the protocol's budgets and seeds

Writes JSON lines to ``--out`` (default benchmarks/results/label_efficiency.jsonl) and a PNG.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy.stats import t as student_t

from difphys import nn, train
from difphys.data import generate
from difphys.io import load_jets, read_jetclass

BACKBONE = nn.ParTConfig(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4,
                      num_layers=2, num_cls_layers=1, num_classes=0)
PROTOCOL = dict(
    events=dict(pool=60_000, labelled=8_000, test=26_000, tuning=4_000, source=15_000),
    budgets={30: 8, 100: 8, 300: 5, 1000: 3, 3000: 2}, codebook=256, mpm_steps=6000,
    source_steps=3000, epochs=30, min_steps=100, max_steps=1500, lr_grid=(1e-3, 3e-3),
)
QUICK = dict(
    events=dict(pool=15_000, labelled=6_000, test=10_000, tuning=3_000, source=10_000),
    budgets={30: 4, 100: 4, 300: 3, 1000: 2, 3000: 1}, codebook=128, mpm_steps=1500,
    source_steps=1200, epochs=20, min_steps=80, max_steps=500, lr_grid=(1e-3, 3e-3),
)
SMOKE = dict(  # checks that the script runs end to end (minutes); no figure from it means anything
    events=dict(pool=1_500, labelled=1_500, test=1_500, tuning=800, source=1_500),
    budgets={30: 2, 100: 2, 300: 2}, codebook=32, mpm_steps=60, source_steps=60, epochs=2,
    min_steps=10, max_steps=20, lr_grid=(1e-3, 3e-3),
)
SEEDS = dict(pool=301, labelled=302, test=303, tuning=304, source=305)
MAX_PARTICLES = 32
STRATEGIES = ("scratch", "sup_finetune", "sup_frozen", "mpm_finetune", "mpm_frozen",
              "random_frozen")
ARMS = {"A1": ("sup_finetune", "sup_frozen"), "B": ("mpm_finetune", "mpm_frozen")}
TUNE_BUDGET = 300
#: Ratio of scale to the papers: Golling et al./jetssl pretrain on ~1e8 JetClass jets with
#: ~1e7-parameter backbones; this run uses ~1e5 jets and a ~3e4-parameter backbone.
SCALE_NOTE = "about 1e3x fewer pretraining jets and 400x fewer parameters than jetssl"


def _emit(fh, row):
    row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
    line = json.dumps(row)
    print(line, flush=True)
    fh.write(line + "\n")
    fh.flush()


def _sample(role, events, cache, workers):
    path = cache / f"zpole_{role}_{events}_{SEEDS[role]}.root"
    if not path.exists():
        generate("zpole", events, SEEDS[role], path, workers=workers, progress=True)
    return path


def _b_vs_c(path):
    return load_jets(path, ["label_b", "label_c"], max_particles=MAX_PARTICLES)


def _handmade(path):
    """AUCs of single hand-made variables on the b / c jets of ``path`` (same order as
    :func:`_b_vs_c`): displaced-track count, largest |d0|/sigma, soft-drop mass, multiplicity."""
    raw = read_jetclass(path, ["part_d0val", "part_d0err", "jet_sdmass", "label_b", "label_c"],
                        max_particles=MAX_PARTICLES)
    keep = raw["label_b"] | raw["label_c"]
    m = raw["mask"][keep]
    sig = np.where(m, np.abs(raw["part_d0val"][keep]) / np.maximum(raw["part_d0err"][keep],
                                                                   1e-9), 0.0)
    is_b = np.asarray(raw["label_b"][keep], bool)
    variables = {"n_d0sig_gt3": (sig > 3).sum(1), "max_d0sig": sig.max(1),
                 "sdmass": raw["jet_sdmass"][keep], "n_particles": m.sum(1)}
    return {k: max(train.roc_auc(v, is_b), 1 - train.roc_auc(v, is_b))
            for k, v in variables.items()}


def _steps(cfg, budget):
    batch = min(64, budget)
    return int(np.clip(round(cfg["epochs"] * budget / batch), cfg["min_steps"], cfg["max_steps"]))


def _subset(n, budget, seed):
    """The label subset of ``seed``: the same for every strategy (paired)."""
    return np.sort(np.random.default_rng(10_000 + seed).choice(n, budget, replace=False))


def _model(strategy, backbones, seed):
    """``(model, finetune mode)`` of ``strategy`` for ``seed``: the head initialisation is the
    same for every strategy of a seed (paired), the backbone is the strategy's source."""
    source = {"scratch": None, "sup_finetune": "sup", "sup_frozen": "sup",
              "mpm_finetune": "mpm", "mpm_frozen": "mpm", "random_frozen": "random"}[strategy]
    backbone = nn.ParticleTransformer(BACKBONE, rngs=nnx.Rngs(500 + seed))
    if source is not None:
        nnx.update(backbone, jax.tree.map(jnp.copy, backbones[source]))
    model = nn.JetClassifier(backbone, 2, rngs=nnx.Rngs(200 + seed))
    mode = "scratch" if source is None else ("frozen" if strategy.endswith("frozen")
                                             else "finetune")
    return model, mode


def _train(strategy, backbones, data, seed, lr, cfg):
    """Train ``strategy`` on ``data``; the dropout and batch-order key is ``key(seed)`` for
    every strategy (paired)."""
    model, mode = _model(strategy, backbones, seed)
    budget = len(data["label"])
    train.finetune(model, data, mode, steps=_steps(cfg, budget), batch_size=min(64, budget),
             key=jax.random.key(seed), learning_rate=lr)
    return model


def _evaluate(model, test):
    scores = train.class_logit(train.predict(model, test, batch_size=512), 0)
    m = train.binary_metrics(scores, test["label"] == 0, efficiencies=(0.5, 0.3))
    return dict(auc=m.auc, rej50=m.rejections[0], rej30=m.rejections[1],
                rej_lower_bound=m.rejection_lower_bound)


def _pretrain_supervised(cfg, path, log):
    t0 = time.perf_counter()
    data = load_jets(path, ["label_b", "label_uds"], max_particles=MAX_PARTICLES)
    model = nn.JetClassifier(nn.ParticleTransformer(BACKBONE, rngs=nnx.Rngs(1)), 2,
                             rngs=nnx.Rngs(2))
    train.finetune(model, data, "scratch", steps=cfg["source_steps"], batch_size=128,
             key=jax.random.key(3), learning_rate=2e-3, progress=True)
    log(dict(kind="pretrain", arm="A1", source_jets=int(len(data["label"])),
             seconds=time.perf_counter() - t0))
    return nnx.state(model.backbone)


def _pretrain_mpm(cfg, pool_path, tuning_path, log):
    t0 = time.perf_counter()
    pool = load_jets(pool_path, None, max_particles=MAX_PARTICLES)
    held = load_jets(tuning_path, None, max_particles=MAX_PARTICLES)
    inputs = train.TokenInputs.fit(pool["features"], pool["mask"])
    x = inputs.apply(pool["features"])
    tok = nn.KMeansTokenizer.fit(jax.random.key(4), x, pool["mask"],
                                 codebook_size=cfg["codebook"], iterations=20)

    def tokens_of(d):
        return np.concatenate([np.asarray(tok.tokenize(jnp.asarray(inputs.apply(
            d["features"][i:i + 4096])))) for i in range(0, len(d["mask"]), 4096)])

    t_pool, t_held = tokens_of(pool), tokens_of(held)
    rev = lambda d: d["features"][..., list(nn.ANGULAR_FEATURES)][d["mask"]]  # noqa: E731
    baseline = train.context_free_baseline(rev(pool), t_pool[pool["mask"]], rev(held),
                                     t_held[held["mask"]], codebook_size=cfg["codebook"])
    r2 = train.token_r2(t_pool, pool["features"][..., list(train.IMPACT_FEATURES)], pool["mask"])
    model = nn.MaskedParticleModel(nn.ParticleTransformer(BACKBONE, rngs=nnx.Rngs(5)),
                                   cfg["codebook"], token_features=inputs.features,
                                   rngs=nnx.Rngs(6))
    held_data = {**held, "tokens": t_held}
    before = train.masked_loss(model, held_data, key=jax.random.key(9))
    _, history = train.pretrain_mpm(model, {**pool, "tokens": t_pool}, steps=cfg["mpm_steps"],
                              batch_size=128, key=jax.random.key(7), learning_rate=1e-3)
    after = train.masked_loss(model, held_data, key=jax.random.key(9))
    log(dict(kind="pretrain", arm="B", pool_jets=int(len(t_pool)),
             token_entropy=train.token_entropy(t_held, held["mask"]),
             codebook_utilisation=train.codebook_utilisation(tok, x[:20_000],
                                                             pool["mask"][:20_000]),
             r2_d0=float(r2[0]), r2_dz=float(r2[2]),
             context_free_loss=baseline.cross_entropy, masked_loss_before=before,
             masked_loss_after=after, context_gain=baseline.cross_entropy - after,
             final_train_loss=history.last("loss"), seconds=time.perf_counter() - t0))
    return nnx.state(model.backbone), dict(r2_d0=float(r2[0]),
                                           context_gain=baseline.cross_entropy - after)


def _mean_se(values):
    v = np.asarray(values, float)
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None)


def _paired(a, b):
    """Mean and 95% t interval of the paired difference a - b (None with one pair)."""
    d = np.asarray(a) - np.asarray(b)
    if len(d) < 2:
        return float(d.mean()), None, None
    half = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def _needed(target, budgets, scratch_means):
    """Labels scratch needs for AUC ``target`` (log-linear interpolation), or None."""
    for i in range(len(budgets) - 1):
        lo, hi = scratch_means[i], scratch_means[i + 1]
        if lo <= target <= hi and hi > lo:
            f = (target - lo) / (hi - lo)
            return float(np.exp(np.log(budgets[i]) + f * np.log(budgets[i + 1] / budgets[i])))
    return None


def _factor(runs, strategy, budget, budgets, rng, n_boot=1000):
    """Label-efficiency factor at ``budget`` and its bootstrap 5-95% interval over seeds;
    beyond the largest budget the factor is reported as a lower bound (``> x``)."""
    def auc(s, b, idx=None):
        v = np.asarray([r["auc"] for r in runs if r["strategy"] == s and r["budget"] == b])
        return v.mean() if idx is None else v[idx[b]].mean()

    def one(idx=None):
        scratch = [auc("scratch", b, idx) for b in budgets]
        target = auc(strategy, budget, idx)
        need = _needed(target, budgets, scratch)
        if need is None:
            return budgets[-1] / budget if target > max(scratch) else (
                budgets[0] / budget if target <= scratch[0] else np.nan)
        return need / budget

    point = one()
    counts = {b: sum(1 for r in runs if r["strategy"] == "scratch" and r["budget"] == b)
              for b in budgets}
    boots = [one({b: rng.integers(0, counts[b], counts[b]) for b in budgets})
             for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boots, [5, 95])
    scratch = [auc("scratch", b) for b in budgets]
    beyond = auc(strategy, budget) > max(scratch)
    return float(point), float(lo), float(hi), bool(beyond)


def _summarise(runs, diagnostics, handmade, quick, log):
    budgets = sorted({r["budget"] for r in runs})
    rng = np.random.default_rng(0)
    table = {}
    for s in STRATEGIES:
        for b in budgets:
            rows = sorted((r for r in runs if r["strategy"] == s and r["budget"] == b),
                          key=lambda r: r["seed"])
            aucs = [r["auc"] for r in rows]
            table[s, b] = rows
            mean, se = _mean_se(aucs)
            log(dict(kind="cell", strategy=s, budget=b, n_seeds=len(rows), auc=mean, auc_se=se,
                     rej50=_mean_se([r["rej50"] or np.inf for r in rows])[0],
                     rej30=_mean_se([r["rej30"] or np.inf for r in rows])[0]))
    scratch = {b: _mean_se([r["auc"] for r in table["scratch", b]]) for b in budgets}
    best_hand = max(handmade.values())
    g2 = (scratch[100][0] <= 0.92 and scratch[budgets[-1]][0] - scratch[100][0] >= 0.03
          and best_hand < scratch[budgets[-1]][0])
    verdicts = {}
    for arm, (ft, frozen) in ARMS.items():
        top = budgets[-1]
        ft_top = _mean_se([r["auc"] for r in table[ft, top]])[0]
        g1 = ft_top >= scratch[top][0] - (scratch[top][1] or 0.0)
        gates = {"G1_recipe_parity": bool(g1), "G2_headroom": bool(g2)}
        if arm == "B":
            gates["G3_mpm_context"] = bool(diagnostics["context_gain"] >= 0.2
                                           and diagnostics["r2_d0"] >= 0.5)
            # every (budget, seed) pair: the same subset and head for both frozen probes
            d, lo, hi = _paired([r["auc"] for b in budgets for r in table["mpm_frozen", b]],
                                [r["auc"] for b in budgets for r in table["random_frozen", b]])
            gates["G4_representation"] = bool(lo is not None and lo > 0)
            log(dict(kind="probe", frozen_mpm_minus_frozen_random=d, lo=lo, hi=hi,
                     pairs=sum(len(table["mpm_frozen", b]) for b in budgets)))
        for b in budgets:
            a = [r["auc"] for r in table[ft, b]]
            d_s = _paired(a, [r["auc"] for r in table["scratch", b]])
            d_f = _paired(a, [r["auc"] for r in table[frozen, b]])
            f, flo, fhi, beyond = _factor(runs, ft, b, budgets, rng)
            log(dict(kind="summary", arm=arm, task="zpole b vs c", budget=b,
                     finetune_minus_scratch=d_s[0], fs_lo=d_s[1], fs_hi=d_s[2],
                     finetune_minus_frozen=d_f[0], ff_lo=d_f[1], ff_hi=d_f[2],
                     factor=f, factor_lo=flo, factor_hi=fhi, factor_is_lower_bound=beyond))
        passed = all(gates.values())
        small = [b for b in budgets if b <= 300]
        better = [b for b in small if (_paired([r["auc"] for r in table[ft, b]],
                                               [r["auc"] for r in table["scratch", b]])[1] or -1)
                  > 0]
        f100 = _factor(runs, ft, 100, budgets, rng) if 100 in budgets else (np.nan,) * 4
        verdict = ("inconclusive: " + ", ".join(g for g, ok in gates.items() if not ok)
                   if not passed else
                   (f"pretraining helps: finetune > scratch (95% interval excludes 0) at budgets "
                    f"{better}; factor at 100 labels {f100[0]:.1f} (5% bound {f100[1]:.1f})"
                    if better else f"no benefit from {'MPM' if arm == 'B' else 'supervised'} "
                                   f"pretraining at this scale ({SCALE_NOTE})"))
        if quick:
            verdict = "indicative (quick mode): " + verdict
        verdicts[arm] = verdict
        log(dict(kind="gates", arm=arm, gate=gates, passed=passed, verdict=verdict,
                 best_handmade_auc=best_hand, handmade=handmade))
    return table, budgets, verdicts


def _plot(path, table, budgets, handmade):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for s in STRATEGIES:
        means = [_mean_se([r["auc"] for r in table[s, b]]) for b in budgets]
        ax.errorbar(budgets, [m for m, _ in means], yerr=[e or 0 for _, e in means], fmt="o-",
                    capsize=3, label=s)
    best = max(handmade, key=handmade.get)
    ax.axhline(handmade[best], color="grey", ls=":", label=f"best single variable ({best})")
    ax.set_xscale("log")
    ax.set_xlabel("labelled training jets")
    ax.set_ylabel("test ROC AUC (b vs c, Z pole)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _resummarise(out: Path):
    """Summaries, gates and the plot again from the run rows already in ``out``."""
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    kept = [r for r in rows if r["kind"] not in ("cell", "summary", "gates", "probe", "total")]
    runs = [r for r in rows if r["kind"] == "run"]
    mpm = next(r for r in rows if r["kind"] == "pretrain" and r["arm"] == "B")
    handmade = next(r for r in rows if r["kind"] == "samples")["handmade"]
    meta = {k: rows[0][k] for k in ("device", "jax", "mode")}
    with open(out, "w") as fh:
        for r in kept + [r for r in rows if r["kind"] == "total"]:
            fh.write(json.dumps(r) + "\n")
        table, budgets, verdicts = _summarise(
            runs, dict(r2_d0=mpm["r2_d0"], context_gain=mpm["context_gain"]), handmade,
            meta["mode"] != "protocol", lambda row: _emit(fh, {**meta, **row}))
    _plot(out.with_suffix(".png"), table, budgets, handmade)
    for arm, verdict in verdicts.items():
        print(f"arm {arm}: {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and steps: indicative")
    parser.add_argument("--smoke", action="store_true", help="a minutes-long run of the script")
    parser.add_argument("--cache", default="benchmarks/.cache", help="generated samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/label_efficiency.jsonl")
    parser.add_argument("--from-results", action="store_true",
                        help="recompute the summaries, gates and plot from the runs in --out")
    args = parser.parse_args()
    if args.from_results:
        _resummarise(Path(args.out))
        return
    cfg = SMOKE if args.smoke else QUICK if args.quick else PROTOCOL
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    meta = dict(device=jax.devices()[0].platform, jax=jax.__version__,
                mode="smoke" if args.smoke else "quick" if args.quick else "protocol")
    paths = {role: _sample(role, n, cache, args.workers) for role, n in cfg["events"].items()}
    labelled, test, tuning = (_b_vs_c(paths[r]) for r in ("labelled", "test", "tuning"))
    handmade = _handmade(paths["test"])
    with open(out, "w") as fh:
        def log(row):
            _emit(fh, {**meta, **row})

        log(dict(kind="samples", **{f"{r}_events": n for r, n in cfg["events"].items()},
                 labelled_jets=int(len(labelled["label"])), test_jets=int(len(test["label"])),
                 handmade=handmade))
        backbones = {"sup": _pretrain_supervised(cfg, paths["source"], log),
                     "random": nnx.state(nn.ParticleTransformer(BACKBONE, rngs=nnx.Rngs(77)))}
        backbones["mpm"], diagnostics = _pretrain_mpm(cfg, paths["pool"], paths["tuning"], log)
        # learning rate per strategy on the tuning sample (never the test set)
        lr = {}
        pick = _subset(len(labelled["label"]), TUNE_BUDGET, 999)
        for s in STRATEGIES:
            scores = {}
            for rate in cfg["lr_grid"]:
                model = _train(s, backbones, labelled.take(pick), 999, rate, cfg)
                scores[rate] = _evaluate(model, tuning)["auc"]
            lr[s] = max(scores, key=scores.get)
            log(dict(kind="tuning", strategy=s, budget=TUNE_BUDGET,
                     auc_by_lr={str(k): v for k, v in scores.items()}, lr=lr[s]))
        runs = []
        for budget, n_seeds in cfg["budgets"].items():
            if budget > len(labelled["label"]):
                continue
            for seed in range(n_seeds):
                data = labelled.take(_subset(len(labelled["label"]), budget, seed))
                for s in STRATEGIES:
                    t0 = time.perf_counter()
                    model = _train(s, backbones, data, seed, lr[s], cfg)
                    row = dict(kind="run", arm="A1B", task="zpole b vs c", strategy=s,
                               budget=budget, seed=seed, lr=lr[s], steps=_steps(cfg, budget),
                               **_evaluate(model, test), seconds=time.perf_counter() - t0)
                    log(row)
                    runs.append(row)
        table, budgets, verdicts = _summarise(runs, diagnostics, handmade,
                                              args.quick or args.smoke, log)
        log(dict(kind="total", seconds=time.perf_counter() - t_start))
    _plot(out.with_suffix(".png"), table, budgets, handmade)
    for arm, verdict in verdicts.items():
        print(f"arm {arm}: {verdict}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
