"""The compiled CPU kernel of the vertex fit (backend="kernel") against the JAX path
(backend="xla"): same fits to rounding in every field, including degenerate jets, the same
implicit gradients, vmap, float32 and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import vertex as vx
from difphys.vertex import _cpu_kernel

pytestmark = pytest.mark.skipif(not _cpu_kernel.available(), reason="needs numba")

B = 2.0


def _jets(key, n_jets, n_tracks, displacement=5.0):
    """Smeared tracks of ``n_jets`` displaced vertices (pT 0.5-50 GeV, |eta| < 2)."""

    def one(k):
        k1, k2, k3, k4, k5 = jax.random.split(k, 5)
        v = jax.random.uniform(k1, (3,), jnp.float64, -displacement, displacement)
        pt = jnp.exp(jax.random.uniform(k2, (n_tracks,), jnp.float64, np.log(0.5), np.log(50.0)))
        eta = jax.random.uniform(k3, (n_tracks,), jnp.float64, -2.0, 2.0)
        phi = jax.random.uniform(k4, (n_tracks,), jnp.float64, -np.pi, np.pi)
        mom = jnp.stack([pt * jnp.cos(phi), pt * jnp.sin(phi), pt * jnp.sinh(eta)], axis=-1)
        charge = jnp.where(jnp.arange(n_tracks) % 2 == 0, 1.0, -1.0)
        tracks, _ = vx.simulate_tracks(k5, v, mom, charge, B)
        return tracks

    return jax.vmap(one)(jax.random.split(key, n_jets))


def _degenerate_batch(key):
    """12 jets x 8 tracks: normal jets, padding, fractional weights, and every degenerate case."""
    tracks = _jets(key, 12, 8)
    params, cov = np.array(tracks.params), np.array(tracks.cov)
    w = np.ones((12, 8))
    w[1, 5:] = 0.0  # padding
    w[2] = np.linspace(0.1, 1.0, 8)  # fractional weights
    w[3] = 0.0  # all weights zero
    w[4, 1:] = 0.0  # one track
    params[5, 3] = np.nan  # a NaN track (dropped inside jit)
    cov[6, 2] = -np.eye(5)  # a non-positive-definite covariance (dropped)
    params[7, :] = params[7, 0]  # identical (parallel) tracks
    cov[7, :] = cov[7, 0]
    params[8, 4, 4] = 0.0  # q/p = 0 (dropped)
    params[9, 2, 3] = 0.0  # theta = 0 (dropped)
    return vx.Perigee(jnp.asarray(params), jnp.asarray(cov)), jnp.asarray(w)


def _compare(a, b, rtol=1e-8):
    """Flags and counters equal; finite values everywhere; float fields equal to rounding on
    valid fits (an invalid fit's vertex and covariance are set by rounding in its null space)."""
    valid = np.asarray(b.valid)
    np.testing.assert_array_equal(np.asarray(a.valid), valid)
    for name in a._fields:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
            np.testing.assert_array_equal(x[valid], y[valid], err_msg=name)
        else:
            assert np.all(np.isfinite(x)), name
            x, y = x[valid], y[valid]
            scale = np.maximum(np.abs(y), 1.0)
            np.testing.assert_array_less(np.abs(x - y), rtol * scale + 1e-12, err_msg=name)


def test_kernel_matches_xla_on_normal_and_degenerate_jets(key):
    tracks, w = _degenerate_batch(key)
    fit = jax.jit(lambda t, w, b: vx.fit(t, w, bfield=B, backend=b), static_argnums=2)
    kernel, xla = fit(tracks, w, "kernel"), fit(tracks, w, "xla")
    _compare(kernel, xla)
    # the degenerate jets are flagged, not NaN
    assert bool(kernel.valid[0]) and bool(kernel.valid[1]) and bool(kernel.valid[2])
    assert not bool(kernel.valid[3]) and not bool(kernel.valid[4]) and not bool(kernel.valid[7])
    assert np.all(np.isfinite(np.asarray(kernel.cov)))


def test_kernel_matches_xla_with_constraint_seed_and_tolerances(key):
    tracks = _jets(key, 10, 20)  # 20 tracks: two blocks of SIMD lanes, the second padded
    spot = vx.BeamSpot(jnp.array([0.1, -0.2, 0.5]), jnp.diag(jnp.array([0.01, 0.01, 4.0])))
    for kw in (dict(constraint=spot, tol=1e-4, max_iter=2),
               dict(start=jnp.array([1.0, 1.0, 0.0]))):
        _compare(vx.fit(tracks, bfield=B, backend="kernel", **kw),
                 vx.fit(tracks, bfield=B, backend="xla", **kw))


def test_kernel_gradients_equal_xla_gradients(key):
    tracks = _jets(key, 6, 7)
    w0 = jnp.full((6, 7), 0.8).at[:, 0].set(0.3)

    def loss(params, cov, w, backend):
        res = vx.fit(vx.Perigee(params, cov), w, bfield=B, backend=backend, tol=1e-12)
        return (jnp.sum(res.position ** 2) + jnp.sum(res.cov) + 1e-3 * jnp.sum(res.chi2)
                + jnp.sum(res.momenta[..., 0]))

    grad = jax.grad(loss, argnums=(0, 1, 2))
    g_kernel = grad(tracks.params, tracks.cov, w0, "kernel")
    g_xla = grad(tracks.params, tracks.cov, w0, "xla")
    for gk, gx in zip(g_kernel, g_xla, strict=True):
        assert np.all(np.isfinite(np.asarray(gk)))
        np.testing.assert_allclose(gk, gx, rtol=1e-6, atol=1e-9 * float(jnp.max(jnp.abs(gx))))


def test_kernel_under_vmap_and_jit_equals_single_fits(key):
    tracks = _jets(key, 4, 5)
    weights = jnp.ones((4, 5)).at[2, 3:].set(0.0)
    batched = jax.jit(jax.vmap(lambda p, c, w: vx.fit(vx.Perigee(p, c), w, bfield=B,
                                                       backend="kernel")))(
        tracks.params, tracks.cov, weights)
    for j in range(4):
        single = vx.fit(vx.Perigee(tracks.params[j], tracks.cov[j]), weights[j], bfield=B,
                        backend="xla")
        np.testing.assert_allclose(batched.position[j], single.position, atol=1e-9)
        np.testing.assert_allclose(batched.cov[j], single.cov, rtol=1e-8)
        assert int(batched.n_iter[j]) == int(single.n_iter)


def test_kernel_float32(key):
    tracks = _jets(key, 50, 10)
    t32 = jax.tree.map(lambda x: x.astype(jnp.float32), tracks)
    kernel = vx.fit(t32, bfield=B, backend="kernel")
    xla = vx.fit(t32, bfield=B, backend="xla")
    exact = vx.fit(tracks, bfield=B, backend="kernel")  # equal to the JAX path (tests above)
    assert kernel.position.dtype == jnp.float32 and kernel.cov.dtype == jnp.float32
    # the kernel computes in float64 internally: at least as close to the float64 fit
    err_kernel = np.abs(np.asarray(kernel.position) - np.asarray(exact.position)).max()
    err_xla = np.abs(np.asarray(xla.position) - np.asarray(exact.position)).max()
    assert err_kernel <= max(err_xla, 1e-5)
    assert np.array_equal(np.asarray(kernel.valid), np.asarray(xla.valid))


def test_backend_errors(key, monkeypatch):
    tracks = _jets(key, 1, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        vx.fit(tracks, bfield=B, backend="gpu")
    monkeypatch.setattr(_cpu_kernel, "available", lambda: False)
    with pytest.raises(ValueError, match="needs numba"):
        vx.fit(tracks, bfield=B, backend="kernel")
    # auto falls back to the JAX path without numba
    assert bool(vx.fit(tracks, bfield=B).valid[0])
