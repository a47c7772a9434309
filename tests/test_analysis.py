"""Unbinned likelihood fits through the differentiable matrix element (Z line shape)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import amplitudes as amp
from difphys import kinematics as kin
from difphys.analysis import ScanPoint, fit_scan, pseudo_data, scan_nll, unweighted_events

PROC = amp.process("e+ e- > mu+ mu-")
SCAN = (88.5, 90.2, 91.2, 92.0, 93.7)  # GeV, a LEP-like Z scan


@pytest.fixture(scope="module")
def scan():
    return pseudo_data(PROC, SCAN, [0.5] * len(SCAN), amp.SMParams(), key=jax.random.key(11))


def _cos_theta(p):
    """cos of the mu- angle to the e- beam (legs: e+, e-, mu+, mu-)."""
    mu = np.asarray(p[:, 3, 1:])
    beam = np.asarray(p[:, 1, 1:])
    return np.sum(mu * beam, -1) / np.linalg.norm(mu, axis=-1) / np.linalg.norm(beam, axis=-1)


def test_unweighted_events_follow_the_matrix_element(key):
    """The mean cos(theta) of unweighted events equals the |M|^2-weighted mean of a uniform
    sample (within 4 standard errors; it measures the forward-backward asymmetry), and
    events are on shell with momentum conservation."""
    rs = 93.0
    k1, k2 = jax.random.split(key)
    p = unweighted_events(PROC, rs, 20_000, key=k1)
    assert p.shape == (20_000, 4, 4)
    assert np.allclose(np.asarray(kin.mass2(p[:, 3])), 0.0, atol=1e-6)
    assert np.allclose(np.asarray(p[:, 0] + p[:, 1] - p[:, 2] - p[:, 3]), 0.0, atol=1e-9)
    c = _cos_theta(p)
    u = jax.random.uniform(k2, (400_000, PROC.phase_space_dim), jnp.float64)
    q, w = PROC.phase_space(u, rs)
    w = np.asarray(w * PROC(q))
    expected = np.sum(w * _cos_theta(q)) / np.sum(w)
    assert abs(c.mean() - expected) < 4 * c.std() / np.sqrt(len(c))
    assert abs(expected) > 0.05  # above the pole A_FB is clearly positive: the test has teeth


def test_scan_nll_gradient_matches_finite_differences(scan, key):
    names = ("MZ", "WZ")
    f = jax.jit(lambda v: scan_nll(v, names, scan, PROC, key=key, n_points=4096))
    x = jnp.asarray([91.15, 2.5])
    g = np.asarray(jax.grad(f)(x))
    for i in range(2):
        h = jnp.zeros(2).at[i].set(1e-5)
        fd = (f(x + h) - f(x - h)) / 2e-5
        assert np.isclose(g[i], float(fd), rtol=1e-5)


def test_line_shape_fit_recovers_the_truth(scan, key):
    """Pseudo-data at the SM values; a fit started 190 MeV and 160 MeV off recovers MZ and WZ
    within 2 sigma (errors from the Hessian), and the errors match the expected scale
    (statistical error on MZ ~ Gamma_Z / sqrt(N) for N ~ 3000 events)."""
    truth = amp.SMParams()
    result = fit_scan(scan, PROC, {"MZ": 91.0, "WZ": 2.6}, key=key, n_points=20_000)
    assert result.converged
    n = sum(int(p.momenta.shape[0]) for p in scan)
    assert 2000 < n < 4000
    for name in ("MZ", "WZ"):
        pull = (result.values[name] - float(getattr(truth, name))) / result.errors[name]
        assert abs(pull) < 2.0, (name, result.values[name], result.errors[name])
    assert 0.3 * 2.44 / np.sqrt(n) < result.errors["MZ"] < 3 * 2.44 / np.sqrt(n)
    assert np.all(np.linalg.eigvalsh(result.cov) > 0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="one luminosity per scan energy"):
        pseudo_data(PROC, [91.0, 92.0], [1.0], key=jax.random.key(0))
    with pytest.raises(ValueError, match="luminosity must be positive"):
        pseudo_data(PROC, [91.0], [-1.0], key=jax.random.key(0))
    empty = [ScanPoint(91.0, 1.0, jnp.zeros((0, 4, 4)))]
    with pytest.raises(ValueError, match="at least one event"):
        fit_scan(empty, PROC, {"MZ": 91.0}, key=jax.random.key(0))
    p = unweighted_events(PROC, 91.2, 10, key=jax.random.key(1))
    nan = [ScanPoint(91.2, 1.0, p.at[0, 2, 0].set(jnp.nan))]
    with pytest.raises(ValueError, match="NaN or infinite momenta"):
        fit_scan(nan, PROC, {"MZ": 91.0}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="unknown SMParams field"):
        fit_scan([ScanPoint(91.2, 1.0, p)], PROC, {"MZZ": 91.0}, key=jax.random.key(0))
    with pytest.raises(ValueError, match="threshold"):
        pseudo_data(PROC, [float("nan")], [1.0], key=jax.random.key(0))
