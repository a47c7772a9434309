"""Test configuration: float64 physics, strict dtype promotion, a fixed key."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    """A fixed typed PRNG key; tests split it, never reuse it."""
    return jax.random.key(20261123)
