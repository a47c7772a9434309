"""The one training loop (train/_run.py) and the result types it and io return: io.Table
checks its rows, is a PyTree and selects rows of every column; History holds the logged
columns; training_loop resumes exactly (a run split in two equals one run) and runs the flow
trainer, the VQ-VAE and NNX models alike."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from difphys import flows, train
from difphys.io import Table, concatenate


def test_table_checks_rows_selects_and_is_a_pytree():
    t = Table(features=np.zeros((5, 3, 2)), mask=np.ones((5, 3), bool), label=np.arange(5))
    assert t.n_rows == 5 and len(t) == 3 and set(t) == {"features", "mask", "label"}
    assert t.mask is t["mask"]
    sub = t.take(np.array([4, 1]))
    assert isinstance(sub, Table) and list(sub.label) == [4, 1]
    assert list(concatenate([t, sub]).label) == [0, 1, 2, 3, 4, 4, 1]
    assert list(t.select("label", "mask")) == ["label", "mask"]
    assert t.replace(weight=np.ones(5)).n_rows == 5
    with pytest.raises(ValueError, match="label: 4"):
        Table(mask=np.ones((5, 3)), label=np.arange(4))
    with pytest.raises(KeyError, match="no column 'p4'"):
        t["p4"]
    with pytest.raises(AttributeError, match="read-only"):
        t.mask = None
    # a PyTree: jit and tree_map see the columns, the names are the structure
    doubled = jax.jit(lambda b: jax.tree.map(lambda x: 2 * x, b))(t.select("label"))
    assert isinstance(doubled, Table) and list(np.asarray(doubled.label)) == [0, 2, 4, 6, 8]
    leaves, treedef = jax.tree.flatten(t)
    assert len(leaves) == 3 and jax.tree.unflatten(treedef, leaves).n_rows == 5


def test_history_columns_and_rows():
    h = train.History.from_rows([10, 20], [{"loss": jnp.asarray(2.0), "acc": 0.5},
                                            {"loss": jnp.asarray(1.0), "acc": 0.75}])
    assert h.n_rows == 2 and list(h.step) == [10, 20]
    assert h.last("loss") == 1.0 and list(h.acc) == [0.5, 0.75]
    assert h.rows()[1] == {"step": 20, "loss": 1.0, "acc": 0.75}
    with pytest.raises(KeyError, match="no column 'accuracy'"):
        h["accuracy"]


class QState(NamedTuple):
    step: jax.Array
    theta: jax.Array
    opt: object


def _quadratic_trainer(optimizer):
    """Adam on E_x[(theta - x)^2] with x ~ N(3, 1) drawn from the step key: the minimum is
    theta = 3, the loop's key handling decides every draw."""

    def init(key):
        del key
        theta = jnp.zeros(())
        with jax.numpy_dtype_promotion("standard"):
            return QState(jnp.zeros((), jnp.int32), theta, optimizer.init(theta))

    def step(key, state):
        x = 3.0 + jax.random.normal(key, (16,))
        loss, g = jax.value_and_grad(lambda t: jnp.mean((t - x) ** 2))(state.theta)
        with jax.numpy_dtype_promotion("standard"):
            updates, opt = optimizer.update(g, state.opt)
            theta = optax.apply_updates(state.theta, updates)
        return QState(state.step + 1, theta, opt), train.StepInfo(
            loss, jnp.zeros((), jnp.int32), None)

    return train.Trainer(init, step)


def _run(trainer, state, key, steps, **kw):
    return train.training_loop(jax.jit(trainer.step), state, key=key, steps=steps,
                               progress=False, **kw)


def test_training_loop_resumes_exactly_and_logs():
    trainer = _quadratic_trainer(optax.adam(0.1))
    key = jax.random.key(3)
    state0 = trainer.init(jax.random.key(0))
    full, hist = _run(trainer, state0, key, 200, log_every=1)
    assert abs(float(full.theta) - 3.0) < 0.2  # converges to the minimum
    assert list(hist.step) == list(range(1, 201))
    # E[loss] = (theta - 3)^2 + 1: about 10 at the start, 1 at the end
    assert np.mean(hist.loss[:5]) > 5.0 and np.mean(hist.loss[-50:]) < 1.5
    _, sparse = _run(trainer, state0, key, 200, log_every=40)
    assert list(sparse.step) == [40, 80, 120, 160, 200]
    np.testing.assert_array_equal(sparse.loss, hist.loss[39::40])
    half, _ = _run(trainer, state0, key, 120)
    resumed, _ = _run(trainer, half, key, 200)
    assert int(resumed.step) == 200
    assert float(resumed.theta) == float(full.theta)  # same keys, same draws: exact


def test_training_loop_checkpoints_and_resumes_from_disk(tmp_path):
    trainer = _quadratic_trainer(optax.sgd(0.05))
    key = jax.random.key(4)
    state0 = trainer.init(jax.random.key(0))
    full, _ = _run(trainer, state0, key, 30)
    _run(trainer, state0, key, 10, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=5)
    resumed, hist = _run(trainer, state0, key, 30, checkpoint_dir=tmp_path / "ckpt")
    assert float(resumed.theta) == float(full.theta)
    assert hist.step[0] == 20  # the resumed run only did steps 11..30 (logged every 10)


def test_training_loop_rejects_bad_settings():
    trainer = _quadratic_trainer(optax.sgd(0.1))
    with pytest.raises(ValueError, match="steps must be positive"):
        _run(trainer, trainer.init(None), jax.random.key(0), 0)
    with pytest.raises(ValueError, match="log_every"):
        _run(trainer, trainer.init(None), jax.random.key(0), 5, log_every=0)


def test_train_flow_resumes_from_its_state_exactly():
    """flows.train_flow runs in the same loop: 6 steps, or 3 then 3 more from the state,
    give identical flow parameters."""
    target = flows.gmm40()
    flow = flows.make_spline_flow(jax.random.key(1), 2, n_layers=2, hidden=8, n_bins=4,
                                  scale=20.0, bound=4.0)
    cfg = flows.TrainConfig(batch=16, n_levels=2, n_leapfrog=2, step_size=0.5)
    kw = dict(optimizer=optax.adam(1e-3), config=cfg, progress=False)
    _, full, hist = flows.train_flow(jax.random.key(0), "fab", flow, target.log_prob, steps=6,
                                     **kw)
    _, half, _ = flows.train_flow(jax.random.key(0), "fab", flow, target.log_prob, steps=3, **kw)
    _, resumed, _ = flows.train_flow(jax.random.key(0), "fab", flow, target.log_prob, steps=6,
                                     state=half, **kw)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert list(hist.step) == [1, 2, 3, 4, 5, 6]
    assert np.all(np.diff(hist.n_target_values) > 0)  # cumulative counters
    assert np.all((hist.acceptance >= 0) & (hist.acceptance <= 1))
