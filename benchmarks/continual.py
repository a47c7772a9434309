"""Continual learning on permuted digits (#27): CLNP against plain fine-tuning and EWC.

scikit-learn's bundled 8x8 digits (1797 images, no download), split 60/20/20 into train,
validation and test once; task 0 is the original pixel order, tasks 1-9 ten fixed random
permutations of the 64 pixels (seed 0). One :class:`difphys.nn.MultiTaskMLP` (64 -> 128 -> 128,
one 10-class head per task; ``--hidden`` widens it) learns the tasks in order:

* ``finetune``: every weight trained on each task in turn (AdamW);
* ``ewc``: the same plus the EWC penalty of every earlier task (empirical Fisher on 300 training
  examples);
* ``clnp``: the free units trained with an L1 activation penalty, then the active ones allocated
  at the graceful threshold (validation loss of at most ``--eps``) and isolated.

The one knob of each (EWC strength, CLNP penalty) is chosen from a small grid on the validation
split of the whole sequence, with a seed that is not reported.

After every task the test accuracy of every task learnt so far is recorded. One JSON object
per method, seed, task and ``after_task`` goes to ``benchmarks/results/continual.jsonl``;
the summary (mean and standard deviation over seeds) is printed, with CLNP's per-layer unit
usage and reuse.

    python benchmarks/continual.py [--seeds 3] [--out benchmarks/results/continual.jsonl]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from difphys import nn, train

N_TASKS = 10
HIDDEN = (128, 128)


def digits_tasks(n_tasks=N_TASKS):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    n_tr, n_va = int(0.6 * len(x)), int(0.2 * len(x))
    parts = np.split(order, [n_tr, n_tr + n_va])
    perms = [np.arange(64)] + [rng.permutation(64) for _ in range(n_tasks - 1)]
    return [{name: (x[idx][:, perm], y[idx]) for name, idx in zip(("train", "val", "test"),
                                                                    parts, strict=True)}
            for perm in perms]


def accuracy(model, task, data):
    x, y = data
    return float(np.mean(np.argmax(np.asarray(model(jnp.asarray(x), task)), -1) == y))


def train_task(model, task, data, *, key, steps, lr, masks=None, l1=0.0, ewc=None):
    """AdamW on task ``task``; with ``masks`` only the units CLNP leaves open are trained (and
    the L1 penalty acts on the free units); with ``ewc = (strength, anchors, fishers)`` the EWC
    penalty is added."""
    x, y = (jnp.asarray(a) for a in data["train"])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adamw(lr, weight_decay=1e-4)
    if masks is not None:
        opt = train.frozen(opt, nn.trainable_masks(model, masks, task))
    opt_state = opt.init(params)

    def loss_fn(p, xb, yb):
        m = nnx.merge(graphdef, p, rest)
        logits = m(xb, task)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))
        if masks is not None and l1:
            loss = loss + l1 * train.activation_l1(m, xb, masks)
        if ewc is not None and ewc[1]:
            loss = loss + train.ewc_penalty(p, ewc[1], ewc[2], ewc[0])
        return loss

    @jax.jit
    def step(p, s, xb, yb):
        g = jax.grad(loss_fn)(p, xb, yb)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    batch = 64
    for i in range(steps):
        idx = jax.random.randint(jax.random.fold_in(key, i), (batch,), 0, x.shape[0])
        params, opt_state = step(params, opt_state, x[idx], y[idx])
    nnx.update(model, params)


def fisher(model, task, data, n=300):
    x, y = data["train"]
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def nll(p, xi, yi):
        logits = nnx.merge(graphdef, p, rest)(xi[None], task)[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yi)

    examples = [(jnp.asarray(x[i]), jnp.asarray(y[i])) for i in range(min(n, len(x)))]
    return params, train.fisher_diagonal(nll, params, examples)


def run(method, tasks, seed, *, steps, lr, eps, l1=0.0, ewc_strength=None, split="test",
        hidden=HIDDEN):
    key = jax.random.key(seed)
    model = nn.MultiTaskMLP(64, hidden, N_TASKS, 10, rngs=nnx.Rngs(seed))
    masks = nn.NeuronMasks.empty(hidden)
    anchors, fishers, rows, extra = [], [], [], {}
    for t, data in enumerate(tasks):
        k = jax.random.fold_in(key, t)
        if method == "clnp":
            if t:  # the units task t - 1 left free were silenced by its penalty: re-draw them
                nn.reset_free_units(model, masks, key=jax.random.fold_in(k, 1))
            train_task(model, t, data, key=k, steps=steps, lr=lr, masks=masks, l1=l1)
            activity = train.neuron_activity(model, jnp.asarray(data["train"][0]))
            unpruned = accuracy(model, t, data[split])

            def evaluate(cand, t=t, data=data):
                if cand is None:
                    return accuracy(model, t, data["val"])
                trial = nnx.clone(model)
                nn.isolate(trial, cand)
                return accuracy(trial, t, data["val"])

            threshold = None
            try:
                choice = train.graceful_threshold(evaluate, masks, activity, t, eps)
                threshold = choice.threshold
                masks = train.allocate(masks, activity, threshold, t)
            except ValueError as err:  # capacity exhausted: task t lives on reused units only
                if "capacity exhausted" not in str(err):
                    raise
                extra.setdefault("capacity_exhausted_at_task", t)
            nn.isolate(model, masks)
            extra.setdefault("pruning", []).append(dict(
                task=t, unpruned=unpruned, pruned=accuracy(model, t, data[split]),
                threshold=threshold))
            if t == 0:
                extra["graceful_task0"] = dict(
                    thresholds=choice.thresholds.tolist(), val_accuracy=choice.accuracy.tolist(),
                    reference=choice.reference, freed=choice.freed.tolist(),
                    chosen=choice.threshold)
        else:
            train_task(model, t, data, key=k, steps=steps, lr=lr,
                       ewc=(ewc_strength, anchors, fishers) if method == "ewc" else None)
            if method == "ewc":
                a, f = fisher(model, t, data)
                anchors.append(a)
                fishers.append(f)
        for s in range(t + 1):
            rows.append(dict(benchmark="permuted_digits", method=method, seed=seed, task=s,
                             after_task=t, accuracy=accuracy(model, s, tasks[s][split])))
    if method == "clnp":
        extra["capacity"] = [r._asdict() for r in train.capacity_report(model, masks)]
    return rows, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600, help="AdamW steps per task")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--hidden", type=int, nargs="+", default=list(HIDDEN),
                    help="hidden widths of the MLP (the same network for every method)")
    ap.add_argument("--methods", nargs="+", default=["finetune", "ewc", "clnp"],
                    choices=["finetune", "ewc", "clnp"])
    ap.add_argument("--l1-grid", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2],
                    help="CLNP activation penalties tried on the validation split")
    ap.add_argument("--ewc-grid", type=float, nargs="+", default=[10.0, 100.0, 1000.0],
                    help="EWC strengths tried on the validation split")
    ap.add_argument("--eps", type=float, default=0.01, help="graceful-forgetting budget")
    ap.add_argument("--out", default=None, help="append the rows to this JSON-lines file")
    args = ap.parse_args()
    tasks = digits_tasks()
    t0 = time.perf_counter()
    # each method's one knob is chosen on the validation split with seed 100 (not one of the
    # reported seeds): the EWC strength and the CLNP activation penalty
    def tune(method, grid, **fixed):
        scores = []
        for value in grid:
            kw = dict(fixed, **({"ewc_strength": value} if method == "ewc" else {"l1": value}))
            rows, _ = run(method, tasks, 100, steps=args.steps, lr=args.lr, eps=args.eps,
                          split="val", hidden=tuple(args.hidden), **kw)
            scores.append(float(np.mean([r["accuracy"] for r in rows
                                         if r["after_task"] == N_TASKS - 1])))
        best = grid[int(np.argmax(scores))]
        print(f"{method}: validation average accuracy {dict(zip(grid, np.round(scores, 4), strict=True))}"
              f" -> {best:g}")
        return best

    lam = tune("ewc", args.ewc_grid, l1=0.0) if "ewc" in args.methods else None
    l1 = tune("clnp", args.l1_grid) if "clnp" in args.methods else None
    all_rows, extras = [], {}
    for method in args.methods:
        for seed in range(args.seeds):
            rows, extra = run(method, tasks, seed, steps=args.steps, lr=args.lr, l1=l1 or 0.0,
                              eps=args.eps, ewc_strength=lam, hidden=tuple(args.hidden))
            for r in rows:
                r.update(steps=args.steps, hidden=list(args.hidden), ewc_strength=lam if method == "ewc" else None,
                         l1=l1 if method == "clnp" else None)
            all_rows += rows
            if extra:
                extras[(method, seed)] = extra
    print(f"{'method':<9} {'avg acc after 10 tasks':>24} {'task-0 acc after 0':>20} "
          f"{'task-0 acc after 9':>20}")
    summary = {}
    for method in args.methods:
        avg, first, last = [], [], []
        for seed in range(args.seeds):
            rs = [r for r in all_rows if r["method"] == method and r["seed"] == seed]
            avg.append(np.mean([r["accuracy"] for r in rs if r["after_task"] == N_TASKS - 1]))
            first.append([r["accuracy"] for r in rs if r["task"] == 0 and r["after_task"] == 0][0])
            last.append([r["accuracy"] for r in rs if r["task"] == 0
                         and r["after_task"] == N_TASKS - 1][0])
        summary[method] = dict(avg=np.mean(avg), avg_sd=np.std(avg), first=np.mean(first),
                               last=np.mean(last), drop=np.mean(np.subtract(first, last)))
        print(f"{method:<9} {np.mean(avg):>16.4f} +- {np.std(avg):.4f} {np.mean(first):>20.4f} "
              f"{np.mean(last):>20.4f}")
    for (_, seed), extra in extras.items():
        if seed == 0:
            for layer, cap in enumerate(extra["capacity"]):
                print(f"clnp seed 0 layer {layer}: free {cap['free']}/{cap['units']}, used per "
                      f"task {cap['used']}, reused by task {cap['reused']}, weight from older "
                      f"units by task ({', '.join(f'{w:.2f}' for w in cap['reuse_weight'])})")
            g = extra["graceful_task0"]
            print("clnp task-0 graceful scan: threshold -> val accuracy (freed fraction):",
                  ", ".join(f"{t:.2f}->{a:.3f} ({f:.2f})" for t, a, f in
                            zip(g["thresholds"], g["val_accuracy"], g["freed"], strict=True)),
                  f"chosen {g['chosen']:.2f}, unpruned {g['reference']:.3f}")
    for (_, seed), extra in extras.items():
        drops = [p["unpruned"] - p["pruned"] for p in extra["pruning"]]
        print(f"clnp seed {seed}: test accuracy lost to pruning per task (eps = {args.eps}): "
              + ", ".join(f"{d:+.3f}" for d in drops))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(args.out, "a") as fh:
            for r in all_rows:
                fh.write(json.dumps({**r, "time": stamp}) + "\n")
            for (method, seed), extra in extras.items():
                fh.write(json.dumps({"benchmark": "permuted_digits", "method": method,
                                     "seed": seed, "diagnostics": extra, "time": stamp}) + "\n")


if __name__ == "__main__":
    main()
