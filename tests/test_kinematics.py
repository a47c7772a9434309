"""Kinematics: invariance, known values, gradients (float64) and singular points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from difphys import kinematics as kin
from difphys.testing import check_grad_fd, random_boost, random_rotation


def _random_momenta(key, n, masses=None):
    k1, k2 = jax.random.split(key)
    vec = 50.0 * jax.random.normal(k1, (n, 3), dtype=jnp.float64)
    # Masses comparable to momenta (b quark to top): the conditioning of E^2 - |p|^2 is then
    # that of typical physics use; a light particle boosted to gamma >> 1 loses digits to
    # cancellation in any floating-point representation of (E, p).
    m = (
        jax.random.uniform(k2, (n,), dtype=jnp.float64, minval=5.0, maxval=175.0)
        if masses is None
        else masses
    )
    energy = jnp.sqrt(m**2 + jnp.sum(vec**2, axis=-1))
    return jnp.concatenate([energy[:, None], vec], axis=-1)


def test_invariants_under_100_random_boosts_and_rotations(key):
    kp, kq, kt = jax.random.split(key, 3)
    p = _random_momenta(kp, 8)
    q = _random_momenta(kq, 8)
    m2_ref, pq_ref = kin.mass2(p), kin.dot(p, q)
    for sub in jax.random.split(kt, 100):
        kb, kr = jax.random.split(sub)
        # the same boost and rotation for p and q: one key each, cloned for the second use
        pb = random_rotation(kr, random_boost(kb, p, max_beta=0.9))
        qb = random_rotation(jax.random.clone(kr), random_boost(jax.random.clone(kb), q,
                                                                 max_beta=0.9))
        np.testing.assert_allclose(kin.mass2(pb), m2_ref, rtol=1e-12)
        np.testing.assert_allclose(kin.dot(pb, qb), pq_ref, rtol=1e-12)


def test_rotation_preserves_three_momentum_and_energy(key):
    p = _random_momenta(key, 5)
    r = kin.rotate(p, jnp.array([0.3, -1.0, 2.0]), 1.234)
    np.testing.assert_allclose(r[:, 0], p[:, 0], rtol=0)
    np.testing.assert_allclose(kin.p_abs(r), kin.p_abs(p), rtol=1e-14)
    # A rotation about z shifts phi and leaves pt and eta alone.
    rz = kin.rotate(p, jnp.array([0.0, 0.0, 1.0]), 0.5)
    np.testing.assert_allclose(kin.pt(rz), kin.pt(p), rtol=1e-14)
    np.testing.assert_allclose(kin.eta(rz), kin.eta(p), rtol=1e-12)
    dphi = jnp.mod(kin.phi(rz) - kin.phi(p), 2 * jnp.pi)
    np.testing.assert_allclose(dphi, 0.5, rtol=1e-12)
    # Quarter turn about z maps x to y exactly.
    x = jnp.array([1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(
        kin.rotate(x, jnp.array([0.0, 0.0, 1.0]), jnp.pi / 2), [1, 0, 1, 0], atol=1e-15
    )


def test_known_values():
    theta90 = jnp.array([5.0, 3.0, 4.0, 0.0])  # massless, theta = 90 degrees
    assert kin.eta(theta90) == 0.0
    assert kin.rapidity(theta90) == 0.0
    np.testing.assert_allclose(kin.pt(theta90), 5.0, rtol=1e-15)
    np.testing.assert_allclose(kin.phi(theta90), np.arctan2(4.0, 3.0), rtol=1e-15)
    # eta = -ln tan(theta / 2) for theta = 30 degrees
    theta = np.pi / 6
    p = jnp.array([1.0, np.sin(theta), 0.0, np.cos(theta)])
    np.testing.assert_allclose(kin.eta(p), -np.log(np.tan(theta / 2)), rtol=1e-13)
    # rapidity equals eta for a massless particle; for a massive one |y| < |eta|
    np.testing.assert_allclose(kin.rapidity(p), kin.eta(p), rtol=1e-12)
    heavy = jnp.array([10.0, 1.0, 2.0, 3.0])
    assert abs(kin.rapidity(heavy)) < abs(kin.eta(heavy))
    # mass of the Z at rest and of a spacelike vector (ROOT convention: negative)
    np.testing.assert_allclose(kin.mass(jnp.array([91.1876, 0.0, 0.0, 0.0])), 91.1876, rtol=1e-15)
    np.testing.assert_allclose(kin.mass(jnp.array([3.0, 0.0, 0.0, 5.0])), -4.0, rtol=1e-15)
    # massless vector built as (|p|, p) has exactly zero mass
    v = jnp.array([0.3, -1.7, 2.9])
    assert kin.mass2(jnp.concatenate([jnp.sqrt(jnp.sum(v * v))[None], v])) == 0.0
    # delta R between (eta, phi) = (0, 3) and (0, -3) wraps through pi
    a = kin.from_pt_eta_phi_m(10.0, 0.0, 3.0, 0.0)
    b = kin.from_pt_eta_phi_m(10.0, 0.0, -3.0, 0.0)
    np.testing.assert_allclose(kin.delta_r(a, b), 2 * np.pi - 6.0, rtol=1e-12)


def test_from_pt_eta_phi_m_round_trip():
    p = kin.from_pt_eta_phi_m(
        jnp.array([25.0, 3.0]),
        jnp.array([1.3, -2.1]),
        jnp.array([0.4, -2.9]),
        jnp.array([4.8, 0.1]),
    )
    np.testing.assert_allclose(kin.pt(p), [25.0, 3.0], rtol=1e-13)
    np.testing.assert_allclose(kin.eta(p), [1.3, -2.1], rtol=1e-13)
    np.testing.assert_allclose(kin.phi(p), [0.4, -2.9], rtol=1e-13)
    np.testing.assert_allclose(kin.mass(p), [4.8, 0.1], rtol=1e-9)


def test_boost_known_values_and_rest_frame(key):
    rest = jnp.array([2.0, 0.0, 0.0, 0.0])
    beta = jnp.array([0.0, 0.6, 0.0])
    moving = kin.boost(rest, beta)  # gamma = 1.25
    np.testing.assert_allclose(moving, [2.5, 0.0, 1.5, 0.0], rtol=1e-15)
    np.testing.assert_allclose(kin.boost(moving, -beta), rest, atol=1e-15)
    frame = _random_momenta(key, 4)
    at_rest = kin.boost_to_rest_frame(frame, frame)
    np.testing.assert_allclose(at_rest[:, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(at_rest[:, 0], kin.mass(frame), rtol=1e-12)
    # boost_from_rest_frame inverts boost_to_rest_frame, also at gamma ~ 1e6.
    q = _random_momenta(jax.random.fold_in(key, 3), 4)
    back = kin.boost_from_rest_frame(kin.boost_to_rest_frame(q, frame), frame)
    np.testing.assert_allclose(back, q, rtol=1e-12, atol=1e-12 * float(jnp.max(q)))
    fast = jnp.array([1e6 * jnp.sqrt(1.0 + 1e-12), 0.0, 0.0, 1e6])  # mass 1, gamma = 1e6
    daughter = jnp.array([0.5, 0.3, 0.0, 0.4])
    lab = kin.boost_from_rest_frame(daughter, fast, frame_mass=1.0)
    np.testing.assert_allclose(kin.mass2(lab), 0.0, atol=1e-12 * float(lab[0]) ** 2)
    np.testing.assert_allclose(lab[0], 1e6 * 0.5 + 1e6 * 0.4, rtol=1e-12)
    # Zero velocity is the identity, with exact derivatives.
    np.testing.assert_allclose(kin.boost(frame, jnp.zeros(3)), frame, rtol=0)


def test_second_order_gradients(key):
    p = _random_momenta(key, 1)[0]
    check_grads(kin.mass, (p,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(kin.pt, (p,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(kin.eta, (p,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(kin.rapidity, (p,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(kin.phi, (p,), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(
        kin.boost, (p, jnp.array([0.2, -0.5, 0.3])), order=2, modes=("fwd", "rev"), eps=1e-5
    )
    check_grads(
        kin.rotate, (p, jnp.array([0.2, -0.5, 0.3]), 0.7), order=2, modes=("fwd", "rev"), eps=1e-5
    )
    q = _random_momenta(jax.random.fold_in(key, 1), 1)[0]
    check_grads(kin.delta_r, (p, q), order=2, modes=("fwd", "rev"), eps=1e-5)
    check_grads(kin.boost_to_rest_frame, (p, q), order=1, modes=("fwd", "rev"))


def test_finite_difference_helper_on_mass(key):
    p = _random_momenta(key, 1)[0]
    check_grad_fd(kin.mass, p, rtol=1e-8)
    # d m / d p^mu = p_mu / m with lowered index
    grad = jax.grad(kin.mass)(p)
    np.testing.assert_allclose(grad, jnp.array([1, -1, -1, -1.0]) * p / kin.mass(p), rtol=1e-12)


@pytest.mark.parametrize("fn", [kin.pt, kin.eta, kin.phi, kin.rapidity, kin.mass, kin.p_abs])
def test_finite_gradients_at_singular_points(fn):
    along_beam = jnp.array([5.0, 0.0, 0.0, 5.0])  # pt = 0, massless
    at_rest = jnp.array([3.0, 0.0, 0.0, 0.0])
    null = jnp.zeros(4)
    for p in (along_beam, at_rest, null):
        value = fn(p)
        grad = jax.grad(fn)(p)
        hess = jax.hessian(fn)(p)
        assert (
            np.all(np.isfinite(value)) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))
        )
    assert kin.eta(along_beam) == kin.INFINITE_RAPIDITY
    assert kin.eta(-along_beam.at[0].set(5.0)) == -kin.INFINITE_RAPIDITY
    assert kin.phi(along_beam) == 0.0


def test_mass2_hessian_is_metric_everywhere():
    metric = np.diag([2.0, -2.0, -2.0, -2.0])
    for p in (jnp.array([3.0, 0.0, 0.0, 0.0]), jnp.array([3.0, 1.0, -2.0, 0.5])):
        np.testing.assert_allclose(jax.hessian(kin.mass2)(p), metric, atol=1e-12)


def test_delta_r_gradient_finite_at_coincidence():
    p = jnp.array([10.0, 3.0, 4.0, 1.0])
    grad = jax.grad(kin.delta_r)(p, p)
    assert np.all(np.isfinite(grad))


def test_jit_vmap_and_float32():
    p32 = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), dtype=jnp.float32)
    p32 = p32.at[:, 0].set(jnp.abs(p32[:, 0]) + 5.0)
    for fn in (kin.mass, kin.pt, kin.eta, kin.phi, kin.rapidity):
        out = jax.jit(jax.vmap(fn))(p32)
        assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    boosted = jax.jit(kin.boost)(p32, jnp.array([0.1, 0.2, 0.3], dtype=jnp.float32))
    assert boosted.dtype == jnp.float32


def test_bad_input_errors():
    with pytest.raises(ValueError, match="trailing dimension 4"):
        kin.mass(jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="trailing dimension 3"):
        kin.boost(jnp.ones(4), jnp.ones(2))
    with pytest.raises(ValueError, match=r"\|beta\| < 1"):
        kin.boost(jnp.ones(4), jnp.array([0.8, 0.8, 0.0]))
    with pytest.raises(ValueError, match="time-like"):
        kin.boost_to_rest_frame(jnp.ones(4), jnp.array([1.0, 2.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="non-zero"):
        kin.rotate(jnp.ones(4), jnp.zeros(3), 1.0)
    # Inside jit a superluminal boost is a documented masked (zero) result, not NaN.
    out = jax.jit(kin.boost)(jnp.ones(4), jnp.array([0.8, 0.8, 0.0]))
    np.testing.assert_array_equal(out, np.zeros(4))
