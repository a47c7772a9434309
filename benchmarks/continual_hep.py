"""Continual learning on a HEP task sequence (#27): CLNP against plain fine-tuning and EWC on a
small Particle Transformer (:class:`difphys.nn.MultiTaskParT`).

Three jet tasks from samples this project generates (Pythia 8 + FastJet, ``difphys.data``):

0. Z-pole (e+e- -> Z -> q q~ at 91.2 GeV) b jets against u/d/s jets;
1. Z-pole c jets against u/d/s jets;
2. jets of pp -> hh -> 4b (``hh4b_signal``, the jets matched to a Higgs boson) against the
   jets of QCD multijet events (``hh4b_qcd``): a jet-level stand-in for the hh4b event task.

The tasks are learnt in this order by one model with a head per task:

* ``finetune``: every parameter trained on each task in turn (AdamW);
* ``ewc``: the same plus the EWC penalty of the earlier tasks (empirical Fisher of 200
  training jets per task);
* ``clnp``: ``train.finetune(strategy="continual")`` with the L1 activation penalty, then the
  graceful threshold (the largest of 0.05, 0.15, 0.3, 0.5 whose validation AUC loss is at most
  ``--eps`` after pruning and ``--retrain`` steps of retraining the kept units), allocation
  (at most ``--max-fraction`` of each group's free units per task) and isolation.

After every task the test AUC of every task learnt so far is recorded; one JSON object per
method, seed, task and ``after_task`` is appended to ``benchmarks/results/continual.jsonl``
(``benchmark = "hep"``) and a summary printed (mean and spread over seeds), with CLNP's unit
usage per group.

    python benchmarks/continual_hep.py [--seeds 2] [--steps 300] [--cache .cache/continual]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from difphys import nn, train
from difphys.data import generate
from difphys.io import Table, load_jets, read_jetclass

TASKS = ("zpole b vs uds", "zpole c vs uds", "hh4b H->bb jet vs QCD jet")
MAX_PARTICLES = 32
CONFIG = nn.ParTConfig.named("tiny", num_classes=2)
EVENTS = {"zpole": 6000, "hh4b_signal": 1200, "hh4b_qcd": 1500}
SEEDS = {"zpole": 411, "hh4b_signal": 412, "hh4b_qcd": 413}


def _file(sample, cache, workers):
    path = Path(cache) / f"{sample}_{EVENTS[sample]}_{SEEDS[sample]}.root"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate(sample, EVENTS[sample], SEEDS[sample], path, workers=workers, progress=True)
    return path


def _split(table, seed=0):
    """60/20/20 train/validation/test, balanced by subsampling the larger class of train."""
    n = len(table["label"])
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    parts = {"train": order[:a], "val": order[a:b], "test": order[b:]}
    return {k: Table(**{f: np.asarray(v)[idx] for f, v in table.items()})
            for k, idx in parts.items()}


def hep_tasks(cache, workers=2):
    zp = _file("zpole", cache, workers)
    sig, qcd = _file("hh4b_signal", cache, workers), _file("hh4b_qcd", cache, workers)
    b = load_jets(zp, ["label_uds", "label_b"], max_particles=MAX_PARTICLES)
    c = load_jets(zp, ["label_uds", "label_c"], max_particles=MAX_PARTICLES)
    s = load_jets(sig, None, max_particles=MAX_PARTICLES)
    hbb = np.asarray(read_jetclass(sig, ["label_Hbb"], max_particles=1)["label_Hbb"], bool)
    q = load_jets(qcd, None, max_particles=MAX_PARTICLES)
    h = {k: np.concatenate([np.asarray(s[k])[hbb], np.asarray(q[k])]) for k in s}
    h["label"] = np.concatenate([np.ones(hbb.sum(), np.int32), np.zeros(len(q["mask"]),
                                                                        np.int32)])
    return [_split(Table(**{k: np.asarray(v) for k, v in t.items()}), i)
            for i, t in enumerate((b, c, Table(**h)))]


def auc(model, task, data):
    model.task = task
    logits = train.predict(model, data, batch_size=512)
    return train.roc_auc(logits[:, 1] - logits[:, 0], np.asarray(data["label"]) == 1)


def _optimizer(lr, steps):
    return optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps),
                       weight_decay=1e-4)


def _ewc_loss(strength, anchors, fishers):
    base = train.continual_loss(0.0)

    def loss_fn(model, batch, *, key):
        loss, metrics = base(model, batch, key=key)
        if anchors:
            params = nnx.state(model, nnx.Param)
            loss = loss + train.ewc_penalty(params, anchors, fishers, strength)
        return loss, metrics

    return loss_fn


def _fisher(model, task, data, n=200):
    model.task = task
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def nll(p, f, q, m, y):
        logits = nnx.merge(graphdef, p, rest)(f[None], q[None], m[None], task)[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    tr = data["train"]
    idx = np.random.default_rng(task).choice(len(tr["label"]), n, replace=False)
    examples = [tuple(jnp.asarray(tr[k][i]) for k in ("features", "p4", "mask", "label"))
                for i in idx]
    fisher = train.fisher_diagonal(nll, params, examples)
    model.train()
    return jax.tree.map(jnp.copy, params), fisher


def run(method, tasks, seed, *, steps, lr, eps, l1, ewc_strength, retrain=40,
        thresholds=(0.05, 0.15, 0.3, 0.5), max_fraction=0.4, batch=128):
    model = nn.MultiTaskParT(CONFIG, len(tasks), 2, rngs=nnx.Rngs(seed))
    masks = nn.NeuronMasks.empty(model.hidden)
    nn.isolate(model, masks)
    anchors, fishers, rows, extra = [], [], [], {}
    for t, data in enumerate(tasks):
        key = jax.random.fold_in(jax.random.key(seed), t)
        model.train()
        if method == "clnp":
            train.finetune(model, data["train"], "continual", steps=steps, batch_size=batch,
                           key=key, masks=masks, task=t, l1=l1, learning_rate=lr)
            model.eval()
            activity = train.neuron_activity(
                model, {k: data["train"][k][:2048] for k in ("features", "p4", "mask")}, t)
            unpruned = auc(model, t, data["test"])

            trials = {}

            def evaluate(cand, t=t, data=data, key=key, trials=trials):
                """Validation AUC after pruning to ``cand`` and retraining the units task ``t``
                now owns for ``retrain`` steps (prune, then fine-tune, as CLNP does)."""
                trial = nnx.clone(model)
                if cand is not None:
                    nn.isolate(trial, cand)
                    if retrain:
                        trial.train()
                        train.finetune(trial, data["train"], "continual", steps=retrain,
                                       batch_size=batch, key=jax.random.fold_in(key, 7),
                                       masks=cand, task=t, learning_rate=lr / 3)
                        trial.eval()
                    trials[id(cand)] = (cand, trial)
                return auc(trial, t, data["val"])

            choice = train.graceful_threshold(evaluate, masks, activity, t, eps,
                                              thresholds=thresholds, exhausted="skip",
                                              max_fraction=max_fraction)
            masks = train.allocate(masks, activity, choice.threshold, t, exhausted="skip",
                                   max_fraction=max_fraction)
            chosen = [tr for cand, tr in trials.values()
                      if all(np.array_equal(a, b) for a, b in zip(cand.owner, masks.owner,
                                                                  strict=True))][0]
            nnx.update(model, nnx.state(chosen))
            nn.isolate(model, masks)
            extra.setdefault("pruning", []).append(dict(
                task=t, unpruned=unpruned, pruned=auc(model, t, data["test"]),
                threshold=choice.threshold, val_auc=choice.accuracy.tolist(),
                freed=choice.freed.tolist(), reference=choice.reference))
        else:
            model.task = t
            loss = (_ewc_loss(ewc_strength, anchors, fishers) if method == "ewc"
                    else train.continual_loss(0.0))
            train.fit(model, data["train"], steps=steps, batch_size=batch, key=key,
                      optimizer=_optimizer(lr, steps), loss_fn=loss, progress=False)
            if method == "ewc":
                a, f = _fisher(model, t, data)
                anchors.append(a)
                fishers.append(f)
        for s in range(t + 1):
            rows.append(dict(benchmark="hep", method=method, seed=seed, task=s,
                             task_name=TASKS[s], after_task=t,
                             auc=auc(model, s, tasks[s]["test"])))
    if method == "clnp":
        extra["capacity"] = {name: r._asdict() for name, r in
                             zip(model.unit_names, train.capacity_report(model, masks),
                                 strict=True)}
    return rows, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=300, help="AdamW steps per task")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--l1", type=float, default=1e-3, help="CLNP activation penalty")
    ap.add_argument("--ewc", type=float, default=1000.0, help="EWC strength")
    ap.add_argument("--eps", type=float, default=0.01, help="graceful-forgetting AUC budget")
    ap.add_argument("--retrain", type=int, default=40, help="CLNP steps after pruning")
    ap.add_argument("--max-fraction", type=float, default=0.4,
                    help="CLNP: most of a group's free units one task may take")
    ap.add_argument("--methods", nargs="+", default=["finetune", "ewc", "clnp"],
                    choices=["finetune", "ewc", "clnp"])
    ap.add_argument("--cache", default=".cache/continual", help="generated samples")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    start = time.time()
    tasks = hep_tasks(args.cache, args.workers)
    for t, d in enumerate(tasks):
        print(f"task {t} ({TASKS[t]}): {len(d['train']['label'])} train / "
              f"{len(d['val']['label'])} val / {len(d['test']['label'])} test jets, "
              f"signal fraction {np.mean(d['train']['label']):.2f}", flush=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = {}
    for method in args.methods:
        for seed in range(args.seeds):
            rows, extra = run(method, tasks, seed, steps=args.steps, lr=args.lr, eps=args.eps,
                              l1=args.l1, ewc_strength=args.ewc, retrain=args.retrain,
                              max_fraction=args.max_fraction)
            for r in rows:
                r.update(steps=args.steps, config="tiny", l1=args.l1 if method == "clnp"
                         else None, ewc_strength=args.ewc if method == "ewc" else None,
                         time=stamp)
            results[(method, seed)] = (rows, extra)
            if args.out:
                with open(args.out, "a") as fh:
                    for r in rows:
                        fh.write(json.dumps(r) + "\n")
            last = [r["auc"] for r in rows if r["after_task"] == len(tasks) - 1]
            print(f"{method} seed {seed}: test AUC after the last task "
                  f"{', '.join(f'{a:.3f}' for a in last)} ({time.time() - start:.0f} s)",
                  flush=True)
            if method == "clnp":
                for p in extra["pruning"]:
                    print(f"  clnp task {p['task']}: AUC {p['unpruned']:.4f} -> "
                          f"{p['pruned']:.4f} after pruning at threshold {p['threshold']:.2f}"
                          f" (validation AUC {p['reference']:.4f} unpruned; by threshold "
                          + ", ".join(f"{a:.3f}" for a in p["val_auc"]) + ")")
                for name, c in extra["capacity"].items():
                    print(f"  {name:12s} free {c['free']:4d}/{c['units']:4d} used {c['used']} "
                          f"reused {c['reused']} weight from older units "
                          f"({', '.join(f'{w:.2f}' for w in c['reuse_weight'])})")
    print("method    " + "  ".join(f"task {t} after {t} -> after {len(tasks) - 1}"
                                   for t in range(len(tasks))) + "   average")
    for method in args.methods:
        cells, avgs = [], []
        for t in range(len(tasks)):
            first = [r["auc"] for s in range(args.seeds) for r in results[(method, s)][0]
                     if r["task"] == t and r["after_task"] == t]
            final = [r["auc"] for s in range(args.seeds) for r in results[(method, s)][0]
                     if r["task"] == t and r["after_task"] == len(tasks) - 1]
            cells.append(f"{np.mean(first):.3f} -> {np.mean(final):.3f}+-{np.std(final):.3f}")
        for s in range(args.seeds):
            avgs.append(np.mean([r["auc"] for r in results[(method, s)][0]
                                 if r["after_task"] == len(tasks) - 1]))
        print(f"{method:9s} " + "   ".join(cells) + f"   {np.mean(avgs):.4f} +- {np.std(avgs):.4f}")
    print(f"total {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
