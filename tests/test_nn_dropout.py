"""Dropout masks from the fused counter hash: keep probability, independence between
elements and between keys (statistical bounds at 5 standard errors), reproducibility."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys.nn import Dropout, dropout_keep_mask

N = 1 << 20


def _within(observed, expected, n, k=5.0):
    sigma = np.sqrt(expected * (1.0 - expected) / n)
    assert abs(observed - expected) < k * sigma, (observed, expected, sigma)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_keep_fraction(key, keep):
    mask = np.asarray(dropout_keep_mask(key, (1024, 1024), keep))
    _within(mask.mean(), keep, N)


def test_independent_between_elements_and_keys(key):
    keep = 0.7
    a = np.asarray(dropout_keep_mask(key, (1024, 1024), keep))
    b = np.asarray(dropout_keep_mask(jax.random.fold_in(key, 1), (1024, 1024), keep))
    _within((a & b).mean(), keep * keep, N)  # two keys
    _within((a[:, 1:] & a[:, :-1]).mean(), keep * keep, a[:, 1:].size)  # neighbours in a row
    _within((a[1:] & a[:-1]).mean(), keep * keep, a[1:].size)  # one row apart (stride 1024)
    # a mask is reproducible from its key
    np.testing.assert_array_equal(a, np.asarray(dropout_keep_mask(jax.random.clone(key),
                                                                  (1024, 1024), keep)))


def test_dropout_layer_is_unbiased_and_checks_its_rate(key):
    layer = Dropout(0.1)
    x = jnp.ones((1024, 1024), jnp.float32)
    y = np.asarray(jax.jit(layer)(x, key), dtype=np.float64)
    kept = y > 0
    np.testing.assert_allclose(y[kept], 1.0 / 0.9, rtol=1e-6)
    _within(kept.mean(), 0.9, N)
    assert layer(x, None) is x  # no key: identity
    with pytest.raises(ValueError, match="dropout rate"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="keep probability"):
        dropout_keep_mask(key, (3,), 0.0)
