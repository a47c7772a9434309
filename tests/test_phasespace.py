"""Phase space: analytic volumes, conservation, on-shell, sampler agreement, gradients, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from difphys import kinematics as kin
from difphys import phasespace as ps
from difphys.testing import check_grad_fd

SQRT_S = 91.1876


def _batch(key, n_events, sqrt_s, masses, sampler):
    return ps.sample_batch(key, n_events, sqrt_s, jnp.asarray(masses, dtype=jnp.float64), sampler)


def test_massless_volume_formula_small_n():
    # Phi_2 = 1/(8 pi); Phi_3 = s / (256 pi^3) (e.g. PDG kinematics review, massless 3-body).
    np.testing.assert_allclose(ps.massless_volume(2, 10.0), 1 / (8 * np.pi), rtol=1e-15)
    np.testing.assert_allclose(ps.massless_volume(3, 10.0), 100.0 / (256 * np.pi**3), rtol=1e-14)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_massless_volume_by_monte_carlo(key, n):
    masses = jnp.zeros(n)
    _, w_rambo = _batch(key, 1000, SQRT_S, masses, "rambo")
    # RAMBO is exactly flat for massless particles: every weight is the analytic volume.
    np.testing.assert_allclose(w_rambo, ps.massless_volume(n, SQRT_S), rtol=1e-12)
    # The unit-cube map has non-trivial weights; their mean must equal the volume.
    _, w = _batch(jax.random.fold_in(key, n), 200_000, SQRT_S, masses, "unit_cube")
    mean, err = jnp.mean(w), jnp.std(w) / math.sqrt(w.shape[0])
    volume = ps.massless_volume(n, SQRT_S)
    assert abs(mean - volume) <= 3 * err + 1e-12 * volume, (mean, err)


@pytest.mark.parametrize("sampler", ["rambo", "unit_cube"])
@pytest.mark.parametrize("masses", [[0.0, 0.0, 0.0, 0.0], [4.7, 4.7, 80.4, 0.0], [10.0, 20.0, 5.0]])
def test_conservation_and_on_shell(key, sampler, masses):
    sqrt_s = 200.0
    p, w = _batch(key, 5000, sqrt_s, masses, sampler)
    total = jnp.sum(p, axis=-2)
    np.testing.assert_allclose(total[:, 0], sqrt_s, rtol=1e-10)
    np.testing.assert_allclose(total[:, 1:], 0.0, atol=1e-10 * sqrt_s)
    m2 = jnp.asarray(masses) ** 2
    np.testing.assert_allclose(kin.mass2(p) - m2, 0.0, atol=1e-10 * sqrt_s**2)
    assert np.all(p[..., 0] >= jnp.asarray(masses))
    assert np.all(w > 0)


@pytest.mark.parametrize("sampler", ["rambo", "unit_cube"])
def test_massive_two_body_weight(key, sampler):
    m1, m2 = 80.379, 4.18
    p, w = _batch(key, 100, 173.0, [m1, m2], sampler)
    expected = np.sqrt(ps._volume.kallen(173.0**2, m1**2, m2**2)) / (8 * np.pi * 173.0**2)
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    np.testing.assert_allclose(ps.two_body_volume(173.0, m1, m2), expected, rtol=1e-14)
    # Back-to-back with the analytic momentum lambda^(1/2) / (2 sqrt_s).
    pstar = np.sqrt(ps._volume.kallen(173.0**2, m1**2, m2**2)) / (2 * 173.0)
    np.testing.assert_allclose(kin.p_abs(p[:, 0]), pstar, rtol=1e-12)


def test_dalitz_plot_is_flat_for_massless_three_body(key):
    # For massless 3-body decay, (x, y) = (s12, s23)/s is uniform on the triangle x + y <= 1,
    # so E[x] = 1/3 and E[x^2] = 1/6.
    for sampler, k in (("rambo", 0), ("unit_cube", 1)):
        p, w = _batch(jax.random.fold_in(key, k), 200_000, SQRT_S, [0.0, 0.0, 0.0], sampler)
        x = kin.mass2(p[:, 0] + p[:, 1]) / SQRT_S**2
        weights = w / jnp.mean(w)
        for f, expected in ((x, 1 / 3), (x**2, 1 / 6)):
            vals = weights * f
            mean, err = jnp.mean(vals), jnp.std(vals) / math.sqrt(vals.shape[0])
            assert abs(mean - expected) < 3 * err, (sampler, mean, expected, err)


def _observable(p):
    s12 = kin.mass2(p[..., 0, :] + p[..., 1, :])
    s23 = kin.mass2(p[..., 1, :] + p[..., 2, :])
    return s12 * s23 / (s12 + s23 + 1.0)


@pytest.mark.parametrize("masses", [[0.0, 0.0, 0.0, 0.0], [10.0, 20.0, 5.0, 1.0]])
def test_unit_cube_integral_equals_rambo(key, masses):
    masses = jnp.asarray(masses)
    a = ps.integrate(_observable, 400_000, 150.0, masses, key=key, sampler="rambo")
    b = ps.integrate(_observable, 400_000, 150.0, masses, key=jax.random.fold_in(key, 7), sampler="unit_cube")
    combined = math.hypot(float(a.error), float(b.error))
    assert abs(float(a.value - b.value)) < 3 * combined, (a, b)


def test_unit_cube_weight_gradients(key):
    masses = jnp.array([10.0, 20.0, 5.0, 2.0])
    u = jax.random.uniform(key, (8,), dtype=jnp.float64, minval=0.05, maxval=0.95)

    def weight_of_masses(m):
        return ps.from_unit_cube(u, 150.0, m)[1]

    def weight_of_u(x):
        return ps.from_unit_cube(x, 150.0, masses)[1]

    check_grads(weight_of_masses, (masses,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(weight_of_u, (u,), order=2, modes=("fwd", "rev"), eps=1e-6)
    check_grads(lambda e: ps.from_unit_cube(u, e, masses)[1], (150.0,), order=2, eps=1e-4)
    check_grad_fd(weight_of_masses, masses, rtol=1e-7)
    # Momenta are smooth too (the map's value, not only its weight).
    check_grads(lambda m: ps.from_unit_cube(u, 150.0, m)[0], (masses,), order=1, eps=1e-5)


def test_rambo_gradients_in_masses(key):
    # The massive rescaling root is differentiated implicitly (lax.custom_root).
    def weight(m):
        return ps.rambo(key, 100.0, m)[1]

    masses = jnp.array([10.0, 20.0, 5.0])
    check_grads(weight, (masses,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(lambda m: ps.rambo(key, 100.0, m)[0], (masses,), order=1, eps=1e-5)


def test_two_body_volume_derivative_matches_analytic_and_integral():
    # d Phi_2 / d m1 from the formula, and by differentiating the unit-cube weight.
    m1, m2, rs = 30.0, 20.0, 100.0
    u = jnp.array([0.3, 0.7])
    grad_map = jax.grad(lambda m: ps.from_unit_cube(u, rs, jnp.stack([m, jnp.asarray(m2)]))[1])(
        jnp.asarray(m1)
    )
    grad_formula = jax.grad(lambda m: ps.two_body_volume(rs, m, m2))(jnp.asarray(m1))
    # lambda = s^2 - 2 s (m1^2 + m2^2) + (m1^2 - m2^2)^2; dlambda/dm1 = -4 m1 s + 4 m1 (m1^2 - m2^2)
    s = rs**2
    lam = s**2 - 2 * s * (m1**2 + m2**2) + (m1**2 - m2**2) ** 2
    analytic = (-4 * m1 * s + 4 * m1 * (m1**2 - m2**2)) / (2 * np.sqrt(lam) * 8 * np.pi * s)
    np.testing.assert_allclose(grad_map, analytic, rtol=1e-12)
    np.testing.assert_allclose(grad_formula, analytic, rtol=1e-12)


def test_integrate_errors_are_calibrated(key):
    # 40 independent estimates: their scatter must match the reported errors (chi2 / ndf).
    masses = jnp.array([10.0, 20.0, 5.0])
    results = [
        ps.integrate(_observable, 4000, 100.0, masses, key=k, sampler="unit_cube", batch_size=1500)
        for k in jax.random.split(key, 40)
    ]
    values = np.array([float(r.value) for r in results])
    errors = np.array([float(r.error) for r in results])
    reference = ps.integrate(_observable, 1_000_000, 100.0, masses, key=jax.random.fold_in(key, 99))
    pulls = (values - float(reference.value)) / errors
    chi2_ndf = float(np.mean(pulls**2))
    assert 0.45 < chi2_ndf < 1.8, chi2_ndf


def test_jit_vmap_float32_and_no_recompile(key):
    masses32 = jnp.array([0.0, 4.7, 4.7], dtype=jnp.float32)
    keys = jax.random.split(key, 64)
    p, w = jax.jit(jax.vmap(ps.rambo, in_axes=(0, None, None)))(keys, jnp.float32(50.0), masses32)
    assert p.dtype == jnp.float32 and w.dtype == jnp.float32
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(w))
    u = jax.random.uniform(key, (64, 5), dtype=jnp.float32)
    p, w = jax.jit(ps.from_unit_cube)(u, jnp.float32(50.0), masses32)
    assert p.dtype == jnp.float32 and np.all(np.isfinite(w))
    traces = []

    @jax.jit
    def volume(rs, m):
        traces.append(1)
        return jnp.mean(ps.from_unit_cube(u.astype(jnp.float64), rs, m)[1])

    for rs in (50.0, 60.0, 70.0):
        volume(jnp.asarray(rs), jnp.array([0.0, 4.7, 4.8]))
    assert len(traces) == 1


def test_bad_input_errors(key):
    with pytest.raises(ValueError, match="1-D array of n >= 2"):
        ps.rambo(key, 100.0, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="1-D array of n >= 2"):
        ps.rambo(key, 100.0, jnp.zeros(1))
    with pytest.raises(ValueError, match="non-negative"):
        ps.rambo(key, 100.0, jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="NaN"):
        ps.from_unit_cube(jnp.full(2, 0.5), 100.0, jnp.array([1.0, jnp.nan]))
    with pytest.raises(ValueError, match="threshold"):
        ps.rambo(key, 10.0, jnp.array([5.0, 6.0]))
    with pytest.raises(ValueError, match="NaN"):
        ps.rambo(key, jnp.nan, jnp.array([5.0, 6.0]))
    with pytest.raises(ValueError, match="trailing dimension 5"):
        ps.from_unit_cube(jnp.full(4, 0.5), 100.0, jnp.zeros(3))
    with pytest.raises(ValueError, match="unit cube"):
        ps.from_unit_cube(jnp.full(5, 1.5), 100.0, jnp.zeros(3))
    with pytest.raises(ValueError, match="n_points"):
        ps.integrate(_observable, 0, 100.0, jnp.zeros(3), key=key)
    with pytest.raises(ValueError, match="sampler"):
        ps.integrate(_observable, 10, 100.0, jnp.zeros(3), key=key, sampler="vegas")


def test_masked_result_inside_jit(key):
    # Below threshold inside jit: zero weight and zero momenta, never NaN (values or gradients).
    masses = jnp.array([5.0, 6.0, 1.0])
    p, w = jax.jit(ps.rambo)(key, 10.0, masses)
    assert w == 0.0 and np.all(p == 0.0)
    u = jnp.full(5, 0.5)
    p, w = jax.jit(ps.from_unit_cube)(u, 10.0, masses)
    assert w == 0.0 and np.all(p == 0.0)
    grad = jax.jit(jax.grad(lambda m: ps.from_unit_cube(u, 10.0, m)[1]))(masses)
    assert np.all(np.isfinite(grad))
    p, w = jax.jit(ps.from_unit_cube)(u, 100.0, masses.at[1].set(jnp.nan))
    assert w == 0.0 and np.all(np.isfinite(p))


# --- decay trees with Breit-Wigner resonances ---------------------------------------------

TREE = (0, (0, (1, 2)), (1, (3, (2, (4, 5)))))  # 0 + R0(1 2) + R1(3 + R2(4 5))


def test_decay_tree_volume_conservation_and_on_shell(key):
    """Massless 6-body volume (Kleiss-Stirling-Ellis) within 3 sigma: the Breit-Wigner
    masses only redistribute points; momentum is conserved and every leg on shell."""
    u = jax.random.uniform(key, (300_000, 14), jnp.float64)
    res_m, res_w = jnp.array([300.0, 500.0, 200.0]), jnp.array([40.0, 60.0, 30.0])
    p, w = ps.decay_tree_from_unit_cube(u, 1000.0, TREE, jnp.zeros(6), res_m, res_w)
    mean, err = float(w.mean()), float(w.std() / np.sqrt(w.size))
    assert abs(mean - float(ps.massless_volume(6, 1000.0))) < 3 * err
    np.testing.assert_allclose(np.asarray(p.sum(-2)), np.tile([1000.0, 0, 0, 0], (u.shape[0], 1)),
                               atol=1e-9)
    np.testing.assert_allclose(np.asarray(kin.mass2(p)), 0.0, atol=1e-7)
    m12 = np.asarray(kin.mass(p[:, 1] + p[:, 2]))
    assert np.mean(np.abs(m12 - 300.0) < 40.0) > 0.4  # points crowd on the peak
    assert ps.decay_tree_dim(TREE) == 14


def test_decay_tree_matches_the_resonant_pair_map_for_top_pairs(key):
    """e+ e- > t t~, t > w+ b, t~ > w- b~: the tree map and the dedicated 8-D resonant-pair
    map integrate the same |M|^2 to the same sigma (3 combined sigma), with similar variance."""
    from difphys import amplitudes as amp

    proc = amp.process("e+ e- > t t~, t > w+ b, t~ > w- b~")
    params = amp.SMParams()
    u = jax.random.uniform(key, (100_000, 8), jnp.float64, 1e-9, 1 - 1e-9)
    masses = proc.final_state_masses(params)
    p_tree, w_tree = ps.decay_tree_from_unit_cube(u, 500.0, proc.decay_tree()[0], masses,
                                                  jnp.stack([params.MT] * 2),
                                                  jnp.stack([params.WT] * 2))
    p_pair, w_pair = ps.resonant_pair_from_unit_cube(u, 500.0, params.MT, params.WT, masses)
    estimates = []
    for p, w in ((p_tree, w_tree), (p_pair, w_pair)):
        beams = jnp.array([[250.0, 0, 0, 250.0], [250.0, 0, 0, -250.0]])
        full = jnp.concatenate([jnp.broadcast_to(beams, (p.shape[0], 2, 4)), p], axis=1)
        f = np.asarray(w * proc(full, params))
        estimates.append((f.mean(), f.std() / np.sqrt(f.size)))
    (a, ea), (b, eb) = estimates
    assert abs(a - b) < 3 * np.hypot(ea, eb)
    assert ea < 1.5 * eb


def test_decay_tree_gradients_and_errors(key):
    u = jax.random.uniform(key, (14,), jnp.float64, 0.05, 0.95)
    masses = jnp.array([1.0, 2.0, 3.0, 0.5, 4.0, 5.0])
    res_m, res_w = jnp.array([300.0, 500.0, 200.0]), jnp.array([40.0, 60.0, 30.0])

    def weight(x):
        return ps.decay_tree_from_unit_cube(u, x[0], TREE, masses, x[1:4], x[4:7])[1]

    x = jnp.concatenate([jnp.array([1000.0]), res_m, res_w])
    check_grad_fd(weight, x, rtol=1e-6)
    check_grad_fd(lambda m: ps.decay_tree_from_unit_cube(u, 1000.0, TREE, m, res_m, res_w)[1],
                  masses, rtol=1e-6)
    with pytest.raises(ValueError, match="once each"):
        ps.decay_tree_from_unit_cube(u, 1000.0, (0, (0, (1, 1))), masses[:3], res_m, res_w)
    with pytest.raises(ValueError, match="threshold"):
        ps.decay_tree_from_unit_cube(u, 10.0, TREE, masses, res_m, res_w)
    with pytest.raises(ValueError, match="trailing dimension"):
        ps.decay_tree_from_unit_cube(u[:5], 1000.0, TREE, masses, res_m, res_w)
