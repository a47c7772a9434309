"""Process library: tree-level |M|^2 for named processes (MadGraph syntax), built from the
wavefunctions, vertices and Berends-Giele currents of this package.

``proc(momenta, params)`` takes momenta ``(..., n_external, 4)`` (incoming first, final state in
the order written) and returns |M|^2 summed over final and averaged over initial helicities and
colours, the quantity MadGraph's standalone ``check_sa`` prints as the matrix element.
Electroweak processes include photon and Z exchange; hadronic processes are generated at the
lowest QED order (pure QCD for ``u u~ > t t~`` and ``u u~ > d d~``). Widths enter s-channel
propagators only (t-channel propagators are width-less, as MadGraph's ``zerowidth_tchannel``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete
from ..phasespace import (
    RESONANT_PAIR_DIM,
    from_unit_cube,
    resonant_pair_from_unit_cube,
    unit_cube_dim,
)
from ._berends_giele import gluon_amplitude, quark_line_amplitude
from ._colour import gluon_colour_matrix, quark_line_colour_matrix
from ._dirac import chiral, complex_dtype, mdot, slash
from ._params import SMParams
from ._particles import PARTICLES, Particle
from ._vertices import fermion_current, fermion_propagator, vector_propagator
from ._wavefunctions import polarization_vector, u_spinor, ubar_spinor, v_spinor, vbar_spinor


class _External:
    """Wavefunctions of the external legs on a factorised helicity grid.

    Leg ``i``'s wavefunctions are computed for its own helicities only and placed on axis ``i``
    of an ``n``-axis helicity grid (shape ``(..., 1, ..., h_i, ..., 1, 4)``), so products and
    currents broadcast over just the legs they involve; the amplitude builders return
    ``(..., h_0, ..., h_{n-1}, K)``, flattened at the end in ``itertools.product`` order.
    """

    def __init__(self, momenta, params, particles, gauge_leg):
        self.p = momenta
        self.params = params
        self.particles = particles
        self.gauge_leg = gauge_leg
        self.n = len(particles)

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
        if part.kind == "fermion":
            return u_spinor(p, m, h) if incoming else ubar_spinor(p, m, h)
        if part.kind == "antifermion":
            return vbar_spinor(p, m, h) if incoming else v_spinor(p, m, h)
        if self.gauge_leg == i:
            dtype = complex_dtype(p.dtype)
            return jnp.broadcast_to(p.astype(dtype), p.shape[:-2] + (h.shape[0], 4))
        return polarization_vector(p, m, h, outgoing=not incoming)

    def wf(self, i):
        """Wavefunctions of leg ``i`` on the helicity grid."""
        return self._grid(self.leg(i), i, len(self.particles[i].helicities))

    def gluon_momentum_in(self, i):
        """Momentum flowing *into* the diagram (incoming: p, outgoing: -p)."""
        return self.momentum(i) if i < 2 else -self.momentum(i)


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
    ):
        self.name = name
        self.resonant_pair = resonant_pair
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
        self._squared_jit = jax.jit(self._squared)

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
        the final state comes from :func:`difphys.phasespace.from_unit_cube`, or for
        ``e+ e- > w+ b w- b~`` from the Breit-Wigner-mapped
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
        if self.resonant_pair and mapping == "auto":
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

    def _validate(self, momenta):
        momenta = jnp.asarray(momenta)
        if momenta.ndim < 2 or momenta.shape[-2:] != (self.n_external, 4):
            raise ValueError(
                f"{self.name!r} needs momenta of shape (..., {self.n_external}, 4) "
                f"(incoming first, (E, px, py, pz)); got {momenta.shape}"
            )
        if is_concrete(momenta) and not np.all(np.isfinite(np.asarray(momenta))):
            raise ValueError(f"momenta for {self.name!r} contain NaN or infinite values")
        if not jnp.issubdtype(momenta.dtype, jnp.floating):
            momenta = momenta.astype(float)
        return momenta

    def helicity_amplitudes(
        self, momenta, params: SMParams | None = None, gauge_leg: int | None = None
    ):
        """Complex amplitudes, shape (..., n_helicities, n_colour_basis), couplings included.

        ``gauge_leg=i`` replaces the polarisation vector of external vector ``i`` by its momentum
        (the Ward-identity check: the result must vanish for a gauge boson).
        """
        momenta = self._validate(momenta)
        params = SMParams() if params is None else params
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

    def __call__(self, momenta, params: SMParams | None = None) -> jax.Array:
        momenta = self._validate(momenta)
        params = SMParams() if params is None else params
        return self._squared_jit(momenta, params)

    def _squared(self, momenta, params):
        amps = self._amplitudes(momenta, params, None)
        colour = jnp.asarray(self.colour_matrix, amps.dtype)
        summed = jnp.einsum("...hk,kl,...hl->...", amps, colour, jnp.conj(amps))
        return jnp.real(summed) * self.average


# ----------------------------------------------------------------------------- builders


def _couplings(params, boson, particle):
    if boson == "a":
        return params.photon_couplings(particle.charge)
    if boson == "z":
        return params.z_couplings(particle.t3, particle.charge)
    return params.gs, params.gs  # gluon (colour factor handled by the colour matrix)


def _boson_mass_width(params, boson, dtype):
    if boson == "z":
        return params.MZ.astype(dtype), params.WZ.astype(dtype)
    zero = jnp.zeros((), dtype)
    return zero, zero


def _s_channel(in_bra, in_ket, out_bra, out_ket, bosons):
    """Two fermion lines joined by s-channel vector bosons (photon, Z or gluon)."""

    def amplitude(ext, params):
        parts = ext.particles
        f_in, f_out = parts[in_ket], parts[out_bra]
        j_in_bra, j_in_ket = ext.wf(in_bra), ext.wf(in_ket)
        j_out_bra, j_out_ket = ext.wf(out_bra), ext.wf(out_ket)
        q = ext.momentum(in_bra) + ext.momentum(in_ket)
        total = 0.0
        for boson in bosons:
            cl, cr = _couplings(params, boson, f_in)
            dl, dr = _couplings(params, boson, f_out)
            mass, width = _boson_mass_width(params, boson, ext.p.dtype)
            current = vector_propagator(fermion_current(j_in_bra, j_in_ket, cl, cr), q, mass, width)
            total = total + mdot(current, fermion_current(j_out_bra, j_out_ket, dl, dr))
        return total[..., None]

    return amplitude


def _lepton_currents(ext, params, quark):
    """Propagated gamma and Z currents of the incoming e+ (leg 0) e- (leg 1) pair."""
    vbar, u = ext.wf(0), ext.wf(1)
    electron = ext.particles[1]
    q = ext.momentum(0) + ext.momentum(1)
    out = []
    for boson in ("a", "z"):
        cl, cr = _couplings(params, boson, electron)
        mass, width = _boson_mass_width(params, boson, ext.p.dtype)
        current = vector_propagator(fermion_current(vbar, u, cl, cr), q, mass, width)
        dl, dr = _couplings(params, boson, quark)
        out.append(slash(current) @ chiral(dl, dr, current.dtype))
    return out


def _ee_qqbar_g(ext, params):
    """e+ e- > q q~ g: gluon emission from the quark and from the antiquark, gamma and Z."""
    ubar, v, eps = ext.wf(2), ext.wf(3), ext.wf(4)
    mq = ext.mass(2)
    dtype = ubar.dtype
    p2, p3, p4 = ext.momentum(2), ext.momentum(3), ext.momentum(4)
    zero = jnp.zeros((), ext.p.dtype)
    s_a = fermion_propagator(p2 + p4, mq, zero, dtype)
    s_b = fermion_propagator(-(p3 + p4), mq, zero, dtype)
    eslash = slash(eps)
    row_a = _row(_row(ubar, eslash), s_a)
    col_b = _col(s_b, _col(eslash, v))
    total = 0.0
    for vertex in _lepton_currents(ext, params, ext.particles[2]):
        total = total + jnp.einsum("...i,...ij,...j->...", row_a, vertex, v)
        total = total + jnp.einsum("...i,...ij,...j->...", ubar, vertex, col_b)
    return (params.gs.astype(total.dtype) * total)[..., None]


def _ee_wbwb(ext, params):
    """e+ e- > t t~ > w+ b w- b~ with Breit-Wigner top propagators (resonant diagrams only).

    Helicity-factorised: each leg's wavefunctions are built for its own helicities and the
    144 combinations are formed by one contraction at the end.
    """
    eps_wp, ubar_b, eps_wm, v_bbar = ext.leg(2), ext.leg(3), ext.leg(4), ext.leg(5)
    vbar_e, u_e = ext.leg(0), ext.leg(1)
    dtype = ubar_b.dtype
    mt, wt = params.MT.astype(ext.p.dtype), params.WT.astype(ext.p.dtype)
    gl, gr = params.w_couplings()
    w_vertex = chiral(gl, gr, dtype)
    top = fermion_propagator(ext.p[..., 2, :] + ext.p[..., 3, :], mt, wt, dtype)
    antitop = fermion_propagator(-(ext.p[..., 4, :] + ext.p[..., 5, :]), mt, wt, dtype)
    # row[w+, b, :] = ubar_b epsslash_w+ P_L top ; col[w-, bbar, :] = antitop epsslash_w- P_L v
    row = jnp.einsum("...bi,...wij,jk,...kl->...wbl", ubar_b, slash(eps_wp), w_vertex, top)
    col = jnp.einsum("...ij,...wjk,kl,...cl->...wci", antitop, slash(eps_wm), w_vertex, v_bbar)
    q = ext.p[..., 0, :] + ext.p[..., 1, :]
    electron, top_quark = ext.particles[1], PARTICLES["t"]
    total = 0.0
    for boson in ("a", "z"):
        cl, cr = _couplings(params, boson, electron)
        mass, width = _boson_mass_width(params, boson, ext.p.dtype)
        current = fermion_current(vbar_e[..., :, None, :], u_e[..., None, :, :], cl, cr)
        current = vector_propagator(current, q[..., None, None, :], mass, width)
        dl, dr = _couplings(params, boson, top_quark)
        vertex = slash(current) @ chiral(dl, dr, dtype)  # (..., e+, e-, 4, 4)
        total = total + jnp.einsum("...wbi,...xyij,...vcj->...xywbvc", row, vertex, col)
    return total.reshape(total.shape[:-6] + (-1, 1))


def _row(bra, matrix):
    return jnp.einsum("...i,...ij->...j", bra, matrix)


def _col(matrix, ket):
    return jnp.einsum("...ij,...j->...i", matrix, ket)


def _gg_quark_line(gluon_legs, quark_leg, antiquark_leg):
    orders, _ = quark_line_colour_matrix(len(gluon_legs))

    def amplitude(ext, params):
        ubar, v = ext.wf(quark_leg), ext.wf(antiquark_leg)
        pq = ext.momentum(quark_leg)
        mq = ext.mass(quark_leg)
        ks = [ext.gluon_momentum_in(g) for g in gluon_legs]
        eps = [ext.wf(g) for g in gluon_legs]
        amps = [
            quark_line_amplitude(ubar, v, pq, mq, [ks[o] for o in order], [eps[o] for o in order])
            for order in orders
        ]
        stacked = jnp.stack(amps, axis=-1)
        return params.gs.astype(stacked.dtype) ** len(gluon_legs) * stacked

    return amplitude


def _gluons(n):
    orders, _ = gluon_colour_matrix(n)

    def amplitude(ext, params):
        ks = [ext.gluon_momentum_in(i) for i in range(n)]
        eps = [ext.wf(i) for i in range(n)]
        amps = [
            gluon_amplitude([ks[o] for o in order], [eps[o] for o in order]) for order in orders
        ]
        stacked = jnp.stack(amps, axis=-1)
        return params.gs.astype(stacked.dtype) ** (n - 2) * stacked

    return amplitude


_EE = 1.0 / 4.0
_QQ = 1.0 / 36.0
_GG = 1.0 / 256.0


def _ee_to_pair(name, out):
    """e+ e- > f f~ or f~ f in the written order, gamma + Z."""
    a, b = out
    fermion_idx = 2 if PARTICLES[a].kind == "fermion" else 3
    anti_idx = 5 - fermion_idx
    colour = PARTICLES[a].colour
    return Process(
        name,
        ("e+", "e-", a, b),
        _s_channel(0, 1, fermion_idx, anti_idx, ("a", "z")),
        [[colour]],
        _EE,
    )


def _build(name: str) -> Process:
    builders = {
        "e+ e- > mu+ mu-": lambda: _ee_to_pair(name, ("mu+", "mu-")),
        "e+ e- > u u~": lambda: _ee_to_pair(name, ("u", "u~")),
        "e+ e- > d d~": lambda: _ee_to_pair(name, ("d", "d~")),
        "e+ e- > b b~": lambda: _ee_to_pair(name, ("b", "b~")),
        "e+ e- > t t~": lambda: _ee_to_pair(name, ("t", "t~")),
        "e+ e- > u u~ g": lambda: Process(
            name, ("e+", "e-", "u", "u~", "g"), _ee_qqbar_g, [[4.0]], _EE
        ),
        "e+ e- > w+ b w- b~": lambda: Process(
            name, ("e+", "e-", "w+", "b", "w-", "b~"), _ee_wbwb, [[3.0]], _EE, resonant_pair=True
        ),
        # Drell-Yan (crossing partners of e+ e- > q q~): colour sum 3, average 1/9.
        "u u~ > e+ e-": lambda: Process(
            name, ("u", "u~", "e+", "e-"), _s_channel(1, 0, 3, 2, ("a", "z")), [[3.0]], _QQ
        ),
        "d d~ > e+ e-": lambda: Process(
            name, ("d", "d~", "e+", "e-"), _s_channel(1, 0, 3, 2, ("a", "z")), [[3.0]], _QQ
        ),
        # Pure QCD s-channel gluon: colour sum Tr(t^a t^b)^2 = 2.
        "u u~ > d d~": lambda: Process(
            name, ("u", "u~", "d", "d~"), _s_channel(1, 0, 2, 3, ("g",)), [[2.0]], _QQ
        ),
        "u u~ > t t~": lambda: Process(
            name, ("u", "u~", "t", "t~"), _s_channel(1, 0, 2, 3, ("g",)), [[2.0]], _QQ
        ),
        "g g > t t~": lambda: Process(
            name,
            ("g", "g", "t", "t~"),
            _gg_quark_line((0, 1), 2, 3),
            quark_line_colour_matrix(2)[1],
            _GG,
        ),
        "g g > t t~ g": lambda: Process(
            name,
            ("g", "g", "t", "t~", "g"),
            _gg_quark_line((0, 1, 4), 2, 3),
            quark_line_colour_matrix(3)[1],
            _GG,
        ),
        "g g > g g": lambda: Process(name, ("g",) * 4, _gluons(4), gluon_colour_matrix(4)[1], _GG),
        "g g > g g g": lambda: Process(
            name, ("g",) * 5, _gluons(5), gluon_colour_matrix(5)[1], _GG
        ),
        "g g > g g g g": lambda: Process(
            name, ("g",) * 6, _gluons(6), gluon_colour_matrix(6)[1], _GG
        ),
    }
    return builders[name]()


PROCESS_NAMES = (
    "e+ e- > mu+ mu-",
    "e+ e- > u u~",
    "e+ e- > d d~",
    "e+ e- > b b~",
    "e+ e- > t t~",
    "e+ e- > u u~ g",
    "e+ e- > w+ b w- b~",
    "u u~ > e+ e-",
    "d d~ > e+ e-",
    "u u~ > d d~",
    "u u~ > t t~",
    "g g > t t~",
    "g g > t t~ g",
    "g g > g g",
    "g g > g g g",
    "g g > g g g g",
)


@cache
def _cached(name: str) -> Process:
    return _build(name)


def process(name: str) -> Process:
    """The :class:`Process` for a MadGraph-style name, e.g. ``process("g g > t t~")``.

    The same object is returned for the same name, so jitted code keyed on it compiles once.
    """
    normalised = " ".join(name.replace(">", " > ").split())
    if normalised not in PROCESS_NAMES:
        raise ValueError(f"unknown process {name!r}; available: {', '.join(PROCESS_NAMES)}")
    return _cached(normalised)
