"""Helpers for testing differentiable physics code (used by difphys' own tests).

``check_grad_fd`` compares ``jax.grad`` with central finite differences of a scalar function;
``random_boost`` and ``random_rotation`` draw random Lorentz transformations for invariance tests.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .kinematics import boost, rotate


def finite_difference_grad(
    f: Callable[[Array], Array], x: ArrayLike, eps: float = 1e-4
) -> np.ndarray:
    """Five-point central finite-difference gradient of scalar ``f`` at ``x`` (float64).

    The step is ``eps * max(1, |x_i|)``; the truncation error is O(h^4).
    """
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        h = eps * max(1.0, abs(flat[i]))
        values = []
        for step in (2 * h, h, -h, -2 * h):
            shifted = flat.copy()
            shifted[i] += step
            values.append(float(f(jnp.asarray(shifted.reshape(x.shape)))))
        f2, f1, fm1, fm2 = values
        grad.reshape(-1)[i] = (-f2 + 8 * f1 - 8 * fm1 + fm2) / (12 * h)
    return grad


def check_grad_fd(
    f: Callable[[Array], Array],
    x: ArrayLike,
    *,
    eps: float = 1e-4,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> None:
    """Assert ``jax.grad(f)(x)`` matches central finite differences (needs float64 enabled)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("finite-difference gradient checks need jax_enable_x64")
    auto = np.asarray(jax.grad(f)(jnp.asarray(x, dtype=jnp.float64)))
    numeric = finite_difference_grad(f, x, eps)
    np.testing.assert_allclose(auto, numeric, rtol=rtol, atol=atol)


def random_boost(key: PRNGKeyArray, p: ArrayLike, max_beta: float = 0.99) -> Array:
    """Apply one random boost (isotropic direction, ``|beta|`` uniform below ``max_beta``) to ``p``."""
    k1, k2 = jax.random.split(key)
    direction = jax.random.normal(k1, (3,), dtype=jnp.asarray(p).dtype)
    direction = direction / jnp.linalg.norm(direction)
    speed = max_beta * jax.random.uniform(k2, (), dtype=direction.dtype)
    return boost(p, speed * direction)


def random_rotation(key: PRNGKeyArray, p: ArrayLike) -> Array:
    """Apply one random rotation (isotropic axis, angle uniform in [0, 2 pi)) to ``p``."""
    k1, k2 = jax.random.split(key)
    axis = jax.random.normal(k1, (3,), dtype=jnp.asarray(p).dtype)
    angle = 2 * jnp.pi * jax.random.uniform(k2, (), dtype=axis.dtype)
    return rotate(p, axis, angle)


def run_on_fake_cpu_devices(script: str, *, devices: int = 4, expect: str,
                            timeout: float = 600) -> str:
    """Run the Python source ``script`` in a fresh interpreter that sees ``devices`` fake
    CPU devices (``--xla_force_host_platform_device_count``; the flag must be set before JAX
    starts, hence the subprocess) and return its standard output. Raises ``AssertionError``
    with the end of its standard error if it fails or does not print ``expect``."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    assert expect in out.stdout, out.stdout[-3000:]
    return out.stdout
