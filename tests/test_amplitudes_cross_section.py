"""Cross sections and phase-space averages against analytic results and published references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import amplitudes as amp
from difphys import kinematics as kin
from difphys import phasespace as ps

PARAMS = amp.SMParams()


def _two_body_events(proc, sqrt_s, cos_theta, phi=0.3):
    """e+ e- / g g two-body events at given scattering angles (massless or massive final state)."""
    m3, m4 = (float(m) for m in proc.final_state_masses(PARAMS))
    pstar = math.sqrt(float(ps._volume.kallen(sqrt_s**2, m3**2, m4**2))) / (2 * sqrt_s)
    c = jnp.asarray(cos_theta)
    s_ = jnp.sqrt(1 - c**2)
    vec = pstar * jnp.stack([s_ * math.cos(phi), s_ * math.sin(phi), c], axis=-1)
    e3 = jnp.sqrt(m3**2 + pstar**2) * jnp.ones_like(c)
    e4 = jnp.sqrt(m4**2 + pstar**2) * jnp.ones_like(c)
    half = sqrt_s / 2 * jnp.ones_like(c)
    zero = jnp.zeros_like(c)
    return jnp.stack(
        [
            jnp.stack([half, zero, zero, half], -1),
            jnp.stack([half, zero, zero, -half], -1),
            jnp.concatenate([e3[:, None], vec], -1),
            jnp.concatenate([e4[:, None], -vec], -1),
        ],
        axis=-2,
    )


def _angular_average(proc, sqrt_s, n_nodes=256):
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    me = proc(_two_body_events(proc, sqrt_s, jnp.asarray(nodes)), PARAMS)
    return float(jnp.sum(me * jnp.asarray(weights)) / 2)


@pytest.mark.parametrize(
    ("name", "reference", "error"),
    [
        # madgraph4gpu check.exe, sqrt(s) = 1500 GeV, mean |M|^2 over flat RAMBO events, sm model:
        # epochX/cudacpp/tput/logs_eemumu_mad/log_eemumu_mad_d_inl0_hrd0.txt (2024-03-03)
        ("e+ e- > mu+ mu-", 1.371879e-02, 3.270020e-06),
    ],
)
def test_phase_space_mean_matches_madgraph4gpu(name, reference, error):
    mean = _angular_average(amp.process(name), 1500.0)
    assert abs(mean - reference) < 3 * error, (mean, reference)


def _sigma_mumu_analytic(sqrt_s, params):
    """sigma(e+ e- > mu+ mu-) = sum_ij |A_ij|^2 / (48 pi s) (massless, gamma + Z), in pb."""
    s = sqrt_s**2
    e2 = float(params.ee) ** 2
    sw2, cw2 = float(params.sw2), float(params.cw) ** 2
    gz2 = e2 / (sw2 * cw2)
    chi = s / (s - float(params.MZ) ** 2 + 1j * float(params.MZ) * float(params.WZ))
    g = {"L": -0.5 + sw2, "R": sw2}
    total = sum(abs(e2 + g[i] * g[j] * gz2 * chi) ** 2 for i in "LR" for j in "LR")
    return total / (48 * math.pi * s) * amp.GEV2_TO_PB


@pytest.mark.parametrize("sqrt_s", [91.188, 200.0])
def test_sigma_ee_mumu_matches_analytic_integral(key, sqrt_s):
    proc = amp.process("e+ e- > mu+ mu-")
    res = amp.cross_section(proc, sqrt_s, 200_000, key=key)
    exact = _sigma_mumu_analytic(sqrt_s, PARAMS)
    assert abs(float(res.value) - exact) < 3 * float(res.error)
    assert float(res.error) < 0.005 * exact
    assert abs(float(res.value) / exact - 1) < 0.005


def test_sigma_scales_as_one_over_s_far_below_the_pole(key):
    proc = amp.process("e+ e- > mu+ mu-")
    low = amp.cross_section(proc, 5.0, 50_000, key=key)
    high = amp.cross_section(proc, 10.0, 50_000, key=key)
    # QED: sigma = 4 pi alpha^2 / (3 s); Z effects ~ s / MZ^2 ~ 1e-2 at 10 GeV.
    np.testing.assert_allclose(float(low.value) / float(high.value), 4.0, rtol=0.02)
    alpha = float(PARAMS.aEW)
    np.testing.assert_allclose(
        float(low.value), 4 * math.pi * alpha**2 / (3 * 25.0) * amp.GEV2_TO_PB, rtol=0.01
    )


def test_dsigma_dmz_near_the_pole(key):
    """Autodiff of the MC estimate (common random numbers) equals the finite difference and the
    analytic derivative; sign: above the pole, increasing MZ moves the peak closer -> sigma grows."""
    proc = amp.process("e+ e- > mu+ mu-")
    rs = 92.5

    def sigma(mz):
        return amp.cross_section(proc, rs, 20_000, PARAMS.replace(MZ=mz), key=key).value

    mz = PARAMS.MZ
    grad = float(jax.grad(sigma)(mz))
    h = 1e-3
    fd = float((sigma(mz + h) - sigma(mz - h)) / (2 * h))
    analytic = (
        _sigma_mumu_analytic(rs, PARAMS.replace(MZ=mz + h))
        - _sigma_mumu_analytic(rs, PARAMS.replace(MZ=mz - h))
    ) / (2 * h)
    assert grad > 0 and analytic > 0
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
    np.testing.assert_allclose(grad, analytic, rtol=0.02)


def test_dsigma_histogram_integrates_to_sigma(key):
    proc = amp.process("e+ e- > mu+ mu-")

    def cos_theta(p):
        return p[..., 3, 3] / kin.p_abs(p[..., 3, :])

    edges = jnp.linspace(-1.0, 1.0, 21)
    hist = amp.dsigma(proc, cos_theta, edges, 200.0, 100_000, key=key)
    total = amp.cross_section(proc, 200.0, 100_000, key=key)
    np.testing.assert_allclose(
        float(jnp.sum(hist.values * jnp.diff(edges))), float(total.value), rtol=1e-10
    )
    # Forward-backward asymmetry of mu- along e- is positive above the Z pole.
    # mu- (leg 3) is measured against +z, the e+ direction, so A_FB(mu- along e-) > 0 shows up
    # as more mu- at cos(theta) < 0 (Z-photon interference above the pole).
    forward = float(jnp.sum(hist.values[10:])) - float(jnp.sum(hist.values[:10]))
    assert forward < 0
    with pytest.raises(ValueError, match="increasing"):
        amp.dsigma(proc, cos_theta, jnp.array([1.0, 0.0]), 200.0, 10, key=key)


def test_resonant_pair_map_integrates_like_rambo(key):
    # A smooth Breit-Wigner-shaped integrand with a broad width: both maps give its integral.
    masses = jnp.array([80.4, 4.7, 80.4, 4.7])
    big_m, width = 173.0, 40.0

    def f(p):
        m1 = kin.mass2(p[..., 0, :] + p[..., 1, :])
        m2 = kin.mass2(p[..., 2, :] + p[..., 3, :])
        bw = lambda m: (big_m * width) ** 2 / ((m - big_m**2) ** 2 + (big_m * width) ** 2)  # noqa: E731
        return bw(m1) * bw(m2)

    u = jax.random.uniform(key, (400_000, 8), dtype=jnp.float64, minval=1e-9, maxval=1 - 1e-9)
    p, w = ps.resonant_pair_from_unit_cube(u, 500.0, big_m, width, masses)
    vals = w * f(p)
    mean, err = float(jnp.mean(vals)), float(jnp.std(vals)) / math.sqrt(vals.shape[0])
    ref = ps.integrate(f, 400_000, 500.0, masses, key=jax.random.fold_in(key, 1))
    assert abs(mean - float(ref.value)) < 3 * math.hypot(err, float(ref.error))
    np.testing.assert_allclose(jnp.sum(p, axis=-2)[:, 0], 500.0, rtol=1e-10)


def test_ee_wbwb_narrow_width_limit(key):
    """sigma(e+ e- > w+ b w- b~) = sigma(e+ e- > t t~) x BR(t > W b)^2, with
    Gamma(t > W b) = G_F mt^3 / (8 pi sqrt2) (1 - x)^2 (1 + 2x) (1 - ...) at LO (x = MW^2/mt^2,
    massless b), up to O(Gamma/mt) and m_b corrections."""
    params = PARAMS.replace(WT=0.2)  # narrower top: finite-width effects ~ Gamma/mt ~ 1e-3
    tt = amp.cross_section(amp.process("e+ e- > t t~"), 500.0, 100_000, params, key=key)
    wbwb = amp.cross_section(amp.process("e+ e- > w+ b w- b~"), 500.0, 100_000, params, key=key)
    mt, mw, mb = float(params.MT), float(params.MW), float(params.MB)
    gw2 = float(params.gw) ** 2
    lam = float(ps._volume.kallen(mt**2, mw**2, mb**2))
    # Exact LO width with m_b: gw^2/(64 pi mt^3) lambda^(1/2) [ (mt^2 + mb^2 - 2 MW^2) + (mt^2 - mb^2)^2 / MW^2 ]
    gamma = (
        gw2
        / (64 * math.pi * mt**3)
        * math.sqrt(lam)
        * ((mt**2 + mb**2 - 2 * mw**2) + (mt**2 - mb**2) ** 2 / mw**2)
    )
    br = gamma / float(params.WT)
    expected = float(tt.value) * br**2
    err = math.hypot(float(wbwb.error), float(tt.error) * br**2)
    assert abs(float(wbwb.value) - expected) < 3 * err + 0.01 * expected, (
        float(wbwb.value),
        expected,
    )
