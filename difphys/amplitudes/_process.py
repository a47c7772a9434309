"""The ``Process`` object: external wavefunctions (``_External``), the helicity sum and
colour/spin averaging of a tree-level amplitude, and the process's unit-cube phase space.
The amplitudes themselves come from the process compiler (:mod:`._compile`, :mod:`._recursion`).

``proc(momenta, params)`` takes momenta ``(..., n_external, 4)`` (incoming first, final state in
the order written) and returns |M|^2 summed over final and averaged over initial helicities and
colours, the quantity MadGraph's standalone ``check_sa`` prints as the matrix element.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete
from ..phasespace import (
    RESONANT_PAIR_DIM,
    decay_tree_from_unit_cube,
    from_unit_cube,
    resonant_pair_from_unit_cube,
    unit_cube_dim,
)
from . import _kinematic_check
from ._dirac import complex_dtype
from ._params import SMParams
from ._particles import PARTICLES, Particle
from ._wavefunctions import polarization_vector, u_spinor, ubar_spinor, v_spinor, vbar_spinor


def _leaf_set(child) -> set:
    if isinstance(child, tuple):
        return set().union(*(_leaf_set(c) for c in child[1]))
    return {child}


class _External:
    """Wavefunctions of the external legs on a factorised helicity grid.

    Leg ``i``'s wavefunctions are computed for its own helicities only and placed on axis ``i``
    of an ``n``-axis helicity grid (shape ``(..., 1, ..., h_i, ..., 1, 4)``), so products and
    currents broadcast over just the legs they involve; the amplitude builders return
    ``(..., h_0, ..., h_{n-1}, K)``, flattened at the end in ``itertools.product`` order.
    """

    def __init__(self, momenta, params, particles, gauge_leg, helicity=None):
        self.p = momenta
        self.params = params
        self.particles = particles
        self.gauge_leg = gauge_leg
        self.n = len(particles)
        self.helicity = helicity  # (..., n) index of each leg's helicity, or None: all

    def _grid(self, x, i, size):
        shape = x.shape[:-2] + tuple(size if k == i else 1 for k in range(self.n)) + x.shape[-1:]
        return x.reshape(shape)

    def momentum(self, i):
        return self.p[..., i, :].reshape(self.p.shape[:-2] + (1,) * self.n + (4,))

    def mass(self, i):
        name = self.particles[i].mass
        return (
            jnp.zeros((), self.p.dtype)
            if name is None
            else getattr(self.params, name).astype(self.p.dtype)
        )

    def leg(self, i):
        """Wavefunctions of leg ``i`` for its own helicities only: shape (..., n_hel_i, 4)."""
        part = self.particles[i]
        p = self.p[..., None, i, :]
        h = jnp.asarray(part.helicities)
        incoming = i < 2
        m = self.mass(i)
        if part.kind == "scalar":
            dtype = complex_dtype(p.dtype)
            return jnp.ones(p.shape[:-2] + (1, 1), dtype)
        if part.kind == "fermion":
            return u_spinor(p, m, h) if incoming else ubar_spinor(p, m, h)
        if part.kind == "antifermion":
            return vbar_spinor(p, m, h) if incoming else v_spinor(p, m, h)
        if self.gauge_leg == i:
            dtype = complex_dtype(p.dtype)
            return jnp.broadcast_to(p.astype(dtype), p.shape[:-2] + (h.shape[0], 4))
        return polarization_vector(p, m, h, outgoing=not incoming)

    def wf(self, i):
        """Wavefunctions of leg ``i`` on the helicity grid (one helicity per event when the
        helicities are given)."""
        wf = self.leg(i)
        if self.helicity is None:
            return self._grid(wf, i, len(self.particles[i].helicities))
        index = self.helicity[..., i, None, None]
        picked = jnp.take_along_axis(wf, jnp.broadcast_to(index, wf.shape[:-2] + (1, 1)),
                                     axis=-2)
        return self._grid(picked, i, 1)

    def gluon_momentum_in(self, i):
        """Momentum flowing *into* the diagram (incoming: p, outgoing: -p)."""
        return self.momentum(i) if i < 2 else -self.momentum(i)


#: relative tolerances of the eager kinematic checks of |M|^2 inputs, per floating dtype:
#: ``(conservation, mass)`` = (max |sum p_in - sum p_out| / E_in, |p^2 - m^2| / max(E^2, m^2)
#: per leg). The mass tolerance admits finite differences in a mass at fixed momenta and
#: still refuses massless momenta for a massive leg or a wrong mass.
KINEMATICS_TOLERANCE = {np.dtype("float64"): (1e-6, 1e-3), np.dtype("float32"): (1e-5, 1e-3)}


@functools.partial(jax.jit, static_argnums=2)
def _kinematic_summary(p, masses, n):
    """One fused pass over momenta ``(..., n, 4)`` (matrix products on the flattened events,
    which XLA runs far faster than reductions over the small trailing axes): (is every entry
    finite, the smallest incoming energy, the largest relative momentum imbalance, the largest
    relative off-shellness). Where a check fails, the caller locates the event in NumPy."""
    flat = p.reshape(-1, 4 * n)
    sign = np.zeros((4 * n, 4))
    metric = np.zeros((4 * n, 2 * n))
    for leg in range(n):
        sign[4 * leg: 4 * leg + 4, :] = np.eye(4) * (1.0 if leg < 2 else -1.0)
        metric[4 * leg, leg] = metric[4 * leg, n + leg] = 1.0
        metric[4 * leg + 1: 4 * leg + 4, leg] = -1.0
    finite = jnp.isfinite(jnp.sum(flat))
    e_in = flat[:, 0] + flat[:, 4]
    imbalance = jnp.max(jnp.abs(flat @ jnp.asarray(sign, p.dtype)), axis=-1) / e_in
    q = (flat * flat) @ jnp.asarray(metric, p.dtype)
    off = jnp.abs(q[:, :n] - masses**2) / jnp.maximum(q[:, n:], masses**2)
    return finite, jnp.min(e_in), jnp.max(imbalance), jnp.max(off)


def _on_cpu(x: jax.Array) -> bool:
    """Whether every shard of ``x`` lives in host memory (NumPy can read it without a copy)."""
    try:
        return all(d.platform == "cpu" for d in x.devices())
    except AttributeError:  # pragma: no cover - not a committed jax.Array
        return False


class Process:
    """A tree-level process: callable ``proc(momenta, params=None) -> |M|^2`` (float).

    Attributes:
        name: MadGraph process string.
        particles: the external :class:`Particle` records (incoming first).
        helicities: all helicity combinations, array (n_helicities, n_external).
        colour_matrix: ``C_kl = sum_colours c_k c_l^*`` over the colour basis of the amplitude.
        average: ``1 / (initial spin states x initial colour states)``.
    """

    def __init__(
        self,
        name: str,
        particle_names: tuple[str, ...],
        amplitude_fn: Callable,
        colour_matrix,
        average: float,
        resonant_pair: bool = False,
        decays: tuple = (),
    ):
        self.name = name
        self.resonant_pair = resonant_pair
        #: decay chains as ((external leg indices of the products), decaying particle)
        self.decays = tuple(decays)
        self.particles: tuple[Particle, ...] = tuple(PARTICLES[n] for n in particle_names)
        self.helicities = np.array(
            list(itertools.product(*(p.helicities for p in self.particles))), dtype=np.int32
        )
        self.colour_matrix = np.asarray(colour_matrix, dtype=np.complex128)
        self.average = float(average)
        self._amplitude_fn = amplitude_fn
        # Compiled once per process and input shape/dtype: eager calls from notebooks are fast,
        # and inside a user's jit these are simply inlined.
        self._amplitudes_jit = jax.jit(self._amplitudes, static_argnums=2)
        self._squared_jit = jax.jit(self._squared, static_argnums=2)
        self._per_helicity_jit = jax.jit(self._per_helicity)
        # (n_helicities, n): each leg's helicity as an index into its own helicities
        self._helicity_table = np.array(
            [[list(p.helicities).index(h) for p, h in zip(self.particles, row, strict=True)]
             for row in self.helicities], dtype=np.int32)

    def relabelled(self, particle_names: tuple[str, ...], name: str) -> Process:
        """This process under other names with the same |M|^2 (a generation swap such as
        ``c c~ > t t~`` for ``u u~ > t t~``): shares the compiled functions and the plan."""
        other = copy.copy(self)
        other.name = name
        other.particles = tuple(PARTICLES[n] for n in particle_names)
        return other  # decaying particles (t, z, w, h, ta) are never swapped

    @property
    def n_external(self) -> int:
        return len(self.particles)

    @property
    def n_helicities(self) -> int:
        return self.helicities.shape[0]

    @property
    def incoming(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.particles[:2])

    @property
    def outgoing(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.particles[2:])

    def __repr__(self) -> str:
        return (
            f"Process({self.name!r}, n_helicities={self.n_helicities}, "
            f"colour_basis={self.colour_matrix.shape[0]})"
        )

    def external_masses(self, params: SMParams | None = None) -> jax.Array:
        """Masses (GeV) of all external particles, shape (n_external,)."""
        params = SMParams() if params is None else params
        return jnp.stack(
            [
                jnp.zeros((), dtype=params.MZ.dtype) if p.mass is None else getattr(params, p.mass)
                for p in self.particles
            ]
        )

    def final_state_masses(self, params: SMParams | None = None) -> jax.Array:
        return self.external_masses(params)[2:]

    @property
    def phase_space_dim(self) -> int:
        """Dimension of the unit cube that parametrises the final state."""
        return RESONANT_PAIR_DIM if self.resonant_pair else unit_cube_dim(self.n_external - 2)

    def phase_space(self, u, sqrt_s, params: SMParams | None = None, mapping: str = "auto"):
        """Map ``u`` in [0, 1]^phase_space_dim to all external momenta and the weight.

        Incoming momenta are ``(sqrt_s/2)(1, 0, 0, +-1)`` (first along +z, massless beams);
        the final state comes from :func:`difphys.phasespace.from_unit_cube`; for a process
        with decay chains (``t > w+ b``) from :func:`difphys.phasespace.decay_tree_from_unit_cube`
        (each decaying particle's mass Breit-Wigner-sampled around its pole, the whole range
        covered); for ``e+ e- > w+ b w- b~`` from the Breit-Wigner-mapped
        :func:`difphys.phasespace.resonant_pair_from_unit_cube` around the top mass and width.
        ``E_u[weight * |M|^2] / (2 s)`` is the cross section in GeV^-2.
        ``mapping="flat"`` uses :func:`difphys.phasespace.from_unit_cube` for every process
        (no Breit-Wigner mapping: a harder sampling problem for resonant final states).
        """
        if mapping not in ("auto", "flat"):
            raise ValueError(f"mapping must be 'auto' or 'flat'; got {mapping!r}")
        params = SMParams() if params is None else params
        u = jnp.asarray(u)
        masses = self.final_state_masses(params).astype(u.dtype)
        rs = jnp.asarray(sqrt_s, u.dtype)
        if self.decays and mapping == "auto":
            tree, names = self.decay_tree()
            parts = [PARTICLES[n] for n in names]
            for part in parts:
                if part.width is None:
                    raise ValueError(f"{self.name!r}: the decaying {part.name} has no width")
            res_m = jnp.stack([getattr(params, p.mass) for p in parts]).astype(u.dtype)
            res_w = jnp.stack([getattr(params, p.width) for p in parts]).astype(u.dtype)
            final, weight = decay_tree_from_unit_cube(u, rs, tree, masses, res_m, res_w)
        elif self.resonant_pair and mapping == "auto":
            final, weight = resonant_pair_from_unit_cube(
                u, rs, params.MT.astype(u.dtype), params.WT.astype(u.dtype), masses
            )
        else:
            final, weight = from_unit_cube(u, rs, masses)
        half = jnp.broadcast_to(rs / 2, u.shape[:-1])
        zero = jnp.zeros_like(half)
        p1 = jnp.stack([half, zero, zero, half], axis=-1)
        p2 = jnp.stack([half, zero, zero, -half], axis=-1)
        return jnp.concatenate([p1[..., None, :], p2[..., None, :], final], axis=-2), weight

    def decay_tree(self):
        """``(tree, resonance names)`` of the decay chains for
        :func:`difphys.phasespace.decay_tree_from_unit_cube` (final-state indices from 0)."""
        groups = sorted(((frozenset(k - 2 for k in legs), parent)
                         for legs, parent in self.decays), key=lambda g: -len(g[0]))
        names = [parent for _, parent in groups]

        def children(members):
            inner = [(r, g) for r, (g, _) in enumerate(groups) if g < members]
            maximal = [(r, g) for r, g in inner if not any(g < h for _, h in inner)]
            covered = frozenset().union(*(g for _, g in maximal))
            nodes = [(r, children(g)) for r, g in maximal]
            nodes += [k for k in sorted(members - covered)]
            return tuple(sorted(nodes, key=lambda c: min(_leaf_set(c))))

        top = frozenset(range(self.n_external - 2))
        return children(top), tuple(names)

    def _validate(self, momenta, params=None, check: bool = True):
        """Shape always; outside ``jit`` (and with ``check``) also the values, in one jitted
        reduction (:func:`_kinematic_summary`): finite, positive incoming energy, four-momentum
        conservation and on-shell external masses within :data:`KINEMATICS_TOLERANCE`, each
        violation named with its event (and leg)."""
        momenta = jnp.asarray(momenta)
        if momenta.ndim < 2 or momenta.shape[-2:] != (self.n_external, 4):
            raise ValueError(
                f"{self.name!r} needs momenta of shape (..., {self.n_external}, 4) "
                f"(incoming first, (E, px, py, pz)); got {momenta.shape}"
            )
        if not jnp.issubdtype(momenta.dtype, jnp.floating):
            momenta = momenta.astype(float)
        if not check or not is_concrete(momenta) or not momenta.size:
            return momenta
        concrete_params = is_concrete(*jax.tree.leaves(params))
        params = SMParams() if params is None else params
        if concrete_params:
            masses = np.array([0.0 if leg.mass is None else float(getattr(params, leg.mass))
                               for leg in self.particles])
        else:
            masses = np.zeros(self.n_external)  # traced parameters: the mass check is skipped
        tol, tol_mass = KINEMATICS_TOLERANCE.get(np.dtype(momenta.dtype), (1e-5, 1e-3))
        if _kinematic_check.available() and _on_cpu(momenta):
            finite, e_min, rel, off = _kinematic_check.summary(np.asarray(momenta), masses)
        else:
            finite, e_min, rel, off = (np.asarray(w).item() for w in jax.device_get(
                _kinematic_summary(momenta, jnp.asarray(masses, momenta.dtype),
                                   self.n_external)))
        if finite and e_min > 0 and rel <= tol and (off <= tol_mass or not concrete_params):
            return momenta
        # a check failed: find and name the event (NumPy, the error path only)
        p = np.asarray(momenta, np.float64).reshape(-1, self.n_external, 4)
        bad = ~np.isfinite(p)
        if bad.any():
            raise ValueError(f"momenta for {self.name!r} contain NaN or infinite values "
                             f"({int(bad.sum())} of them; the first in event "
                             f"{int(np.argwhere(bad)[0][0])})")
        e_in = p[:, 0, 0] + p[:, 1, 0]
        if not np.all(e_in > 0):
            event = int(np.argmin(e_in))
            raise ValueError(f"momenta for {self.name!r}: the incoming energy must be > 0 "
                             f"(event {event} has {e_in[event]!r} GeV)")
        imbalance = np.max(np.abs(p[:, :2].sum(1) - p[:, 2:].sum(1)), axis=-1) / e_in
        if np.max(imbalance) > tol:
            event = int(np.argmax(imbalance))
            raise ValueError(f"momenta for {self.name!r} do not conserve four-momentum: "
                             f"|sum p_in - sum p_out| / E_in = {imbalance[event]:.3g} (event "
                             f"{event}) > {tol:g}; incoming first, (E, px, py, pz) in GeV")
        m = np.asarray(masses, np.float64)
        m2 = p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)
        shell = np.abs(m2 - m**2) / np.maximum(p[..., 0] ** 2, m**2)
        event, leg = np.unravel_index(int(np.argmax(shell)), shell.shape)
        raise ValueError(f"momenta for {self.name!r}: leg {leg} ({self.particles[leg].name}) "
                         f"has mass {np.sqrt(abs(m2[event, leg])):.6g} GeV in event {event}, "
                         f"expected {m[leg]:.6g} GeV (|p^2 - m^2| / E^2 = "
                         f"{shell[event, leg]:.3g} > {tol_mass:g})")

    def _reference_point(self, params, dtype):
        """A finite phase-space point of this process (the flat map at u = 1/2, sqrt_s above
        threshold): what a masked event is evaluated at, so its gradient is finite."""
        masses = self.external_masses(params).astype(dtype)
        rs = 2 * jnp.sum(masses) + 100.0
        u = jnp.full((self.phase_space_dim,), 0.5, dtype)
        point, _ = self.phase_space(u, rs, params, mapping="flat")
        return jax.lax.stop_gradient(point)

    def _masked(self, fn, momenta, params):
        """``fn`` on the events with finite momenta and positive incoming energy; 0 (and a zero
        gradient) for the others, which are evaluated at :meth:`_reference_point` instead."""
        ok = jnp.all(jnp.isfinite(momenta), axis=(-2, -1))
        ok = ok & (momenta[..., 0, 0] + momenta[..., 1, 0] > 0)
        ref = self._reference_point(params, momenta.dtype)
        safe = jnp.where(ok[..., None, None], momenta, ref)
        value = fn(safe)
        return jnp.where(ok.reshape(ok.shape + (1,) * (value.ndim - ok.ndim)), value,
                         jnp.zeros_like(value))

    def helicity_amplitudes(
        self, momenta, params: SMParams | None = None, gauge_leg: int | None = None
    ):
        """Complex amplitudes, shape (..., n_helicities, n_colour_basis), couplings included.

        ``gauge_leg=i`` replaces the polarisation vector of external vector ``i`` by its momentum
        (the Ward-identity check: the result must vanish for a gauge boson).
        """
        params = SMParams() if params is None else params
        momenta = self._validate(momenta, params)
        if gauge_leg is not None and self.particles[gauge_leg].kind != "vector":
            raise ValueError(f"leg {gauge_leg} of {self.name!r} is not a vector boson")
        return self._amplitudes_jit(momenta, params, gauge_leg)

    def _amplitudes(self, momenta, params, gauge_leg):
        ext = _External(momenta, params, self.particles, gauge_leg)
        amps = self._amplitude_fn(ext, params)
        if amps.ndim >= momenta.ndim - 2 + self.n_external + 1:  # factorised grid
            grid = (
                momenta.shape[:-2]
                + tuple(len(p.helicities) for p in self.particles)
                + amps.shape[-1:]
            )
            amps = jnp.broadcast_to(amps, grid)
        return amps.reshape(momenta.shape[:-2] + (self.n_helicities, amps.shape[-1]))

    def per_helicity(self, momenta, helicity, params: SMParams | None = None) -> jax.Array:
        """|M|^2 of one helicity configuration per event, colour-summed and averaged like
        ``proc(momenta)``, so that summing over ``helicity = 0 .. n_helicities - 1`` gives
        ``proc(momenta)``. ``helicity``: ``(...)`` int rows of :attr:`helicities`. Only that
        configuration's amplitude is computed (``n_helicities`` times less work)."""
        params = SMParams() if params is None else params
        momenta = self._validate(momenta, params)
        return self._per_helicity_jit(momenta, jnp.asarray(helicity), params)

    def sample_helicity(self, key, momenta, params: SMParams | None = None):
        """``(helicity (...), value (...))``: a helicity configuration drawn uniformly per
        event and ``n_helicities x`` its |M|^2 (:meth:`per_helicity`), an unbiased estimate
        of ``proc(momenta)`` at a fraction of the cost (Monte Carlo over helicities)."""
        momenta = self._validate(momenta, params)
        h = jax.random.randint(key, momenta.shape[:-2], 0, self.n_helicities)
        return h, self.n_helicities * self.per_helicity(momenta, h, params)

    def _per_helicity(self, momenta, helicity, params):
        table = jnp.asarray(self._helicity_table)

        def one(m):
            ext = _External(m, params, self.particles, None, helicity=table[helicity])
            amps = self._amplitude_fn(ext, params)
            return self._colour_summed(amps.reshape(m.shape[:-2] + (1, amps.shape[-1])))

        return self._masked(one, momenta, params)

    def __call__(self, momenta, params: SMParams | None = None, *, check: bool = True
                 ) -> jax.Array:
        """|M|^2 summed over helicities and colours, averaged over the initial state.

        ``momenta (..., n_external, 4)`` GeV, incoming first. Outside ``jit`` the momenta are
        validated in one fused pass over the batch (finite, positive incoming energy, momentum
        conservation and on-shell masses to :data:`KINEMATICS_TOLERANCE`); ``check=False``
        skips it. Inside ``jit`` (and with ``check=False``) an event with non-finite momenta
        or no incoming energy gives |M|^2 = 0 with a zero gradient (masked, never NaN).
        """
        params = SMParams() if params is None else params
        momenta = self._validate(momenta, params, check)
        return self._squared_jit(momenta, params, self.chunk_size)

    #: events per chunk: larger batches are evaluated chunk by chunk (``lax.map``), so the
    #: working set of the recursion stays in cache and throughput does not fall with the batch
    #: (None: one pass)
    chunk_size: int | None = 2048

    def _squared(self, momenta, params, chunk=None):
        batch = momenta.shape[:-2]
        n = math.prod(batch)
        if chunk is not None and n > chunk:
            flat = momenta.reshape((n,) + momenta.shape[-2:])
            # a divisor of n near the chunk size avoids copying the batch into a padded one
            chunk = next((d for d in range(chunk, chunk // 2, -1) if n % d == 0), chunk)
            pad = -n % chunk
            if pad:  # repeat the first event: valid momenta, results dropped
                flat = jnp.concatenate([flat, jnp.broadcast_to(flat[:1], (pad,) + flat.shape[1:])])
            blocks = flat.reshape((-1, chunk) + flat.shape[1:])
            values = jax.lax.map(lambda m: self._squared_once(m, params), blocks)
            return values.reshape(-1)[:n].reshape(batch)
        return self._squared_once(momenta, params)

    def _squared_once(self, momenta, params):
        return self._masked(
            lambda m: self._colour_summed(self._amplitudes(m, params, None)), momenta, params)

    def _colour_summed(self, amps):
        """``sum_h sum_kl A_hk C_kl A_hl^*`` x the spin/colour average, for amplitudes
        ``(..., n_helicities, K)`` on the colour basis."""
        colour = jnp.asarray(self.colour_matrix, amps.dtype)
        summed = jnp.einsum("...hk,kl,...hl->...", amps, colour, jnp.conj(amps))
        return jnp.real(summed) * self.average
