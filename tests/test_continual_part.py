"""Continual learning via neural pruning on the Particle Transformer (#27, part 2): earlier
tasks' logits and BatchNorm statistics stay bit-identical while later tasks train, the two
negative controls (plain LayerNorm, unmasked AdamW) break that, a unit group without free units
trains with zero finite updates, the masked LayerNorm's algebra, and float64 gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.test_util import check_grads

from difphys import nn, train
from difphys.nn._continual_part import _Norm, _Spec

CFG = nn.ParTConfig(input_dim=7, embed_dims=(16, 16), pair_embed_dims=(8,), num_heads=4,
                    num_layers=1, num_cls_layers=1, ffn_ratio=2)


def _jets(seed, n_jets=128, n=6, dtype=np.float32):
    """Random jets (massless-ish four-momenta with E > |p|) and one label rule per seed."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n_jets, n, CFG.input_dim)).astype(dtype)
    p4 = rng.normal(size=(n_jets, n, 4)) * 10.0
    p4[..., 0] = np.linalg.norm(p4[..., 1:], axis=-1) + 1.0
    mask = np.arange(n)[None] < rng.integers(2, n + 1, size=n_jets)[:, None]
    label = (f[:, 0, seed % CFG.input_dim] > 0).astype(np.int32)
    return dict(features=f, p4=p4.astype(dtype), mask=mask, label=label)


def _owners(model, t):
    """Task ``s <= t`` owns the units ``u`` with ``u % 4 == s``; the rest are free."""
    return nn.NeuronMasks(tuple(
        jnp.asarray(np.where(np.arange(h) % 4 <= t, np.arange(h) % 4, nn.FREE), jnp.int32)
        for h in model.hidden))


def _sequence(n_tasks, *, negative=None):
    """Train tasks ``0 .. n_tasks - 1`` in order (CLNP), saving after each the logits of every
    task so far on a fixed batch and the BatchNorm statistics."""
    model = nn.MultiTaskParT(CFG, 3, 2, rngs=nnx.Rngs(0),
                             masked_norm=negative != "plain_layernorm")
    probe = _jets(99, 16)
    saved = []
    for t in range(n_tasks):
        masks, data = _owners(model, t - 1), _jets(t)
        if negative == "unmasked_adamw" and t > 0:
            nn.isolate(model, masks)
            model.task = t
            train.fit(model, data, steps=8, batch_size=32, key=jax.random.key(t),
                      optimizer=optax.adamw(1e-3), loss_fn=train.continual_loss(1e-3),
                      progress=False)
        else:
            train.finetune(model, data, "continual", steps=8, batch_size=32,
                           key=jax.random.key(t), masks=masks, task=t, l1=1e-3,
                           learning_rate=3e-3)
        nn.isolate(model, _owners(model, t))
        logits = {}
        for s in range(t + 1):
            model.task = s
            logits[s] = train.predict(model, probe, batch_size=16)
        stats = [np.array(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]
        saved.append((logits, stats))
    return saved


@pytest.fixture(scope="module")
def sequence():
    return _sequence(3)


def test_earlier_task_logits_and_batch_statistics_are_bit_identical(sequence):
    for t in range(3):
        for later in range(t + 1, 3):
            np.testing.assert_array_equal(sequence[later][0][t], sequence[t][0][t])
    stats0, stats1, stats2 = (sequence[t][1] for t in range(3))
    for a, b, c in zip(stats0, stats1, stats2, strict=True):  # (tasks, channels)
        np.testing.assert_array_equal(c[0], a[0])  # row 0 after tasks 1 and 2
        np.testing.assert_array_equal(c[1], b[1])  # row 1 after task 2
    # not vacuous: the later tasks trained (their statistics rows moved, their logits differ)
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(stats0, stats2, strict=True))
    assert not np.array_equal(sequence[2][0][2], sequence[2][0][1])


@pytest.mark.parametrize("negative", ["plain_layernorm", "unmasked_adamw"])
def test_the_exactness_test_fails_without_masked_layernorm_or_frozen_adamw(negative):
    saved = _sequence(2, negative=negative)
    assert not np.array_equal(saved[1][0][0], saved[0][0][0])


@pytest.mark.slow  # CI time: make test took 58 min here with it
def test_a_group_without_free_units_gets_zero_finite_updates_and_refuses_allocation():
    model = nn.MultiTaskParT(CFG, 2, 2, rngs=nnx.Rngs(1))
    full = model.unit_names.index("block0.ffn")
    owner = [np.full(h, nn.FREE) for h in model.hidden]
    owner[full][:] = 0
    owner[0][:4] = 0
    masks = nn.NeuronMasks(tuple(jnp.asarray(o, jnp.int32) for o in owner))
    nn.isolate(model, masks)
    before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
    data = _jets(3)
    train.finetune(model, data, "continual", steps=5, batch_size=32, key=jax.random.key(0),
                   masks=masks, task=1, l1=1e-2)
    after = nnx.state(model, nnx.Param)
    for leaf in jax.tree.leaves(after):
        assert np.all(np.isfinite(np.asarray(leaf)))
    fc1 = model.blocks[0].fc1
    np.testing.assert_array_equal(np.asarray(fc1.kernel[...]), before["blocks"][0]["fc1"]["kernel"])
    np.testing.assert_array_equal(np.asarray(fc1.bias[...]), before["blocks"][0]["fc1"]["bias"])
    assert not np.array_equal(np.asarray(model.heads[1].kernel[...]),
                              before["heads"][1]["kernel"])
    # the L1 gradient of a group without free units is exactly zero, and finite elsewhere
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    grads = jax.jit(jax.grad(lambda p: train.activation_l1(nnx.merge(graphdef, p, rest), data,
                                                           masks, 1)))(params)
    assert not np.any(np.asarray(grads["blocks"][0]["post_fc_norm"]["scale"]))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
    activity = train.neuron_activity(model, data, 1)
    with pytest.raises(ValueError, match=f"hidden layer {full} has no free unit"):
        train.allocate(masks, activity, 0.1, 1)


def test_masked_layernorm_normalises_each_owner_group_on_its_own():
    """And with every channel in one group it is the plain LayerNorm."""
    model = nn.MultiTaskParT(CFG, 3, 2, rngs=nnx.Rngs(0))
    owner = np.array([0, 1, 0, -1, 1, 0, -1, 2, 0, 1, 0, -1, 1, 0, -1, 2])
    masks = list(model.masks.owner)
    masks[model.unit_names.index("residual")] = jnp.asarray(owner, jnp.int32)
    nn.isolate(model, nn.NeuronMasks(tuple(masks)))
    norm = _Norm(_Spec("residual"), 16, 3, True, param_dtype=jnp.float64)
    x = np.random.default_rng(0).normal(size=(5, 16)) * 3 + 1

    class Ctx:  # what _Norm reads of a forward pass
        task = 0
        groups = staticmethod(lambda spec: np.eye(4, dtype=bool)[np.where(owner < 0, 3, owner)])

    y = np.asarray(norm(jnp.asarray(x), Ctx))
    for g in (0, 1, 2, -1):  # each group's sums over the layer width (others count as 0)
        sel = owner == g
        mean = x[:, sel].sum(1, keepdims=True) / 16
        var = ((x[:, sel] - mean) ** 2).sum(1, keepdims=True) / 16
        ref = (x[:, sel] - mean) / np.sqrt(var + 1e-5)
        np.testing.assert_allclose(y[:, sel], ref, rtol=1e-12, atol=1e-12)
    owner = np.full(16, -1)
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(norm(jnp.asarray(x), Ctx)), ref, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.slow  # CI time: make test took 58 min here with it
def test_trainable_masks_open_the_task_rows_and_the_free_channels_only():
    model = nn.MultiTaskParT(CFG, 3, 2, rngs=nnx.Rngs(0))
    masks = _owners(model, 0)
    flags = nn.trainable_masks(model, masks, 1)
    assert flags["input_bn"]["scale"][...].tolist() == [[False] * 7, [True] * 7, [False] * 7]
    res = np.asarray(masks.owner[model.unit_names.index("residual")])
    w_resid = np.asarray(flags["blocks"][0]["w_resid"]["value_"][...])
    np.testing.assert_array_equal(w_resid, res == nn.FREE)
    head = np.asarray(flags["heads"][1]["kernel"][...])
    assert head[res == 0].all() and head[res == nn.FREE].all()  # task 1 is open: reads free
    assert not np.asarray(flags["heads"][0]["kernel"][...]).any()
    # once task 1 owns units its head no longer reads the free channels
    masks1 = _owners(model, 1)
    res1 = np.asarray(masks1.owner[model.unit_names.index("residual")])
    head = np.asarray(nn.trainable_masks(model, masks1, 1)["heads"][1]["kernel"][...])
    assert head[(res1 >= 0) & (res1 <= 1)].all() and not head[res1 == nn.FREE].any()
    # a kernel from free channels into task-0 channels is cut and frozen
    fc2 = np.asarray(flags["blocks"][0]["fc2"]["kernel"][...])
    ffn = np.asarray(masks.owner[model.unit_names.index("block0.ffn")])
    assert not fc2[np.ix_(ffn == nn.FREE, res == 0)].any()
    assert fc2[np.ix_(ffn == 0, res == nn.FREE)].all()


@pytest.mark.slow  # CI time: make test took 58 min here with it
def test_capacity_report_counts_the_groups_and_the_reuse_of_older_channels():
    model = nn.MultiTaskParT(CFG, 3, 2, rngs=nnx.Rngs(0))
    masks = _owners(model, 1)
    nn.isolate(model, masks)
    report = train.capacity_report(model, masks)
    assert len(report) == len(model.unit_names)
    for entry, h in zip(report, model.hidden, strict=True):
        assert entry.units == h and entry.free + sum(entry.used) == h
        assert entry.reused[0] == 0
    res = report[model.unit_names.index("residual")]
    assert res.reused[1] == res.used[0]  # task 1's units read every task-0 channel
    assert 0 < res.reuse_weight[1] < 1 and res.reuse_weight[0] == 0


@pytest.mark.slow  # CI time: make test took 58 min here with it
def test_gradients_match_finite_differences_in_float64():
    model = nn.MultiTaskParT(CFG, 2, 2, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    masks = _owners(model, 0)
    nn.isolate(model, masks)
    model.eval()  # running statistics (a training-mode pass would also update them)
    data = _jets(5, n_jets=3, n=4, dtype=np.float64)
    f, p4, mask = data["features"], data["p4"], data["mask"]
    check_grads(lambda x: model(x, jnp.asarray(p4), mask, 1), (jnp.asarray(f),), order=1,
                modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)
    check_grads(lambda q: model(jnp.asarray(f), q, mask, 0), (jnp.asarray(p4),), order=1,
                modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    w = params["blocks"][0]["fc1"]["kernel"][...]

    def penalty(kernel):
        p = jax.tree.map(lambda x: x, params)
        p["blocks"][0]["fc1"]["kernel"] = nnx.Param(kernel)
        return train.activation_l1(nnx.merge(graphdef, p, rest), data, masks, 1)

    check_grads(penalty, (w,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)
