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

``--data FILE`` times real, padded jets instead (add ``--by-length`` to let difphys group
the same jets by length first, as ``predict`` and ``batches(bucket=)`` do): ``--cycle`` batches of a JetClass-schema file
(e.g. from ``difphys generate``) padded to ``--particles``, one call running all of them. Each
side removes padding its own way: difphys cuts every batch to its longest jet rounded up to a
multiple of ``--trim`` (``difphys.io.trim_padding``, one compilation per length, all compiled
before timing); weaver-core's ``SequenceTrimmer`` cuts to the longest jet. In training both cut
to a random 90-102% quantile of the jet lengths (``--trim-quantile``), dropping random particles
of the longest jets: weaver-core redraws it every step, difphys draws it once per batch.

glibc's allocator settings (``GLIBC_TUNABLES``) are recorded with every line: both frameworks
page-fault on freshly mapped activation buffers by default (docs/nn.md).

    python benchmarks/part_throughput.py [--batch 64] [--particles 128] [--sizes small,full]
    python benchmarks/part_throughput.py --data zpole.root --particles 128 --trim 16

Needs the ``torch-bench`` extra (``pip install -e '.[torch-bench]'``: torch 2.13.0 CPU and
weaver-core); without it only the difphys figures are printed.
"""

from __future__ import annotations

import argparse
import itertools
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


def _call_times(fn, warmup, steps):
    """Seconds of each of ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median_time(fn, warmup, steps):
    return statistics.median(_call_times(fn, warmup, steps))


def _real_batches(path, batch, particles, cycle, seed=0):
    """``cycle`` batches of ``batch`` real jets of a JetClass-schema file (labels: the jet's
    b label, so both classes occur), padded to ``particles``."""
    from difphys.io import load_jets

    jets = load_jets(path, None, max_particles=particles)
    if len(jets["mask"]) < batch * cycle:
        raise ValueError(f"{path} has {len(jets['mask'])} jets; --batch {batch} x --cycle "
                         f"{cycle} needs {batch * cycle}")
    order = np.random.default_rng(seed).permutation(len(jets["mask"]))[:batch * cycle]
    label = np.random.default_rng(seed + 1).integers(0, 2, batch * cycle).astype(np.int32)
    return [{"features": jets["features"][idx], "p4": jets["p4"][idx],
             "mask": jets["mask"][idx], "label": label[i * batch:(i + 1) * batch]}
            for i, idx in enumerate(np.split(order, cycle))]


def _by_length(batches, trim, trim_quantile):
    """The jets of ``batches`` regrouped by length, as difphys does with ``by_length`` and
    ``bucket``: for the forward pass sorted by particle count (``train.predict``), for
    training by ``io.batches(..., bucket=len(batches))`` (one pool: the same jets, each once)."""
    from difphys.io import batches as batch_stream

    size = len(batches[0]["mask"])
    jets = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    order = np.argsort(jets["mask"].sum(axis=1), kind="stable")
    forward = [{k: v[idx] for k, v in jets.items()}
               for idx in np.split(order, len(batches))]
    stream = batch_stream(jets, size, key=jax.random.key(0), trim=trim,
                          trim_quantile=trim_quantile, bucket=len(batches))
    return forward, [b for _, b in itertools.islice(stream, len(batches))]


def setup_difphys(size, batches, trim=None, trim_quantile=None, by_length=False):
    """``({mode: one call}, info)`` for difphys's ParT of ``size``; one call runs every batch
    of ``batches``, cut by ``difphys.io.trim_padding(b, trim)`` when ``trim`` (the training
    batches with ``quantile=trim_quantile``, drawn once so that no length compiles while
    timing), with the jets regrouped by length first when ``by_length``; compiles every
    shape."""
    from difphys.io import trim_padding

    cfg = ParTConfig(input_dim=17, num_classes=2, **SIZES[size])
    model = ParticleTransformer(cfg, rngs=nnx.Rngs(0))
    info = {"params": count_params(model), "by_length": by_length}
    train_batches = batches
    if by_length:
        batches, train_batches = _by_length(batches, trim, trim_quantile)
        batches = [trim_padding(b, trim) for b in batches]
        info["lengths_forward"] = [int(b["mask"].shape[1]) for b in batches]
        info["lengths_train"] = [int(b["mask"].shape[1]) for b in train_batches]
    elif trim is not None:
        rng = np.random.default_rng(0)
        train_batches = [trim_padding(b, trim, quantile=trim_quantile, rng=rng)
                         for b in batches]
        batches = [trim_padding(b, trim) for b in batches]
        info["lengths_forward"] = [int(b["mask"].shape[1]) for b in batches]
        info["lengths_train"] = [int(b["mask"].shape[1]) for b in train_batches]
    batches = [{k: jnp.asarray(v) for k, v in b.items()} for b in batches]
    train_batches = [{k: jnp.asarray(v) for k, v in b.items()} for b in train_batches]

    eval_model = ParticleTransformer(cfg, rngs=nnx.Rngs(0))
    eval_model.eval()
    eval_graphdef, state = nnx.split(eval_model)
    forward = jax.jit(lambda s, f, p, m: nnx.merge(eval_graphdef, s)(f, p, m))

    def fwd():
        for batch in batches:
            out = forward(state, batch["features"], batch["p4"], batch["mask"])
        jax.block_until_ready(out)

    opt = optax.adamw(1e-3)
    graphdef, tstate = init_state(model, opt)
    step = jax.jit(make_train_step(graphdef, classifier_loss, opt), donate_argnums=1)
    key = jax.random.key(0)
    holder = {"state": tstate, "i": 0}

    def train():
        for batch in train_batches:
            holder["i"] += 1
            holder["state"], info = step(jax.random.fold_in(key, holder["i"]),
                                         holder["state"], batch)
        jax.block_until_ready(info.loss)

    for mode, fn in (("forward", fwd), ("train_step", train)):
        t0 = time.perf_counter()
        fn()
        info[f"compile_s_{mode}"] = time.perf_counter() - t0
    return {"forward": fwd, "train_step": train}, info


def setup_weaver(size, batches, device="cpu"):
    """``({mode: one call}, info)`` for weaver-core's PyTorch ParticleTransformer (its
    default ``SequenceTrimmer`` on) on torch ``device``; one call runs every batch of
    ``batches`` (and waits for the device). On CUDA its float32 matmuls use TF32, as JAX's
    default precision does on the GPU, so that both do the same arithmetic."""
    import torch
    from weaver.nn.model.ParticleTransformer import ParticleTransformer as TorchParT

    cfg = SIZES[size]
    torch.manual_seed(0)
    model = TorchParT(input_dim=17, num_classes=2, embed_dims=list(cfg["embed_dims"]),
                      pair_embed_dims=list(cfg["pair_embed_dims"]), num_heads=cfg["num_heads"],
                      num_layers=cfg["num_layers"], num_cls_layers=cfg["num_cls_layers"])
    model = model.to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def sync():
        if cuda:
            torch.cuda.synchronize()

    info = {"params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "torch_threads": torch.get_num_threads(), "torch_device": device,
            "torch": torch.__version__}
    # weaver-core layout: x (B, C, P), v (B, 4, P) as (px, py, pz, E), mask (B, 1, P)
    tensors = []
    for data in batches:
        p4 = data["p4"]
        tensors.append((
            torch.from_numpy(np.ascontiguousarray(data["features"].transpose(0, 2, 1))),
            torch.from_numpy(np.ascontiguousarray(
                np.stack([p4[..., 1], p4[..., 2], p4[..., 3], p4[..., 0]], axis=1))),
            torch.from_numpy(data["mask"][:, None, :].astype(np.float32)),
            torch.from_numpy(data["label"].astype(np.int64))))
    tensors = [tuple(t.to(device) for t in group) for group in tensors]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def fwd():
        model.eval()
        with torch.no_grad():
            for x, v, mask, _ in tensors:
                model(x, v, mask)
        sync()

    def train():
        model.train()
        for x, v, mask, y in tensors:
            opt.zero_grad()
            loss = loss_fn(model(x, v, mask), y)
            loss.backward()
            opt.step()
        sync()

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
    parser.add_argument("--data", default=None,
                        help="JetClass-schema ROOT file: time real, padded jets")
    parser.add_argument("--cycle", type=int, default=4,
                        help="with --data: batches per timed call (default: 4)")
    parser.add_argument("--trim", type=int, default=16,
                        help="with --data: difphys cuts batches to a multiple of this")
    parser.add_argument("--trim-quantile", type=float, nargs=2, default=(0.9, 1.02),
                        metavar=("LO", "HI"),
                        help="with --data: difphys's training batches are cut to this quantile "
                             "range of the jet lengths, as weaver-core's (default: 0.9 1.02)")
    parser.add_argument("--by-length", action="store_true",
                        help="with --data: difphys regroups the timed jets by length "
                             "(predict(by_length=True) forward, batches(bucket=--cycle) in "
                             "training); weaver-core keeps the random batches")
    parser.add_argument("--torch-device", default="cpu",
                        help="torch device of weaver-core's model (cuda on a GPU machine)")
    args = parser.parse_args()
    if args.by_length and not args.data:
        parser.error("--by-length needs --data (synthetic jets all have the same length)")
    if args.data:
        data = _real_batches(args.data, args.batch, args.particles, args.cycle)
        trim = args.trim
    else:
        data, trim = [_inputs(args.batch, args.particles)], None
    try:
        import torch  # noqa: F401
        import weaver  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
        print(json.dumps({"note": "torch/weaver-core not installed: pip install -e "
                                  "'.[torch-bench]' for the comparison"}))
    # glibc's allocator settings change both frameworks' timings on CPU (page faults on
    # freshly mapped activation buffers; see docs/nn.md), so they are part of every record.
    meta = dict(device=str(jax.devices()[0].platform), cpus=os.cpu_count(), batch=args.batch,
                particles=args.particles, jax=jax.__version__, data=args.data,
                batches_per_call=len(data),
                glibc_tunables=os.environ.get("GLIBC_TUNABLES", ""))
    b = args.batch * len(data)  # jets per timed call
    for size in args.sizes.split(","):
        impls = {"difphys": setup_difphys(size, data, trim,
                                          tuple(args.trim_quantile) if trim else None,
                                          args.by_length)}
        if have_torch:
            impls["weaver-core"] = setup_weaver(size, data, args.torch_device)
        for mode in ("forward", "train_step"):
            # The implementations take turns, the first alternating between rounds, so that
            # both see the same state of this shared machine; a pause lets the other
            # framework's worker threads stop spinning before a timing starts.
            # Each round keeps the median of its calls; the mean over every timed call is
            # recorded too, because under some allocator settings consecutive calls alternate
            # between two speeds (docs/nn.md) and a median then shows only one of them.
            per_round = {name: [] for name in impls}
            calls = {name: [] for name in impls}
            for r in range(args.rounds):
                order = list(impls) if r % 2 == 0 else list(impls)[::-1]
                for name in order:
                    time.sleep(0.5)
                    times = _call_times(impls[name][0][mode], args.warmup, args.steps)
                    per_round[name].append(statistics.median(times))
                    calls[name].append(times)
            rows = {}
            for name, (_, info) in impls.items():
                t = statistics.median(per_round[name])
                rows[name] = dict(impl=name, size=size, mode=mode, jets_per_s=b / t, seconds=t,
                                  seconds_per_round=per_round[name],
                                  mean_seconds=statistics.fmean(sum(calls[name], [])),
                                  call_seconds=calls[name], **info)
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
