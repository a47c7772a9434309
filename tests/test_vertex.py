"""Vertex fitting: helix maths, noise-free and smeared fits, implicit gradients, degenerate cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from difphys import vertex as vx
from difphys.testing import finite_difference_grad

B = 2.0


def _jet(key, n, displacement=10.0, pt_range=(0.5, 100.0)):
    kv, kp, ke, kf, kc = jax.random.split(key, 5)
    vertex = jax.random.uniform(kv, (3,), dtype=jnp.float64, minval=-1.0, maxval=1.0) * displacement
    pt = jnp.exp(
        jax.random.uniform(
            kp, (n,), dtype=jnp.float64, minval=np.log(pt_range[0]), maxval=np.log(pt_range[1])
        )
    )
    eta = jax.random.uniform(ke, (n,), dtype=jnp.float64, minval=-2.0, maxval=2.0)
    phi = jax.random.uniform(kf, (n,), dtype=jnp.float64, minval=-np.pi, maxval=np.pi)
    mom = jnp.stack([pt * jnp.cos(phi), pt * jnp.sin(phi), pt * jnp.sinh(eta)], axis=-1)
    charge = jnp.where(jax.random.uniform(kc, (n,)) > 0.5, 1.0, -1.0)
    return vertex, mom, charge


# ----------------------------------------------------------------- helix maths


def test_perigee_conventions_and_inverse(key):
    # A track from the origin has d0 = z0 = 0 and phi0 = its azimuth.
    mom = jnp.array([3.0, 4.0, 2.0])
    per = vx.perigee_from_state(jnp.zeros(3), mom, 1.0, B)
    np.testing.assert_allclose(per[:2], 0.0, atol=1e-12)
    np.testing.assert_allclose(per[2], np.arctan2(4.0, 3.0), rtol=1e-14)
    np.testing.assert_allclose(per[3], np.arctan2(5.0, 2.0), rtol=1e-14)
    np.testing.assert_allclose(per[4], 1.0 / np.sqrt(29.0), rtol=1e-14)
    # Straight line (B = 0): d0 = y0 cos(phi) - x0 sin(phi); z0 from the back-projection.
    pos = jnp.array([2.0, 1.0, 3.0])
    per0 = vx.perigee_from_state(pos, mom, 1.0, 0.0)
    phi = np.arctan2(4.0, 3.0)
    np.testing.assert_allclose(per0[0], 1.0 * np.cos(phi) - 2.0 * np.sin(phi), rtol=1e-14)
    s = 2.0 * np.cos(phi) + 1.0 * np.sin(phi)
    np.testing.assert_allclose(per0[1], 3.0 - s * 2.0 / 5.0, rtol=1e-13)
    for sub in jax.random.split(key, 20):
        v, moms, ch = _jet(sub, 5, displacement=30.0)
        pers = vx.perigee_from_state(jnp.broadcast_to(v, moms.shape), moms, ch, B)
        # The perigee point lies on the helix circle and is its closest point to the origin.
        d0, phi0, theta, qop = pers[:, 0], pers[:, 2], pers[:, 3], pers[:, 4]
        rho = vx.curvature(qop, theta, B)
        pca = jnp.stack([-d0 * jnp.sin(phi0), d0 * jnp.cos(phi0)], -1)
        centre = pca - jnp.stack([-jnp.sin(phi0), jnp.cos(phi0)], -1) / rho[:, None]
        radius = 1 / jnp.abs(rho)
        np.testing.assert_allclose(
            jnp.linalg.norm(v[None, :2] - centre, axis=-1), radius, rtol=1e-11
        )
        np.testing.assert_allclose(
            jnp.abs(d0), jnp.abs(jnp.linalg.norm(centre, axis=-1) - radius), rtol=1e-8, atol=1e-10
        )
        # Inverse: the helix passes through the production point with the original momentum.
        point, local = vx.state_at_vertex(pers, v[None, :], B)
        np.testing.assert_allclose(point, jnp.broadcast_to(v, point.shape), atol=1e-9)
        np.testing.assert_allclose(
            vx.local_to_momentum(local[:, 0], local[:, 1], local[:, 2]), moms, rtol=1e-10
        )


def test_jacobians_autodiff_vs_finite_differences(key):
    v, moms, ch = _jet(key, 4, displacement=20.0)
    phi, theta, qop = vx.momentum_to_local(moms, ch)
    local = jnp.stack([phi, theta, qop], -1)
    jv, jq = vx.perigee_jacobians(jnp.broadcast_to(v, (4, 3)), local, B)
    for i in range(4):
        for row in range(5):
            fv = lambda x, i=i, row=row: vx.perigee_from_local(x, phi[i], theta[i], qop[i], B)[row]  # noqa: E731
            fq = lambda q, row=row: vx.perigee_from_local(v, q[0], q[1], q[2], B)[row]  # noqa: E731
            np.testing.assert_allclose(
                jv[i, row], finite_difference_grad(fv, v, eps=1e-4), rtol=1e-6, atol=1e-9
            )
            np.testing.assert_allclose(
                jq[i, row], finite_difference_grad(fq, local[i], eps=1e-4), rtol=1e-6, atol=1e-9
            )
    check_grads(lambda x: vx.perigee_from_state(x, moms[0], ch[0], B), (v,), order=2, eps=1e-5)


# ----------------------------------------------------------------- fits


@pytest.mark.parametrize("n", [3, 7, 15])
def test_noise_free_tracks_fit_back_to_the_true_vertex(key, n):
    for sub in jax.random.split(jax.random.fold_in(key, n), 5):
        k1, k2 = jax.random.split(sub)
        v, moms, ch = _jet(k1, n, displacement=30.0)
        tracks, truth = vx.simulate_tracks(k2, v, moms, ch, B)
        res = vx.fit(vx.Perigee(truth, tracks.cov), bfield=B)
        assert bool(res.converged) and bool(res.valid)
        np.testing.assert_allclose(res.position, v, atol=1e-6)
        np.testing.assert_allclose(res.momenta, moms, rtol=1e-8)
        assert float(res.chi2) < 1e-12


def test_pulls_and_chi2_over_5000_fits(key):
    n_jets, n = 5000, 6
    keys = jax.random.split(key, n_jets)

    def one(k):
        k1, k2 = jax.random.split(k)
        v, moms, ch = _jet(k1, n, displacement=5.0, pt_range=(1.0, 50.0))
        tracks, _ = vx.simulate_tracks(k2, v, moms, ch, B)
        return tracks, v

    tracks, truth = jax.vmap(one)(keys)
    res = jax.jit(lambda t: vx.fit(t, bfield=B))(tracks)
    assert bool(jnp.all(res.converged))
    sigma = jnp.sqrt(jnp.diagonal(res.cov, axis1=-2, axis2=-1))
    pulls = (res.position - truth) / sigma
    assert np.all(np.abs(np.mean(pulls, axis=0)) < 0.05), np.mean(pulls, axis=0)
    assert np.all(np.abs(np.std(pulls, axis=0) - 1) < 0.05), np.std(pulls, axis=0)
    assert abs(float(jnp.mean(res.chi2 / res.ndf)) - 1) < 0.05


def _smeared(key, n=6, displacement=8.0):
    k1, k2 = jax.random.split(key)
    v, moms, ch = _jet(k1, n, displacement=displacement, pt_range=(1.0, 20.0))
    tracks, _ = vx.simulate_tracks(k2, v, moms, ch, B)
    return tracks, v


def _unrolled_position(tracks, weights, n_steps=40):
    """Reference: autodiff through many unrolled Gauss-Newton iterations (not used by fit)."""
    from difphys.vertex import _fit as F

    params, cov = tracks.params, tracks.cov
    wm = jnp.linalg.inv(cov)
    theta = F._Theta(
        params, wm, weights, jnp.asarray(B), jnp.zeros(3), jnp.eye(3) / F.WEAK_PRIOR_SIGMA**2
    )
    d0, z0, phi0 = params[:, 0], params[:, 1], params[:, 2]
    pca = jnp.stack([-d0 * jnp.sin(phi0), d0 * jnp.cos(phi0), z0], axis=-1)
    seed = jnp.sum(weights[:, None] * pca, axis=0) / jnp.sum(weights)
    seed = jax.lax.stop_gradient(seed)
    _, q = vx.state_at_vertex(params, seed[None, :], B)
    q = jax.lax.stop_gradient(q)

    def body(_, state):
        v, q = state
        v, q, _ = F._gauss_newton_step(theta, v, q)
        return v, q

    v, _ = jax.lax.fori_loop(0, n_steps, body, (seed, q))
    return v


def test_implicit_gradients_match_unrolled_and_finite_differences(key):
    tracks, _ = _smeared(key)
    n = tracks.params.shape[0]
    w0 = jnp.linspace(0.4, 0.9, n)
    target = jnp.array([0.3, -0.2, 0.5])

    # Fully converged fits (tight tol) so finite differences are not limited by the stopping rule.
    def loss_w(w):
        return jnp.sum((vx.fit(tracks, w, bfield=B, tol=1e-13).position - target) ** 2)

    implicit = jax.grad(loss_w)(w0)
    unrolled = jax.grad(lambda w: jnp.sum((_unrolled_position(tracks, w) - target) ** 2))(w0)
    np.testing.assert_allclose(implicit, unrolled, rtol=1e-6, atol=1e-12)
    scale = float(jnp.max(jnp.abs(implicit)))  # 1e-6 relative to the gradient's size
    np.testing.assert_allclose(
        implicit, finite_difference_grad(loss_w, w0, eps=1e-3), rtol=1e-6, atol=1e-6 * scale
    )

    def loss_params(p):
        return jnp.sum(vx.fit(vx.Perigee(p, tracks.cov), w0, bfield=B, tol=1e-13).position * target)

    g_p = jax.grad(loss_params)(tracks.params)
    g_p_unrolled = jax.grad(
        lambda p: jnp.sum(_unrolled_position(vx.Perigee(p, tracks.cov), w0) * target)
    )(tracks.params)
    np.testing.assert_allclose(g_p, g_p_unrolled, rtol=1e-6, atol=1e-10)
    # Finite differences on a few entries (d0, phi0, q/p of track 0; z0 of track 3).
    for i, j in ((0, 0), (0, 2), (0, 4), (3, 1)):
        f = lambda x, i=i, j=j: loss_params(tracks.params.at[i, j].set(x))  # noqa: E731
        h = 1e-4 * max(1.0, abs(float(tracks.params[i, j])))
        num = (f(tracks.params[i, j] + h) - f(tracks.params[i, j] - h)) / (2 * h)
        np.testing.assert_allclose(
            g_p[i, j], num, rtol=1e-6, atol=1e-6 * float(jnp.max(jnp.abs(g_p)))
        )

    def loss_cov(scale):
        cov = tracks.cov * scale[:, None, None]
        return jnp.sum(
            vx.fit(vx.Perigee(tracks.params, cov), w0, bfield=B, tol=1e-13).position * target
        )

    s0 = jnp.ones(n)
    g_c = jax.grad(loss_cov)(s0)
    np.testing.assert_allclose(
        g_c,
        finite_difference_grad(loss_cov, s0, eps=1e-3),
        rtol=1e-6,
        atol=1e-6 * float(jnp.max(jnp.abs(g_c))),
    )

    # The fitted covariance and chi2 are differentiable too.
    def cov_chi2(w):
        res = vx.fit(tracks, w, bfield=B, tol=1e-13)
        return res.cov[0, 0] * 1e4 + res.chi2

    gc = jax.grad(cov_chi2)(w0)
    fdc = finite_difference_grad(cov_chi2, w0, eps=1e-3)
    np.testing.assert_allclose(gc, fdc, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(gc))))


def test_gradient_descent_downweights_tracks_from_a_second_vertex(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    v1 = jnp.array([0.0, 0.0, 0.0])
    v2 = jnp.array([4.0, -3.0, 6.0])
    _, m1, c1 = _jet(k1, 5, pt_range=(2.0, 20.0))
    _, m2, c2 = _jet(k2, 3, pt_range=(2.0, 20.0))
    t1, _ = vx.simulate_tracks(k3, v1, m1, c1, B)
    t2, _ = vx.simulate_tracks(k4, v2, m2, c2, B)
    tracks = vx.Perigee(jnp.concatenate([t1.params, t2.params]), jnp.concatenate([t1.cov, t2.cov]))
    logits = jnp.zeros(8)

    @jax.jit
    def step(z):
        loss, g = jax.value_and_grad(
            lambda z: jnp.sum((vx.fit(tracks, jax.nn.sigmoid(z), bfield=B).position - v1) ** 2)
        )(z)
        return z - 20.0 * g, loss

    losses = []
    for _ in range(60):
        logits, loss = step(logits)
        losses.append(float(loss))
    w = jax.nn.sigmoid(logits)
    assert losses[-1] < 0.1 * losses[0]
    assert float(jnp.max(w[5:])) < float(jnp.min(w[:5]))


def test_batched_padded_fit_equals_individual_fits(key):
    jets = [_smeared(k, n) for k, n in zip(jax.random.split(key, 4), (3, 5, 8, 4), strict=True)]
    n_max = 8
    params, covs, weights = [], [], []
    for tracks, _ in jets:
        n = tracks.params.shape[0]
        params.append(jnp.concatenate([tracks.params, jnp.zeros((n_max - n, 5))]))
        covs.append(jnp.concatenate([tracks.cov, jnp.broadcast_to(jnp.eye(5), (n_max - n, 5, 5))]))
        weights.append(jnp.concatenate([jnp.ones(n), jnp.zeros(n_max - n)]))
    batch = vx.Perigee(jnp.stack(params), jnp.stack(covs))
    res = jax.jit(lambda t, w: vx.fit(t, w, bfield=B))(batch, jnp.stack(weights))
    for i, (tracks, _) in enumerate(jets):
        single = vx.fit(tracks, bfield=B)
        np.testing.assert_allclose(res.position[i], single.position, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res.chi2[i], single.chi2, rtol=1e-8)


def test_beam_spot_constraint_pulls_the_vertex(key):
    tracks, v = _smeared(key, n=3)
    spot = vx.BeamSpot(jnp.zeros(3), jnp.diag(jnp.array([1e-4, 1e-4, 1e-2])))
    free = vx.fit(tracks, bfield=B)
    constrained = vx.fit(tracks, bfield=B, constraint=spot)
    assert float(jnp.linalg.norm(constrained.position[:2])) < float(
        jnp.linalg.norm(free.position[:2])
    )
    assert float(constrained.ndf) == float(free.ndf) + 3
    assert np.all(np.diag(constrained.cov) < np.diag(free.cov))
    # An explicit seed changes the starting point only, never the beam-spot constraint.
    offset = vx.BeamSpot(jnp.array([0.05, -0.05, 0.0]), spot.cov)
    unseeded = vx.fit(tracks, bfield=B, constraint=offset)
    seeded = vx.fit(tracks, start=jnp.array([1.0, 1.0, 1.0]), bfield=B, constraint=offset)
    np.testing.assert_allclose(seeded.position, unseeded.position, atol=1e-8)


@pytest.mark.parametrize("case", ["no_tracks", "one_track", "parallel", "non_pd"])
def test_degenerate_cases_give_no_nan(key, case):
    tracks, _ = _smeared(key, n=4)
    params, cov = tracks.params, tracks.cov
    weights = jnp.ones(4)
    if case == "no_tracks":
        weights = jnp.zeros(4)
    elif case == "one_track":
        weights = jnp.array([1.0, 0.0, 0.0, 0.0])
    elif case == "parallel":
        straight = vx.perigee_from_state(jnp.zeros(3), jnp.array([1e6, 0.0, 0.0]), 1.0, B)
        params = jnp.stack([straight.at[0].set(0.01 * i) for i in range(4)])
    elif case == "non_pd":
        cov = cov.at[1].set(-jnp.eye(5))

    @jax.jit
    def run(p, c, w):
        res = vx.fit(vx.Perigee(p, c), w, bfield=B)
        grads = jax.grad(
            lambda w, p: jnp.sum(vx.fit(vx.Perigee(p, c), w, bfield=B).position), argnums=(0, 1)
        )(w, p)
        return res, grads

    res, grads = run(params, cov, weights)
    for leaf in jax.tree.leaves((res, grads)):
        assert np.all(np.isfinite(leaf)), case
    if case in ("no_tracks", "one_track", "parallel"):
        assert not bool(res.valid)
        assert float(jnp.max(jnp.diag(res.cov))) > 1e3
    else:
        assert bool(res.valid)  # three good tracks remain after dropping the bad one
    if case == "non_pd":
        with pytest.raises(ValueError, match="positive definite"):
            vx.fit(vx.Perigee(params, cov), bfield=B)


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(\.\.\., n, 5\)"):
        vx.Perigee(jnp.zeros((3, 4)), jnp.zeros((3, 5, 5)))
    good = vx.Perigee(
        jnp.zeros((3, 5)).at[:, 3].set(1.0).at[:, 4].set(0.1),
        jnp.broadcast_to(jnp.eye(5), (3, 5, 5)),
    )
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vx.fit(good, jnp.array([1.0, 2.0, 1.0]), bfield=B)
    with pytest.raises(ValueError, match="NaN"):
        vx.fit(vx.Perigee(good.params.at[0, 0].set(jnp.nan), good.cov), bfield=B)


def test_float32_fit_is_finite(key):
    tracks, v = _smeared(key, n=6)
    t32 = jax.tree.map(lambda x: x.astype(jnp.float32), tracks)
    res = jax.jit(lambda t: vx.fit(t, bfield=B))(t32)
    assert res.position.dtype == jnp.float32
    assert np.all(np.isfinite(res.position)) and np.all(np.isfinite(res.cov))
    np.testing.assert_allclose(res.position, vx.fit(tracks, bfield=B).position, atol=5e-3)
