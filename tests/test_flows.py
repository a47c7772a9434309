"""Flows, AIS, FAB training, metrics, the physics target and LHE output."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from difphys import flows, jobs

# ------------------------------------------------------------------------------ bijections


def _perturbed(flow, scale=0.05, seed=1):
    leaves, tree = jax.tree_util.tree_flatten(flow)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree,
        [
            x + scale * jax.random.normal(k, x.shape, x.dtype)
            for x, k in zip(leaves, keys, strict=True)
        ],
    )


@pytest.mark.parametrize(
    "support, kwargs",
    [("real", {"actnorm": True, "scale": 3.0, "loc": 1.0}), ("real", {}), ("unit_cube", {})],
)
def test_bijection_round_trip_and_log_det(support, kwargs):
    flow = _perturbed(
        flows.make_spline_flow(
            jax.random.key(0), 5, support=support, n_layers=4, hidden=16, **kwargs
        )
    )
    key = jax.random.key(2)
    z = (
        jax.random.uniform(key, (64, 5))
        if support == "unit_cube"
        else 2.0 * jax.random.normal(key, (64, 5))
    )
    x, ld = flow.forward_and_log_det(z)
    z2, ld_inv = flow.inverse_and_log_det(x)
    np.testing.assert_allclose(z2, z, atol=1e-10)
    np.testing.assert_allclose(ld_inv, -ld, atol=1e-10)
    jac = jax.vmap(jax.jacobian(lambda v: flow.forward_and_log_det(v)[0]))(z)
    np.testing.assert_allclose(jnp.linalg.slogdet(jac)[1], ld, atol=1e-10)
    xs, log_q = flow.sample_and_log_prob(jax.random.key(3), 16)
    np.testing.assert_allclose(flow.log_prob(xs), log_q, atol=1e-10)
    if support == "unit_cube":
        assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))


def test_new_flow_is_identity():
    flow = flows.make_spline_flow(jax.random.key(0), 3, scale=2.0, loc=-1.0)
    z = jax.random.normal(jax.random.key(1), (10, 3))
    x, ld = flow.forward_and_log_det(z)
    np.testing.assert_allclose(x, -1.0 + 2.0 * z, atol=1e-12)
    np.testing.assert_allclose(ld, 3 * np.log(2.0), atol=1e-12)


def test_flow_log_prob_gradient_matches_finite_differences():
    from difphys.testing import check_grad_fd

    flow = _perturbed(
        flows.make_spline_flow(jax.random.key(0), 3, support="unit_cube", n_layers=2, hidden=16)
    )
    check_grad_fd(lambda x: flow.log_prob(x), jnp.array([0.2, 0.55, 0.9]))


@pytest.mark.parametrize("support", ["real", "unit_cube"])
def test_rolled_scan_equals_unrolled_on_cpu(support):
    """The rolled lax.scan (the path other backends take) runs in CI too: values, samples and
    parameter gradients equal the unrolled path's (float64), at a batch the XLA:CPU bug of the
    rolled derivative does not reach."""
    import dataclasses

    unrolled = _perturbed(
        flows.make_spline_flow(
            jax.random.key(0), 4, support=support, n_layers=4, hidden=16, scan="unrolled"
        )
    )
    rolled = dataclasses.replace(unrolled, scan="rolled")
    x = unrolled.sample(jax.random.key(5), 64)
    np.testing.assert_allclose(rolled.sample(jax.random.key(5), 64), x, rtol=1e-12)
    np.testing.assert_allclose(rolled.log_prob(x), unrolled.log_prob(x), rtol=1e-12)

    def loss(flow):
        return -jnp.mean(flow.log_prob(x))

    g_rolled = jax.jit(jax.grad(loss))(rolled)
    g_unrolled = jax.jit(jax.grad(loss))(unrolled)
    for a, b in zip(jax.tree.leaves(g_rolled), jax.tree.leaves(g_unrolled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # the traced programs differ: the rolled scan steps one layer at a time, the other all 4
    assert "unroll=1" in str(jax.make_jaxpr(loss)(rolled))
    assert "unroll=4" in str(jax.make_jaxpr(loss)(unrolled))


def test_flow_errors():
    with pytest.raises(ValueError, match="scan must be"):
        flows.make_spline_flow(jax.random.key(0), 3, scan="fast")
    with pytest.raises(ValueError, match="dim >= 2"):
        flows.make_spline_flow(jax.random.key(0), 1)
    with pytest.raises(ValueError, match="unit cube"):
        flows.make_spline_flow(jax.random.key(0), 3, support="unit_cube", actnorm=True)
    with pytest.raises(ValueError, match="support"):
        flows.make_spline_flow(jax.random.key(0), 3, support="sphere")
    flow = flows.make_spline_flow(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="last axis 3"):
        flow.log_prob(jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="last axis 2"):
        flows.gmm40().log_prob(jnp.zeros(3))
    with pytest.raises(ValueError, match="mapping"):
        flows.matrix_element_target(mapping="curved")


# ------------------------------------------------------------------------------------ AIS


def test_ais_with_exact_flow_has_zero_weight_variance():
    flow = _perturbed(flows.make_spline_flow(jax.random.key(0), 2, n_layers=2, hidden=16))
    state = flows.ais_init(3, 0.3)
    _, res = flows.ais_step(jax.random.key(1), state, flow, flow.log_prob, 512, alpha=2.0)
    np.testing.assert_allclose(res.log_w, 0.0, atol=1e-10)
    assert 0.2 < float(jnp.mean(res.acceptance)) <= 1.0


@pytest.mark.parametrize("transition", ["hmc", "rwm"])
def test_ais_log_z_is_unbiased_on_a_gaussian(transition):
    # unnormalised N(mu, s^2 I) in 3D times exp(c): Z = exp(c) (2 pi s^2)^(3/2)
    mu, s, c = jnp.array([1.0, -0.5, 0.3]), 0.7, 1.3

    def log_p(x):
        return c - 0.5 * jnp.sum((x - mu) ** 2) / s**2

    z_true = np.exp(c) * (2 * np.pi * s**2) ** 1.5
    flow = flows.make_spline_flow(jax.random.key(0), 3, scale=1.5, n_layers=2, hidden=16)
    state = flows.ais_init(6, 0.4)
    run = jax.jit(
        lambda k, st: flows.ais_step(k, st, flow, log_p, 10_000, alpha=1.0, transition=transition)
    )
    state, _ = run(jax.random.key(1), state)  # adapt step sizes once
    _, res = run(jax.random.key(2), state)
    w = np.exp(np.asarray(res.log_w))
    assert abs(w.mean() - z_true) < 4 * w.std() / np.sqrt(w.size)
    assert res.n_target_values > 10_000


# -------------------------------------------------------------------------------- metrics


def test_metrics_closed_forms():
    log_w = jnp.log(jnp.array([1.0, 1.0, 1.0, 1.0]))
    assert float(flows.sampling_efficiency(log_w)) == pytest.approx(1.0)
    log_w = jnp.log(jnp.array([1.0, 3.0, 0.0, 4.0]))
    # (sum w)^2 / (N sum w^2) = 64 / (4 * 26)
    assert float(flows.sampling_efficiency(log_w)) == pytest.approx(64 / 104)
    assert float(flows.unweighting_efficiency(log_w)) == pytest.approx(2.0 / 4.0)
    lz = flows.log_z_estimate(log_w)
    assert float(lz.z) == pytest.approx(2.0)
    assert float(lz.z_error) == pytest.approx(np.std([1.0, 3.0, 0.0, 4.0]) / 2.0)


def test_buffer_samples_proportional_to_weight_without_replacement():
    buf = flows.buffer_init(8, 1)
    w = jnp.array([1.0, 2.0, 4.0, 8.0, 0.0, 1.0, 1.0, 1.0])
    buf = flows.buffer_add(buf, jnp.arange(8.0)[:, None], jnp.log(w), jnp.zeros(8))
    idx = jax.vmap(lambda k: flows.buffer_sample(k, buf, 1))(
        jax.random.split(jax.random.key(0), 40_000)
    )
    freq = np.bincount(np.asarray(idx[:, 0]), minlength=8) / 40_000
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.01)
    two = jax.vmap(lambda k: flows.buffer_sample(k, buf, 2))(
        jax.random.split(jax.random.key(1), 1000)
    )
    assert np.all(two[:, 0] != two[:, 1])
    assert not np.any(np.asarray(two) == 4)  # zero weight is never drawn
    adjusted = flows.buffer_adjust(buf, jnp.array([0, 1]), jnp.array([-1.0, 5.0]), max_adjust=10.0)
    np.testing.assert_allclose(adjusted.log_w[:2], [np.log(1.0) + 1.0, np.log(2.0) - 5.0])
    # FIFO overwrite and non-finite entries dropped
    buf = flows.buffer_add(buf, jnp.array([[9.0], [jnp.nan]]), jnp.array([0.0, 0.0]), jnp.zeros(2))
    assert int(buf.position) == 2 and float(buf.x[0, 0]) == 9.0 and buf.log_w[1] == -jnp.inf


# --------------------------------------------------------------------------- training


def _gmm_flow():
    return flows.make_spline_flow(
        jax.random.key(1), 2, n_layers=6, hidden=32, n_bins=12, scale=20.0, bound=4.0
    )


GMM_CONFIG = flows.TrainConfig(batch=128, n_levels=4, n_leapfrog=5, step_size=0.5)


@pytest.fixture(scope="module")
def gmm_runs():
    target = flows.gmm40()
    fab_flow, fab_state, _ = flows.train_flow(
        jax.random.key(0),
        "fab",
        _gmm_flow(),
        target.log_prob,
        steps=200,
        optimizer=optax.adam(1e-3),
        config=GMM_CONFIG,
        progress=False,
    )
    budget = float(fab_state.n_target_values)
    rkl_steps = int(budget // GMM_CONFIG.batch)
    rkl_flow, rkl_state, _ = flows.train_flow(
        jax.random.key(0),
        "rkl",
        _gmm_flow(),
        target.log_prob,
        steps=rkl_steps,
        optimizer=optax.adam(1e-3),
        config=GMM_CONFIG,
        progress=False,
    )
    assert float(rkl_state.n_target_values) == pytest.approx(budget, rel=0.01)
    return target, fab_flow, rkl_flow


def _modes_and_log_z(target, flow):
    x, log_w = flows.importance_log_weights(jax.random.key(5), flow, target.log_prob, 50_000)
    modes = np.bincount(np.asarray(target.mode_of(x)), minlength=40)
    return modes, flows.log_z_estimate(log_w)


@pytest.mark.slow  # about 70 s of FAB and reverse-KL training on two cores
def test_fab_covers_all_40_modes_and_estimates_log_z(gmm_runs):
    target, fab_flow, _ = gmm_runs
    modes, lz = _modes_and_log_z(target, fab_flow)
    assert np.all(modes > 0), modes
    assert abs(float(lz.log_z) - target.log_z) < 0.05


@pytest.mark.slow
def test_reverse_kl_with_the_same_budget_misses_modes(gmm_runs):
    target, _, rkl_flow = gmm_runs
    modes, _ = _modes_and_log_z(target, rkl_flow)
    assert np.sum(modes == 0) >= 3, modes


def _tiny_flow():
    return flows.make_spline_flow(jax.random.key(1), 2, n_layers=2, hidden=8, scale=20.0)


def test_training_step_compiles_once():
    target = flows.gmm40()
    for method, cfg in [
        ("fab", GMM_CONFIG),
        ("fab", GMM_CONFIG._replace(buffer_capacity=64)),
        ("rkl", GMM_CONFIG),
        ("fkl", GMM_CONFIG),
    ]:
        init, step = flows.make_trainer(
            method,
            _tiny_flow(),
            target.log_prob,
            optax.adam(1e-3),
            cfg._replace(batch=32, n_levels=2, n_leapfrog=2),
            target_sampler=target.sample,
        )
        traced = jax.jit(chex.assert_max_traces(step, n=1))
        state = init(jax.random.key(0))
        for i in range(3):
            state, info = traced(jax.random.key(i), state)
        assert int(state.step) == 3 and np.isfinite(float(info.loss))
        chex.clear_trace_counter()


def test_gradient_guard_skips_outliers():
    from difphys.flows._training import _guarded_update

    target = flows.gmm40()
    flow = _tiny_flow()
    init, step = flows.make_trainer(
        "fkl", flow, target.log_prob, optax.sgd(1e-3), GMM_CONFIG, target_sampler=target.sample
    )
    state = init(jax.random.key(0))
    step = jax.jit(step)
    for i in range(8):
        state, _ = step(jax.random.key(i), state)
    assert int(state.n_skipped) == 0
    # a non-finite batch gives a non-finite gradient: the update is skipped, nothing changes
    nan_step = flows.make_trainer(
        "fkl",
        flow,
        target.log_prob,
        optax.sgd(1e-3),
        GMM_CONFIG,
        target_sampler=lambda k, n: jnp.full((n, 2), jnp.nan),
    ).step
    new_state, _ = jax.jit(nan_step)(jax.random.key(99), state)
    assert int(new_state.n_skipped) == 1
    chex.assert_trees_all_equal(new_state.params, state.params)
    # a gradient 1000x the running median is skipped; 3x is clipped to 5x median (kept as is)
    import equinox as eqx

    params, static = eqx.partition(flow, eqx.is_inexact_array)
    opt = optax.sgd(1.0)
    norms = jnp.full((GMM_CONFIG.history,), 1.0)

    def loss(scale):  # (loss, dead): a step that saw a finite target value
        return lambda f: (scale * jnp.sum(f.weights[-1]), jnp.asarray(False))

    with jax.numpy_dtype_promotion("standard"):
        opt_state = opt.init(params)
        base = float(optax.tree.norm(jax.grad(lambda p: loss(1.0)(eqx.combine(p, static))[0])(
            params)))
        norms = norms * base
        out = _guarded_update(opt, GMM_CONFIG, loss(1000.0), params, static, opt_state, norms)
        assert bool(out[4])
        chex.assert_trees_all_equal(out[0], params)
        out = _guarded_update(opt, GMM_CONFIG, loss(3.0), params, static, opt_state, norms)
        assert not bool(out[4])
        assert float(out[2][0]) == pytest.approx(3 * base)


def test_trainer_errors():
    target = flows.gmm40()
    with pytest.raises(ValueError, match="unknown training method"):
        flows.make_trainer("elbo", _gmm_flow(), target.log_prob, optax.adam(1e-3))
    with pytest.raises(ValueError, match="target_sampler"):
        flows.make_trainer("fkl", _gmm_flow(), target.log_prob, optax.adam(1e-3))


def test_many_well_normalisation():
    target = flows.ManyWell(dim=4)
    # importance sampling with a broad Gaussian proposal (std 2) recovers log Z
    x = 2.0 * jax.random.normal(jax.random.key(0), (400_000, 4))
    log_q = -0.5 * jnp.sum((x / 2.0) ** 2, -1) - 4 * jnp.log(2.0 * jnp.sqrt(2 * jnp.pi))
    lz = flows.log_z_estimate(target.log_prob(x) - log_q)
    assert abs(float(lz.log_z) - target.log_z) < 4 * float(lz.log_z_error)


# ----------------------------------------------------------------------- physics target


@pytest.fixture(scope="module")
def ee_wbwb_sigma():
    """Plain Monte Carlo cross section of e+ e- > w+ b w- b~ at 1 TeV (difphys.amplitudes)."""
    from difphys import amplitudes as amp

    ref = amp.cross_section(amp.process("e+ e- > t t~, t > w+ b, t~ > w- b~"), 1000.0, 200_000,
                            key=jax.random.key(3))
    return float(ref.value), float(ref.error)


@pytest.mark.slow  # about 30 s
def test_matrix_element_cross_section_from_flow_samples(ee_wbwb_sigma):
    target = flows.matrix_element_target()
    flow = flows.make_spline_flow(jax.random.key(1), 8, support="unit_cube", n_layers=4, hidden=32)
    cfg = flows.TrainConfig(
        batch=128, n_levels=2, n_leapfrog=3, step_size=0.02, buffer_capacity=1024, updates_per_ais=4
    )
    flow, _, _ = flows.train_flow(
        jax.random.key(0),
        "fab",
        flow,
        target.log_prob,
        steps=15,
        optimizer=optax.adam(1e-3),
        config=cfg,
        progress=False,
    )
    _, log_w = flows.importance_log_weights(jax.random.key(7), flow, target.log_prob, 40_000)
    lz = flows.log_z_estimate(log_w)
    ref, ref_err = ee_wbwb_sigma
    se = np.hypot(float(lz.z_error), ref_err)
    assert abs(float(lz.z) - ref) < 3 * se
    assert float(flows.sampling_efficiency(log_w)) > 0.2


def test_lhe_round_trip_through_pylhe(tmp_path):
    import pylhe

    from difphys import amplitudes as amp
    from difphys.io import process_events, write_lhe

    proc = amp.process("e+ e- > t t~, t > w+ b, t~ > w- b~")
    u = jax.random.uniform(jax.random.key(0), (25, 8))
    momenta, _ = proc.phase_space(u, 1000.0)
    records = process_events(proc, momenta, key=jax.random.key(1))
    path = write_lhe(tmp_path / "ev.lhe", records, beams=(-11, 11),
                     beam_energies=(500.0, 500.0), sigma_pb=0.18, error_pb=0.001,
                     process=proc.name)
    lhe = pylhe.LHEFile.fromfile(str(path))
    assert lhe.init.initInfo.beamA == -11 and lhe.init.initInfo.energyA == pytest.approx(500.0)
    events = list(lhe.events)
    assert len(events) == 25
    ids = [p.pdg for p in proc.particles]
    for ev, p in zip(events, np.asarray(momenta), strict=True):
        finals = [q for q in ev.particles if q.status == 1]
        assert [int(q.id) for q in ev.particles if q.status != 2] == ids
        assert [int(q.id) for q in ev.particles if q.status == 2] == [6, -6]  # the decay chains
        got = np.array([[q.e, q.px, q.py, q.pz] for q in finals])
        np.testing.assert_allclose(got, p[2:], rtol=1e-9, atol=1e-9)
    with pytest.raises(FileExistsError):
        write_lhe(path, records, beams=(-11, 11), beam_energies=(500.0, 500.0), sigma_pb=0.18,
                  error_pb=0.001)


def test_sample_cli_writes_events_and_resumes(tmp_path, capsys):
    import pylhe

    from difphys.cli import main

    out = tmp_path / "events.lhe"
    args = [
        "sample",
        "--method",
        "rkl",
        "--steps",
        "3",
        "--batch",
        "64",
        "--events",
        "50",
        "--flow-layers",
        "2",
        "--calibration",
        "4000",
        "--out",
        str(out),
        "--checkpoint",
        str(tmp_path / "ckpt"),
        "--quiet",
    ]
    assert main(args) == 0
    assert "sigma" in capsys.readouterr().out
    assert len(list(pylhe.LHEFile.fromfile(str(out)).events)) == 50
    assert main(args) == 2  # the output exists: nothing is overwritten without --overwrite
    assert main([*args, "--overwrite", "--steps", "4"]) == 0  # resumes from step 3
    assert (tmp_path / "ckpt" / "difphys_sampling.json").read_text().count('"step": 4') == 1


SHARDED_SAMPLING = """
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
from difphys import flows, sharding
from difphys.jobs.sample import _flow_weighted
assert jax.device_count() == 4, jax.devices()
target = flows.matrix_element_target()
flow = flows.make_spline_flow(jax.random.key(1), 8, support="unit_cube", n_layers=2, hidden=8)
flow = jax.tree_util.tree_map(lambda x: x + 0.01, flow)
mesh = sharding.make_mesh()
u, lw = _flow_weighted(jax.random.key(2), flow, target, 1024, mesh)
assert len(u.sharding.device_set) == 4, u.sharding
u1, lw1 = _flow_weighted(jax.random.key(2), flow, target, 1024, sharding.make_mesh(devices=jax.devices()[:1]))
np.testing.assert_allclose(np.asarray(u), np.asarray(u1), rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(np.asarray(lw), np.asarray(lw1), rtol=1e-9)
print("SHARDED-SAMPLING-OK")
"""


def test_flow_event_generation_is_sharded_over_four_devices():
    from difphys.testing import run_on_fake_cpu_devices

    run_on_fake_cpu_devices(SHARDED_SAMPLING, expect="SHARDED-SAMPLING-OK", timeout=300)


def test_sample_events_with_vegas_baseline(ee_wbwb_sigma):
    summary, momenta = jobs.sample_events(
        method="vegas", n_events=20, train_steps=2, batch=256, calibration=20_000, progress=False
    )
    assert momenta.shape == (20, 6, 4)
    # E + W + b: all final-state masses on shell, four-momentum conserved
    np.testing.assert_allclose(momenta[:, 2:].sum(1), momenta[:, :2].sum(1), atol=1e-8)
    ref_sigma, ref_err = ee_wbwb_sigma
    assert abs(summary["sigma_pb"] - ref_sigma) < 4 * np.hypot(summary["sigma_error_pb"], ref_err)
    assert summary["n_target_grads_training"] == 0
