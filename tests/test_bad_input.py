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


def _jets_with_problems(key, n_jets=24, n=5):
    """Jets of ``n`` tracks, some of them made unfittable: parallel tracks (singular
    information), a single usable track, a track pushed to theta = 0 (dropped)."""
    keys = jax.random.split(key, n_jets)
    tracks = [_tracks(k, n) for k in keys]
    params = jnp.stack([t.params for t in tracks])
    cov = jnp.stack([t.cov for t in tracks])
    straight = vx.perigee_from_state(jnp.zeros(3), jnp.array([1e6, 0.0, 0.0]), 1.0, B)
    params = params.at[0].set(jnp.stack([straight.at[0].set(0.01 * i) for i in range(n)]))
    params = params.at[1, 2, 3].set(0.0)  # theta = 0: not usable, dropped
    weights = jnp.ones((n_jets, n)).at[2, 1:].set(0.0)  # one track left: not determined
    return vx.Perigee(params, cov), weights


def test_the_eager_kernel_fit_equals_the_traced_fit_including_masked_jets(key):
    """Outside jit the kernel is called directly and the mask applied only where needed;
    inside jit it runs through the callback with the mask always applied: same result."""
    pytest.importorskip("numba")
    tracks, weights = _jets_with_problems(key)
    for kwargs in ({}, {"start": jnp.array([0.1, 0.0, 0.5])},
                   {"constraint": vx.BeamSpot(jnp.zeros(3), jnp.eye(3) * 0.04)}):
        eager = vx.fit(tracks, weights, bfield=B, backend="kernel", **kwargs)
        traced = jax.jit(lambda t, w, kw=kwargs: vx.fit(t, w, bfield=B, backend="kernel",
                                                         **kw))(tracks, weights)
        if "constraint" not in kwargs:  # the beam spot determines even these jets
            assert not bool(eager.valid[0]) and not bool(eager.valid[2])
            assert float(eager.cov[0, 0, 0]) == vx.WEAK_PRIOR_SIGMA**2  # masked, as documented
        assert bool(eager.valid[3])
        # and on the jets that are all valid (where the eager path skips the mask)
        rest = vx.Perigee(tracks.params[3:], tracks.cov[3:])
        eager_rest = vx.fit(rest, weights[3:], bfield=B, backend="kernel", **kwargs)
        assert bool(jnp.all(eager_rest.valid))
        for name in eager._fields:
            a, b = np.asarray(getattr(eager, name)), np.asarray(getattr(traced, name))
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
            np.testing.assert_allclose(getattr(eager_rest, name), b[3:], rtol=1e-12,
                                       atol=1e-12, err_msg=name)


@pytest.mark.parametrize("problem", ["nan_param", "inf_cov", "not_pd", "negative_weight",
                                     "nan_weight"])
def test_the_kernel_reports_the_same_track_problems_as_the_xla_checks(key, problem):
    """The eager kernel path takes its track checks from the kernel's preparation pass; they
    must refuse exactly what the XLA summary refuses, and ignore problems of weight-0 tracks."""
    pytest.importorskip("numba")
    tracks, weights = _jets_with_problems(key)
    params, cov = tracks.params, tracks.cov
    if problem == "nan_param":
        params = params.at[5, 3, 0].set(jnp.nan)
    elif problem == "inf_cov":
        cov = cov.at[5, 3, 2, 2].set(jnp.inf)
    elif problem == "not_pd":
        cov = cov.at[5, 3].set(-cov[5, 3])
    elif problem == "negative_weight":
        weights = weights.at[5, 3].set(-0.5)
    else:
        weights = weights.at[5, 3].set(jnp.nan)
    bad = vx.Perigee(params, cov)
    messages = []
    for backend in ("xla", "kernel"):
        with pytest.raises(ValueError) as err:
            vx.fit(bad, weights, bfield=B, backend=backend)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    if problem in ("nan_param", "inf_cov", "not_pd"):  # the same track with weight 0: fine
        res = vx.fit(bad, weights.at[5, 3].set(0.0), bfield=B, backend="kernel")
        assert bool(res.valid[5])


def test_the_host_kinematic_check_equals_the_jitted_reduction(key):
    """The numba pass of the eager |M|^2 check computes the four numbers of the jitted
    reduction (finite, least incoming energy, largest imbalance, largest off-shellness)."""
    pytest.importorskip("numba")
    from difphys import amplitudes as amp
    from difphys.amplitudes import _kinematic_check, _process

    proc = amp.process("e+ e- > t t~ g")
    u = jax.random.uniform(key, (500, proc.phase_space_dim), jnp.float64, 0.02, 0.98)
    p, _ = proc.phase_space(u, 800.0)
    masses = np.asarray(proc.external_masses())
    p = p.at[7, 3, 1].add(0.3).at[11, 2, 0].mul(1.01)  # an imbalance and an off-shell leg
    for momenta in (p, p.astype(jnp.float32), p.at[4, 1, 2].set(jnp.nan)):
        host = _kinematic_check.summary(np.asarray(momenta), masses)
        ref = [np.asarray(x).item() for x in _process._kinematic_summary(
            momenta, jnp.asarray(masses, momenta.dtype), proc.n_external)]
        assert host[0] == ref[0]
        if ref[0]:
            rtol = 1e-12 if momenta.dtype == jnp.float64 else 1e-4
            np.testing.assert_allclose(host[1:], ref[1:], rtol=rtol)


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


# =============================================================================== fuzz suite
# One case per public name of every library subpackage (listed from the ``__init__``s): bad
# arguments (NaN, inf, empty, wrong shape, out of range, wrong type) must raise a clear error
# naming the problem, or give the documented finite result. Result records (NamedTuples the
# library returns) are listed in RESULT_TYPES and checked to be plain NamedTuples.
import importlib  # noqa: E402
import inspect  # noqa: E402

SUBPACKAGES = ("kinematics", "phasespace", "amplitudes", "pdf", "vertex", "stochad", "sim",
               "flows", "nn", "io", "data", "train", "analysis", "jobs")
BAD = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError)
NAN4 = jnp.array([jnp.nan, 1.0, 2.0, 3.0])
P4 = jnp.array([5.0, 1.0, 2.0, 3.0])


def _public():
    names = {}
    for sub in SUBPACKAGES:
        mod = importlib.import_module(f"difphys.{sub}")
        for name in getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")]):
            obj = getattr(mod, name)
            if callable(obj):
                names[f"{sub}.{name}"] = obj
    return names


def _raises(fn, *args, exc=BAD, match=None, **kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def _all_finite(tree):
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.number))


def _mod(sub):
    return importlib.import_module(f"difphys.{sub}")


CASES = {}


def case(*names):
    def register(fn):
        for name in names:
            assert name not in CASES, name
            CASES[name] = fn
        return fn

    return register


# ----------------------------------------------------------------------- kinematics
_ONE_VECTOR = ("eta", "mass", "mass2", "p3", "p_abs", "phi", "pt", "rapidity")


@case(*(f"kinematics.{n}" for n in _ONE_VECTOR))
def _kin_one(name):
    f = getattr(_mod("kinematics"), name.split(".")[1])
    _raises(f, P4[:3], match="trailing dimension 4")
    _raises(f, NAN4, match="NaN")
    assert _all_finite(f(jnp.zeros(4)))  # the documented value at the singular point
    assert _all_finite(jax.grad(lambda p: jnp.sum(f(p)))(jnp.zeros(4)))


@case("kinematics.dot", "kinematics.delta_phi", "kinematics.delta_r")
def _kin_two(name):
    f = getattr(_mod("kinematics"), name.split(".")[1])
    _raises(f, P4, P4[:3], match="trailing dimension 4")
    _raises(f, NAN4, P4, match="NaN")
    assert _all_finite(jax.grad(lambda p: jnp.sum(f(p, jnp.zeros(4))))(jnp.zeros(4)))


@case("kinematics.boost")
def _kin_boost(name):
    kin = _mod("kinematics")
    _raises(kin.boost, P4, jnp.array([1.0, 0.0, 0.0]), match=r"\|beta\| < 1")
    _raises(kin.boost, P4, jnp.array([0.1, 0.0]), match="trailing dimension 3")
    _raises(kin.boost, NAN4, jnp.zeros(3), match="NaN")


@case("kinematics.boost_from_rest_frame", "kinematics.boost_to_rest_frame")
def _kin_rest(name):
    f = getattr(_mod("kinematics"), name.split(".")[1])
    _raises(f, P4, jnp.array([1.0, 2.0, 0.0, 0.0]), match="time-like")
    _raises(f, P4, NAN4)
    g = jax.jit(jax.grad(lambda fr: jnp.sum(f(P4, fr))))(jnp.array([1.0, 2.0, 0.0, 0.0]))
    assert _all_finite(g)


@case("kinematics.from_pt_eta_phi_m")
def _kin_from(name):
    kin = _mod("kinematics")
    _raises(kin.from_pt_eta_phi_m, jnp.nan, 0.0, 0.0, 0.0, match="NaN")
    _raises(kin.from_pt_eta_phi_m, -1.0, 0.0, 0.0, 0.0, match="pt")
    _raises(kin.from_pt_eta_phi_m, 1.0, 0.0, 0.0, -1.0, match="m")


@case("kinematics.rotate")
def _kin_rotate(name):
    kin = _mod("kinematics")
    _raises(kin.rotate, P4, jnp.zeros(3), 0.3, match="non-zero")
    _raises(kin.rotate, P4, jnp.ones(2), 0.3, match="trailing dimension 3")
    _raises(kin.rotate, P4, jnp.ones(3), jnp.nan, match="NaN")


@case("kinematics.pairwise_features", "io.pairwise_features")
def _kin_pairs(name):
    f = _mod("kinematics").pairwise_features
    _raises(f, jnp.ones((3, 3)), match="trailing dimension 4")
    _raises(f, jnp.ones((3, 4)), partners=np.zeros((2, 1), int))
    _raises(f, jnp.ones((3, 4)).at[0, 0].set(jnp.nan), match="NaN")
    assert _all_finite(f(jnp.zeros((3, 4))))  # all-zero (padding) particles: floored, finite


# ----------------------------------------------------------------------- phasespace
@case("phasespace.from_unit_cube")
def _ps_cube(name):
    ps = _mod("phasespace")
    _raises(ps.from_unit_cube, jnp.full(4, 0.5), 100.0, jnp.zeros(3), match="trailing")
    _raises(ps.from_unit_cube, jnp.full(5, 1.5), 100.0, jnp.zeros(3), match="unit cube")
    _raises(ps.from_unit_cube, jnp.full(5, 0.5), 1.0, jnp.ones(3))  # below threshold
    _raises(ps.from_unit_cube, jnp.full(5, 0.5), 100.0, -jnp.ones(3))
    momenta, weight = jax.jit(ps.from_unit_cube)(jnp.full(5, 0.5), 1.0, jnp.ones(3))
    assert float(weight) == 0.0 and _all_finite(momenta)  # the documented mask inside jit


@case("phasespace.unit_cube_dim", "phasespace.massless_volume")
def _ps_dims(name):
    ps = _mod("phasespace")
    _raises(ps.unit_cube_dim, 1)
    _raises(ps.massless_volume, 1, 100.0)
    if name.endswith("volume"):
        _raises(ps.massless_volume, 3, -1.0)


@case("phasespace.rambo", "phasespace.sample_batch", "phasespace.integrate")
def _ps_rambo(name):
    ps = _mod("phasespace")
    key = jax.random.key(0)
    if name.endswith("rambo"):
        _raises(ps.rambo, key, 1.0, jnp.ones(3))
        _raises(ps.rambo, key, jnp.nan, jnp.zeros(3))
    elif name.endswith("sample_batch"):
        _raises(ps.sample_batch, key, 0, 100.0, jnp.zeros(3))
    else:
        _raises(ps.integrate, lambda p: jnp.ones(p.shape[0]), 0, 100.0, jnp.zeros(3), key=key)
        _raises(ps.integrate, lambda p: jnp.ones(p.shape[0]), 100, 1.0, jnp.ones(3), key=key)


@case("phasespace.two_body_decay", "phasespace.two_body_volume")
def _ps_two(name):
    ps = _mod("phasespace")
    if name.endswith("volume"):
        assert float(ps.two_body_volume(1.0, 1.0, 1.0)) == 0.0  # closed channel: documented 0
        _raises(ps.two_body_volume, jnp.nan, 0.0, 0.0, match="NaN")
        _raises(ps.two_body_volume, 10.0, -1.0, 0.0, match="m1")
    else:
        parent = jnp.array([10.0, 0.0, 0.0, 0.0])
        _raises(ps.two_body_decay, parent, 10.0, 6.0, 6.0, 0.5, 0.5)
        _raises(ps.two_body_decay, parent, 10.0, 1.0, 1.0, 1.5, 0.5)


@case("phasespace.breit_wigner_map")
def _ps_bw(name):
    ps = _mod("phasespace")
    _raises(ps.breit_wigner_map, 0.5, 91.0, -2.0, 50.0, 150.0, match="width")
    _raises(ps.breit_wigner_map, 0.5, 91.0, 2.0, 150.0, 50.0)
    _raises(ps.breit_wigner_map, 1.5, 91.0, 2.0, 50.0, 150.0)


@case("phasespace.decay_tree_dim", "phasespace.decay_tree_from_unit_cube")
def _ps_tree(name):
    ps = _mod("phasespace")
    _raises(ps.decay_tree_dim, ((0, 1, 2),))  # a node must have two children
    if name.endswith("unit_cube"):
        tree = ((0, (0, 1)), 2)
        d = ps.decay_tree_dim(tree)
        _raises(ps.decay_tree_from_unit_cube, jnp.full(d + 1, 0.5), 500.0, tree, jnp.zeros(3),
                jnp.array([80.0]), jnp.array([2.0]))


@case("phasespace.resonant_pair_from_unit_cube")
def _ps_pair(name):
    ps = _mod("phasespace")
    _raises(ps.resonant_pair_from_unit_cube, jnp.full(7, 0.5), 500.0, 173.0, 1.5, jnp.zeros(4))
    _raises(ps.resonant_pair_from_unit_cube, jnp.full(8, 0.5), 500.0, 173.0, -1.5, jnp.zeros(4))


@case("phasespace.hit_or_miss")
def _ps_hit(name):
    ps = _mod("phasespace")
    _raises(ps.hit_or_miss, jax.random.key(0), jnp.array([0.0, jnp.nan]), 0.0, match="NaN")
    _raises(ps.hit_or_miss, jax.random.key(0), jnp.zeros(3), jnp.inf)


# ----------------------------------------------------------------------- amplitudes
@case("amplitudes.process", "amplitudes.parse")
def _amp_parse(name):
    amp = _mod("amplitudes")
    f = getattr(amp, name.split(".")[1])
    _raises(f, None, exc=TypeError, match="process string")
    _raises(f, "e+ e- > zz", match="zz")
    _raises(f, "e+ e- mu+ mu-")  # no '>'


@case("amplitudes.Process")
def _amp_process_call(name):
    amp = _mod("amplitudes")
    proc = amp.process("e+ e- > mu+ mu-")
    _raises(proc, jnp.ones((4, 3)), match=r"\(\.\.\., 4, 4\)")
    p, _ = proc.phase_space(jnp.full((1, proc.phase_space_dim), 0.3), 91.0)
    _raises(proc, p.at[0, 2, 0].add(1.0), match="conserve")
    _raises(proc.phase_space, jnp.full((1, proc.phase_space_dim), 0.3), 91.0, mapping="x")
    g = jax.grad(lambda q: jnp.sum(jax.jit(proc)(q)))(p.at[0, 0, 0].set(jnp.nan))
    assert _all_finite(g)


@case("amplitudes.ProcessSet")
def _amp_set(name):
    amp = _mod("amplitudes")
    procs = amp.process("p p > mu+ mu-")
    assert isinstance(procs, amp.ProcessSet) and len(procs) > 1
    _raises(amp.cross_section, procs, 91.0, 100, key=jax.random.key(0))  # needs a pdf


@case("amplitudes.SMParams")
def _amp_params(name):
    amp = _mod("amplitudes")
    _raises(amp.SMParams, MZ=-1.0, match=">= 0|> 0")
    _raises(amp.SMParams, WT=jnp.nan, match="not finite")
    _raises(amp.SMParams, QQ=1.0, match="unknown")
    _raises(amp.SMParams, MZ=jnp.ones(2), match="scalar")
    _raises(amp.SMParams.from_param_card, "/nonexistent/param_card.dat")


@case("amplitudes.cross_section", "amplitudes.dsigma", "amplitudes.sigma_integrand")
def _amp_sigma(name):
    amp = _mod("amplitudes")
    proc = amp.process("e+ e- > mu+ mu-")
    key = jax.random.key(0)
    if name.endswith("cross_section"):
        _raises(amp.cross_section, proc, 91.0, 0, key=key)
        _raises(amp.cross_section, proc, jnp.nan, 100, key=key)
        _raises(amp.cross_section, amp.process("e+ e- > t t~"), 300.0, 100, key=key)
    elif name.endswith("dsigma"):
        _raises(amp.dsigma, proc, lambda p: p[..., 2, 3], jnp.array([1.0, 0.0]), 91.0, 100,
                key=key)
        _raises(amp.dsigma, proc, lambda p: p[..., 2, 3], jnp.array([0.0, 1.0]), 91.0, 0,
                key=key)
    else:
        _raises(amp.sigma_integrand, proc, jnp.full(3, 0.5), 91.0, amp.SMParams())


@case("amplitudes.hadronic_integrand", "amplitudes.check_hadronic", "amplitudes.parton_groups")
def _amp_hadronic(name):
    amp = _mod("amplitudes")
    procs = amp.process("p p > mu+ mu-")
    if name.endswith("parton_groups"):
        _raises(amp.parton_groups, "p p > mu+ mu-", exc=TypeError)
        return
    pdf = _mod("pdf").load("NNPDF23_lo_as_0130_qed", alpha_s=0.130)
    _raises(amp.check_hadronic, procs, 13000.0, amp.SMParams(), pdf, None, (2212, 2212),
            match="scale")
    _raises(amp.check_hadronic, procs, 13000.0, amp.SMParams(), pdf, 91.0, (11, 2212),
            match="protons")
    if name.endswith("integrand"):
        sub = procs[0]
        _raises(amp.hadronic_integrand, sub, pdf, jnp.full(3, 0.5), 13000.0, amp.SMParams(),
                91.0)


@case("amplitudes.colour_flows", "amplitudes.colour_flow_weights",
      "amplitudes.sample_colour_flow", "amplitudes.resonances")
def _amp_colour(name):
    amp = _mod("amplitudes")
    f = getattr(amp, name.split(".")[1])
    if name.endswith(("colour_flows", "resonances")):
        _raises(f, "u u~ > d d~", exc=TypeError)
        return
    proc = amp.process("u u~ > d d~")
    args = (jax.random.key(0),) if name.endswith("sample_colour_flow") else ()
    _raises(f, *args, proc, jnp.ones((2, 3, 4)))
    p, _ = proc.phase_space(jnp.full((1, proc.phase_space_dim), 0.3), 91.0)
    _raises(f, *args, proc, p.at[0, 0, 0].set(jnp.nan), match="NaN")


@case("amplitudes.u_spinor", "amplitudes.v_spinor", "amplitudes.ubar_spinor",
      "amplitudes.vbar_spinor", "amplitudes.polarization_vector")
def _amp_wavefunctions(name):
    f = getattr(_mod("amplitudes"), name.split(".")[1])
    _raises(f, P4, 0.0, 5, match="helicity")
    _raises(f, P4[:3], 0.0, 1, match="trailing dimension 4")
    _raises(f, P4, -1.0, 1, match="mass")
    _raises(f, NAN4, 0.0, 1, match="NaN")


@case("amplitudes.mdot", "amplitudes.slash", "amplitudes.fermion_current",
      "amplitudes.ffv_amplitude", "amplitudes.ffs_amplitude", "amplitudes.vvv_vertex",
      "amplitudes.vvvv_vertex")
def _amp_helas(name):
    f = getattr(_mod("amplitudes"), name.split(".")[1])
    n_args = {"mdot": 2, "slash": 1, "fermion_current": 2, "ffv_amplitude": 3,
              "ffs_amplitude": 2, "vvv_vertex": 4, "vvvv_vertex": 3}[name.split(".")[1]]
    extra = {"fermion_current": (1.0, 1.0), "ffv_amplitude": (1.0, 1.0),
             "ffs_amplitude": (1.0, 1.0)}.get(name.split(".")[1], ())
    c4 = P4.astype(jnp.complex128)
    _raises(f, *([c4[:3]] + [c4] * (n_args - 1)), *extra, match="trailing dimension 4")
    _raises(f, *([c4.at[0].set(jnp.nan)] + [c4] * (n_args - 1)), *extra, match="NaN")


@case("amplitudes.vector_propagator", "amplitudes.scalar_propagator",
      "amplitudes.fermion_propagator")
def _amp_props(name):
    amp = _mod("amplitudes")
    c4 = P4.astype(jnp.complex128)
    first = {"vector_propagator": (c4,), "scalar_propagator": (1.0 + 0j,),
             "fermion_propagator": ()}[name.split(".")[1]]
    last = (jnp.complex128,) if name.endswith("fermion_propagator") else ()
    f = getattr(amp, name.split(".")[1])
    _raises(f, *first, P4, 91.0, -1.0, *last, match="width")
    _raises(f, *first, P4, -91.0, 1.0, *last, match="mass")
    _raises(f, *first, P4[:3], 91.0, 1.0, *last, match="trailing dimension 4")


@case("amplitudes.gluon_amplitude", "amplitudes.quark_line_amplitude")
def _amp_bg(name):
    amp = _mod("amplitudes")
    c4 = P4.astype(jnp.complex128)
    if name.endswith("gluon_amplitude"):
        _raises(amp.gluon_amplitude, [P4, P4], [c4], match="as many polarisations")
        _raises(amp.gluon_amplitude, [P4, P4, P4[:3]], [c4, c4, c4], match="trailing")
    else:
        _raises(amp.quark_line_amplitude, c4, c4, P4, 0.0, [P4], [], match="polarisations")
        _raises(amp.quark_line_amplitude, c4[:3], c4, P4, 0.0, [P4], [c4], match="trailing")


# ------------------------------------------------------------------------------ pdf
@case("pdf.load", "pdf.find", "pdf.PDFSet", "pdf.search_path")
def _pdf(name):
    pdf = _mod("pdf")
    if name.endswith("search_path"):
        paths = pdf.search_path()
        assert isinstance(paths, list) and all(hasattr(p, "exists") for p in paths)
        return
    f = pdf.find if name.endswith("find") else pdf.load
    _raises(f, "no_such_pdf_set", match="no_such_pdf_set")
    _raises(f, "NNPDF23_lo_as_0130_qed", member=999)
    if not name.endswith("find"):
        s = pdf.load("NNPDF23_lo_as_0130_qed", alpha_s=0.130)
        _raises(s.xfx, 21, 1.5, 100.0, match="x")
        _raises(s.xfx, 21, 0.1, jnp.nan, match="NaN|Q")
        _raises(s.xfx, 99, 0.1, 100.0, match="99")
        assert float(s.xfx(6, 0.1, 100.0)) == 0.0  # no top in a 5-flavour set: documented 0


# --------------------------------------------------------------------------- vertex
@case("vertex.fit", "vertex.BeamSpot", "vertex.Perigee")
def _vx_fit(name):
    tracks = _tracks(jax.random.key(0))
    _raises(vx.fit, tracks, bfield=jnp.nan, match="bfield")
    _raises(vx.fit, "tracks", bfield=B, exc=TypeError)
    _raises(vx.Perigee, jnp.zeros((3, 4)), jnp.zeros((3, 5, 5)), match=r"n, 5")
    _raises(vx.fit, tracks, bfield=B, constraint=vx.BeamSpot(jnp.zeros(2), jnp.eye(3)),
            match="BeamSpot")


@case("vertex.TrackResolution", "vertex.simulate_tracks")
def _vx_sim(name):
    _raises(vx.simulate_tracks, jax.random.key(0), jnp.zeros(3), jnp.ones((2, 3)),
            jnp.array([1.0, 0.0]), B, match="charge")
    _raises(vx.simulate_tracks, jax.random.key(0), jnp.zeros(3), jnp.ones((2, 3)),
            jnp.array([1.0, -1.0]), jnp.nan, match="bfield")
    _raises(vx.TrackResolution, d0_a=-1.0, match="d0_a")


@case("vertex.curvature", "vertex.local_to_momentum", "vertex.momentum_to_local",
      "vertex.perigee_from_local", "vertex.perigee_from_state", "vertex.perigee_jacobians",
      "vertex.state_at_vertex")
def _vx_helix(name):
    f = getattr(vx, name.split(".")[1])
    args = {
        "curvature": (0.1, 1.0, jnp.nan),  # a NaN field (B = 0 is the straight-line limit)
        "local_to_momentum": (0.0, 1.0, 0.0),  # q/p = 0: no momentum
        "momentum_to_local": (jnp.ones(3), 0.0),  # neutral
        "perigee_from_local": (jnp.zeros(3), 0.0, 0.0, 0.1, B),  # theta = 0
        "perigee_from_state": (jnp.zeros(3), jnp.ones(3), 1.0, jnp.nan),
        "perigee_jacobians": (jnp.zeros(3), jnp.array([0.0, 1.0, 0.0]), B),
        "state_at_vertex": (jnp.zeros((2, 4)), jnp.zeros((1, 3)), B),
    }[name.split(".")[1]]
    _raises(f, *args)


# -------------------------------------------------------------------------- stochad
@case("stochad.bernoulli", "stochad.binomial", "stochad.categorical", "stochad.exponential",
      "stochad.geometric", "stochad.normal", "stochad.poisson", "stochad.uniform")
def _sd_samplers(name):
    f = getattr(sd, name.split(".")[1])
    key = jax.random.key(0)
    bad = {"bernoulli": (2.0,), "binomial": (3.0, -0.1), "categorical": (jnp.array([0.2, 0.2]),),
           "exponential": (-1.0,), "geometric": (1.5,), "normal": (0.0, jnp.nan),
           "poisson": (1e4,), "uniform": (1.0, 0.0)}[name.split(".")[1]]
    _raises(f, key, *bad)
    _runtime_error(jax.jit(lambda k: f(k, *bad)), key, match="must")


@case("stochad.derivative_estimate")
def _sd_estimate(name):
    def f(t, k):
        return sd.bernoulli(k, t)

    key = jax.random.key(0)
    _raises(sd.derivative_estimate, f, 0.3, key=key, method="magic", match="unknown method")
    _raises(sd.derivative_estimate, f, jnp.nan, key=key, match="NaN")
    _raises(sd.derivative_estimate, f, 0.3, key=key, n_alternatives=0)
    _raises(sd.derivative_estimate, f, 0.3, key=key, method="gumbel", temperature=0.0)
    _raises(sd.derivative_estimate, f, 0.3, key=key, method="fd", wrong=1, match="unknown option")


# ------------------------------------------------------------------------------ sim
@case("sim.simulate", "sim.objective", "sim.density", "sim.mean_interaction_radius",
      "sim.DetectorConfig", "sim.optimize_detector", "sim.Shower")
def _sim(name):
    sim = _mod("sim")
    key = jax.random.key(0)
    short = name.split(".")[1]
    if short in ("simulate", "objective"):
        _raises(getattr(sim, short), jnp.nan, key, match="theta")
        _raises(getattr(sim, short), -1.0, key, match="theta")
    elif short == "density":
        _raises(sim.density, 1.0, 2.0, -1.0, 0.05, match="thickness")
    elif short == "mean_interaction_radius":
        _raises(sim.mean_interaction_radius, "shower", exc=(TypeError, AttributeError))
    elif short == "DetectorConfig":
        _raises(sim.DetectorConfig, thickness=-1.0, match="thickness")
        _raises(sim.DetectorConfig, step=0.0, match="step")
    elif short == "optimize_detector":
        _raises(sim.optimize_detector, key, method="magic", match="method")
        _raises(sim.optimize_detector, key, steps=0, match="steps")
    else:
        shower = sim.simulate(2.5, key)
        assert isinstance(shower, sim.Shower) and _all_finite(shower)


# ---------------------------------------------------------------------------- flows
@case("flows.make_spline_flow", "flows.SplineFlow", "flows.flow_from_state",
      "flows.rational_quadratic_spline", "flows.coupling_masks")
def _fl_flow(name):
    fl = _mod("flows")
    key = jax.random.key(0)
    short = name.split(".")[1]
    if short in ("make_spline_flow", "SplineFlow"):
        _raises(fl.make_spline_flow, key, 0, match="dim")
        _raises(fl.make_spline_flow, key, 2, n_layers=0, match="n_layers")
        _raises(fl.make_spline_flow, key, 2, support="sphere", match="support")
        flow = fl.make_spline_flow(key, 2, n_layers=2, hidden=8)
        _raises(flow.log_prob, jnp.ones(3), match="last axis 2")
    elif short == "flow_from_state":
        flow = fl.make_spline_flow(key, 2, n_layers=2, hidden=8)
        _raises(fl.flow_from_state, flow, "state", exc=(TypeError, AttributeError))
    elif short == "rational_quadratic_spline":
        _raises(fl.rational_quadratic_spline, jnp.zeros(2), jnp.zeros((2, 5)), 1.0, -1.0,
                identity_tails=True, match="lo < hi")
    else:
        _raises(fl.coupling_masks, 1, 2, match="dim")
        _raises(fl.coupling_masks, 2, 0, match="n_layers")


@case("flows.GaussianMixture", "flows.ManyWell", "flows.gmm40")
def _fl_targets(name):
    fl = _mod("flows")
    if name.endswith("GaussianMixture"):
        _raises(fl.GaussianMixture, jnp.zeros((3, 2)), jnp.array(-1.0), match="std")
        _raises(fl.GaussianMixture, jnp.full((3, 2), jnp.nan), jnp.array(1.0), match="NaN")
    elif name.endswith("ManyWell"):
        _raises(fl.ManyWell, dim=3, match="even")
    else:
        _raises(fl.gmm40, jax.random.key(0), n_modes=0, match="n_modes")


@case("flows.MatrixElementTarget", "flows.matrix_element_target")
def _fl_me(name):
    fl = _mod("flows")
    _raises(fl.matrix_element_target, "e+ e- > t t~", 300.0, match="closed")
    _raises(fl.matrix_element_target, "e+ e- > mu+ mu-", 91.0, mapping="weird")
    target = fl.matrix_element_target("e+ e- > mu+ mu-", 91.0)
    _raises(target.log_prob, jnp.full(3, 0.5), match="last axis|trailing")
    assert float(target.log_prob(jnp.full(target.dim, 1.5))) == -np.inf  # outside the cube


@case("flows.TrainConfig", "flows.make_trainer", "flows.train_flow", "flows.FlowState")
def _fl_train(name):
    import optax

    fl = _mod("flows")
    flow = _unit_flow(jax.random.key(0))
    _raises(fl.make_trainer, "magic", flow, lambda x: -jnp.sum(x**2), optax.adam(1e-3),
            match="method")
    _raises(fl.make_trainer, "fab", flow, lambda x: -jnp.sum(x**2), optax.adam(1e-3),
            fl.TrainConfig(batch=64, buffer_capacity=8), match="buffer_capacity")
    _raises(fl.make_trainer, "fkl", flow, lambda x: -jnp.sum(x**2), optax.adam(1e-3),
            match="target_sampler")
    _raises(fl.train_flow, jax.random.key(0), "rkl", flow, lambda x: -jnp.sum(x**2), steps=0,
            progress=False, match="steps")
    _raises(fl.make_trainer, "rkl", flow, lambda x: -jnp.sum(x**2), optax.adam(1e-3),
            fl.TrainConfig(batch=0), match="batch")


@case("flows.ais_init", "flows.ais_step", "flows.beta_ladder", "flows.AISState",
      "flows.AISResult")
def _fl_ais(name):
    fl = _mod("flows")
    _raises(fl.beta_ladder, 0, match="n_levels")
    _raises(fl.beta_ladder, 4, "cubic", match="schedule")
    _raises(fl.ais_init, 4, -0.1, match="step_size")
    flow = _unit_flow(jax.random.key(0))
    _raises(fl.ais_step, jax.random.key(0), fl.ais_init(2), flow, lambda x: -jnp.sum(x**2), 0,
            match="n")
    _raises(fl.ais_step, jax.random.key(0), fl.ais_init(2), flow, lambda x: -jnp.sum(x**2), 8,
            transition="gibbs", match="transition")


@case("flows.buffer_init", "flows.buffer_add", "flows.buffer_adjust", "flows.buffer_sample",
      "flows.ReplayBuffer")
def _fl_buffer(name):
    fl = _mod("flows")
    _raises(fl.buffer_init, 0, 2, match="capacity")
    buf = fl.buffer_init(4, 2)
    _raises(fl.buffer_add, buf, jnp.ones((5, 2)), jnp.zeros(5), jnp.zeros(5), match="capacity")
    _raises(fl.buffer_add, buf, jnp.ones((2, 3)), jnp.zeros(2), jnp.zeros(2), match="dim")
    _raises(fl.buffer_adjust, buf, jnp.array([0]), jnp.zeros(1), max_adjust=0.5,
            match="max_adjust")
    _raises(fl.buffer_sample, jax.random.key(0), buf, 1, match="positive weight")


@case("flows.sampling_efficiency", "flows.unweighting_efficiency", "flows.log_z_estimate",
      "flows.LogZ")
def _fl_metrics(name):
    fl = _mod("flows")
    f = {"LogZ": fl.log_z_estimate}.get(name.split(".")[1], getattr(fl, name.split(".")[1], None))
    _raises(f, jnp.array([0.0, jnp.nan]), match="NaN")
    _raises(f, jnp.zeros((2, 2)), match="1-d")
    assert _all_finite(f(jnp.zeros(4)))
    if name.endswith("unweighting_efficiency"):
        _raises(f, jnp.zeros(4), robust_quantile=1.5, match="robust_quantile")


@case("flows.importance_log_weights", "flows.vegas_sampler", "flows.FlowStepInfo")
def _fl_misc(name):
    fl = _mod("flows")
    flow = _unit_flow(jax.random.key(0))
    if name.endswith("vegas_sampler"):
        pytest.importorskip("vegas")
        _raises(fl.vegas_sampler, lambda x: -jnp.sum(x**2, -1), 2, 0, key=jax.random.key(0),
                match="train_evals")
        _raises(fl.vegas_sampler, lambda x: -jnp.sum(x**2, -1), 0, 100, key=jax.random.key(0),
                match="dim")
    else:
        _raises(fl.importance_log_weights, jax.random.key(0), flow, lambda x: -jnp.sum(x**2), 0,
                match="n")


# ------------------------------------------------------------------------------- io
@case("io.read_jetclass", "io.iterate_jetclass", "io.load_jets", "io.load_events",
      "io.load_tracks")
def _io_read(name, tmp_path):
    io = _mod("io")
    f = getattr(io, name.split(".")[1])
    args = (None,) if name.endswith("load_jets") else ()
    missing = tmp_path / "missing.root"
    call = (lambda *a, **k: list(f(*a, **k))) if name.endswith("iterate_jetclass") else f
    _raises(call, [missing], *args, exc=FileNotFoundError, match="missing.root")
    garbage = tmp_path / "garbage.root"
    garbage.write_text("not a ROOT file")
    _raises(call, [garbage], *args, exc=BAD + (OSError,), match="garbage.root")
    _raises(call, [], *args, match="no input files")


@case("io.write_jetclass")
def _io_write(name, tmp_path):
    io = _mod("io")
    path = tmp_path / "x.root"
    path.write_text("precious")
    _raises(io.write_jetclass, path, {}, {}, exc=FileExistsError)
    assert path.read_text() == "precious"
    _raises(io.write_jetclass, tmp_path / "y.root", {"part_px": [[1.0]]}, {"jet_pt": [1.0, 2.0]},
            match="jets")


@case("io.batches", "io.epoch_batches", "io.epoch_order", "io.Table", "io.concatenate")
def _io_batches(name):
    io = _mod("io")
    key = jax.random.key(0)
    t = io.Table(x=np.zeros((10, 2)), label=np.zeros(10, int))
    _raises(lambda: next(io.batches(t, 0, key=key)), match="batch_size")
    _raises(lambda: next(io.batches(t, 11, key=key)), match="batch_size")
    _raises(io.epoch_order, key, -1, 10, match="epoch")
    _raises(io.epoch_batches, key, 0, 10, 0, match="batch_size")
    _raises(io.Table, x=np.zeros((3, 2)), label=np.zeros(4), match="label: 4")
    _raises(io.concatenate, [], match="no tables|at least one")
    _raises(io.concatenate, [t, io.Table(y=np.zeros(2))], match="columns")


@case("io.trim_padding", "io.part_features", "io.part_p4", "io.jet_axis", "io.jet_tracks")
def _io_arrays(name):
    io = _mod("io")
    short = name.split(".")[1]
    if short == "trim_padding":
        batch = {"mask": np.ones((2, 4), bool), "features": np.zeros((2, 4, 3))}
        _raises(io.trim_padding, batch, 0, match="multiple")
        _raises(io.trim_padding, {"features": np.zeros((2, 4, 3))}, 4, exc=KeyError)
        _raises(io.trim_padding, batch, 4, quantile=1.5, match="quantile")
    elif short in ("part_features", "part_p4"):
        _raises(getattr(io, short), {"part_px": np.zeros((1, 2))}, exc=KeyError)
    elif short == "jet_axis":
        _raises(io.jet_axis, np.array([np.nan]), np.array([0.0]), match="NaN")
    else:
        _raises(io.jet_tracks, {}, exc=KeyError)
        _raises(io.jet_tracks, {"mask": np.ones((1, 2), bool)}, max_tracks=0, match="max_tracks")


@case("io.process_events", "io.write_lhe", "io.EventRecord")
def _io_lhe(name, tmp_path):
    amp, io = _mod("amplitudes"), _mod("io")
    proc = amp.process("e+ e- > mu+ mu-")
    p, _ = proc.phase_space(jnp.full((2, proc.phase_space_dim), 0.3), 91.0)
    _raises(io.process_events, proc, np.asarray(p)[:, :3], key=jax.random.key(0))
    bad = np.array(p)
    bad[0, 0, 0] = np.nan
    _raises(io.process_events, proc, bad, key=jax.random.key(0), match="NaN")
    records = io.process_events(proc, np.asarray(p), key=jax.random.key(0))
    assert isinstance(records[0], io.EventRecord)
    _raises(io.write_lhe, tmp_path / "a.lhe", records, beams=(-11, 11),
            beam_energies=(45.5, -1.0), sigma_pb=1.0, error_pb=0.1, match="beam_energies")


def _small_config():
    io = _mod("io")
    return io.DataConfig.from_dict({
        "inputs": {"pf_features": {"length": 4, "vars": ["x"]},
                   "pf_vectors": {"length": 4, "vars": ["px", "py", "pz", "e"]},
                   "pf_mask": {"length": 4, "vars": ["m"]}},
        "labels": {"type": "simple", "value": ["a", "b"]}})


def _tiny_root(tmp_path):
    import uproot

    path = tmp_path / "tiny.root"
    with uproot.recreate(path) as f:
        f["tree"] = {"x": np.arange(3.0)}
    return path


@case("io.DataConfig", "io.Expression", "io.InputGroup", "io.InputVar", "io.Roles",
      "io.auto_standardise")
def _io_data_config(name, tmp_path):
    io = _mod("io")
    _raises(io.DataConfig.from_dict, {}, match="no 'inputs'")
    _raises(io.DataConfig.from_dict, {"inputs": {"g": {"length": 0, "vars": ["a"]}}},
            match="length")
    _raises(io.DataConfig.from_dict, {"inputs": {"g": {"vars": [["a", "centre"]]}},
                                      "labels": {"type": "simple", "value": ["a", "b"]}},
            match="number")
    _raises(io.DataConfig.from_yaml, tmp_path / "none.yaml", exc=FileNotFoundError)
    _raises(io.Expression.parse, "", "x", match="expression")
    _raises(io.Expression.parse, "a.__class__", "x", match="'_'")
    cfg = _small_config()
    assert cfg.roles() == io.Roles("pf_features", "pf_vectors", "pf_mask")
    assert isinstance(cfg.inputs[0], io.InputGroup) and isinstance(cfg.inputs[0].vars[0],
                                                                   io.InputVar)
    _raises(cfg.roles, {"features": "nosuch"}, match="not an input group")
    _raises(cfg.roles, {"points": "pf_features"}, match="unknown role")
    auto = io.DataConfig.from_dict({**cfg.source, "preprocess": {"method": "auto"}})
    import awkward as ak

    no_particles = {**{v: [[]] for v in ("x", "px", "py", "pz", "e", "m")}, "a": [1], "b": [0]}
    _raises(io.auto_standardise, auto, lambda branches: ak.Array(no_particles),
            match="no values")


@case("io.Chunk", "io.JetStream", "io.evaluate_chunk", "io.expand_files", "io.file_chunks",
      "io.iterate_files", "io.read_chunk", "io.read_fraction")
def _io_stream(name, tmp_path):
    io = _mod("io")
    missing = str(tmp_path / "missing*.root")
    _raises(io.expand_files, [], match="no input files")
    _raises(io.expand_files, missing, exc=FileNotFoundError)
    (tmp_path / "x.txt").write_text("")
    _raises(io.expand_files, tmp_path / "x.txt", match="ROOT or parquet")
    tiny = _tiny_root(tmp_path)
    _raises(io.file_chunks, [str(tiny)], 0, match="chunk_size")
    _raises(io.file_chunks, [str(tiny)], 10, "nosuchtree", match="no tree")
    _raises(io.read_fraction, tiny, 0.0, ["x"], match="fraction")
    _raises(io.read_chunk, io.Chunk(str(tiny), 0, 3, "tree"), ["nosuch"], match="nosuch")
    cfg = _small_config()
    _raises(io.evaluate_chunk, cfg, io.Chunk(str(tiny), 0, 3, "tree"), training=True,
            match="px|a")
    _raises(lambda: next(io.iterate_files(cfg, missing)), exc=FileNotFoundError)
    _raises(io.JetStream, tiny, cfg, 0, key=jax.random.key(0), match="batch_size")
    _raises(io.JetStream, tiny, cfg, 6, key=jax.random.key(0), lanes=4, match="lanes")


@case("io.to_vector", "io.from_vector")
def _io_vector(name):
    pytest.importorskip("vector")
    io = _mod("io")
    _raises(io.to_vector, np.zeros((2, 3)), match="E, px, py, pz")
    _raises(io.to_vector, np.zeros((2, 3, 4)), np.ones((2, 2), bool), match="mask")
    _raises(io.to_vector, np.zeros((2, 4)), np.ones(2, bool), match="mask")
    empty = io.to_vector(np.zeros((2, 3, 4)), np.zeros((2, 3), bool))
    _raises(io.from_vector, empty, match="max_particles")


# ------------------------------------------------------------------------------- nn
def _part_config(num_classes=2, **kw):
    nn = _mod("nn")
    return nn.ParTConfig(input_dim=17, num_classes=num_classes, embed_dims=(8,),
                         pair_embed_dims=(8,), num_heads=2, num_layers=1, num_cls_layers=1,
                         **kw)


@case("nn.ParTConfig", "nn.ParticleTransformer", "nn.count_params")
def _nn_part(name):
    from flax import nnx

    nn = _mod("nn")
    _raises(nn.ParTConfig.named, "galactic", num_classes=2, match="galactic")
    _raises(_part_config, num_heads=3, match="num_heads")
    _raises(_part_config, dropout=1.5, match="dropout")
    model = nn.ParticleTransformer(_part_config(), rngs=nnx.Rngs(0))
    assert nn.count_params(model) > 0
    x, p4, mask = jnp.zeros((2, 5, 17)), jnp.ones((2, 5, 4)), jnp.ones((2, 5), bool)
    _raises(model, x[..., :6], p4, mask, match="17")
    _raises(model, x.at[0, 0, 0].set(jnp.nan), p4, mask, match="NaN")
    _raises(nn.count_params, "model", exc=(TypeError, AttributeError))
    # padded particles with NaN features are ignored, not propagated
    out = model(x.at[0, 4, 0].set(jnp.nan), p4, mask.at[0, 4].set(False))
    assert _all_finite(out)


@case("nn.JetClassifier", "nn.EventClassifier", "nn.DeepSetsHead")
def _nn_heads(name):
    from flax import nnx

    nn = _mod("nn")
    backbone = nn.ParticleTransformer(_part_config(num_classes=0), rngs=nnx.Rngs(0))
    _raises(nn.JetClassifier, backbone, 0, rngs=nnx.Rngs(1), match="num_classes")
    _raises(nn.EventClassifier, backbone, 0, rngs=nnx.Rngs(1), match="num_classes")
    _raises(nn.DeepSetsHead, 8, 0, rngs=nnx.Rngs(1), match="num_classes")
    _raises(nn.DeepSetsHead, 8, 2, pooling="median", rngs=nnx.Rngs(1), match="pooling")


@case("nn.MultiTaskMLP", "nn.NeuronMasks", "nn.isolate", "nn.trainable_masks",
      "nn.reset_free_units")
def _nn_continual(name):
    from flax import nnx

    nn = _mod("nn")
    _raises(nn.MultiTaskMLP, 4, (), 2, 2, rngs=nnx.Rngs(0), match="hidden")
    _raises(nn.MultiTaskMLP, 4, (3,), 0, 2, rngs=nnx.Rngs(0), match="n_tasks")
    _raises(nn.NeuronMasks.empty, (3, 0), match="widths")
    model = nn.MultiTaskMLP(4, (3,), 2, 2, rngs=nnx.Rngs(0))
    _raises(model, jnp.ones((2, 5)), 0, match="4 input features")
    _raises(model, jnp.ones((2, 4)), 2, match="task")
    wrong = nn.NeuronMasks.empty((5,))
    bad_owner = nn.NeuronMasks((jnp.array([0, 7, -1]),))
    for fn in (nn.isolate, lambda m, k: nn.trainable_masks(m, k, 0),
               lambda m, k: nn.reset_free_units(m, k, key=jax.random.key(0))):
        _raises(fn, model, wrong, match="units")
        _raises(fn, model, bad_owner, match="owners")
        _raises(fn, model, (jnp.zeros(3),), exc=TypeError, match="NeuronMasks")
    _raises(nn.trainable_masks, model, nn.NeuronMasks.empty((3,)), 5, match="task")


@case("train.frozen", "train.neuron_activity", "train.activation_l1", "train.allocate",
      "train.graceful_threshold", "train.capacity_report", "train.fisher_diagonal",
      "train.ewc_penalty")
def _train_continual(name):
    import optax
    from flax import nnx

    nn, train = _mod("nn"), _mod("train")
    model = nn.MultiTaskMLP(4, (3,), 2, 2, rngs=nnx.Rngs(0))
    masks = nn.NeuronMasks.empty((3,))
    opt = train.frozen(optax.adam(0.1), {"w": jnp.ones(3, bool)})
    params = {"w": jnp.ones(4)}
    _raises(lambda: opt.update(params, opt.init(params), params), match="shape")
    _raises(lambda: opt.update({"w": jnp.ones(3), "b": jnp.ones(1)}, None), match="leaves")
    _raises(train.neuron_activity, model, jnp.ones((0, 4)), match="non-empty")
    _raises(train.neuron_activity, "model", jnp.ones((2, 4)), exc=TypeError)
    _raises(train.activation_l1, model, jnp.ones((2, 4)), nn.NeuronMasks.empty((5,)),
            match="units")
    act = (jnp.ones(3),)
    _raises(train.allocate, masks, (jnp.array([1.0, jnp.nan, 0.0]),), 0.1, 0, match="NaN")
    _raises(train.allocate, masks, (jnp.ones(4),), 0.1, 0, match="shape")
    _raises(train.allocate, masks, act, -0.1, 0, match="threshold")
    _raises(train.allocate, masks, act + act, 0.1, 0, match="layers")
    _raises(train.graceful_threshold, lambda m: 1.0, masks, act, 0, 1.5, match="eps")
    _raises(train.capacity_report, model, nn.NeuronMasks.empty((2,)), match="units")
    _raises(train.fisher_diagonal, lambda p, x: p * x, jnp.ones(()), [], match="at least one")
    _raises(train.ewc_penalty, params, [params], [], 1.0, match="one Fisher")
    _raises(train.ewc_penalty, params, [params], [params], jnp.nan, match="strength")
    assert float(train.ewc_penalty(params, [], [], 1.0)) == 0.0


@case("nn.MultiTaskParT", "train.continual_loss", "train.continual_optimizer")
def _continual_part(name):
    from flax import nnx

    nn, train = _mod("nn"), _mod("train")
    cfg = nn.ParTConfig(input_dim=3, embed_dims=(8,), pair_embed_dims=(4,), num_heads=2,
                        num_layers=1, num_cls_layers=1, ffn_ratio=1)
    _raises(nn.MultiTaskParT, cfg, 0, 2, rngs=nnx.Rngs(0), match="n_tasks")
    _raises(nn.MultiTaskParT, cfg, 2, (2,), rngs=nnx.Rngs(0), match="n_classes")
    model = nn.MultiTaskParT(cfg, 2, 2, rngs=nnx.Rngs(0))
    f, p4, mask = jnp.ones((1, 3, 3)), jnp.ones((1, 3, 4)), jnp.ones((1, 3), bool)
    _raises(model, jnp.ones((1, 3, 4)), p4, mask, match="features")
    _raises(model, f, jnp.ones((1, 2, 4)), mask, match="p4")
    _raises(model, f, p4, mask, 2, match="task")
    _raises(model, f.at[0, 1, 0].set(jnp.nan), p4, mask, match="NaN")
    _raises(nn.reset_free_units, model, model.masks, key=jax.random.key(0), exc=TypeError,
            match="ReLU")
    _raises(train.neuron_activity, model, {"features": f}, match="'p4'")
    _raises(train.neuron_activity, model, {"features": f, "p4": p4, "mask": mask & False},
            match="no real particle")
    _raises(train.continual_loss, -1.0, match="l1")
    _raises(train.continual_optimizer, model, model.masks, 0, learning_rate=0.0, steps=5,
            match="learning_rate")
    data = {"features": f, "p4": p4, "mask": mask, "label": jnp.array([2])}
    _raises(train.finetune, model, data, "continual", steps=2, batch_size=1,
            key=jax.random.key(0), masks=model.masks, task=0, match="labels")
    _raises(train.finetune, model, data, "continual", steps=2, batch_size=1,
            key=jax.random.key(0), task=0, match="needs masks")
    _raises(train.finetune, model, data, "frozen", steps=2, batch_size=1,
            key=jax.random.key(0), task=0, match="continual")
    _raises(train.allocate, model.masks, train.neuron_activity(model, data), 0.1, 0,
            exhausted="maybe", match="exhausted")


@case("nn.Dropout", "nn.dropout_keep_mask")
def _nn_dropout(name):
    nn = _mod("nn")
    _raises(nn.dropout_keep_mask, jax.random.key(0), (3,), 1.5, match="keep")
    _raises(nn.Dropout, 1.0, match="rate")
    _raises(nn.Dropout, -0.1, match="rate")


@case("nn.MaskedParticleModel", "nn.mpm_loss", "nn.MPMMetrics", "nn.check_token_features")
def _nn_mpm(name):
    from flax import nnx

    nn = _mod("nn")
    _raises(nn.check_token_features, (3, 5), (5,), match="revealed")
    _raises(nn.check_token_features, (), (5,), match="empty")
    backbone = nn.ParticleTransformer(_part_config(num_classes=0), rngs=nnx.Rngs(0))
    _raises(nn.MaskedParticleModel, backbone, 0, rngs=nnx.Rngs(1), match="codebook")
    if name.endswith("mpm_loss"):
        model = nn.MaskedParticleModel(backbone, 8, rngs=nnx.Rngs(1))
        batch = {"features": jnp.zeros((2, 5, 17)), "p4": jnp.ones((2, 5, 4)),
                 "mask": jnp.ones((2, 5), bool), "tokens": jnp.zeros((2, 5), jnp.int32)}
        _raises(nn.mpm_loss, model, batch, key=jax.random.key(0), fraction=1.5,
                match="fraction")
        _raises(nn.mpm_loss, model, {**batch, "tokens": jnp.full((2, 5), 9, jnp.int32)},
                key=jax.random.key(0), match="token")


@case("nn.KMeansTokenizer", "nn.VQVAE", "nn.VQMetrics")
def _nn_tokenizers(name):
    from flax import nnx

    nn = _mod("nn")
    x, mask = jnp.ones((4, 3, 2)), jnp.ones((4, 3), bool)
    _raises(nn.KMeansTokenizer.fit, jax.random.key(0), x, mask, codebook_size=0,
            match="codebook")
    _raises(nn.KMeansTokenizer.fit, jax.random.key(0), x.at[0, 0, 0].set(jnp.nan), mask,
            codebook_size=2, match="NaN")
    _raises(nn.KMeansTokenizer.fit, jax.random.key(0), x, jnp.zeros((4, 3), bool),
            codebook_size=2, match="no real particles")
    _raises(nn.VQVAE, 2, codebook_size=0, rngs=nnx.Rngs(0), match="codebook")


@case("nn.VertexTagger", "nn.tagger_loss", "nn.TaggerOutput", "nn.TaggerMetrics")
def _nn_tagger(name):
    from flax import nnx

    nn = _mod("nn")
    _raises(nn.VertexTagger, vertex="magic", rngs=nnx.Rngs(0), match="vertex")
    _raises(nn.VertexTagger, dim=0, rngs=nnx.Rngs(0), match="dim")
    _raises(nn.VertexTagger, bfield=0.0, rngs=nnx.Rngs(0), match="bfield")


# ----------------------------------------------------------------------------- data
@case("data.generate", "data.GenerationReport", "jobs.generate")
def _data_generate(name, tmp_path):
    f = _mod("jobs").generate if name.startswith("jobs") else _mod("data").generate
    _raises(f, "nosuchsample", 10, 0, tmp_path / "x.root", match="nosuchsample")
    _raises(f, "zpole", 0, 0, tmp_path / "x.root", match="events")
    _raises(f, "zpole", 10, 0, tmp_path / "x.root", workers=0, match="workers")
    (tmp_path / "y.root").write_text("precious")
    _raises(f, "zpole", 10, 0, tmp_path / "y.root", exc=FileExistsError)
    assert (tmp_path / "y.root").read_text() == "precious"


@case("data.cluster", "data.softdrop_mass", "data.heavy_flavour")
def _data_jets(name):
    data = _mod("data")
    short = name.split(".")[1]
    if short == "heavy_flavour":
        _raises(data.heavy_flavour, "b", exc=TypeError)
        return
    pytest.importorskip("fastjet")
    p4 = np.array([[10.0, 1.0, 2.0, 3.0], [np.nan, 1.0, 2.0, 3.0]])
    if short == "cluster":
        _raises(data.cluster, p4, "antikt", match="NaN")
        _raises(data.cluster, p4[:1], "magic", match="algorithm")
        _raises(data.cluster, p4[:1], "antikt", radius=-1.0, match="radius")
    else:
        _raises(data.softdrop_mass, p4, match="NaN")
        _raises(data.softdrop_mass, p4[:1], zcut=1.5, match="zcut")


# ---------------------------------------------------------------------------- train
@case("train.roc_auc", "train.roc_curve", "train.binary_metrics", "train.background_rejection",
      "train.BinaryMetrics")
def _tr_roc(name):
    tr = _mod("train")
    f = {"BinaryMetrics": tr.binary_metrics}.get(name.split(".")[1],
                                                 getattr(tr, name.split(".")[1], None))
    extra = (0.5,) if name.endswith("background_rejection") else ()
    scores, sig = np.array([0.1, 0.9, 0.4]), np.array([False, True, True])
    _raises(f, np.array([0.1, np.nan, 0.4]), sig, *extra, match="NaN")
    _raises(f, scores, sig[:2], *extra, match="shape|length")
    _raises(f, scores, np.ones(3, bool), *extra, match="background")
    if extra:
        _raises(f, scores, sig, 1.5, match="signal_efficiency")


@case("train.accuracy", "train.class_logit", "train.b_discriminant", "train.flavour_metrics",
      "train.FlavourMetrics")
def _tr_logits(name):
    tr = _mod("train")
    short = name.split(".")[1]
    logits = np.zeros((4, 3))
    if short == "accuracy":
        _raises(tr.accuracy, logits, np.array([0, 1, 5, 0]), match="label")
        _raises(tr.accuracy, logits, np.zeros(3, int), match=r"labels \(n,\)")
    elif short == "class_logit":
        _raises(tr.class_logit, logits, 3, match="class")
    elif short == "b_discriminant":
        _raises(tr.b_discriminant, logits, f_c=1.5, match="f_c")
        _raises(tr.b_discriminant, logits[:, :2], match="3")
    else:
        _raises(tr.flavour_metrics, logits, np.array([0, 1, 2, 0]), b_efficiency=0.0,
                match="efficiency")


@case("train.fit", "train.init_state", "train.make_train_step", "train.TrainState",
      "train.StepInfo", "train.classifier_loss", "train.predict", "train.ClassifierMetrics")
def _tr_fit(name):
    from flax import nnx

    nn, tr, io = _mod("nn"), _mod("train"), _mod("io")
    model = nn.JetClassifier(nn.ParticleTransformer(_part_config(num_classes=0),
                                                    rngs=nnx.Rngs(0)), 2, rngs=nnx.Rngs(1))
    data = io.Table(features=np.zeros((8, 5, 7), np.float32), p4=np.zeros((8, 5, 4), np.float32),
                    mask=np.ones((8, 5), bool), label=np.zeros(8, np.int32))
    _raises(tr.fit, model, data, steps=0, batch_size=4, key=jax.random.key(0), progress=False,
            match="steps")
    _raises(tr.fit, model, data, steps=2, batch_size=0, key=jax.random.key(0), progress=False,
            match="batch_size")
    _raises(tr.predict, model, {k: v for k, v in data.items() if k != "p4"}, exc=KeyError)
    _raises(tr.fit, model, data.replace(label=np.full(8, 7, np.int32)), steps=1, batch_size=4,
            key=jax.random.key(0), progress=False, match="label")


@case("train.finetune", "train.strategy_optimizer")
def _tr_finetune(name):
    tr = _mod("train")
    _raises(tr.strategy_optimizer, "magic", learning_rate=1e-3, steps=10, match="strategy")
    _raises(tr.strategy_optimizer, "finetune", learning_rate=-1.0, steps=10,
            match="learning_rate")
    _raises(tr.finetune, None, {}, "magic", steps=1, batch_size=1, key=jax.random.key(0),
            match="strategy")


@case("train.pretrain_mpm", "train.masked_loss", "train.fit_vqvae", "train.codebook_utilisation",
      "train.token_entropy", "train.token_r2", "train.context_free_baseline",
      "train.ContextFreeBaseline")
def _tr_foundation(name):
    tr = _mod("train")
    short = name.split(".")[1]
    tokens, mask = np.zeros((2, 3), int), np.ones((2, 3), bool)
    if short == "token_entropy":
        _raises(tr.token_entropy, tokens, mask[:, :2], match="shape")
        _raises(tr.token_entropy, tokens, np.zeros((2, 3), bool), match="no real")
    elif short == "token_r2":
        _raises(tr.token_r2, tokens, np.zeros((2, 3, 2)), mask[:, :2], match="shape")
    elif short in ("context_free_baseline", "ContextFreeBaseline"):
        _raises(tr.context_free_baseline, np.zeros((4, 2)), np.zeros(4, int), np.zeros((4, 2)),
                np.zeros(4, int), codebook_size=0, match=r"codebook_size|\[0, 0\)")
        _raises(tr.context_free_baseline, np.zeros((4, 2)), np.zeros(4, int), np.zeros((4, 2)),
                np.zeros(4, int), codebook_size=4, bins=0, match="bins")
    elif short == "fit_vqvae":
        _raises(tr.fit_vqvae, None, np.zeros((2, 3, 2)), mask, key=jax.random.key(0), steps=0,
                match="steps")
    elif short == "codebook_utilisation":
        _raises(tr.codebook_utilisation, None, np.zeros((2, 3, 2)), mask[:, :2], match="mask")
    elif short == "masked_loss":
        _raises(tr.masked_loss, None, {}, key=jax.random.key(0), fraction=0.0, match="fraction")
    else:
        _raises(tr.pretrain_mpm, None, {}, steps=0, batch_size=1, key=jax.random.key(0),
                match="steps")


@case("train.TokenInputs", "train.RankGauss", "train.neutral_impact_mask")
def _tr_tokens(name):
    tr = _mod("train")
    _raises(tr.TokenInputs.fit, np.zeros((2, 3, 5)), np.ones((2, 3), bool), match="17|features")
    _raises(tr.TokenInputs.fit, np.full((2, 3, 17), np.nan), np.ones((2, 3), bool), match="NaN")
    _raises(tr.neutral_impact_mask, np.zeros((2, 3, 2)), match="17|features")


@case("train.train_flavour_tagger", "train.evaluate_tagger", "train.vertex_performance",
      "train.TaggerResult", "train.VertexBin")
def _tr_flavour(name):
    tr = _mod("train")
    short = name.split(".")[1]
    if short in ("vertex_performance", "VertexBin"):
        _raises(tr.vertex_performance, np.zeros((2, 3)), np.zeros((2, 3, 3)), np.ones(2, bool),
                np.zeros((2, 3)), np.ones(2, bool), edges=(1.0, 0.0), match="edges")
    elif short == "evaluate_tagger":
        _raises(tr.evaluate_tagger, None, {}, batch_size=0, match="batch_size")
    else:
        _raises(tr.train_flavour_tagger, {}, vertex="magic", key=jax.random.key(0),
                match="vertex|lacks")


@case("train.training_loop", "train.Trainer", "train.History")
def _tr_loop(name):
    tr = _mod("train")
    trainer = _quadratic()
    _raises(tr.training_loop, jax.jit(trainer.step), trainer.init(None), key=jax.random.key(0),
            steps=0, progress=False, match="steps")
    _raises(tr.History, {"loss": np.zeros(3), "step": np.zeros(2)}, match="loss: 3|step: 2")


@case("train.save_pytree", "train.restore_pytree", "train.restore_latest", "train.save_module",
      "train.load_module")
def _tr_ckpt(name, tmp_path):
    from flax import nnx

    nn, tr = _mod("nn"), _mod("train")
    (tmp_path / "taken").mkdir()
    _raises(tr.save_pytree, tmp_path / "taken", {"x": jnp.ones(2)}, exc=FileExistsError)
    _raises(tr.restore_pytree, tmp_path / "none", {"x": jnp.ones(2)}, exc=FileNotFoundError)
    assert tr.restore_latest(tmp_path / "none", {"x": jnp.ones(2)}) is None
    model = nn.ParticleTransformer(_part_config(), rngs=nnx.Rngs(0))
    _raises(tr.load_module, tmp_path / "none", model, exc=FileNotFoundError)
    target = tmp_path / "saved"
    target.mkdir()
    (target / "state").mkdir()
    (target / "state" / "mine.txt").write_text("precious")
    _raises(tr.save_module, target, model, {}, exc=FileExistsError)
    assert (target / "state" / "mine.txt").read_text() == "precious"


# ------------------------------------------------------------------------- analysis
@case("analysis.fit_scan", "analysis.pseudo_data", "analysis.scan_nll",
      "analysis.unweighted_events", "analysis.ScanPoint", "analysis.FitResult")
def _an(name):
    amp, an = _mod("amplitudes"), _mod("analysis")
    proc = amp.process("e+ e- > mu+ mu-")
    key = jax.random.key(0)
    short = name.split(".")[1]
    if short == "unweighted_events":
        _raises(an.unweighted_events, proc, 91.0, 0, key=key, match="n_events")
        _raises(an.unweighted_events, proc, -1.0, 10, key=key, match="sqrt_s")
    elif short in ("pseudo_data", "ScanPoint"):
        _raises(an.pseudo_data, proc, [91.0, 92.0], [1.0], key=key, match="luminosit")
        _raises(an.pseudo_data, proc, [91.0], [-1.0], key=key, match="luminosit")
    elif short == "scan_nll":
        _raises(an.scan_nll, jnp.array([91.0]), ["MZ"], [], proc, key=key, match="data")
    else:
        _raises(an.fit_scan, [], proc, {"MZ": 91.0}, key=key, match="at least one event")


# ----------------------------------------------------------------------------- jobs
@case("jobs.train_jet_classifier", "jobs.pretrain_files", "jobs.pretrain_supervised_files",
      "jobs.finetune_files", "jobs.fit_tokenizer_files", "jobs.load_tokenizer")
def _jobs_files(name, tmp_path):
    jobs = _mod("jobs")
    short = name.split(".")[1]
    missing = [str(tmp_path / "missing.root")]
    out = tmp_path / "run"
    call = {
        "train_jet_classifier": lambda: jobs.train_jet_classifier(missing, ["label_b", "label_uds"],
                                                                 out, steps=1, progress=False),
        "pretrain_files": lambda: jobs.pretrain_files(missing, tmp_path / "tok", out, steps=1,
                                                      progress=False),
        "pretrain_supervised_files": lambda: jobs.pretrain_supervised_files(missing, out, steps=1,
                                                                            progress=False),
        "finetune_files": lambda: jobs.finetune_files(missing, out, strategy="scratch", steps=1,
                                                      progress=False),
        "fit_tokenizer_files": lambda: jobs.fit_tokenizer_files(missing, out, steps=1,
                                                                progress=False),
        "load_tokenizer": lambda: jobs.load_tokenizer(tmp_path / "tok"),
    }[short]
    _raises(call, exc=(FileNotFoundError, ValueError))
    assert not out.exists()  # validation failed before the run folder was made


@case("jobs.prepare_run_dir", "jobs.new_run_dir", "jobs.save_history")
def _jobs_runs(name, tmp_path):
    jobs = _mod("jobs")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.txt").write_text("precious")
    _raises(jobs.prepare_run_dir, tmp_path / "used", {}, exc=FileExistsError)
    _raises(jobs.prepare_run_dir, tmp_path / "used", {}, policy="overwrite", exc=FileExistsError)
    _raises(jobs.prepare_run_dir, tmp_path / "x", {}, policy="magic", match="policy")
    assert (tmp_path / "used" / "mine.txt").read_text() == "precious"
    a, b = jobs.new_run_dir(tmp_path, "r"), jobs.new_run_dir(tmp_path, "r")
    assert a != b
    jobs.save_history(tmp_path / "h.jsonl", [{"step": 1}])
    _raises(jobs.save_history, tmp_path / "h.jsonl", [{"step": 2}], exc=FileExistsError)


@case("jobs.sample_events", "jobs.run_demo", "jobs.detector_study")
def _jobs_long(name, tmp_path):
    jobs = _mod("jobs")
    short = name.split(".")[1]
    if short == "sample_events":
        _raises(jobs.sample_events, "e+ e- > mu+ mu-", 91.0, batch=0, progress=False,
                match="batch")
        _raises(jobs.sample_events, "e+ e- > t t~", 300.0, progress=False, match="closed")
    elif short == "run_demo":
        _raises(jobs.run_demo, tmp_path, n_points=0, match="n_points")
        _raises(jobs.run_demo, tmp_path, sqrt_s=-1.0, match="sqrt_s")
    else:
        _raises(jobs.detector_study, tmp_path, methods=("magic",), match="magic")
        _raises(jobs.detector_study, tmp_path, steps=0, match="steps")
    assert not [p for p in tmp_path.iterdir()]  # nothing written before the checks


@case("jobs.train_from_data_config", "jobs.predict_files", "jobs.load_trained",
      "jobs.TrainedRun")
def _jobs_data_config(name, tmp_path):
    jobs = _mod("jobs")
    out = tmp_path / "run"
    _raises(jobs.train_from_data_config, tmp_path / "none.yaml", [], out, progress=False,
            exc=FileNotFoundError)
    _raises(jobs.train_from_data_config, tmp_path / "none.yaml", [], out, steps=0,
            progress=False, match="steps")
    _raises(jobs.train_from_data_config, tmp_path / "none.yaml", [], out, lanes=0,
            progress=False, match="lanes")
    _raises(jobs.load_trained, tmp_path, exc=FileNotFoundError, match="no trained model")
    _raises(jobs.predict_files, tmp_path, [], tmp_path / "s.csv", match=".root or .parquet")
    (tmp_path / "s.root").write_text("mine")
    _raises(jobs.predict_files, tmp_path, [], tmp_path / "s.root", exc=FileExistsError)
    assert (tmp_path / "s.root").read_text() == "mine" and not out.exists()


@case("analysis.minuit_fit", "analysis.MinuitResult")
def _an_minuit(name):
    pytest.importorskip("iminuit")
    an = _mod("analysis")
    _raises(an.minuit_fit, lambda v: jnp.sum(v**2), {}, match="at least one parameter")
    _raises(an.minuit_fit, lambda v: jnp.sum(jnp.log(v)), {"a": -1.0}, match="not finite")
    _raises(an.minuit_fit, lambda v: jnp.sum(v**2), {"a": 1.0}, limits={"b": (0, 1)},
            match="not a parameter")
    r = an.minuit_fit(lambda v: jnp.sum((v - 2.0) ** 2), {"a": 0.0})
    assert isinstance(r, an.MinuitResult) and abs(r.values["a"] - 2.0) < 1e-6


@case("jobs.Report", "jobs.format_report")
def _jobs_report(name):
    jobs = _mod("jobs")
    _raises(jobs.format_report, "not a report", match="formats the report of difphys demo")
    report = jobs.Report("sample", None, {"x": 1.0}, ("line",))
    _raises(jobs.format_report, report, match="'sample'")
    assert report.summary() == "line" and report["x"] == 1.0


# ------------------------------------------------------------- source estimation (#26)
def _gauss_setup():
    fl = _mod("flows")
    problem = fl.gaussian_problem()
    y = problem.simulate(jax.random.key(1), problem.sample_source(jax.random.key(2), 64))
    return fl, problem, y, fl.GaussianSource(jnp.zeros(1), jnp.zeros(1))


@case("flows.log_marginal", "flows.GaussianSource", "flows.flow_likelihood",
      "flows.FlowLikelihood")
def _fl_log_marginal(name):
    fl, problem, y, src = _gauss_setup()
    key = jax.random.key(0)
    _raises(fl.log_marginal, key, src, problem.log_lik, y, estimator="magic", match="estimator")
    _raises(fl.log_marginal, key, src, problem.log_lik, y, K=0, match="K")
    _raises(fl.log_marginal, key, src, problem.log_lik, y[:, 0], match=r"\(N, dy\)")
    _raises(fl.log_marginal, key, src, problem.log_lik, y.at[3, 0].set(jnp.nan), match="NaN")
    _raises(fl.log_marginal, key, src, problem.log_lik, y, estimator="iw", match="recognition")
    _raises(fl.GaussianSource, jnp.zeros(2), jnp.zeros(3), match="one length")
    _raises(fl.flow_likelihood, src, exc=TypeError, match="conditional flow")
    # a likelihood that is zero for every draw: a documented -inf, no NaN
    dead = fl.log_marginal(key, src, lambda yy, x: jnp.full((), -jnp.inf), y, K=4)
    assert np.all(np.asarray(dead) == -np.inf)
    g = jax.grad(lambda ls: jnp.sum(jnp.where(jnp.isfinite(v := fl.log_marginal(
        jax.random.clone(key), fl.GaussianSource(jnp.zeros(1), ls), lambda yy, x: jnp.where(
            x[0] > 0, -x[0] ** 2, -jnp.inf), y, K=4, estimator="roulette")), v, 0.0)))(jnp.zeros(1))
    assert _all_finite(g)
    flow = fl.make_conditional_spline_flow(key, 1, 1, n_layers=1, hidden=4)
    lik = fl.flow_likelihood(flow)
    assert isinstance(lik, fl.FlowLikelihood) and np.isfinite(float(lik(y[0], y[1])))


@case("flows.fit_source", "flows.make_source_trainer", "flows.source_from_state")
def _fl_fit_source(name):
    fl, problem, y, src = _gauss_setup()
    key = jax.random.key(0)
    _raises(fl.fit_source, key, src, problem.log_lik, y, steps=0, match="steps")
    _raises(fl.fit_source, key, src, problem.log_lik, y, validation=1.5, match="validation")
    _raises(fl.fit_source, key, src, problem.log_lik, y, estimator="elbo", match="recognition")
    _raises(fl.fit_source, key, src, problem.log_lik, y, fit_likelihood=True,
            match="array leaves")
    _raises(fl.make_source_trainer, src, problem.log_lik, y, entropy_weight=-1.0,
            match="entropy_weight")
    _raises(fl.fit_source, key, src, problem.log_lik, y.at[0, 0].set(jnp.inf), match="NaN")
    trainer = fl.make_source_trainer(src, problem.log_lik, y, K=4, batch=8)
    state, info = trainer.step(key, trainer.init(jax.random.clone(key)))
    assert _all_finite(info.loss)
    fitted = fl.source_from_state(state, src)
    assert isinstance(fitted[0], fl.GaussianSource) and fitted[1] is None
    _raises(fl.source_from_state, "state", src, exc=(TypeError, AttributeError))


@case("flows.posterior", "flows.credible_interval", "flows.weighted_quantile")
def _fl_posterior(name):
    fl, problem, y, src = _gauss_setup()
    key = jax.random.key(0)
    _raises(fl.posterior, key, src, problem.log_lik, y, 16, match="one observation")
    _raises(fl.posterior, key, src, problem.log_lik, y[0], 0, match="n")
    _raises(fl.posterior, key, src, problem.log_lik, jnp.array([jnp.nan]), 16, match="NaN")
    _raises(fl.posterior, key, src, lambda yy, x: jnp.full((), -jnp.inf), y[0], 16,
            match="none of the 16 draws")
    post = fl.posterior(key, src, problem.log_lik, y[0], 64)
    _raises(fl.credible_interval, post, 1.5, match="level")
    lo, hi = fl.credible_interval(post)
    assert float(lo[0]) < float(hi[0])
    q = fl.weighted_quantile(post.x[:, 0], post.log_weights, 0.5)
    assert float(lo[0]) <= float(q) <= float(hi[0])


@case("flows.c2st_auc")
def _fl_c2st(name):
    fl = _mod("flows")
    key = jax.random.key(0)
    a = np.zeros((50, 2))
    _raises(fl.c2st_auc, key, a, np.zeros((50, 3)), match="same d")
    _raises(fl.c2st_auc, key, a, np.full((50, 2), np.nan), match="NaN")
    _raises(fl.c2st_auc, key, a[:5], a[:5], match="at least 20")
    _raises(fl.c2st_auc, key, a, a, test_fraction=0.0, match="test_fraction")


@case("flows.make_conditional_spline_flow", "flows.ConditionalSplineFlow")
def _fl_conditional(name):
    fl = _mod("flows")
    key = jax.random.key(0)
    _raises(fl.make_conditional_spline_flow, key, 0, 2, match="dim")
    _raises(fl.make_conditional_spline_flow, key, 2, 0, match="context_dim")
    _raises(fl.make_conditional_spline_flow, key, 2, 1, scale=(1.0, -1.0), match="positive")
    _raises(fl.make_conditional_spline_flow, key, 2, 1, loc=(1.0, 2.0, 3.0), match="sequence of 2")
    flow = fl.make_conditional_spline_flow(key, 2, 1, n_layers=1, hidden=4)
    _raises(flow.log_prob, jnp.zeros(3), jnp.zeros(1), match="last axis 2")
    _raises(flow.log_prob, jnp.zeros(2), jnp.zeros(2), match="context with last axis 1")
    _raises(flow.log_prob, jnp.zeros(2), jnp.array([jnp.nan]), match="context")
    _raises(flow.log_prob, jnp.array([jnp.nan, 0.0]), jnp.zeros(1), match="NaN")


@case("flows.gaussian_problem", "flows.two_moons_problem", "flows.slcp_problem")
def _fl_problems(name):
    fl = _mod("flows")
    if name.endswith("gaussian_problem"):
        _raises(fl.gaussian_problem, s=-1.0, match="s")
        _raises(fl.gaussian_problem, sigma=0.0, match="sigma")
        return
    problem = getattr(fl, name.split(".")[1])()
    x = problem.sample_source(jax.random.key(0), 8)
    y = problem.simulate(jax.random.key(1), x)
    values = jax.vmap(problem.log_lik)(y, x)
    assert np.all(np.isfinite(np.asarray(values)))  # the truth has non-zero likelihood
    if problem.name == "two_moons":  # outside the half plane: -inf with a finite gradient
        far = jnp.array([-5.0, 0.0])
        assert float(problem.log_lik(far, x[0])) == -np.inf
        assert _all_finite(jax.grad(lambda xx: jnp.where(jnp.isfinite(
            v := problem.log_lik(far, xx)), v, 0.0))(x[0]))


@case("data.dimuon_sample")
def _data_dimuon(name):
    data = _mod("data")
    _raises(data.dimuon_sample, 0, 1, match="n_events")
    _raises(data.dimuon_sample, 5, 0, match="seeds")


@case("sim.DimuonLikelihood", "sim.smear_dimuon", "sim.reconstruct_dimuon",
      "sim.cld_like_resolution")
def _sim_dimuon(name):
    sim = _mod("sim")
    res = sim.cld_like_resolution()
    key = jax.random.key(0)
    _raises(sim.smear_dimuon, key, jnp.zeros((4, 3)), res, match="trailing dimension 2")
    _raises(sim.reconstruct_dimuon, key, jnp.zeros((4, 4)), res, match=r"\(n, 2, 4\)")
    x = jnp.array([[91.0, 0.3], [60.0, -0.99]])
    y = sim.smear_dimuon(key, x, res)
    lik = sim.DimuonLikelihood(res)
    assert np.all(np.isfinite(np.asarray(jax.vmap(lik)(y, x))))
    assert _all_finite(jax.grad(lambda xx: jnp.sum(jax.vmap(lik)(y, xx)))(x))


#: NamedTuple records the library returns (no input to validate: built by difphys itself);
#: checked to stay plain records so that nothing with an input hides here.
RESULT_TYPES = {
    "phasespace.IntegrationResult", "amplitudes.ColourFlows", "amplitudes.CrossSection",
    "amplitudes.Histogram", "amplitudes.Resonance", "vertex.VertexFit", "sim.DesignResult",
    "train.GracefulChoice", "train.LayerCapacity", "train.ContinualMetrics",
    "flows.C2ST", "flows.Posterior", "flows.SourceFit", "flows.SourceState",
    "flows.SourceStepInfo", "flows.InverseProblem", "data.DimuonSample",
}


def test_every_public_function_has_a_fuzz_case():
    public = _public()
    missing = sorted(set(public) - set(CASES) - RESULT_TYPES)
    assert not missing, f"public names without a bad-input case: {missing}"
    stale = sorted((set(CASES) | RESULT_TYPES) - set(public))
    assert not stale, f"cases for names that are no longer public: {stale}"


@pytest.mark.parametrize("name", sorted(RESULT_TYPES))
def test_result_types_are_plain_records(name):
    sub, attr = name.split(".")
    obj = getattr(_mod(sub), attr)
    assert inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


@pytest.mark.parametrize("name", sorted(CASES))
def test_fuzz(name, tmp_path):
    fn = CASES[name]
    if "tmp_path" in inspect.signature(fn).parameters:
        fn(name, tmp_path)
    else:
        fn(name)


# ---------------------------------------------------------------------- command line
CLI_BAD = {
    "demo": [["--points", "0"], ["--points", "many"]],
    "optimize-detector": [["--steps", "0"], ["--methods", "magic"]],
    "sample": [["--batch", "0"], ["--process", "e+ e- > t t~", "--sqrt-s", "300"],
               ["--method", "magic"]],
    "generate": [["zpole", "--events", "0"], ["nosuchsample"]],
    "train": [["{missing}"], ["{missing}", "--steps", "0"],
              ["--data-config", "{missing}", "--data-train", "{missing}"]],
    "tokenize": [["{missing}"], ["{missing}", "--codebook", "x"]],
    "pretrain": [["{missing}"], ["{missing}", "--method", "magic"]],
    "finetune": [["{missing}"], ["{missing}", "--strategy", "finetune"]],
    "predict": [["{missing}", "--data", "{missing}"],
                ["{missing}", "--data", "{missing}", "--chunk-size", "x"]],
}


def _cli_out(command, tmp_path):
    """The output argument of each command, pointing into a folder that holds a user's file."""
    out = tmp_path / "out"
    if command in ("demo", "optimize-detector"):
        return ["--out", str(out)], out
    if command in ("sample", "generate"):
        return ["--out", str(out / "precious.txt")], out
    return ["--out", str(out)], out


def test_every_cli_command_has_bad_argument_cases():
    from difphys.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0]
    assert set(sub.choices) == set(CLI_BAD)


@pytest.mark.parametrize("command", sorted(CLI_BAD))
def test_cli_bad_arguments_exit_2_with_one_line_and_touch_nothing(command, tmp_path, capsys):
    from difphys.cli import main

    out_args, out = _cli_out(command, tmp_path)
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    for bad in CLI_BAD[command]:
        argv = [command] + [a.format(missing=tmp_path / "missing.root") for a in bad]
        argv += out_args + (["--quiet"] if command != "generate" else [])
        try:
            code = main(argv)
        except SystemExit as stop:
            code = stop.code
        err = capsys.readouterr().err.strip()
        assert code == 2, (argv, code, err)
        assert len(err.splitlines()) == 1 and "error" in err, (argv, err)
        after = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
        assert after == before and (out / "precious.txt").read_text() == "mine", argv
