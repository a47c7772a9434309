"""Continual learning via neural pruning (#27, the MLP part): exact preservation of earlier
tasks, its negative controls, the optimiser mask, allocation, capacity and the EWC pieces."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from difphys import nn, train

IN, HIDDEN, TASKS, CLASSES = 12, (24, 16), 3, 3


def _data(task, n=256):
    """A different linear rule per task on Gaussian inputs."""
    rng = np.random.default_rng(task)
    x = rng.normal(size=(n, IN)).astype(np.float32)
    w = rng.normal(size=(IN, CLASSES))
    return jnp.asarray(x), jnp.asarray(np.argmax(x @ w, -1))


def _train(model, task, masks=None, *, steps=60, opt=None, l1=0.0, wrap=True):
    x, y = _data(task)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = opt or optax.adamw(1e-2, weight_decay=0.1)
    if masks is not None and wrap:
        opt = train.frozen(opt, nn.trainable_masks(model, masks, task))
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 counters and floats
        state = opt.init(params)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(m(x, task), y))
        return ce + (l1 * train.activation_l1(m, x, masks) if masks is not None else 0.0)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        with jax.numpy_dtype_promotion("standard"):
            u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    nnx.update(model, params)
    return model


def _clnp_sequence(negative=None):
    """Task 0 trained, allocated and isolated; its logits saved; tasks 1, 2 trained after."""
    model = nn.MultiTaskMLP(IN, HIDDEN, TASKS, CLASSES, rngs=nnx.Rngs(0))
    masks = nn.NeuronMasks.empty(HIDDEN)
    probe = _data(7)[0]
    for t in range(TASKS):
        if t:
            nn.reset_free_units(model, masks, key=jax.random.key(t))
        wrap = not (negative == "unmasked_adamw" and t > 0)
        _train(model, t, masks, l1=3e-2, wrap=wrap)
        activity = train.neuron_activity(model, _data(t)[0])
        masks = train.allocate(masks, activity, 0.2, t)
        if negative != "no_isolation":
            nn.isolate(model, masks)
        if t == 0:
            saved = np.asarray(model(probe, 0))
    return model, masks, saved, np.asarray(model(probe, 0))


def test_earlier_task_logits_are_bit_identical_after_later_tasks():
    model, masks, saved, after = _clnp_sequence()
    assert np.array_equal(saved, after)
    # the later tasks did learn, in units of their own
    used = [sum(int(np.sum(np.asarray(o) == t)) for o in masks.owner) for t in range(TASKS)]
    assert all(u > 0 for u in used[1:]), used
    x, y = _data(2)
    assert float(np.mean(np.argmax(np.asarray(model(x, 2)), -1) == np.asarray(y))) > 0.6


@pytest.mark.parametrize("negative", ["unmasked_adamw", "no_isolation"])
def test_the_exactness_test_fails_without_the_mask_or_the_isolation(negative):
    """Negative controls: plain AdamW (its decoupled decay moves frozen weights), or the
    weights from free units into task 0's units left in place."""
    _, _, saved, after = _clnp_sequence(negative)
    assert not np.array_equal(saved, after)


def test_frozen_gives_exactly_zero_updates_with_adamw_momentum_and_nan_gradients():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    mask = {"w": jnp.array([[True, False, True], [False, True, False]]),
            "b": jnp.array([False, True, False])}
    opt = train.frozen(optax.adamw(0.1, weight_decay=0.5), mask)
    state = opt.init(params)
    # gradients that are large, then NaN in the frozen entries
    for g in (jax.tree.map(jnp.ones_like, params),
              jax.tree.map(lambda m: jnp.where(m, 1.0, jnp.nan), mask)):
        updates, state = opt.update(g, state, params)
        for name in params:
            u = np.asarray(updates[name])
            assert np.all(u[~np.asarray(mask[name])] == 0.0)
            assert np.all(np.isfinite(u)) and np.all(u[np.asarray(mask[name])] != 0.0)
    # gradient masking alone is not enough: AdamW's decay still moves a frozen weight
    plain = optax.adamw(0.1, weight_decay=0.5)
    with jax.numpy_dtype_promotion("standard"):
        u, _ = plain.update(jax.tree.map(jnp.zeros_like, params), plain.init(params), params)
    assert np.any(np.asarray(u["w"])[~np.asarray(mask["w"])] != 0.0)


def test_a_layer_with_no_free_units_trains_with_zero_finite_updates_and_refuses_allocation():
    model = nn.MultiTaskMLP(IN, HIDDEN, TASKS, CLASSES, rngs=nnx.Rngs(1))
    full = nn.NeuronMasks(tuple(jnp.zeros((h,), jnp.int32) for h in HIDDEN))  # all task 0
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    _train(model, 1, full, steps=5, l1=1e-2)
    after = nnx.state(model, nnx.Param)
    for i in range(len(HIDDEN)):  # nothing in the hidden layers moved, nothing is NaN
        for name in ("kernel", "bias"):
            a = np.asarray(after["layers"][i][name][...])
            assert np.all(np.isfinite(a)) and np.array_equal(a, before["layers"][i][name])
    with pytest.raises(ValueError, match="capacity exhausted"):
        train.allocate(full, train.neuron_activity(model, _data(1)[0]), 0.1, 1)


def test_allocate_takes_the_active_free_units_only():
    masks = nn.NeuronMasks((jnp.array([0, -1, -1, -1, -1]),))
    activity = (jnp.array([5.0, 1.0, 0.05, 0.0, 0.5]),)
    new = train.allocate(masks, activity, 0.2, 1)  # 0.2 x the largest free activity (1.0)
    np.testing.assert_array_equal(new.owner[0], [0, 1, -1, -1, 1])
    with pytest.raises(ValueError, match="already owns"):
        train.allocate(new, activity, 0.2, 1)
    with pytest.raises(ValueError, match="threshold"):
        train.allocate(masks, activity, 1.5, 1)


def test_allocate_caps_a_task_at_max_fraction_and_skips_full_layers_on_request():
    masks = nn.NeuronMasks((jnp.array([0, -1, -1, -1, -1]), jnp.array([0, 0])))
    activity = (jnp.array([5.0, 1.0, 0.3, 0.9, 0.5]), jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="hidden layer 1 has no free unit"):
        train.allocate(masks, activity, 0.0, 1)
    # 4 free units, at most ceil(0.4 * 4) = 2: the two most active (1.0 and 0.9)
    new = train.allocate(masks, activity, 0.0, 1, exhausted="skip", max_fraction=0.4)
    np.testing.assert_array_equal(new.owner[0], [0, 1, -1, 1, -1])
    np.testing.assert_array_equal(new.owner[1], [0, 0])
    with pytest.raises(ValueError, match="max_fraction"):
        train.allocate(masks, activity, 0.0, 1, max_fraction=0.0)


def test_capacity_report_counts_units_and_reuse():
    model, masks, _, _ = _clnp_sequence()
    report = train.capacity_report(model, masks)
    for layer, width in zip(report, HIDDEN, strict=True):
        assert layer.units == width
        assert layer.free + sum(layer.used) == width
        assert layer.reused[0] == 0  # task 0 has nothing older to reuse
        assert all(0 <= r <= sum(layer.used[:t]) for t, r in enumerate(layer.reused))
        assert layer.reuse_weight[0] == 0 and all(0 <= w <= 1 for w in layer.reuse_weight)
    # the weight fraction of the last layer for task 2, by hand: |head 2| rows of older units
    owner = np.asarray(masks.owner[-1])
    w = np.abs(np.asarray(model.heads[2].kernel[...])).sum(axis=1)
    expected = w[(owner >= 0) & (owner < 2)].sum() / w.sum()
    np.testing.assert_allclose(report[-1].reuse_weight[2], expected, rtol=1e-6)  # float32


def test_graceful_threshold_picks_the_largest_within_the_budget():
    masks = nn.NeuronMasks((jnp.full((4,), -1),))
    activity = (jnp.array([1.0, 0.6, 0.3, 0.1]),)
    # validation accuracy falls as units are left out: 4 units 0.9, 3: 0.895, 2: 0.85, 1: 0.5
    acc = {4: 0.9, 3: 0.895, 2: 0.85, 1: 0.5}

    def evaluate(cand):
        return 0.9 if cand is None else acc[int(np.sum(np.asarray(cand.owner[0]) == 0))]

    choice = train.graceful_threshold(evaluate, masks, activity, 0, 0.01,
                                      thresholds=(0.0, 0.2, 0.5, 0.8))
    assert choice.threshold == 0.2  # 0.2 keeps 3 units (drop 0.005); 0.5 keeps 2 (drop 0.05)
    np.testing.assert_allclose(choice.freed, [0.0, 0.25, 0.5, 0.75])


def test_activation_l1_and_ewc_penalty_gradients_match_finite_differences():
    """float64 (the suite enables x64): directional derivatives against central differences."""
    model = nn.MultiTaskMLP(4, (5,), 1, 2, rngs=nnx.Rngs(2))
    masks = nn.NeuronMasks((jnp.array([-1, 0, -1, -1, 0]),))
    x = jax.random.normal(jax.random.key(0), (7, 4), jnp.float64)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)

    def l1(p):
        return train.activation_l1(nnx.merge(graphdef, p, rest), x, masks)

    anchor = jax.tree.map(lambda p: p + 0.3, params)
    fisher = jax.tree.map(lambda p: jnp.abs(p) + 0.1, params)

    def ewc(p):
        return train.ewc_penalty(p, [anchor], [fisher], 7.0)

    for f in (l1, ewc):
        g = jax.grad(f)(params)
        leaves, treedef = jax.tree.flatten(params)
        direction = [jax.random.normal(jax.random.key(i), leaf.shape, jnp.float64)
                     for i, leaf in enumerate(leaves)]
        d = jax.tree.unflatten(treedef, direction)
        h = 1e-6
        plus = jax.tree.map(lambda p, v, h=h: p + h * v, params, d)
        minus = jax.tree.map(lambda p, v, h=h: p - h * v, params, d)
        fd = (f(plus) - f(minus)) / (2 * h)
        analytic = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), direction,
                                                      strict=True))
        np.testing.assert_allclose(float(analytic), float(fd), rtol=1e-6, atol=1e-9)
    # the EWC penalty at the anchor itself is zero
    assert float(train.ewc_penalty(anchor, [anchor], [fisher], 7.0)) == 0.0


def test_fisher_diagonal_is_the_mean_squared_gradient():
    def nll(theta, x):
        return 0.5 * (theta["a"] * x - 1.0) ** 2

    xs = [jnp.asarray(v) for v in (0.5, -1.0, 2.0)]
    theta = {"a": jnp.asarray(0.3)}
    expected = np.mean([((0.3 * float(x) - 1.0) * float(x)) ** 2 for x in xs])
    got = train.fisher_diagonal(nll, theta, [(x,) for x in xs])
    np.testing.assert_allclose(float(got["a"]), expected, rtol=1e-6)
