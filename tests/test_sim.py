"""The toy shower: physical sanity, unbiased derivatives, and detector optimisation."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import sim
from difphys import stochad as sd
from difphys.testing import check_grad_fd

CONFIG = sim.DetectorConfig()


@pytest.fixture(scope="module", params=[False, True], ids=["energy-loss", "branching"])
def showers(request):
    keys = jax.random.split(jax.random.key(0), 2000)
    out = jax.jit(jax.vmap(lambda k: sim.simulate(2.5, k, branching=request.param)))(keys)
    return request.param, out


def test_shower_conserves_energy_and_stays_in_the_ring(showers):
    _, s = showers
    dep = np.asarray(s.deposits * s.mask)
    assert np.all(dep >= 0)
    assert np.all(np.asarray(s.total_deposit) <= CONFIG.energy * (1 + 1e-12))
    # recorded deposits add up to the total wherever the buffer did not overflow
    full = np.asarray(s.n_interactions) <= CONFIG.max_records
    np.testing.assert_allclose(dep.sum(-1)[full], np.asarray(s.total_deposit)[full], rtol=1e-12)
    # interactions happen in material: radius within the ring (edges are logistic, width 0.05)
    r = np.linalg.norm(np.asarray(s.points), axis=-1)[np.asarray(s.mask) > 0]
    assert r.min() > 2.5 - 0.5 and r.max() < 2.5 + CONFIG.thickness + 0.5
    np.testing.assert_allclose(
        np.asarray(s.sum_radius),
        (np.linalg.norm(np.asarray(s.points), axis=-1) * np.asarray(s.mask)).sum(-1),
        rtol=1e-12,
    )


def test_branching_produces_more_interactions(showers):
    branching, s = showers
    mean_n = float(np.mean(s.n_interactions))
    # energy-loss only: each interaction keeps (1 - U(0.1, 0.5)) of the energy, cut at 1/10 of E0
    assert 3 < mean_n < 12
    if branching:
        assert mean_n > 5.6


def test_density_gradient_matches_finite_differences():
    check_grad_fd(lambda th: sim.density(jnp.asarray(2.48), th, 1.0, 0.05), jnp.asarray(2.5))


@pytest.mark.parametrize("branching", [False, True], ids=["energy-loss", "branching"])
def test_shower_derivative_estimators_agree_with_central_difference(branching):
    f = functools.partial(sim.objective, branching=branching)
    n = 6000
    keys = jax.random.split(jax.random.key(7), n)
    est = {
        m: np.asarray(
            jax.jit(jax.vmap(lambda k, m=m: sd.derivative_estimate(f, 2.5, key=k, method=m)))(keys)
        )
        for m in ("stochad", "score")
    }
    # reference: (E f(2.5 + h) - E f(2.5 - h)) / 2h on independent keys; O(h^2) bias is
    # negligible for h = 0.05 next to the statistical error
    h = 0.05
    ref_keys = jax.random.split(jax.random.key(8), 20_000)
    diff = jax.jit(jax.vmap(lambda k: (f(2.5 + h, k) - f(2.5 - h, k)) / (2 * h)))(ref_keys)
    ref, ref_se = float(np.mean(diff)), float(np.std(diff) / np.sqrt(diff.size))
    for m, e in est.items():
        se = np.hypot(e.std() / np.sqrt(n), ref_se)
        assert abs(e.mean() - ref) < 4 * se, (m, e.mean(), ref, se)


def test_ring_thickness_is_a_second_design_parameter():
    f = functools.partial(sim.objective)
    keys = jax.random.split(jax.random.key(9), 4000)
    g = jax.jit(jax.vmap(lambda k: sd.derivative_estimate(f, jnp.array([2.5, 1.0]), key=k)))(keys)
    assert g.shape == (4000, 2)
    mean, se = np.asarray(g.mean(0)), np.asarray(g.std(0) / np.sqrt(4000))
    # moving the ring outwards raises the mean radius (loss up); thickening it raises it too
    assert mean[0] > 4 * se[0] and mean[1] > 4 * se[1]


def test_bad_theta_shape():
    with pytest.raises(ValueError, match="inner radius"):
        sim.simulate(jnp.ones(3), jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        sim.objective(jnp.nan, jax.random.key(0))


def test_optimisation_converges_with_stochad():
    r = sim.optimize_detector(
        jax.random.key(1),
        method="stochad",
        steps=120,
        batch=1,
        n_seeds=4,
        n_eval=1000,
        progress=False,
    )
    assert r.theta.shape == (4, 120)
    assert np.median(r.final_loss) < 0.05
    assert np.all(np.abs(r.final_theta - 1.55) < 0.3)


def test_optimize_detector_cli_writes_summary_and_plot(tmp_path, capsys):
    from difphys.cli import main

    rc = main(
        [
            "optimize-detector",
            "--methods",
            "stochad,fd",
            "--steps",
            "5",
            "--seeds",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert rc == 0
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["stochad", "fd"]
    assert (run / "design.png").stat().st_size > 1000
    assert "median final loss" in capsys.readouterr().out
    assert main(["optimize-detector", "--methods", "nope", "--out", str(tmp_path)]) == 2
