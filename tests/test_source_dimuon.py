"""The dimuon source-estimation problem: the Pythia sample's physics, the exact detector tier
(sampler and density agree, normalised, finite-difference gradients in the source point and in
the resolution parameters) and the likelihood-free tier's reconstruction."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import sim
from difphys.vertex import TrackResolution


@pytest.fixture(scope="module")
def dimuons():
    pytest.importorskip("pythia8mc")
    from difphys.data import dimuon_sample

    return dimuon_sample(4000, 17)


def test_dimuon_sample_is_physical(dimuons):
    x = dimuons.x
    assert x.shape == (4000, 2) and dimuons.n_failed == 0
    assert np.all(x[:, 0] <= dimuons.sqrt_s + 1e-9) and np.all(np.abs(x[:, 1]) <= 1)
    # the hard pair has no transverse momentum and its mass is sqrt(s')
    pair = dimuons.hard.sum(1)
    np.testing.assert_allclose(pair[:, 1:3], 0.0, atol=1e-9)
    np.testing.assert_allclose(np.sqrt(pair[:, 0] ** 2 - (pair[:, 1:] ** 2).sum(1)), x[:, 0], rtol=1e-10)
    # ISR: a radiative tail, but most events keep sqrt(s') within 1 GeV of sqrt(s)
    frac_near = np.mean(x[:, 0] > dimuons.sqrt_s - 1.0)
    assert 0.85 < frac_near < 0.99, frac_near
    assert np.mean(x[:, 0] < 80.0) > 0.003
    # vector-boson decay to fermions: dN/dcos ~ 1 + cos^2 (+ small A_FB), so <cos^2> = 0.4
    c2 = x[:, 1] ** 2
    assert abs(c2.mean() - 0.4) < 4 * c2.std() / np.sqrt(len(c2)), c2.mean()
    # the final-state muons lost energy to photons: never heavier than the hard pair
    fin = dimuons.muons.sum(1)
    m_fin = np.sqrt(np.maximum(fin[:, 0] ** 2 - (fin[:, 1:] ** 2).sum(1), 0))
    assert np.all(m_fin <= x[:, 0] + 1e-6)


def test_dimuon_sample_is_deterministic_per_seed():
    pytest.importorskip("pythia8mc")
    from difphys.data import dimuon_sample

    a, b, c = dimuon_sample(50, 3), dimuon_sample(50, 3), dimuon_sample(50, 4)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_exact_tier_sampler_matches_its_density(key):
    res = sim.cld_like_resolution()
    lik = sim.DimuonLikelihood(res)
    x = jnp.array([[91.0, 0.3], [70.0, -0.8]])
    k1, _ = jax.random.split(key)
    xs = jnp.repeat(x, 20000, axis=0)
    y = sim.smear_dimuon(k1, xs, res)
    # standardised residuals from the density's own widths are N(0, 1)
    eps = 1e-4
    curv = []
    for i in range(2):  # widths from the curvature of log p at its maximum
        def lp(t, i=i):
            return lik(x[i] + t, x[i])
        hess = jax.hessian(lp)(jnp.zeros(2))
        curv.append(np.sqrt(-1 / np.diag(np.asarray(hess))))
        r = (np.asarray(y[i * 20000:(i + 1) * 20000]) - np.asarray(x[i])) / curv[i]
        np.testing.assert_allclose(r.std(0), 1.0, atol=0.03)
        np.testing.assert_allclose(r.mean(0), 0.0, atol=0.03)
    # normalised in y: a grid over +-8 widths integrates to one
    s = curv[0]
    g1 = np.linspace(-8, 8, 401) * s[0] + 91.0
    g2 = np.linspace(-8, 8, 401) * s[1] + 0.3
    pts = jnp.asarray(np.stack(np.meshgrid(g1, g2, indexing="ij"), -1).reshape(-1, 2))
    dens = np.exp(np.asarray(jax.vmap(lambda yy: lik(yy, x[0]))(pts)))
    assert abs(dens.sum() * (g1[1] - g1[0]) * (g2[1] - g2[0]) - 1) < 1e-3
    del eps
    # unphysical source points: -inf with a finite (zero) gradient
    bad = jnp.array([-1.0, 0.2])
    assert float(lik(y[0], bad)) == -np.inf
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda xx: jnp.where(
        jnp.isfinite(lik(y[0], xx)), lik(y[0], xx), 0.0))(bad))))


def test_exact_tier_gradients_match_finite_differences(key):
    y = jnp.array([90.9, 0.31])
    x = jnp.array([91.0, 0.3])

    def f(x, pt_a, pt_b):
        res = TrackResolution(pt_a=pt_a, pt_b=pt_b)
        return sim.DimuonLikelihood(res)(y, x)

    args = (x, jnp.asarray(0.004), jnp.asarray(3e-4))
    grads = jax.grad(f, argnums=(0, 1, 2))(*args)
    h = 1e-7
    for i in range(2):
        e = jnp.zeros(2).at[i].set(h)
        fd = (f(x + e, *args[1:]) - f(x - e, *args[1:])) / (2 * h)
        np.testing.assert_allclose(grads[0][i], fd, rtol=1e-5)
    for j, a in ((1, args[1]), (2, args[2])):
        hh = float(a) * 1e-6
        up = list(args)
        dn = list(args)
        up[j], dn[j] = a + hh, a - hh
        np.testing.assert_allclose(grads[j], (f(*up) - f(*dn)) / (2 * hh), rtol=1e-5)


def test_reconstruction_without_smearing_returns_the_final_state_pair(dimuons, key):
    zero = TrackResolution(d0_a=0.0, d0_b=0.0, z0_a=0.0, z0_b=0.0, ang_a=0.0, ang_b=0.0,
                           pt_a=0.0, pt_b=0.0)
    mu = jnp.asarray(dimuons.muons[:200])
    y = np.asarray(sim.reconstruct_dimuon(key, mu, zero))
    pair = np.asarray(mu).sum(1)
    m = np.sqrt(np.maximum(pair[:, 0] ** 2 - (pair[:, 1:] ** 2).sum(1), 0))
    np.testing.assert_allclose(y[:, 0], m, rtol=1e-6)  # muon mass put back: E = sqrt(p^2 + m^2)
    from difphys.data._dimuon import _cos_theta_star

    cos = np.array([_cos_theta_star(a[0], a[0] + a[1]) for a in np.asarray(mu)])
    np.testing.assert_allclose(y[:, 1], cos, atol=1e-6)
    # with the CLD-like tracker the mass resolution is about m * 0.0022 / sqrt 2 ~ 0.14 GeV
    y_s = np.asarray(sim.reconstruct_dimuon(jax.random.clone(key), mu, sim.cld_like_resolution()))
    spread = np.std(y_s[:, 0] - y[:, 0])
    assert 0.08 < spread < 0.25, spread
