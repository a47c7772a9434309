"""The one idiom for physical numbers in an ``eqx.Module``: a field whose value is converted
to a JAX array on construction, so that it is a PyTree leaf (``jax.grad`` reaches it, a new
value does not recompile a jitted function) whatever the caller passed (a Python float, a
NumPy scalar, an array)."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp


def array_field(default=dataclasses.MISSING, **kwargs):
    """``eqx.field(converter=jnp.asarray, default=default)``: a physical number stored as an
    array leaf (units as documented by the owning class)."""
    return eqx.field(converter=jnp.asarray, default=default, **kwargs)
