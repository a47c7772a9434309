"""Label efficiency of a pretrained backbone: masked particle modelling on an unlabelled pool,
then frozen / finetune / scratch training at label budgets, on real generated jets.

Tasks (each on its own generated sample, split into a pool and a fixed test set):
* ``zpole``: b versus light (uds) jets from ``difphys generate zpole``;
* ``hh4b``: X -> h h -> 4b versus QCD events, a DeepSets head over up to three jets.

Per task: fit a K-means tokeniser on pool particles, pretrain a ParT backbone by masked
particle modelling on the pool with labels dropped (classes mixed), then for each label budget
train the three strategies (several seeds at small budgets) and evaluate ROC AUC and the
background rejection at 50% signal efficiency on the test set. The label-efficiency factor is
the number of labels scratch training needs to reach the fine-tuned AUC at a budget (log-linear
interpolation of scratch's mean AUC), divided by that budget.

Writes one JSON line per run and per summary to ``--out`` (default
``benchmarks/results/label_efficiency_small.jsonl``) and a PNG of AUC versus labels next to it.

    python benchmarks/label_efficiency.py            # small configuration, ~20 min on 2 CPU cores
    python benchmarks/label_efficiency.py --full     # larger backbone and samples, for a GPU
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

from difphys.data import generate
from difphys.io import load_events, load_jets
from difphys.nn import (
    EventClassifier,
    JetClassifier,
    KMeansTokenizer,
    MaskedParticleModel,
    ParTConfig,
    ParticleTransformer,
)
from difphys.train import (
    TokenInputs,
    binary_metrics,
    class_logit,
    finetune,
    predict,
    pretrain_mpm,
    token_entropy,
)

SMALL = dict(
    backbone=ParTConfig(embed_dims=(32, 64, 32), pair_embed_dims=(16, 16), num_heads=4,
                        num_layers=2, num_cls_layers=1, num_classes=0),
    zpole_events=12_000, hh4b_events=3_000, max_particles=32, codebook=64,
    pretrain_steps=600, pretrain_batch=128, steps=150,
    budgets={"zpole": [100, 300, 1000, 3000, 10000], "hh4b": [100, 300, 1000]},
    seeds_up_to=1000, hh4b_seeds_up_to=300,
)
FULL = dict(
    backbone=ParTConfig(num_classes=0),
    zpole_events=200_000, hh4b_events=100_000, max_particles=64, codebook=512,
    pretrain_steps=20_000, pretrain_batch=256, steps=2000,
    seeds_up_to=1000, hh4b_seeds_up_to=1000,
    budgets={"zpole": [100, 300, 1000, 3000, 10000, 30000],
             "hh4b": [100, 300, 1000, 3000, 10000]},
)
STRATEGIES = ("frozen", "finetune", "scratch")


def _emit(fh, row):
    row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
           for k, v in row.items()}
    line = json.dumps(row)
    print(line, flush=True)
    fh.write(line + "\n")
    fh.flush()


def _sample(name, events, seed, cache, workers):
    path = cache / f"{name}_{events}_{seed}.root"
    if not path.exists():
        generate(name, events, seed, path, workers=workers, progress=True)
    return path


def _split(n, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(test_fraction * n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _evaluate(model, test):
    score = class_logit(predict(model, test, batch_size=256), 1)
    return binary_metrics(score, test["label"] == 1, efficiencies=(0.5,)).record()


def _pretrain(cfg, pool_jets, key, log):
    t0 = time.perf_counter()
    inputs = TokenInputs.fit(pool_jets["features"], pool_jets["mask"])  # rank-Gauss, not revealed
    x = inputs.apply(pool_jets["features"])
    tok = KMeansTokenizer.fit(key, x, pool_jets["mask"], codebook_size=cfg["codebook"],
                              iterations=20)
    tokens = np.asarray(tok.tokenize(jnp.asarray(x)))
    mpm = MaskedParticleModel(ParticleTransformer(cfg["backbone"], rngs=nnx.Rngs(0)),
                              cfg["codebook"], token_features=inputs.features, rngs=nnx.Rngs(1))
    _, history = pretrain_mpm(mpm, {**pool_jets, "tokens": tokens}, steps=cfg["pretrain_steps"],
                              batch_size=cfg["pretrain_batch"], key=key, progress=True)
    log(dict(kind="pretrain", pool_jets=int(len(tokens)),
             token_entropy=token_entropy(tokens, pool_jets["mask"]),
             first_loss=float(history.loss[0]), final_loss=history.last("loss"),
             final_token_accuracy=history.last("token_accuracy"),
             seconds=time.perf_counter() - t0))
    return nnx.state(mpm.backbone)


def _run_budgets(task, cfg, pretrained, labelled, test, make_model, log, seeds_small=3):
    results = []
    for budget in cfg["budgets"][task]:
        if budget > len(labelled["label"]):
            continue
        limit = cfg["seeds_up_to"] if task == "zpole" else cfg["hh4b_seeds_up_to"]
        n_seeds = seeds_small if budget <= limit else 1
        for seed in range(n_seeds):
            pick = np.sort(np.random.default_rng(1000 + seed).choice(
                len(labelled["label"]), budget, replace=False))
            train = {k: v[pick] for k, v in labelled.items()}
            for strategy in STRATEGIES:
                t0 = time.perf_counter()
                backbone = ParticleTransformer(cfg["backbone"], rngs=nnx.Rngs(50 + seed))
                if strategy != "scratch":
                    nnx.update(backbone, jax.tree.map(jnp.copy, pretrained))
                model = make_model(backbone, seed)
                finetune(model, train, strategy, steps=cfg["steps"],
                         batch_size=min(64, budget), key=jax.random.key(seed),
                         learning_rate=2e-3)  # head-only warm-up, then one rate
                row = dict(kind="run", task=task, budget=budget, seed=seed, strategy=strategy,
                           **_evaluate(model, test), seconds=time.perf_counter() - t0)
                log(row)
                results.append(row)
    return results


def _summarise(task, results, log):
    budgets = sorted({r["budget"] for r in results})
    mean = {(s, b): float(np.mean([r["auc"] for r in results
                                   if r["strategy"] == s and r["budget"] == b]))
            for s in STRATEGIES for b in budgets}
    scratch = np.array([mean["scratch", b] for b in budgets])
    for b in budgets:
        target = mean["finetune", b]
        # labels scratch needs for the fine-tuned AUC: interpolate log(budget) in scratch's
        # AUC curve where it is increasing; None when scratch never gets there
        needed = None
        for i in range(len(budgets) - 1):
            lo, hi = scratch[i], scratch[i + 1]
            if lo <= target <= hi and hi > lo:
                t = (target - lo) / (hi - lo)
                needed = float(np.exp(np.log(budgets[i]) + t * np.log(budgets[i + 1] /
                                                                      budgets[i])))
                break
        already = needed is None and target <= scratch[0]
        if already:
            needed = None  # scratch matches it with the smallest budget: factor <= that / b
        log(dict(kind="summary", task=task, budget=b,
                 **{f"auc_{s}": mean[s, b] for s in STRATEGIES},
                 label_efficiency_factor=(needed / b if needed is not None else None),
                 factor_at_most=(budgets[0] / b if already else None),
                 scratch_never_reaches=(needed is None and not already)))
    return mean, budgets


def _plot(path, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4))
    axes = np.atleast_1d(axes)
    for ax, (task, (mean, budgets)) in zip(axes, curves.items(), strict=True):
        for s in STRATEGIES:
            ax.semilogx(budgets, [mean[s, b] for b in budgets], "o-", label=s)
        ax.set_xlabel("labelled training examples")
        ax.set_ylabel("test ROC AUC")
        ax.set_title({"zpole": "Z pole: b vs light jets", "hh4b": "X->hh->4b vs QCD events"}[task])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the GPU configuration")
    parser.add_argument("--tasks", default="zpole,hh4b")
    parser.add_argument("--cache", default="benchmarks/.cache", help="generated samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--from-results", action="store_true",
                        help="recompute the summaries and the plot from the runs in --out")
    args = parser.parse_args()
    cfg = FULL if args.full else SMALL
    out = Path(args.out or f"benchmarks/results/label_efficiency_{'full' if args.full else 'small'}"
                          ".jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        runs = [r for r in rows if r.get("kind") == "run"]
        kept = [r for r in rows if r.get("kind") != "summary"]
        with open(out, "w") as fh:
            for r in kept:
                fh.write(json.dumps(r) + "\n")
            meta = {k: runs[0][k] for k in ("device", "jax", "config")}
            curves = {t: _summarise(t, [r for r in runs if r["task"] == t],
                                    lambda row: _emit(fh, {**meta, **row}))
                      for t in dict.fromkeys(r["task"] for r in runs)}
        _plot(out.with_suffix(".png"), curves)
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    curves = {}
    meta = dict(device=jax.devices()[0].platform, jax=jax.__version__,
                config="full" if args.full else "small")
    with open(out, "w") as fh:
        def log(row):
            _emit(fh, {**meta, **row})

        for task in args.tasks.split(","):
            key = jax.random.key(7)
            if task == "zpole":
                path = _sample("zpole", cfg["zpole_events"], 101, cache, args.workers)
                pool_all = load_jets(path, ["label_b", "label_c", "label_uds"],
                                     max_particles=cfg["max_particles"])
                pool_idx, test_idx = _split(len(pool_all["label"]), 0.25, 0)
                pool = {k: v[pool_idx] for k, v in pool_all.items()}
                test = {k: v[test_idx] for k, v in pool_all.items()}
                # b (label index 0) vs light (index 2); c jets stay in the unlabelled pool only

                def b_vs_light(d):
                    keep = d["label"] != 1
                    return {**{k: v[keep] for k, v in d.items()},
                            "label": (d["label"][keep] == 0).astype(np.int32)}

                labelled, test = b_vs_light(pool), b_vs_light(test)
                pretrained = _pretrain(cfg, {k: pool[k] for k in ("features", "p4", "mask")},
                                       key, log)

                def make_model(backbone, seed):
                    return JetClassifier(backbone, 2, rngs=nnx.Rngs(200 + seed))
            elif task == "hh4b":
                path = _sample("hh4b", cfg["hh4b_events"], 102, cache, args.workers)
                events = load_events(path, max_jets=3, max_particles=cfg["max_particles"])
                pool_idx, test_idx = _split(len(events["label"]), 0.3, 0)
                labelled = {k: v[pool_idx] for k, v in events.items() if k != "jet_mask"}
                test = {k: v[test_idx] for k, v in events.items() if k != "jet_mask"}
                # pretraining pool: the jets of the labelled-pool events, labels dropped
                jm = events["jet_mask"][pool_idx]
                jets = {k: labelled[k][jm] for k in ("features", "p4", "mask")}
                pretrained = _pretrain(cfg, jets, key, log)

                def make_model(backbone, seed):
                    return EventClassifier(backbone, 2, rngs=nnx.Rngs(200 + seed))
            else:
                raise ValueError(f"unknown task {task!r}")
            results = _run_budgets(task, cfg, pretrained, labelled, test, make_model, log)
            curves[task] = _summarise(task, results, log)
        log(dict(kind="total", seconds=time.perf_counter() - t_start))
    _plot(out.with_suffix(".png"), curves)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
