"""Particle Transformer throughput: difphys (Flax NNX, JAX) against weaver-core's PyTorch
``ParticleTransformer`` at equal shapes, in one process.

For each model size (small, full) it times, in jets per second,
* ``forward``: inference (evaluation mode, no gradients), and
* ``train_step``: forward + backward + AdamW update in training mode (dropout on),
as the median of ``--steps`` timed calls after ``--warmup`` untimed ones. The two
implementations take turns over ``--rounds`` interleaved rounds (the first alternating), so
that both see the same state of a shared machine; each figure is the median over rounds, and
the ratio is the median of the per-round ratios (all rounds are printed). JAX compilation
time is reported separately. Inputs: ``--batch`` jets of ``--particles`` particles (all real, so
that weaver-core's sequence trimming changes nothing), 17 features, 4-vectors for the pair
features, 2 classes. One JSON line per result, then one per size with the ratios
difphys / weaver-core (goal: >= 1.5).

    python benchmarks/part_throughput.py [--batch 64] [--particles 128] [--sizes small,full]

Needs the ``torch-bench`` extra (``pip install -e '.[torch-bench]'``: torch 2.13.0 CPU and
weaver-core); without it only the difphys figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from difphys.nn import ParTConfig, ParticleTransformer, count_params
from difphys.train import classifier_loss, init_state, make_train_step

SIZES = {
    "small": dict(embed_dims=(64, 128, 64), pair_embed_dims=(32, 32), num_heads=4,
                  num_layers=3, num_cls_layers=1),
    "full": dict(embed_dims=(128, 512, 128), pair_embed_dims=(64, 64, 64), num_heads=8,
                 num_layers=8, num_cls_layers=2),
}


def _inputs(batch, particles, seed=0):
    rng = np.random.default_rng(seed)
    p3 = rng.normal(size=(batch, particles, 3)) * np.array([2.0, 2.0, 2.0]) + np.array(
        [30.0, 0.0, 0.0])
    energy = np.sqrt((p3**2).sum(-1) + 0.14**2)
    return {
        "features": rng.normal(size=(batch, particles, 17)).astype(np.float32),
        "p4": np.concatenate([energy[..., None], p3], -1).astype(np.float32),
        "mask": np.ones((batch, particles), bool),
        "label": rng.integers(0, 2, batch).astype(np.int32),
    }


def _median_time(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def setup_difphys(size, data):
    """``({mode: one call}, info)`` for difphys's ParT of ``size``; compiles both calls."""
    cfg = ParTConfig(input_dim=17, num_classes=2, **SIZES[size])
    model = ParticleTransformer(cfg, rngs=nnx.Rngs(0))
    info = {"params": count_params(model)}
    batch = {k: jnp.asarray(v) for k, v in data.items()}

    eval_model = ParticleTransformer(cfg, rngs=nnx.Rngs(0))
    eval_model.eval()
    eval_graphdef, state = nnx.split(eval_model)
    forward = jax.jit(lambda s, f, p, m: nnx.merge(eval_graphdef, s)(f, p, m))

    def fwd():
        jax.block_until_ready(forward(state, batch["features"], batch["p4"], batch["mask"]))

    opt = optax.adamw(1e-3)
    graphdef, tstate = init_state(model, opt)
    step = jax.jit(make_train_step(graphdef, classifier_loss, opt), donate_argnums=0)
    key = jax.random.key(0)
    holder = {"state": tstate, "i": 0}

    def train():
        holder["i"] += 1
        holder["state"], metrics = step(holder["state"], batch,
                                        jax.random.fold_in(key, holder["i"]))
        jax.block_until_ready(metrics["loss"])

    for mode, fn in (("forward", fwd), ("train_step", train)):
        t0 = time.perf_counter()
        fn()
        info[f"compile_s_{mode}"] = time.perf_counter() - t0
    return {"forward": fwd, "train_step": train}, info


def setup_weaver(size, data):
    """``({mode: one call}, info)`` for weaver-core's PyTorch ParticleTransformer."""
    import torch
    from weaver.nn.model.ParticleTransformer import ParticleTransformer as TorchParT

    cfg = SIZES[size]
    torch.manual_seed(0)
    model = TorchParT(input_dim=17, num_classes=2, embed_dims=list(cfg["embed_dims"]),
                      pair_embed_dims=list(cfg["pair_embed_dims"]), num_heads=cfg["num_heads"],
                      num_layers=cfg["num_layers"], num_cls_layers=cfg["num_cls_layers"])
    info = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "torch_threads": torch.get_num_threads()}
    # weaver-core layout: x (B, C, P), v (B, 4, P) as (px, py, pz, E), mask (B, 1, P)
    x = torch.from_numpy(np.ascontiguousarray(data["features"].transpose(0, 2, 1)))
    p4 = data["p4"]
    v = torch.from_numpy(np.ascontiguousarray(
        np.stack([p4[..., 1], p4[..., 2], p4[..., 3], p4[..., 0]], axis=1)))
    mask = torch.from_numpy(data["mask"][:, None, :].astype(np.float32))
    y = torch.from_numpy(data["label"].astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def fwd():
        model.eval()
        with torch.no_grad():
            model(x, v, mask)

    def train():
        model.train()
        opt.zero_grad()
        loss = loss_fn(model(x, v, mask), y)
        loss.backward()
        opt.step()

    return {"forward": fwd, "train_step": train}, info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--sizes", default="small,full")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per mode (each times both implementations)")
    args = parser.parse_args()
    data = _inputs(args.batch, args.particles)
    try:
        import torch  # noqa: F401
        import weaver  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        print(json.dumps({"note": "torch/weaver-core not installed: pip install -e "
                                  "'.[torch-bench]' for the comparison"}))
    meta = dict(device=str(jax.devices()[0].platform), cpus=os.cpu_count(), batch=args.batch,
                particles=args.particles, jax=jax.__version__)
    b = args.batch
    for size in args.sizes.split(","):
        impls = {"difphys": setup_difphys(size, data)}
        if have_torch:
            impls["weaver-core"] = setup_weaver(size, data)
        for mode in ("forward", "train_step"):
            # The implementations take turns, the first alternating between rounds, so that
            # both see the same state of this shared machine; a pause lets the other
            # framework's worker threads stop spinning before a timing starts.
            per_round = {name: [] for name in impls}
            for r in range(args.rounds):
                order = list(impls) if r % 2 == 0 else list(impls)[::-1]
                for name in order:
                    time.sleep(0.5)
                    per_round[name].append(_median_time(impls[name][0][mode], args.warmup,
                                                        args.steps))
            rows = {}
            for name, (_, info) in impls.items():
                t = statistics.median(per_round[name])
                rows[name] = dict(impl=name, size=size, mode=mode, jets_per_s=b / t, seconds=t,
                                  seconds_per_round=per_round[name], **info)
                print(json.dumps({**meta, **rows[name]}), flush=True)
            if have_torch:
                ratios = [w / d for d, w in zip(per_round["difphys"], per_round["weaver-core"],
                                                strict=True)]
                print(json.dumps({
                    **meta, "size": size, "mode": mode,
                    "ratio_difphys_over_weaver": statistics.median(ratios),
                    "ratio_per_round": ratios,
                    "params_equal": rows["difphys"]["params"] == rows["weaver-core"]["params"],
                }), flush=True)


if __name__ == "__main__":
    main()
