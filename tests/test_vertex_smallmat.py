"""Closed-form small-matrix algebra used by the vertex fit, against NumPy's LAPACK."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from difphys.vertex._smallmat import cholesky_spd, eigvalsh3, inv3, inv_spd


def _spd(key, n, batch=50):
    a = jax.random.normal(key, (batch, n, n))
    return a @ jnp.swapaxes(a, -1, -2) + 0.1 * jnp.eye(n)


def test_inverses_and_factors_match_lapack(key):
    k1, k2 = jax.random.split(key)
    spd5 = _spd(k1, 5)
    inv, ok = inv_spd(spd5)
    np.testing.assert_allclose(np.asarray(inv), np.linalg.inv(np.asarray(spd5)), rtol=1e-9,
                               atol=1e-9)
    assert bool(jnp.all(ok))
    low, _ = cholesky_spd(spd5)
    np.testing.assert_allclose(np.asarray(low), np.linalg.cholesky(np.asarray(spd5)), atol=1e-12)
    general = jax.random.normal(k2, (50, 3, 3))
    np.testing.assert_allclose(np.asarray(inv3(general)), np.linalg.inv(np.asarray(general)),
                               rtol=1e-8, atol=1e-8)


def test_positive_definiteness_flag(key):
    spd = _spd(key, 5, batch=4)
    not_pd = spd.at[1].set(-spd[1]).at[2, 4, 4].set(-1.0)
    _, ok = cholesky_spd(not_pd)
    np.testing.assert_array_equal(np.asarray(ok), [True, False, False, True])
    np.testing.assert_array_equal(np.asarray(ok), np.all(np.linalg.eigvalsh(np.asarray(not_pd))
                                                         > 0, axis=-1))


def test_extreme_eigenvalues_of_symmetric_3x3(key):
    spd = _spd(key, 3)
    lo, hi = eigvalsh3(spd)
    ref = np.linalg.eigvalsh(np.asarray(spd))
    np.testing.assert_allclose(np.asarray(lo), ref[:, 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(hi), ref[:, -1], rtol=1e-9, atol=1e-12)
    lo, hi = eigvalsh3(2.0 * jnp.eye(3)[None])  # degenerate: a multiple of the identity
    assert float(lo[0]) == float(hi[0]) == 2.0


def test_gradients(key):
    spd = _spd(key, 5, batch=2)
    check_grads(lambda a: inv_spd(a)[0], (spd,), order=1, modes=("fwd", "rev"))
    check_grads(inv3, (spd[:, :3, :3],), order=1, modes=("fwd", "rev"))
