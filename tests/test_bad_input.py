"""Reliability under bad input (#29): one regression test per reported defect, then the fuzz
suite over every public function.

Every test states the truth it checks: a clear error naming the problem, an exact or
statistically bounded value, or a documented masked result with finite gradients."""

import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import stochad as sd
from difphys import vertex as vx

B = 2.0


def _runtime_error(fn, *args, match):
    """``fn(*args)`` under jit must fail at run time with ``match`` in the message
    (equinox.error_if raises a JaxRuntimeError carrying it)."""
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(fn(*args))


# ------------------------------------------------------------------------------- stochad
def test_binomial_at_p_one_gives_n_eagerly_under_jit_and_vmap(key):
    assert float(sd.binomial(key, 10.0, 1.0)) == 10.0
    assert float(jax.jit(lambda k: sd.binomial(k, 10.0, 1.0))(key)) == 10.0
    keys = jax.random.split(key, 64)
    assert np.all(np.asarray(jax.vmap(lambda k: sd.binomial(k, 7.0, 1.0))(keys)) == 7.0)
    assert float(sd.binomial(key, 10.0, 0.0)) == 0.0


def test_binomial_with_large_p_has_the_right_mean_and_variance(key):
    n, p, m = 40.0, 0.97, 100_000
    x = np.asarray(jax.vmap(lambda k: sd.binomial(k, n, p))(jax.random.split(key, m)))
    var = n * p * (1 - p)
    assert abs(x.mean() - n * p) < 4 * np.sqrt(var / m)
    assert abs(x.var() / var - 1) < 4 * np.sqrt(2 / m)


def test_binomial_derivative_at_the_boundary(key):
    keys = jax.random.split(key, 4000)
    est = jax.vmap(lambda k: sd.derivative_estimate(lambda t, kk: sd.binomial(kk, 5.0, 1 - t),
                                                    0.0, key=k))(keys)
    np.testing.assert_allclose(np.asarray(est), -5.0, rtol=0, atol=1e-12)  # X = 5 always
    # the direction p > 1 is outside the parameter range: a finite 0, documented
    out = sd.derivative_estimate(lambda p, kk: sd.binomial(kk, 10.0, p), 1.0, key=key)
    assert np.isfinite(float(out))


@pytest.mark.parametrize("t", [0.3, 0.05])
def test_categorical_with_an_empty_category_is_unbiased(key, t):
    keys = jax.random.split(key, 40_000)

    def probs(t):
        return jnp.stack([t, 0 * t, 1 - t])

    def mean_x(t, k):
        return sd.categorical(k, probs(t))

    def is_zero(t, k):
        return (sd.categorical(k, probs(t)) == 0).astype(t.dtype)

    for f, exact in ((mean_x, -2.0), (is_zero, 1.0)):
        est = np.asarray(jax.vmap(lambda k, f=f: sd.derivative_estimate(f, t, key=k))(keys))
        se = est.std() / np.sqrt(est.size)
        assert abs(est.mean() - exact) < 4 * se + 1e-9, (f.__name__, est.mean(), se)


def test_categorical_with_two_empty_categories_in_a_row(key):
    keys = jax.random.split(key, 40_000)

    def f(t, k):
        return sd.categorical(k, jnp.stack([0.5 - t, 0 * t, 0 * t, 0.5 + t]))

    est = np.asarray(jax.vmap(lambda k: sd.derivative_estimate(f, 0.1, key=k))(keys))
    # E[X] = 3 (0.5 + t): derivative 3
    assert abs(est.mean() - 3.0) < 4 * est.std() / np.sqrt(est.size)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda k: sd.bernoulli(k, 1.5), "bernoulli p"),
        (lambda k: sd.binomial(k, 3.0, jnp.nan), "binomial p"),
        (lambda k: sd.binomial(k, 2.5, 0.5), "integer"),
        (lambda k: sd.geometric(k, 0.0), "geometric p"),
        (lambda k: sd.poisson(k, -1.0), "poisson rate"),
        (lambda k: sd.categorical(k, jnp.array([0.5, 0.6])), "sum to one"),
        (lambda k: sd.normal(k, 0.0, -1.0), "normal std"),
        (lambda k: sd.exponential(k, 0.0), "exponential rate"),
    ],
)
def test_sampler_checks_hold_eagerly_and_under_jit(key, call, match):
    with pytest.raises(ValueError, match=match):
        call(key)
    _runtime_error(jax.jit(call), key, match=match)


# -------------------------------------------------------------------------------- vertex
def _tracks(key, n=4):
    kv, ks = jax.random.split(key)
    pt = jnp.linspace(1.0, 20.0, n)
    phi = jnp.linspace(-2.0, 2.5, n)
    mom = jnp.stack([pt * jnp.cos(phi), pt * jnp.sin(phi), pt * jnp.linspace(-1, 1, n)], -1)
    charges = jnp.where(jnp.arange(n) % 2 == 0, 1.0, -1.0)
    tracks, _ = vx.simulate_tracks(ks, jnp.array([0.1, -0.2, 1.0]), mom, charges, B)
    return tracks


_SPOT = vx.BeamSpot(jnp.zeros(3), jnp.eye(3) * 0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(constraint=vx.BeamSpot(jnp.full(3, jnp.nan), jnp.eye(3))), "BeamSpot"),
        (dict(constraint=vx.BeamSpot(jnp.zeros(3), -jnp.eye(3))), "positive definite"),
        (dict(bfield=jnp.nan), "bfield"),
        (dict(bfield=0.0), "bfield"),
        (dict(start=jnp.array([jnp.nan, 0.0, 0.0])), "start"),
        (dict(max_iter=-1), "max_iter"),
        (dict(tol=-1.0), "tol"),
    ],
)
def test_vertex_fit_refuses_bad_options(key, kwargs, match):
    kwargs = {"bfield": B, **kwargs}
    with pytest.raises(ValueError, match=match):
        vx.fit(_tracks(key), **kwargs)


@pytest.mark.parametrize("backend", ["xla", "kernel"])
def test_vertex_fit_under_jit_masks_bad_options_and_nan_weights(key, backend):
    if backend == "kernel":
        pytest.importorskip("numba")
    tracks = _tracks(key)
    good = vx.fit(tracks, bfield=B, backend=backend)
    assert bool(good.valid)

    @jax.jit
    def run(position, bfield, weights):
        spot = vx.BeamSpot(position, jnp.eye(3) * 0.01)
        return vx.fit(tracks, weights, bfield=bfield, constraint=spot, backend=backend)

    for position, bfield in ((jnp.full(3, jnp.nan), B), (jnp.zeros(3), jnp.nan)):
        res = run(position, bfield, jnp.ones(4))
        assert not bool(res.valid)
        for leaf in jax.tree.leaves(res):
            assert np.all(np.isfinite(np.asarray(leaf)))
        assert float(jnp.min(jnp.diag(res.cov))) >= vx.WEAK_PRIOR_SIGMA**2
    # a NaN weight drops that track: the same as weight 0
    nan_w = run(jnp.zeros(3), B, jnp.array([1.0, jnp.nan, 1.0, 1.0]))
    zero_w = run(jnp.zeros(3), B, jnp.array([1.0, 0.0, 1.0, 1.0]))
    assert bool(nan_w.valid)
    np.testing.assert_allclose(nan_w.position, zero_w.position, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["xla", "kernel"])
def test_parallel_tracks_give_a_masked_fit_with_positive_variances(backend):
    if backend == "kernel":
        pytest.importorskip("numba")
    straight = vx.perigee_from_state(jnp.zeros(3), jnp.array([1e6, 0.0, 0.0]), 1.0, B)
    params = jnp.stack([straight.at[0].set(0.01 * i) for i in range(4)])
    cov = jnp.broadcast_to(jnp.eye(5) * 1e-4, (4, 5, 5))
    res = vx.fit(vx.Perigee(params, cov), bfield=B, backend=backend)
    assert not bool(res.valid)
    assert float(jnp.min(jnp.diag(res.cov))) >= vx.WEAK_PRIOR_SIGMA**2
    grad = jax.grad(lambda p: jnp.sum(vx.fit(vx.Perigee(p, cov), bfield=B,
                                             backend=backend).position))(params)
    assert np.all(np.isfinite(np.asarray(grad)))


# ------------------------------------------------------------------- flows and training
def _unit_flow(key, dim=2):
    from difphys import flows

    return flows.make_spline_flow(key, dim, support="unit_cube", n_layers=2, hidden=8, n_bins=4)


@pytest.mark.parametrize("method", ["fab", "rkl"])
@pytest.mark.parametrize("value", [jnp.nan, -jnp.inf, jnp.inf])
def test_a_dead_target_stops_training_before_it_starts(key, method, value):
    from difphys import flows

    flow = _unit_flow(key)
    config = flows.TrainConfig(batch=16, n_levels=2, n_leapfrog=2, buffer_capacity=64)
    with pytest.raises(ValueError, match="non-finite at all"):
        flows.train_flow(key, method, flow, lambda x: jnp.full((), value, x.dtype), steps=3,
                         config=config, progress=False)


def test_a_target_that_dies_after_the_probe_fails_the_run_and_counts_skips(key):
    """The probe sees a finite target; afterwards it is NaN everywhere: every update is
    skipped, the history says so, and the run fails instead of reporting a perfect loss."""
    from difphys import flows

    flow = _unit_flow(key)
    config = flows.TrainConfig(batch=16)
    calls = {"n": 0}

    def log_p(x):
        calls["n"] += 1  # 1 during the eager probe (vmapped), then traced inside jit
        return jnp.zeros((), x.dtype) if calls["n"] == 1 else jnp.full((), jnp.nan, x.dtype)

    with pytest.raises(FloatingPointError, match="all 4 steps were skipped"):
        flows.train_flow(key, "rkl", flow, log_p, steps=4, config=config, progress=False)


def test_a_partly_dead_target_trains_and_reports_no_skips(key):
    from difphys import flows

    flow = _unit_flow(key)

    def log_p(x):
        return jnp.where(x[0] < 0.5, -jnp.sum((x - 0.3) ** 2), -jnp.inf)

    _, state, history = flows.train_flow(key, "rkl", flow, log_p, steps=5,
                                         config=flows.TrainConfig(batch=64), progress=False)
    assert int(state.n_skipped) == 0 and history.last("n_skipped") == 0
    assert np.all(np.isfinite(history.loss))


def test_matrix_element_target_refuses_a_closed_channel():
    from difphys import flows

    with pytest.raises(ValueError, match="closed at sqrt_s = 300.0 GeV"):
        flows.matrix_element_target("e+ e- > t t~", 300.0)
    with pytest.raises(ValueError, match="sqrt_s"):
        flows.matrix_element_target("e+ e- > mu+ mu-", float("nan"))


@pytest.mark.parametrize("kwargs, match", [(dict(batch=0), "batch"), (dict(train_steps=0), "train_steps"),
                                           (dict(n_events=0), "n_events"),
                                           (dict(calibration=10), "calibration"),
                                           (dict(flow_layers=-1), "flow_layers")])
def test_sample_job_refuses_bad_counts_before_any_work(tmp_path, kwargs, match):
    from difphys.jobs import sample_events

    with pytest.raises(ValueError, match=match):
        sample_events("e+ e- > mu+ mu-", 91.0, out=tmp_path / "x.lhe", progress=False, **kwargs)
    assert not list(tmp_path.iterdir())


def test_sample_checkpoint_refuses_another_configuration(tmp_path):
    from difphys.jobs import sample_events

    ck = tmp_path / "ck"
    common = dict(method="rkl", n_events=10, train_steps=2, batch=16, flow_layers=2,
                  calibration=200, checkpoint=ck, progress=False)
    sample_events("e+ e- > mu+ mu-", 91.0, **common)
    before = sorted(p.name for p in ck.rglob("*"))
    with pytest.raises(ValueError, match="sqrt_s: checkpoint 91.0 vs this run 200.0"):
        sample_events("e+ e- > mu+ mu-", 200.0, **common)
    with pytest.raises(ValueError, match="more than the 1 requested"):
        sample_events("e+ e- > mu+ mu-", 91.0, **{**common, "train_steps": 1})
    assert sorted(p.name for p in ck.rglob("*")) == before
    meta = json.loads((ck / "difphys_sampling.json").read_text())
    assert meta["config"]["sqrt_s"] == 91.0 and meta["step"] == 2


# ------------------------------------------------------------- runs, checkpoints, logs
class _QS(NamedTuple):
    step: jax.Array
    theta: jax.Array
    opt: object


def _quadratic():
    """SGD on E[(theta - x)^2], x ~ N(3, 1) from the step key, with a step counter."""
    import optax

    from difphys import train

    opt = optax.sgd(0.05)

    def init(key):
        del key
        with jax.numpy_dtype_promotion("standard"):
            return _QS(jnp.zeros((), jnp.int32), jnp.zeros(()), opt.init(jnp.zeros(())))

    def step(key, state):
        x = 3.0 + jax.random.normal(key, (8,))
        loss, g = jax.value_and_grad(lambda t: jnp.mean((t - x) ** 2))(state.theta)
        with jax.numpy_dtype_promotion("standard"):
            updates, o = opt.update(g, state.opt)
        return (_QS(state.step + 1, state.theta + updates, o),
                train.StepInfo(loss, jnp.zeros((), jnp.int32), None))

    return train.Trainer(init, step)


def _loop(trainer, key, steps, ck, **kw):
    from difphys import train

    return train.training_loop(jax.jit(trainer.step), trainer.init(None), key=key, steps=steps,
                               progress=False, checkpoint_dir=ck, **kw)


def test_resume_refuses_fewer_steps_and_another_key(tmp_path):
    trainer = _quadratic()
    ck = tmp_path / "ck"
    _loop(trainer, jax.random.key(1), 10, ck, checkpoint_every=5)
    with pytest.raises(ValueError, match="beyond the 5 steps requested"):
        _loop(trainer, jax.random.key(1), 5, ck)
    with pytest.raises(ValueError, match="another key"):
        _loop(trainer, jax.random.key(2), 20, ck)
    state, _ = _loop(trainer, jax.random.key(1), 12, ck)  # the same key continues
    assert int(state.step) == 12


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(tmp_path):
    trainer = _quadratic()
    ck = tmp_path / "ck"
    full, _ = _loop(trainer, jax.random.key(1), 10, None)
    _loop(trainer, jax.random.key(1), 10, ck, checkpoint_every=5)
    newest = ck / "10"
    assert newest.is_dir() and (ck / "5").is_dir()
    for f in newest.rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    with pytest.warns(UserWarning, match="step 10 .* cannot be read"):
        state, history = _loop(trainer, jax.random.key(1), 10, ck)
    assert history.step[0] == 10  # steps 6..10 were redone from step 5
    assert float(state.theta) == float(full.theta)


def test_a_loss_that_is_never_finite_fails_the_run():
    from difphys import train

    class Counter(NamedTuple):
        step: jax.Array

    def step(key, state):
        del key
        return Counter(state.step + 1), train.StepInfo(jnp.asarray(jnp.nan),
                                                       jnp.ones((), jnp.int32), None)

    with pytest.raises(FloatingPointError, match="non-finite at every one"):
        train.training_loop(step, Counter(jnp.zeros((), jnp.int32)), key=jax.random.key(0),
                            steps=3, progress=False, log_every=1)


def test_history_is_appended_never_truncated(tmp_path):
    from difphys.jobs import save_history

    path = tmp_path / "history.jsonl"
    save_history(path, [{"step": 1, "loss": 2.0}])
    with pytest.raises(FileExistsError, match="appended only by a resumed run"):
        save_history(path, [{"step": 2, "loss": 1.0}])
    save_history(path, [{"step": 2, "loss": 1.0}], append=True)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_train_command_with_a_missing_file_leaves_no_folder(tmp_path):
    from difphys.cli import main

    out = tmp_path / "run"
    argv = ["train", str(tmp_path / "missing.root"), "--out", str(out), "--steps", "2",
            "--quiet"]
    assert main(argv) == 2
    assert not out.exists()  # so the corrected rerun is not refused as "exists"
    assert main(["train", str(tmp_path / "missing.root"), "--out", str(out), "--steps", "0",
                 "--quiet"]) == 2
    assert not out.exists()


# ------------------------------------------------------------------ physics inputs
CARD = """BLOCK MASS
    6 1.730000e+02
   23 9.118800e+01
BLOCK SMINPUTS
    1 1.325070e+02
DECAY 6 1.491500e+00
"""


@pytest.mark.parametrize("edit, match", [
    (("6 1.730000e+02", "6 nan"), "not finite"),
    (("6 1.730000e+02", "6 -173.0"), ">= 0"),
    (("DECAY 6 1.491500e+00", "DECAY 6 -1.0"), ">= 0"),
    (("1 1.325070e+02", "1 0.0"), "aEWM1 must be > 0"),
    (("23 9.118800e+01", "23 9.118800e+01\n   23 80.0"), "duplicate entry for MZ"),
])
def test_param_cards_with_unphysical_values_are_refused(tmp_path, edit, match):
    from difphys.amplitudes import SMParams

    path = tmp_path / "param_card.dat"
    path.write_text(CARD)
    assert float(SMParams.from_param_card(path).MT) == 173.0
    path.write_text(CARD.replace(*edit))
    with pytest.raises(ValueError, match=match):
        SMParams.from_param_card(path)


def test_matrix_element_momenta_are_checked_and_masked():
    from difphys import amplitudes as amp

    proc = amp.process("e+ e- > t t~")
    u = jnp.full((2, proc.phase_space_dim), 0.4)
    p, _ = proc.phase_space(u, 500.0)
    good = proc(p)
    assert np.all(np.asarray(good) > 0)
    with pytest.raises(ValueError, match="do not conserve four-momentum"):
        proc(p.at[0, 2, 1].add(1.0))
    with pytest.raises(ValueError, match=r"leg 2 \(t\) has mass"):
        massless = p.at[..., 2:, 0].set(jnp.linalg.norm(p[..., 2:, 1:], axis=-1))
        half = massless[..., 2:, 0].sum(-1) / 2  # rebalance the beams: only the masses differ
        massless = massless.at[..., 0, 0].set(half).at[..., 0, 3].set(half)
        proc(massless.at[..., 1, 0].set(half).at[..., 1, 3].set(-half))
    with pytest.raises(ValueError, match="incoming energy must be > 0"):
        proc(jnp.zeros_like(p))
    with pytest.raises(ValueError, match="NaN"):
        proc(p.at[0, 0, 0].set(jnp.nan))
    np.testing.assert_allclose(proc(p, check=True), good, rtol=1e-14)
    # inside jit: bad events give 0 with a zero gradient, good ones are untouched
    bad = p.at[0].set(jnp.nan)
    vals = jax.jit(proc)(bad)
    assert float(vals[0]) == 0.0 and float(vals[1]) == pytest.approx(float(good[1]), rel=1e-14)
    zero = jax.jit(proc)(jnp.zeros_like(p))
    assert np.all(np.asarray(zero) == 0.0)
    grad = jax.jit(jax.grad(lambda q: jnp.sum(proc(q))))(bad)
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad[0]) == 0.0)


def test_process_strings_must_be_strings():
    from difphys import amplitudes as amp

    with pytest.raises(TypeError, match="MadGraph process string"):
        amp.process(None)
    with pytest.raises(TypeError, match="MadGraph process string"):
        amp.parse(42)


def test_external_wavefunctions_refuse_impossible_helicities():
    from difphys import amplitudes as amp

    k = jnp.array([10.0, 0.0, 0.0, 10.0])
    with pytest.raises(ValueError, match="fermion helicity"):
        amp.u_spinor(k, 0.0, 3)
    with pytest.raises(ValueError, match="fermion mass"):
        amp.v_spinor(k, -1.0, 1)
    with pytest.raises(ValueError, match="needs a massive vector"):
        amp.polarization_vector(k, 0.0, 0)
    with pytest.raises(ValueError, match="vector helicity"):
        amp.polarization_vector(k, 0.0, 2)
    # the allowed ones still satisfy eps.k = 0 (transversality, massless)
    eps, kk = np.asarray(amp.polarization_vector(k, 0.0, 1)), np.asarray(k)
    assert abs(eps[0] * kk[0] - eps[1:] @ kk[1:]) < 1e-12


def test_boost_to_a_space_like_frame_is_masked_with_a_finite_gradient():
    from difphys import kinematics as kin

    p = jnp.array([5.0, 1.0, 2.0, 3.0])
    space_like = jnp.array([1.0, 2.0, 0.0, 0.0])
    out = jax.jit(kin.boost_to_rest_frame)(p, space_like)
    assert np.all(np.asarray(out) == 0.0)
    g = jax.jit(jax.grad(lambda f: jnp.sum(kin.boost_to_rest_frame(p, f))))(space_like)
    assert np.all(np.isfinite(np.asarray(g)))
    with pytest.raises(ValueError, match="time-like"):
        kin.boost_to_rest_frame(p, space_like)


@pytest.mark.parametrize("n", [3, 4, 5])
@pytest.mark.parametrize("massive", [False, True])
def test_unit_cube_map_has_finite_gradients_on_the_closed_cube(n, massive):
    from difphys import phasespace as ps

    masses = jnp.full(n, 1.0 if massive else 0.0)
    d = ps.unit_cube_dim(n)
    for u in (jnp.zeros(d), jnp.ones(d), jnp.zeros(d).at[n - 2:].set(0.3)):
        def f(u):
            momenta, weight = ps.from_unit_cube(u, 100.0, masses)
            return jnp.sum(momenta**2) + weight

        assert np.all(np.isfinite(np.asarray(jax.grad(f)(u)))), (n, massive, u)
        momenta, _ = ps.from_unit_cube(u, 100.0, masses)  # and still conserves momentum
        np.testing.assert_allclose(np.asarray(momenta.sum(-2)), [100.0, 0, 0, 0], atol=1e-9)


# ----------------------------------------------------------------- sampling edges
def test_importance_metrics_edges():
    from difphys import flows

    dead = jnp.full(8, -jnp.inf)
    assert float(flows.sampling_efficiency(dead)) == 0.0
    assert float(flows.unweighting_efficiency(dead)) == 0.0
    lz = flows.log_z_estimate(dead)
    assert float(lz.z) == 0.0 and float(lz.log_z) == -np.inf and float(lz.z_error) == 0.0
    for bad in (jnp.array([0.0, jnp.inf]), jnp.array([0.0, jnp.nan])):
        with pytest.raises(ValueError, match="failed weight evaluations"):
            flows.sampling_efficiency(bad)
        assert np.isnan(float(jax.jit(flows.sampling_efficiency)(bad)))  # the documented flag
    with pytest.raises(ValueError, match="non-empty"):
        flows.log_z_estimate(jnp.zeros(0))
    # equal weights: efficiency 1, Z = w exactly
    assert float(flows.sampling_efficiency(jnp.zeros(5))) == pytest.approx(1.0, abs=1e-15)
    assert float(flows.log_z_estimate(jnp.full(5, 2.0)).log_z) == pytest.approx(2.0, abs=1e-14)


def test_buffer_sample_never_draws_an_empty_slot_eagerly(key):
    from difphys import flows

    buf = flows.buffer_init(8, 2)
    buf = flows.buffer_add(buf, jnp.ones((3, 2)), jnp.zeros(3), jnp.zeros(3))
    idx = flows.buffer_sample(key, buf, 3)
    assert sorted(np.asarray(idx).tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="only 3 with a positive weight"):
        flows.buffer_sample(key, buf, 4)
    with pytest.raises(ValueError, match="capacity"):
        flows.buffer_sample(key, buf, 9)


def test_unit_cube_flow_has_no_density_outside_its_support(key):
    flow = _unit_flow(key)
    x = jnp.array([[1.5, 0.5], [0.5, 0.5], [-0.1, 0.2], [1.0, 1.0]])
    lp = np.asarray(flow.log_prob(x))
    assert lp[0] == -np.inf and lp[2] == -np.inf and np.isfinite(lp[1]) and np.isfinite(lp[3])
    g = jax.grad(lambda x: jnp.sum(jnp.where(jnp.isfinite(flow.log_prob(x)),
                                             flow.log_prob(x), 0.0)))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    with pytest.raises(ValueError, match="NaN"):
        flow.log_prob(jnp.array([jnp.nan, 0.5]))
    assert float(jax.jit(lambda x: flow.log_prob(x))(jnp.array([jnp.nan, 0.5]))) == -np.inf


def test_write_lhe_refuses_what_it_cannot_write_honestly(tmp_path):
    from difphys import amplitudes as amp
    from difphys import io

    proc = amp.process("e+ e- > mu+ mu-")
    p, _ = proc.phase_space(jnp.full((2, proc.phase_space_dim), 0.3), 91.0)
    records = io.process_events(proc, np.asarray(p), key=jax.random.key(0))
    common = dict(beams=(-11, 11), beam_energies=(45.5, 45.5), error_pb=1.0)
    path = tmp_path / "x.lhe"
    with pytest.raises(ValueError, match="no events"):
        io.write_lhe(path, [], sigma_pb=1.0, **common)
    with pytest.raises(ValueError, match="sigma_pb must be finite"):
        io.write_lhe(path, records, sigma_pb=float("nan"), **common)
    assert not path.exists()
    io.write_lhe(path, records, sigma_pb=1.0, process="e+ e- > mu+ mu- --> test", **common)
    import pylhe

    assert len(list(pylhe.LHEFile.fromfile(str(path)).events)) == 2  # the XML is intact
    assert not list(tmp_path.glob(".*partial*"))
