"""The 16 hand-built processes that preceded the process compiler (:mod:`._compile`), kept as
an independent implementation: the tests compare the compiler with them, and
``benchmarks/generated_vs_handbuilt.py`` times both in one run. Not public API.

Caveats of this hand-built code (fixed in the compiler): no identical-particle factor for the
multi-gluon final states, no width in top propagators, only the top-resonant diagrams of
``e+ e- > w+ b w- b~``.

``proc(momenta, params)`` takes momenta ``(..., n_external, 4)`` (incoming first, final state in
the order written) and returns |M|^2 summed over final and averaged over initial helicities and
colours, the quantity MadGraph's standalone ``check_sa`` prints as the matrix element.
Electroweak processes include photon and Z exchange; hadronic processes are generated at the
lowest QED order (pure QCD for ``u u~ > t t~`` and ``u u~ > d d~``). Widths enter s-channel
propagators only (t-channel propagators are width-less, as MadGraph's ``zerowidth_tchannel``).
"""

from __future__ import annotations

from functools import cache

import jax.numpy as jnp

from ._berends_giele import gluon_amplitude, quark_line_amplitude
from ._colour import gluon_colour_matrix, quark_line_colour_matrix
from ._dirac import chiral, mdot, slash
from ._particles import PARTICLES
from ._process import Process
from ._vertices import fermion_current, fermion_propagator, vector_propagator


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


def handbuilt_process(name: str) -> Process:
    """The hand-built :class:`Process` for one of :data:`PROCESS_NAMES`.

    The same object is returned for the same name, so jitted code keyed on it compiles once.
    """
    normalised = " ".join(name.replace(">", " > ").split())
    if normalised not in PROCESS_NAMES:
        raise ValueError(f"unknown process {name!r}; available: {', '.join(PROCESS_NAMES)}")
    return _cached(normalised)
