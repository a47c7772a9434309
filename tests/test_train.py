"""Training infrastructure: metrics, the batch iterator, exact resume, sharded steps."""

import dataclasses
import itertools
import math
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from difphys.io import batches, epoch_order
from difphys.nn import ParTConfig, ParticleTransformer
from difphys.testing import run_on_fake_cpu_devices
from difphys.train import accuracy, background_rejection, fit, roc_auc, roc_curve

TINY = ParTConfig(embed_dims=(16,), pair_embed_dims=(8,), num_heads=2, num_layers=1,
                  num_cls_layers=1, num_classes=2)


def _toy_data(key, n=96, particles=6):
    """Two classes of toy jets whose features differ in mean (a learnable task)."""
    # fold_in derives the data keys without consuming ``key`` (the test trains with it)
    k1, k2, k3, k4 = (jax.random.fold_in(key, i) for i in range(4))
    label = jax.random.bernoulli(k1, 0.5, (n,)).astype(jnp.int32)
    features = jax.random.normal(k2, (n, particles, 17), jnp.float32) \
        + 1.0 * label[:, None, None].astype(jnp.float32)
    p3 = jax.random.normal(k3, (n, particles, 3), jnp.float32) + jnp.array([20.0, 0.0, 0.0],
                                                                          jnp.float32)
    energy = jnp.linalg.norm(p3, axis=-1, keepdims=True) + 0.1
    mask = jnp.arange(particles)[None, :] < jax.random.randint(k4, (n, 1), 2, particles + 1)
    return {"features": np.asarray(features), "p4": np.asarray(jnp.concatenate([energy, p3], -1)),
            "mask": np.asarray(mask), "label": np.asarray(label)}


def test_roc_auc_equals_pair_counting_with_ties():
    scores = np.array([0.1, 0.4, 0.4, 0.8, 0.3, 0.4, 0.9, 0.2])
    sig = np.array([0, 1, 0, 1, 0, 1, 1, 0], bool)
    s, b = scores[sig], scores[~sig]
    brute = np.mean((s[:, None] > b[None, :]) + 0.5 * (s[:, None] == b[None, :]))
    assert roc_auc(scores, sig) == pytest.approx(brute, abs=1e-15)


def test_roc_auc_of_two_gaussians(key):
    """AUC of N(d, 1) against N(0, 1) is Phi(d / sqrt 2); 40k each gives SE ~ 0.0017."""
    d, n = 1.0, 40_000
    rng = np.random.default_rng(7)
    scores = np.r_[rng.normal(d, 1.0, n), rng.normal(0.0, 1.0, n)]
    sig = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    assert abs(roc_auc(scores, sig) - 0.5 * (1.0 + math.erf(d / 2.0))) < 4 * 0.0017


def test_roc_curve_and_rejection():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    sig = np.array([1, 1, 0, 1, 0, 0], bool)
    eff_s, eff_b = roc_curve(scores, sig)
    np.testing.assert_allclose(eff_s, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(eff_b, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert background_rejection(scores, sig, 1.0) == pytest.approx(3.0)
    assert background_rejection(scores, sig, 0.5) == np.inf
    assert accuracy(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([0, 0])) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(scores, np.ones(6, bool))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([np.nan, 1.0]), np.array([True, False]))


def test_batches_cover_each_epoch_and_resume_exactly(key):
    data = {"x": np.arange(10), "y": np.arange(10) * 2}
    stream = batches(data, 3, key=key)
    first = [next(stream) for _ in range(9)]  # 3 batches per epoch, 3 epochs
    for epoch in range(3):
        seen = np.concatenate([b["x"] for _, b in first[3 * epoch:3 * epoch + 3]])
        assert len(set(seen)) == 9  # no repeats within an epoch
        np.testing.assert_array_equal(np.sort(seen),
                                      np.sort(epoch_order(key, epoch, 10)[:9]))
    resumed = batches(data, 3, key=key, start_step=4)
    for (i, a), (j, b) in zip(first[4:], [next(resumed) for _ in range(5)], strict=True):
        assert i == j
        np.testing.assert_array_equal(a["x"], b["x"])
        np.testing.assert_array_equal(a["y"], 2 * a["x"])
    with pytest.raises(ValueError, match="leading size"):
        next(batches({"x": np.arange(3), "y": np.arange(4)}, 2, key=key))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(data, 11, key=key))


def test_killed_and_resumed_training_is_bit_identical(key, tmp_path):
    data = _toy_data(key)
    opt = optax.adamw(3e-3)

    def run(steps, ckpt):
        model = ParticleTransformer(TINY, rngs=nnx.Rngs(3))
        fit(model, data, steps=steps, batch_size=16, key=jax.random.fold_in(key, 1),
            optimizer=opt, checkpoint_dir=ckpt, checkpoint_every=3, progress=False)
        return nnx.state(model)

    full = run(6, None)
    run(3, tmp_path / "ckpt")  # the first run stops ("is killed") after step 3
    resumed = run(6, tmp_path / "ckpt")  # a fresh process state resumes from the checkpoint
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    fresh = nnx.state(ParticleTransformer(TINY, rngs=nnx.Rngs(3)))
    assert not all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(fresh), strict=True))


def test_training_learns_a_separable_toy_task(key):
    from difphys.train import predict

    data = _toy_data(key, n=256)
    model = ParticleTransformer(TINY, rngs=nnx.Rngs(0))
    _, history = fit(model, data, steps=60, batch_size=32, key=key,
                     optimizer=optax.adamw(3e-3), progress=False, log_every=20)
    assert history.last("loss") < history.loss[0]
    logits = predict(model, data, batch_size=100)  # 256 = 2 x 100 + a padded batch of 56
    assert logits.shape == (256, 2)
    # chance gives 0.5 with a standard error of about 0.04 for 256 jets
    assert roc_auc(logits[:, 1] - logits[:, 0], data["label"] == 1) > 0.8


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from difphys import sharding
    from difphys.nn import ParTConfig, ParticleTransformer
    from difphys.train import classifier_loss, init_state, make_train_step
    assert jax.device_count() == 4, jax.devices()
    cfg = ParTConfig(embed_dims=(16,), pair_embed_dims=(8,), num_heads=2, num_layers=1,
                     num_cls_layers=1, num_classes=2)
    rng = np.random.default_rng(0)
    n, p = 32, 6
    p3 = rng.normal(size=(n, p, 3)).astype(np.float32) + np.float32([20, 0, 0])
    batch = {"features": rng.normal(size=(n, p, 17)).astype(np.float32),
             "p4": np.concatenate([np.linalg.norm(p3, axis=-1, keepdims=True) + 0.1, p3], -1),
             "mask": np.arange(p)[None, :] < rng.integers(2, p + 1, (n, 1)),
             "label": rng.integers(0, 2, n).astype(np.int32)}
    mesh = sharding.make_mesh()
    sb = sharding.shard_batch(batch, mesh)
    assert len(sb["features"].sharding.device_set) == 4
    key = jax.random.key(1)
    # Parameters are compared after SGD steps, where an update is lr times the gradient.
    # Under Adam, parameters whose exact gradient is zero (biases in front of BatchNorms, the
    # key bias of attention, the pair input BatchNorm's offset) move by ~lr * sign(rounding
    # noise), which differs between one and four devices.
    for opt, param_atol in ((optax.adamw(1e-3), None), (optax.sgd(0.1), 1e-5)):
        graphdef, state = init_state(ParticleTransformer(cfg, rngs=nnx.Rngs(0)), opt)
        step = jax.jit(make_train_step(graphdef, classifier_loss, opt))
        s1, m1 = step(key, state, batch)
        s1, m1b = step(key, s1, batch)
        s4 = jax.device_put(state, sharding.replicated(mesh))
        s4, m4 = step(key, s4, sb)
        s4, m4b = step(key, s4, sb)
        np.testing.assert_allclose(float(m4.loss), float(m1.loss), rtol=1e-5)
        np.testing.assert_allclose(float(m4b.loss), float(m1b.loss), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s4.params), strict=True):
            assert b.sharding.is_fully_replicated  # the parameters stay replicated
            if param_atol is not None:
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=param_atol)
    print("SHARDED-TRAIN-OK", float(m1.loss), float(m4.loss))
    """
)


def test_sharded_step_on_four_fake_devices_matches_one_device():
    run_on_fake_cpu_devices(SHARDED, expect="SHARDED-TRAIN-OK")


def test_trim_padding_keeps_every_real_particle_and_rounds_up():
    from difphys.io import trim_padding

    n, padded = 5, 32
    mask = np.zeros((n, padded), bool)
    mask[0, :3] = True
    mask[1, [0, 9]] = True  # a gap: the cut follows the last real index, not the count
    batch = {"mask": mask, "features": np.arange(n * padded * 2.0).reshape(n, padded, 2),
             "label": np.arange(n), "jet_pt": np.ones((n, 3)), "pairs": np.ones((n, padded, 7))}
    cut = trim_padding(batch, 4)
    assert cut["mask"].shape == (n, 12)  # last real index 9 -> 10 particles -> 12
    np.testing.assert_array_equal(cut["mask"].sum(axis=1), mask.sum(axis=1))
    np.testing.assert_array_equal(cut["features"], batch["features"][:, :12])
    assert cut["pairs"].shape == (n, 12, 7)
    assert cut["label"] is batch["label"] and cut["jet_pt"] is batch["jet_pt"]
    assert trim_padding(batch, 5)["mask"].shape[1] == 10
    mask[2, padded - 1] = True  # rounding never passes the padded length
    assert trim_padding(batch, 5)["mask"].shape[1] == padded
    assert trim_padding({"mask": np.zeros((2, 8), bool)}, 4)["mask"].shape == (2, 4)
    with pytest.raises(ValueError, match="positive integer"):
        trim_padding(batch, 0)
    with pytest.raises(KeyError, match="mask"):
        trim_padding({"features": batch["features"]}, 4)
    with pytest.raises(ValueError, match="jets, particles"):
        trim_padding({"mask": np.ones((2, 3, 4), bool)}, 4)


def test_trimmed_batches_train_and_predict_like_padded_ones(key):
    """ParT does not depend on the padding length (BatchNorm statistics over real particles
    only), so training on batches cut to their longest jet must follow the same trajectory as
    on the padded batches: without dropout, in float64, to rounding."""
    from difphys.train import predict

    data = _toy_data(key, n=64, particles=6)
    extra = 10  # pad the six-particle jets to 16
    padded = {"features": np.pad(data["features"], ((0, 0), (0, extra), (0, 0))).astype(float),
              "p4": np.pad(data["p4"], ((0, 0), (0, extra), (0, 0))).astype(float),
              "mask": np.pad(data["mask"], ((0, 0), (0, extra))), "label": data["label"]}
    _, first = next(batches(padded, 16, key=key, trim=4))
    assert first["mask"].shape[1] == 8 and first["features"].shape[1] == 8
    cfg = dataclasses.replace(TINY, dropout=0.0, attn_dropout=0.0, activation_dropout=0.0,
                              fc_dropout=0.0)
    states, logits = [], []
    for trim in (None, 4):
        model = ParticleTransformer(cfg, rngs=nnx.Rngs(5), param_dtype=jnp.float64)
        # Flax's norms promote their statistics with float32: standard promotion for float64
        with jax.numpy_dtype_promotion("standard"):
            fit(model, padded, steps=3, batch_size=16, key=jax.random.clone(key),
                optimizer=optax.sgd(0.05),
                progress=False, log_every=1, trim=trim)
            logits.append(predict(model, padded, batch_size=40, trim=trim))
        states.append(jax.tree.leaves(nnx.state(model, nnx.Param)))
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        states[0], jax.tree.leaves(nnx.state(ParticleTransformer(
            cfg, rngs=nnx.Rngs(5), param_dtype=jnp.float64), nnx.Param)), strict=True))
    assert moved > 1e-3  # training did change the parameters
    for a, b in zip(*states, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-10)
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-6, atol=1e-6)  # float32 output
    with pytest.raises(KeyError, match="mask"):
        next(batches({"x": np.arange(4)}, 2, key=key, trim=4))


def test_quantile_trim_drops_random_particles_of_long_jets_only():
    """weaver-core's training-time policy: the length is a quantile of the jet lengths; longer
    jets keep a random subset of that many particles in their original order, shorter jets
    keep all of theirs; the draw is reproducible from (key, step)."""
    from difphys.io import trim_padding

    rng = np.random.default_rng(3)
    n, padded = 200, 40
    counts = rng.integers(1, padded + 1, n)
    mask = np.arange(padded)[None, :] < counts[:, None]
    index = np.where(mask, np.arange(padded)[None, :], -1).astype(float)
    batch = {"mask": mask, "index": index[..., None], "label": np.arange(n)}
    cut = trim_padding(batch, 4, quantile=0.5, rng=np.random.default_rng(0))
    length = cut["mask"].shape[1]
    assert length == -(-int(np.ceil(np.quantile(counts, 0.5))) // 4) * 4
    kept = cut["mask"].sum(axis=1)
    np.testing.assert_array_equal(kept, np.minimum(counts, length))
    got = cut["index"][..., 0]
    np.testing.assert_array_equal(got >= 0, cut["mask"])  # real entries carry real indices
    for row, c in zip(got, counts, strict=True):
        real = row[row >= 0]
        assert np.all(np.diff(real) > 0) and np.all(real < c)  # original order, own particles
    long = counts > length  # a particle of a long jet survives with probability length/count
    survived = np.zeros(padded)
    for row in got[long]:
        survived[row[row >= 0].astype(int)] += 1
    expected = sum(np.where(np.arange(padded) < c, length / c, 0.0) for c in counts[long])
    sel = expected > 20
    assert np.all(np.abs(survived[sel] - expected[sel]) < 5 * np.sqrt(expected[sel]))
    # quantile >= 1 (a (0.9, 1.02)-style draw above 1) is the exact cut
    assert trim_padding(batch, 4, quantile=1.0, rng=rng)["mask"].shape[1] == padded
    with pytest.raises(ValueError, match="rng"):
        trim_padding(batch, 4, quantile=0.5)
    with pytest.raises(ValueError, match="quantile"):
        trim_padding(batch, 4, quantile=(0.9, 0.5), rng=rng)
    key = jax.random.key(0)
    def first_three():
        return list(itertools.islice(
            batches(batch, 50, key=key, trim=4, trim_quantile=(0.5, 0.9)), 3))

    for (i, x), (j, y) in zip(first_three(), first_three(), strict=True):
        assert i == j
        np.testing.assert_array_equal(x["index"], y["index"])
    with pytest.raises(ValueError, match="needs trim"):
        next(batches(batch, 50, key=key, trim_quantile=0.9))


def test_length_buckets_cover_each_epoch_with_sorted_pools(key):
    """bucket=k: every example once per epoch, in the examples of the plain epoch order; each
    pool of k batches is cut from that pool sorted by length (so the batches' length ranges
    do not overlap), the batches are visited in a random order, and a resumed stream sees the
    same batches."""
    from difphys.io import epoch_batches

    n, size, k = 103, 8, 4  # 12 batches per epoch: pools of 4, 4, 4; 7 examples left out
    lengths = np.random.default_rng(1).integers(1, 60, n)
    plain = epoch_batches(key, 2, n, size)
    np.testing.assert_array_equal(plain.ravel(), np.concatenate(
        [np.sort(r) for r in epoch_order(key, 2, n)[:96].reshape(12, size)]))
    rows = epoch_batches(key, 2, n, size, lengths=lengths, bucket=k)
    assert rows.shape == (12, size)
    np.testing.assert_array_equal(np.sort(rows.ravel()), np.sort(plain.ravel()))
    order = epoch_order(key, 2, n)[:96]
    pool_of = {int(i): p for p in range(3) for i in order[p * k * size:(p + 1) * k * size]}
    pools = {}
    for r in rows:
        assert len({pool_of[int(i)] for i in r}) == 1  # a batch never mixes pools
        pools.setdefault(pool_of[int(r[0])], []).append(lengths[r])
    for members in pools.values():
        ranges = sorted((ls.min(), ls.max()) for ls in members)
        assert all(hi <= lo for (_, hi), (lo, _) in itertools.pairwise(ranges))
    visited = [pool_of[int(r[0])] for r in rows]
    assert visited != sorted(visited)  # not visited pool by pool (P = 4!^3 / 12! = 1/34650)
    np.testing.assert_array_equal(rows, epoch_batches(key, 2, n, size, lengths=lengths,
                                                      bucket=k))
    data = {"mask": np.arange(60)[None, :] < lengths[:, None], "id": np.arange(n)}
    stream = list(itertools.islice(batches(data, size, key=key, trim=4, bucket=k), 30))
    resumed = list(itertools.islice(batches(data, size, key=key, trim=4, bucket=k,
                                            start_step=25), 5))
    for (i, a), (j, b) in zip(stream[25:], resumed, strict=True):
        assert i == j
        np.testing.assert_array_equal(a["id"], b["id"])
    np.testing.assert_array_equal(stream[24][1]["id"], rows[0])  # step 24: epoch 2, batch 0
    with pytest.raises(ValueError, match="needs trim"):
        next(batches(data, size, key=key, bucket=k))
    with pytest.raises(ValueError, match="jets, particles"):
        next(batches({"mask": np.ones(n, bool)}, size, key=key, trim=4, bucket=k))
    with pytest.raises(ValueError, match="bucket"):
        epoch_batches(key, 0, n, size, lengths=lengths, bucket=0)
    with pytest.raises(ValueError, match="lengths"):
        epoch_batches(key, 0, n, size, bucket=2)


def test_prediction_by_length_returns_the_input_order(key):
    """predict(by_length=True) batches the jets sorted by particle count; in evaluation mode a
    jet's logits depend on that jet alone, so they equal the unsorted ones, in input order."""
    from difphys.train import predict

    data = _toy_data(key, n=70, particles=12)
    model = ParticleTransformer(TINY, rngs=nnx.Rngs(2))
    plain = predict(model, data, batch_size=16, trim=4, by_length=False)
    np.testing.assert_allclose(predict(model, data, batch_size=16, trim=4), plain,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(predict(model, data, batch_size=16, by_length=True), plain,
                               rtol=1e-5, atol=1e-5)
    assert np.ptp(plain[:, 1] - plain[:, 0]) > 1e-3  # jets differ: a permutation would show
    with pytest.raises(ValueError, match="no jets"):
        predict(model, {k: v[:0] for k, v in data.items()})


@pytest.mark.slow  # bucketed resume; tests/test_train.py::test_killed_and_resumed_training_is_bit_identical runs in make test
def test_fit_with_length_buckets_resumes_bit_identically(key, tmp_path):
    """fit(bucket=) trains on the length-grouped batches of io.batches and, like every run,
    a killed and resumed one ends with the parameters of an uninterrupted one."""
    data = _toy_data(key, n=64, particles=12)

    def run(steps, ckpt, bucket=2):
        model = ParticleTransformer(TINY, rngs=nnx.Rngs(3))
        fit(model, data, steps=steps, batch_size=16, key=jax.random.clone(key),
            optimizer=optax.adam(1e-2),
            checkpoint_dir=ckpt, checkpoint_every=2, progress=False, trim=4, bucket=bucket)
        return jax.tree.leaves(nnx.state(model, nnx.Param))

    whole = run(6, tmp_path / "whole")
    unbucketed = run(6, None, bucket=None)  # other batches, so other parameters
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(whole, unbucketed, strict=True)) \
        > 1e-4
    run(2, tmp_path / "split")
    resumed = run(6, tmp_path / "split")
    fresh = jax.tree.leaves(nnx.state(ParticleTransformer(TINY, rngs=nnx.Rngs(3)), nnx.Param))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(whole, fresh, strict=True)) > 1e-3
    for a, b in zip(whole, resumed, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_TRACES = []


def _counting_loss(model, batch, *, key):
    _TRACES.append(1)  # runs once per trace (compilation), not per step
    from difphys.train import classifier_loss

    return classifier_loss(model, batch, key=key)


def test_a_second_fit_call_does_not_recompile(key):
    """The compiled step is cached per (model structure, loss, optimiser): a second ``fit``
    with the default optimiser reuses it (one trace in total)."""
    data = _toy_data(key)
    _TRACES.clear()
    for seed in (1, 2):
        fit(ParticleTransformer(TINY, rngs=nnx.Rngs(seed)), data, steps=2, batch_size=16,
            key=jax.random.fold_in(key, seed), loss_fn=_counting_loss, progress=False)
    assert len(_TRACES) == 1
