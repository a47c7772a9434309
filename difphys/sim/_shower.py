"""A 2D toy shower in a ring-shaped detector, after Kagan & Heinrich (arXiv:2308.16680).

A particle starts at the origin moving along +x and travels in straight steps of length
``step``. The detector is a ring of material between radii ``theta`` (the design parameter)
and ``theta + thickness``; its density has smooth edges of width ``edge`` (a logistic profile),
so the interaction probability per step, ``1 - exp(-step * density(r) / interaction_length)``,
is a differentiable function of ``theta``. At an interaction (a Bernoulli draw) the particle
deposits a fraction ``U(loss_min, loss_max)`` of its energy and is deflected by a normal angle;
in the branching variant it then splits (Bernoulli ``split_probability``) into two particles
sharing its energy. Particles stop below ``energy_cut`` or beyond ``world_radius``; the shower
ends when none is left (a ``lax.while_loop`` whose trip count depends on the draws).

The observables are the interaction points and their energy deposits; the design objective of
the paper is ``(mean radius of the interaction points - 2.0)**2``.

Lengths are in the toy's units (the paper's target radius is 2.0), energies in GeV. All
randomness flows through :mod:`difphys.stochad` samplers, so every estimator applies.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import stochad
from .._checks import (
    check_count,
    check_finite,
    check_nonnegative,
    check_positive,
    check_unit_interval,
    is_concrete,
)
from .._fields import array_field
from .._numerics import safe_norm

#: What each :class:`DetectorConfig` leaf measures (all are 0-d float arrays).
Length = jax.Array  # the toy's length unit
Energy = jax.Array  # GeV
Fraction = jax.Array  # of a particle's energy, in [0, 1]
Angle = jax.Array  # rad
Probability = jax.Array  # per interaction, in [0, 1]


class DetectorConfig(eqx.Module):
    """Toy detector and shower settings (array leaves, :func:`difphys._fields.array_field`;
    their annotations name what they measure); sizes are static."""

    thickness: Length = array_field(1.0)
    edge: Length = array_field(0.05)
    world_radius: Length = array_field(6.0)
    target_radius: Length = array_field(2.0)
    """Geometry: the ring's thickness and edge width, the world and the target radius."""
    step: Length = array_field(0.05)
    interaction_length: Length = array_field(0.15)
    energy: Energy = array_field(10.0)
    energy_cut: Energy = array_field(1.0)
    """Transport: the step length, the interaction length at full density, the primary's
    energy and the energy below which a particle stops."""
    loss_min: Fraction = array_field(0.1)
    loss_max: Fraction = array_field(0.5)
    kick: Angle = array_field(0.3)
    split_probability: Probability = array_field(0.5)
    opening: Angle = array_field(0.2)
    """Interactions: the deposited fraction ~ U(loss_min, loss_max), the deflection's
    standard deviation, the probability to split in two and the half opening angle."""
    max_particles: int = eqx.field(static=True, default=16)
    max_steps: int = eqx.field(static=True, default=400)
    max_records: int = eqx.field(static=True, default=128)

    def __check_init__(self):
        for name in ("thickness", "edge", "world_radius", "target_radius", "step",
                     "interaction_length", "energy"):
            check_positive(getattr(self, name), name)
        for name in ("energy_cut", "kick", "opening"):
            check_finite(getattr(self, name), name)
            check_nonnegative(getattr(self, name), name)
        for name in ("loss_min", "loss_max", "split_probability"):
            check_unit_interval(getattr(self, name), name)
        if is_concrete(self.loss_min, self.loss_max) and float(self.loss_min) > float(
                self.loss_max):
            raise ValueError(f"loss_min must not exceed loss_max; got {float(self.loss_min)} > "
                             f"{float(self.loss_max)}")
        for name in ("max_particles", "max_steps", "max_records"):
            check_count(getattr(self, name), name)


class Shower(NamedTuple):
    """The result of one shower.

    points: (max_records, 2) interaction positions (unused rows are zero)
    deposits: (max_records,) energy deposited at each point, GeV (zero for unused rows)
    mask: (max_records,) float 1/0, which rows hold interactions
    n_interactions: number of interactions (may exceed max_records; sums below use all)
    sum_radius: sum of the radii of all interaction points
    total_deposit: total deposited energy, GeV
    n_steps: steps taken
    """

    points: jax.Array
    deposits: jax.Array
    mask: jax.Array
    n_interactions: jax.Array
    sum_radius: jax.Array
    total_deposit: jax.Array
    n_steps: jax.Array


def _ring(theta, config, dtype):
    theta = jnp.asarray(theta, dtype)
    if theta.ndim == 0:
        return theta, jnp.asarray(config.thickness, dtype)
    if theta.shape != (2,):
        raise ValueError(
            f"theta must be the inner radius (scalar) or (inner radius, thickness); got shape "
            f"{theta.shape}"
        )
    return theta[0], theta[1]


def density(r, inner, thickness, edge):
    """Material density in [0, 1] at radius ``r``: a ring [inner, inner + thickness]."""
    check_nonnegative(thickness, "thickness")
    check_positive(edge, "edge")
    return jax.nn.sigmoid((r - inner) / edge) * jax.nn.sigmoid((inner + thickness - r) / edge)


def simulate(theta, key, config: DetectorConfig | None = None, *, branching: bool = False):
    """Run one shower; ``theta`` is the ring's inner radius or ``(inner radius, thickness)``.

    Returns a :class:`Shower`. Differentiable in ``theta`` with any
    :func:`difphys.stochad.derivative_estimate` method.
    """
    config = DetectorConfig() if config is None else config
    theta = jnp.asarray(theta)
    check_finite(theta, "theta")
    dtype = theta.dtype if jnp.issubdtype(theta.dtype, jnp.floating) else jnp.result_type(float)
    inner, thickness = _ring(theta, config, dtype)
    if is_concrete(inner, thickness) and (np.any(np.asarray(inner) < 0)
                                          or np.any(np.asarray(thickness) <= 0)):
        raise ValueError(f"theta must give an inner radius >= 0 and a thickness > 0; got "
                         f"inner {np.asarray(inner)!r}, thickness {np.asarray(thickness)!r}")
    c = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), config)
    m = config.max_particles if branching else 1
    n_rec = config.max_records

    zeros = jnp.zeros((m,), dtype)
    alive0 = jnp.zeros((m,), bool).at[0].set(True)
    init = {
        "pos": jnp.zeros((m, 2), dtype),
        "angle": zeros,
        "energy": zeros.at[0].set(c.energy),
        "alive": alive0,
        "step": jnp.zeros((), jnp.int32),
        "n": jnp.zeros((), dtype),
        "sum_r": jnp.zeros((), dtype),
        "sum_dep": jnp.zeros((), dtype),
        "points": jnp.zeros((n_rec, 2), dtype),
        "deposits": jnp.zeros((n_rec,), dtype),
    }

    def cond(s):
        return jnp.any(s["alive"]) & (s["step"] < config.max_steps)

    def body(s):
        k = jax.random.fold_in(key, s["step"])
        k_int, k_loss, k_kick, k_split, k_z = jax.random.split(k, 5)
        alive = s["alive"]
        live = alive.astype(dtype)
        direction = jnp.stack([jnp.cos(s["angle"]), jnp.sin(s["angle"])], axis=-1)
        pos = s["pos"] + c.step * direction * live[:, None]
        r = safe_norm(pos)
        rho = density(r, inner, thickness, c.edge)
        p = live * -jnp.expm1(-c.step * rho / c.interaction_length)
        hit = stochad.bernoulli(k_int, p)
        frac = stochad.uniform(k_loss, c.loss_min, c.loss_max, shape=(m,))
        dep = hit * frac * s["energy"]
        energy = s["energy"] - dep
        angle = s["angle"] + hit * stochad.normal(k_kick, jnp.zeros((), dtype), c.kick, (m,))

        # record the interaction points (in order of slot) into the fixed-size buffer
        slot = (s["n"] + jnp.cumsum(hit) - hit).astype(jnp.int32)
        slot = jnp.where(hit > 0.5, slot, n_rec)
        points = s["points"].at[slot].set(pos, mode="drop")
        deposits = s["deposits"].at[slot].set(dep, mode="drop")

        if branching:
            split = stochad.bernoulli(k_split, hit * c.split_probability)
            z = stochad.uniform(k_z, jnp.asarray(0.3, dtype), jnp.asarray(0.7, dtype), shape=(m,))
            splits = split > 0.5
            free = ~alive
            rank = jnp.cumsum(split).astype(jnp.int32) - 1
            free_idx = jnp.nonzero(free, size=m, fill_value=m)[0]
            ok = splits & (rank < jnp.sum(free, dtype=jnp.int32))
            target = jnp.where(ok, free_idx[jnp.clip(rank, 0, m - 1)], m)
            child_energy = z * energy
            energy = jnp.where(ok, energy - child_energy, energy)
            energy = energy.at[target].set(child_energy, mode="drop")
            child_angle = angle + c.opening
            angle = jnp.where(ok, angle - c.opening, angle)
            angle = angle.at[target].set(child_angle, mode="drop")
            pos = pos.at[target].set(pos, mode="drop")
            alive = alive.at[target].set(True, mode="drop")

        r_all = safe_norm(pos)
        alive = alive & (energy > c.energy_cut) & (r_all < c.world_radius)
        return {
            "pos": pos,
            "angle": angle,
            "energy": energy,
            "alive": alive,
            "step": s["step"] + 1,
            "n": s["n"] + jnp.sum(hit),
            "sum_r": s["sum_r"] + jnp.sum(hit * r),
            "sum_dep": s["sum_dep"] + jnp.sum(dep),
            "points": points,
            "deposits": deposits,
        }

    s = jax.lax.while_loop(cond, body, init)
    mask = (jnp.arange(n_rec, dtype=dtype) < s["n"]).astype(dtype)
    return Shower(
        points=s["points"],
        deposits=s["deposits"],
        mask=mask,
        n_interactions=s["n"],
        sum_radius=s["sum_r"],
        total_deposit=s["sum_dep"],
        n_steps=s["step"],
    )


def mean_interaction_radius(shower: Shower):
    """Mean radius of all interaction points; 0 for a shower without interactions."""
    return shower.sum_radius / jnp.maximum(shower.n_interactions, 1)


def objective(theta, key, config: DetectorConfig | None = None, *, branching: bool = False):
    """The paper's design loss ``(mean interaction radius - target_radius)**2`` for one shower.

    A shower without interactions has mean radius 0 (loss ``target_radius**2``); with the
    default configuration this happens with probability below 1e-3 for a ring of unit
    thickness.
    """
    config = DetectorConfig() if config is None else config
    shower = simulate(theta, key, config, branching=branching)
    return (mean_interaction_radius(shower) - config.target_radius) ** 2
