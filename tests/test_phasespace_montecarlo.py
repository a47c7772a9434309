"""The Monte-Carlo core: moments combine exactly, the Python and scan loops agree, the
histogram errors equal the direct per-point formula, and hit-or-miss keeps w / w_max."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import amplitudes as amp
from difphys import phasespace as ps
from difphys.phasespace._montecarlo import batch_moments, combine_moments, streaming_mean


def test_combined_moments_equal_the_two_pass_formula(key):
    x = 1e8 + jax.random.normal(key, (1000, 3))  # large offset: E[x^2] - E[x]^2 would cancel
    parts = [batch_moments(x[a:b], b - a) for a, b in ((0, 17), (17, 600), (600, 1000))]
    total = combine_moments(combine_moments(parts[0], parts[1]), parts[2])
    np.testing.assert_allclose(total[1], np.mean(np.asarray(x), axis=0), rtol=1e-15)
    m2 = np.sum((np.asarray(x) - np.mean(np.asarray(x), axis=0)) ** 2, axis=0)
    np.testing.assert_allclose(total[2], m2, rtol=1e-9)
    assert float(total[0]) == 1000


def test_scan_loop_equals_python_loop_and_jits(key):
    def batch(k, n_valid):
        return batch_moments(jax.random.exponential(k, (64,)), n_valid)

    a = streaming_mean(batch, 1000, 64, key=key)
    b = jax.jit(lambda k: streaming_mean(batch, 1000, 64, key=k, loop="scan"))(key)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    with pytest.raises(ValueError, match="loop must be"):
        streaming_mean(batch, 10, 4, key=key, loop="while")


def test_dsigma_errors_equal_the_per_point_formula(key):
    proc = amp.process("e+ e- > mu+ mu-")
    params = amp.SMParams()
    edges = jnp.linspace(-1.0, 1.0, 6)

    def cos_theta(p):
        return p[..., 2, 3] / jnp.linalg.norm(p[..., 2, 1:], axis=-1)

    n = 3000
    small = amp.dsigma(proc, cos_theta, edges, 91.0, n, params, key=key, batch_size=700)
    one = amp.dsigma(proc, cos_theta, edges, 91.0, n, params, key=key, batch_size=n)
    # the direct computation on the single batch's points
    from difphys.amplitudes._cross_section import _event_weights

    momenta, w = _event_weights(proc, None, jax.random.split(key, 1)[0], n, 91.0, params)
    idx = np.searchsorted(np.asarray(edges), np.asarray(cos_theta(momenta)), side="right") - 1
    contrib = np.stack([np.where(idx == b, np.asarray(w), 0.0) for b in range(5)], axis=1)
    widths = np.diff(np.asarray(edges))
    np.testing.assert_allclose(one.values, contrib.mean(0) / widths, rtol=1e-12)
    np.testing.assert_allclose(one.errors, contrib.std(0, ddof=1) / np.sqrt(n) / widths,
                               rtol=1e-10)
    # other batches: other points, the same estimate within errors; bins sum to sigma
    assert np.all(np.abs(small.values - one.values) < 5 * np.hypot(small.errors, one.errors))
    sigma = amp.cross_section(proc, 91.0, n, params, key=key, batch_size=700)
    np.testing.assert_allclose(np.sum(small.values * widths), sigma.value, rtol=1e-12)


def test_hit_or_miss_keeps_w_over_w_max(key):
    w = jax.random.uniform(key, (200_000,))
    log_w = jnp.log(w).at[:10].set(-jnp.inf).at[10:15].set(jnp.log(3.0))
    accept, over = ps.hit_or_miss(jax.random.fold_in(key, 1), log_w, jnp.log(2.0))
    assert not np.any(np.asarray(accept[:10]))  # zero weight: never kept
    assert np.all(np.asarray(accept[10:15])) and int(over.sum()) == 5  # above w_max: kept once
    rate, expected = float(accept[15:].mean()), 0.25  # E[w] / w_max for uniform w
    assert abs(rate - expected) < 5 * np.sqrt(expected * (1 - expected) / 200_000)
