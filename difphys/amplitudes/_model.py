"""The interaction vertices of MadGraph's ``sm`` model (unitary gauge, CKM = 1), as data.

Every vertex is listed once with its fields *all incoming* (an outgoing particle enters as its
antiparticle). The Feynman rules, with all factors of ``i``, follow one Lagrangian with the
covariant derivative ``D = d - i gs T^a G^a - i g T^a W^a - i g' Y B`` (Peskin & Schroeder,
"An Introduction to Quantum Field Theory", eqs. 16.10, 20.61-20.80 and fig. 16.7; ``T^a = lambda^a/2``
for colour, ``sigma^a/2`` for weak isospin):

* FFV ``i gamma^mu (cl P_L + cr P_R)``: photon ``cl = cr = e Q``; Z ``e/(sw cw) (T3 - Q sw^2, -Q sw^2)``;
  W ``(g/sqrt2, 0)``; gluon ``(gs, gs) T^a_ij``;
* FFS ``i (cl P_L + cr P_R)`` with ``cl = cr = -y_f / v`` (``y_f`` the Yukawa mass ``ymb, ymt, ymtau``);
* VVV ``g f^abc [g^mn (k1-k2)^r + g^nr (k2-k3)^m + g^rm (k3-k1)^n]`` (all momenta incoming); for the
  electroweak fields ``f^abc`` is ``epsilon^abc`` projected onto ``W+- = (W1 -+ i W2)/sqrt2`` and
  ``W3 = cw Z + sw A``;
* VVVV ``-i g^2 [f^abe f^cde (g^mr g^ns - g^ms g^nr) + f^ace f^bde (g^mn g^rs - g^ms g^nr)
  + f^ade f^bce (g^mn g^rs - g^mr g^ns)]`` with the same projection;
* VVS ``i g MW g^mn`` (W+ W- h), ``i g MZ/cw g^mn`` (Z Z h); VVSS ``i g^2/2`` and ``i g^2/(2 cw^2)``;
  SSS ``-3 i MH^2 / v``, SSSS ``-3 i MH^2 / v^2``.

Coupling orders are those of the UFO ``sm`` model: QCD for every vertex with a gluon, QED
otherwise (the Yukawas and Higgs self-couplings included), two for the quartic ones.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache

import jax.numpy as jnp
import numpy as np

from ._colour import structure_constants
from ._dirac import complex_dtype
from ._particles import PARTICLES, WEAK_PARTNERS

#: Lorentz structures (the spins of the fields, fermions as F, in the order listed).
FFV, FFS, VVV, VVVV, VVS, VVSS, SSS, SSSS = (
    "FFV", "FFS", "VVV", "VVVV", "VVS", "VVSS", "SSS", "SSSS"
)


@dataclass(frozen=True)
class Vertex:
    """One vertex: ``fields`` all incoming (FFV/FFS: antifermion, fermion, boson), the Lorentz
    structure, the name of its coupling (see :func:`coupling`), and its (QCD, QED) orders."""

    fields: tuple[str, ...]
    lorentz: str
    coupling: str
    orders: tuple[int, int]
    arg: tuple = ()

    @property
    def coloured(self) -> bool:
        return self.orders[0] > 0


def _build_vertices() -> tuple[Vertex, ...]:
    out = []
    fermions = [p for p in PARTICLES.values() if p.kind == "fermion"]
    for f in fermions:
        bar = f.anti
        if f.charge != 0:
            out.append(Vertex((bar, f.name, "a"), FFV, "photon", (0, 1), (f.charge,)))
        out.append(Vertex((bar, f.name, "z"), FFV, "z", (0, 1), (f.t3, f.charge)))
        if f.colour == 3:
            out.append(Vertex((bar, f.name, "g"), FFV, "gluon", (1, 0)))
        if f.mass is not None:
            yukawa = {"MB": "ymb", "MT": "ymt", "MTA": "ymtau"}[f.mass]
            out.append(Vertex((bar, f.name, "h"), FFS, "yukawa", (0, 1), (yukawa,)))
    for down, up in WEAK_PARTNERS.items():
        anti_up, anti_down = PARTICLES[up].anti, PARTICLES[down].anti
        out.append(Vertex((anti_up, down, "w+"), FFV, "w", (0, 1)))
        out.append(Vertex((anti_down, up, "w-"), FFV, "w", (0, 1)))
    out.append(Vertex(("g", "g", "g"), VVV, "gs", (1, 0)))
    out.append(Vertex(("g", "g", "g", "g"), VVVV, "gs2", (2, 0)))
    out.append(Vertex(("w+", "w-", "a"), VVV, "gw", (0, 1)))
    out.append(Vertex(("w+", "w-", "z"), VVV, "gw", (0, 1)))
    for pair in (("w+", "w-"), ("z", "z"), ("a", "a"), ("z", "a")):
        out.append(Vertex(("w+", "w-") + pair, VVVV, "gw2", (0, 2)))
    out.append(Vertex(("w+", "w-", "h"), VVS, "hww", (0, 1)))
    out.append(Vertex(("z", "z", "h"), VVS, "hzz", (0, 1)))
    out.append(Vertex(("w+", "w-", "h", "h"), VVSS, "hhww", (0, 2)))
    out.append(Vertex(("z", "z", "h", "h"), VVSS, "hhzz", (0, 2)))
    out.append(Vertex(("h", "h", "h"), SSS, "hhh", (0, 1)))
    out.append(Vertex(("h", "h", "h", "h"), SSSS, "hhhh", (0, 2)))
    return tuple(out)


VERTICES: tuple[Vertex, ...] = _build_vertices()


@cache
def vertex_table() -> dict[tuple[str, ...], tuple[tuple[Vertex, str], ...]]:
    """``sorted input fields -> ((vertex, the remaining field), ...)`` for 2 and 3 inputs."""
    table: dict[tuple[str, ...], list[tuple[Vertex, str]]] = {}
    for v in VERTICES:
        seen = set()
        for k in range(len(v.fields)):
            rest = v.fields[:k] + v.fields[k + 1 :]
            key = (tuple(sorted(rest)), v.fields[k])
            if key in seen:
                continue
            seen.add(key)
            table.setdefault(key[0], []).append((v, v.fields[k]))
    return {k: tuple(x) for k, x in table.items()}


# --- electroweak group factors: epsilon^abc projected onto the mass eigenstates ----------------
_SQ = 1.0 / math.sqrt(2.0)


def _mixing(field, cw, sw):
    """Coefficients ``M^a`` (a = 1, 2, 3) with ``W^a = sum_fields M^a(field) field``."""
    cdt = complex_dtype(cw.dtype)
    zero = jnp.zeros_like(cw).astype(cdt)
    one = jnp.ones_like(cw).astype(cdt)
    if field == "w+":
        return jnp.stack([_SQ * one, 1j * _SQ * one, zero])
    if field == "w-":
        return jnp.stack([_SQ * one, -1j * _SQ * one, zero])
    if field == "z":
        return jnp.stack([zero, zero, cw.astype(cdt)])
    if field == "a":
        return jnp.stack([zero, zero, sw.astype(cdt)])
    raise ValueError(field)


@cache
def _epsilon() -> np.ndarray:
    eps = np.zeros((3, 3, 3))
    for a, b, c in itertools.permutations(range(3)):
        eps[a, b, c] = np.linalg.det(np.eye(3)[[a, b, c]])
    return eps


def ew_triple(fields, cw, sw):
    """``sum epsilon^abc M^a(f1) M^b(f2) M^c(f3)`` for electroweak vector fields in this order."""
    m = [_mixing(f, cw, sw) for f in fields]
    return jnp.einsum("abc,a,b,c->", _epsilon().astype(m[0].dtype), *m)


def ew_quartic(fields, cw, sw):
    """The three group factors ``(e^abe e^cde, e^ace e^bde, e^ade e^bce)`` projected."""
    m = [_mixing(f, cw, sw) for f in fields]
    eps = _epsilon().astype(m[0].dtype)
    ee = np.einsum("abe,cde->abcd", eps, eps)
    g1 = jnp.einsum("abcd,a,b,c,d->", ee, *m)
    g2 = jnp.einsum("acbd,a,b,c,d->", ee, *m)
    g3 = jnp.einsum("adbc,a,b,c,d->", ee, *m)
    return g1, g2, g3


def gluon_quartic_colour() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(f^abe f^cde, f^ace f^bde, f^ade f^bce)`` as (8, 8, 8, 8) tensors over (a, b, c, d)."""
    f = structure_constants()
    ff = np.einsum("abe,cde->abcd", f, f)
    return ff, np.transpose(ff, (0, 2, 1, 3)), np.transpose(ff, (0, 2, 3, 1))


def coupling(vertex: Vertex, params):
    """The coupling constant(s) of a vertex at ``params`` (see the module docstring)."""
    name = vertex.coupling
    if name == "photon":
        return params.photon_couplings(vertex.arg[0])
    if name == "z":
        return params.z_couplings(*vertex.arg)
    if name == "w":
        return params.w_couplings()
    if name == "gluon":
        return params.gs, params.gs
    if name == "yukawa":
        y = -getattr(params, vertex.arg[0]) / params.vev
        return y, y
    if name == "gs":
        return params.gs
    if name == "gs2":
        return params.gs**2
    if name == "gw":
        return params.gw
    if name == "gw2":
        return params.gw**2
    if name == "hww":
        return params.gw * params.MW
    if name == "hzz":
        return params.gw * params.MZ / params.cw
    if name == "hhww":
        return params.gw**2 / 2
    if name == "hhzz":
        return params.gw**2 / (2 * params.cw**2)
    if name == "hhh":
        return -3 * params.MH**2 / params.vev
    if name == "hhhh":
        return -3 * params.MH**2 / params.vev**2
    raise ValueError(f"unknown coupling {name!r}")
