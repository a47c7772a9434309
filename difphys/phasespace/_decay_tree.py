"""Unit-cube map for a tree of decays with Breit-Wigner-sampled resonance masses.

The phase space of a decay-chain process (``p p > t t~, t > w+ b, t~ > w- b~``) factorises
exactly at every resonance node ``R`` of invariant mass ``m``:
``dPhi_n = dPhi_k(P; ..., R, ...) (dm^2 / 2 pi) dPhi_j(R; daughters)``. Each ``m^2`` is drawn
from a Breit-Wigner density over its whole kinematic range (:func:`breit_wigner_map`), so the
map covers all of phase space (the integral is exact, not a narrow-width approximation) while
its points crowd where the propagators peak. A node with ``c`` children is a chain of two-body
decays ``Q_0 -> c_0 + Q_1``, ..., with the intermediate masses uniform in their ranges.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import is_concrete
from ._resonant import _breit_wigner_map
from ._unit_cube import _two_body_decay, unit_cube_dim


def _leaves(children) -> list[int]:
    """Final-state indices of a tree, checking its structure (clear errors, not IndexError)."""
    if not isinstance(children, (tuple, list)) or len(children) < 2:
        raise ValueError(f"a decay node needs at least two children (indices or (r, children) "
                         f"resonances); got {children!r}")
    out = []
    for child in children:
        if isinstance(child, tuple):
            if len(child) != 2 or isinstance(child[0], tuple):
                raise ValueError(f"a resonance is (index r, children); got {child!r}")
            out.extend(_leaves(child[1]))
        elif isinstance(child, (int, np.integer)) and not isinstance(child, bool):
            out.append(int(child))
        else:
            raise ValueError(f"a tree leaf is a final-state index; got {child!r}")
    return out


def _count_resonances(children) -> int:
    return sum(1 + _count_resonances(c[1]) for c in children if isinstance(c, tuple))


def decay_tree_dim(tree) -> int:
    """Dimension of the unit cube of :func:`decay_tree_from_unit_cube` (``3n - 4``)."""
    return unit_cube_dim(len(_leaves(tree)))


def decay_tree_from_unit_cube(
    u: Float[ArrayLike, "*batch d"],
    sqrt_s: Float[ArrayLike, "*batch"],
    tree: tuple,
    masses: Float[ArrayLike, " n"],
    resonance_masses: Float[ArrayLike, " r"],
    resonance_widths: Float[ArrayLike, " r"],
) -> tuple[Float[Array, "*batch n 4"], Float[Array, "*batch"]]:
    """Map ``u`` in ``[0, 1]^(3n-4)`` to ``n`` momenta in the centre-of-mass frame, with weight.

    ``tree``: the children of the centre-of-mass system, each a final-state index ``k``
    (``0 .. n-1``, its mass ``masses[k]``) or a resonance ``(r, children)`` of pole mass
    ``resonance_masses[r]`` and width ``resonance_widths[r]`` (GeV). Coordinates are used depth
    first: at each node the Breit-Wigner masses of its resonant children, then its decay
    (``c - 2`` intermediate masses and ``c - 1`` pairs ``(cos theta, phi)``), then the resonant
    children. ``E_u[w f] = int f dPhi_n`` in the convention of :func:`rambo`; smooth in ``u``,
    ``sqrt_s`` and all masses and widths. Returns momenta ``(..., n, 4)`` in final-state
    index order and the weight ``(...)``.
    """
    leaves = _leaves(tree)
    n = len(leaves)
    if sorted(leaves) != list(range(n)):
        raise ValueError(f"the tree's final-state indices must be 0..{n - 1} once each; "
                         f"got {sorted(leaves)}")
    if len(tree) < 2:
        raise ValueError("the centre-of-mass system must decay into at least two children")
    masses = jnp.asarray(masses)
    u = jnp.asarray(u).astype(jnp.result_type(masses.dtype, float))
    dtype = u.dtype
    masses = masses.astype(dtype)
    res_m = jnp.asarray(resonance_masses, dtype)
    res_w = jnp.asarray(resonance_widths, dtype)
    if masses.shape != (n,):
        raise ValueError(f"masses must have shape ({n},); got {masses.shape}")
    n_res = _count_resonances(tree)
    if res_m.shape[0] < n_res or res_w.shape[0] < n_res:
        raise ValueError(f"the tree has {n_res} resonances; got {res_m.shape[0]} masses "
                         f"and {res_w.shape[0]} widths")
    dim = unit_cube_dim(n)
    if u.shape[-1] != dim:
        raise ValueError(f"u must have trailing dimension {dim} for {n} particles; got {u.shape}")
    rs = jnp.broadcast_to(jnp.asarray(sqrt_s, dtype), u.shape[:-1])
    if is_concrete(u):
        un = np.asarray(u)
        if not np.all(np.isfinite(un)) or np.any((un < 0) | (un > 1)):
            raise ValueError("u must be finite and lie in the unit cube [0, 1]")
    threshold = jnp.sum(masses)
    if is_concrete(rs, masses) and np.any(np.asarray(rs) <= float(threshold)):
        raise ValueError(f"sqrt_s is not above the threshold {float(threshold):.6g} GeV")
    columns = iter(range(dim))
    out: dict[int, Array] = {}

    def min_mass(child):
        if isinstance(child, tuple):
            return sum(min_mass(c) for c in child[1])
        return masses[child]

    def decay(children, parent, parent_mass):
        weight = jnp.ones_like(parent_mass)
        child_m = []
        floors = [min_mass(c) for c in children]
        for j, child in enumerate(children):
            if isinstance(child, tuple):
                low = floors[j]
                high = parent_mass - sum(child_m) - sum(floors[j + 1:])
                m2, jac = _breit_wigner_map(u[..., next(columns)], res_m[child[0]],
                                           res_w[child[0]], low, high)
                weight = weight * jac / (2 * jnp.pi)
                child_m.append(jnp.sqrt(m2))
            else:
                child_m.append(jnp.broadcast_to(masses[child], parent_mass.shape))
        c = len(children)
        system, system_mass = parent, parent_mass
        momenta = []
        for k in range(c - 1):
            if k < c - 2:  # the rest Q_{k+1} of the chain: mass uniform in its range
                low = sum(child_m[k + 1:])
                high = system_mass - child_m[k]
                rest_mass = low + (high - low) * u[..., next(columns)]
                weight = weight * 2 * rest_mass * (high - low) / (2 * jnp.pi)
            else:
                rest_mass = child_m[c - 1]
            pa, rest, w2 = _two_body_decay(system, system_mass, child_m[k], rest_mass,
                                          u[..., next(columns)], u[..., next(columns)])
            weight = weight * w2
            momenta.append(pa)
            system, system_mass = rest, rest_mass
        momenta.append(system)
        for child, p, m in zip(children, momenta, child_m, strict=True):
            if isinstance(child, tuple):
                weight = weight * decay(child[1], p, m)
            else:
                out[child] = p
        return weight

    centre = jnp.stack([rs, *([jnp.zeros_like(rs)] * 3)], axis=-1)
    weight = decay(tuple(tree), centre, rs)
    return jnp.stack([out[k] for k in range(n)], axis=-2), weight
