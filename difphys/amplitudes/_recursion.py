"""Tree-level amplitudes of any ``sm`` process by off-shell (Berends-Giele) recursion.

Hand-written because no maintained JAX library generates amplitudes: MadGraph writes Fortran/C++
(MadJax wraps that output for old JAX), and CAMORRA/HELAC are Fortran.

**Recursion.** All external legs are taken as incoming (an outgoing particle of momentum ``p``
is its antiparticle with ``-p``). For every subset ``S`` of legs ``0 .. n-2`` and field ``F``,
the current ``J_S^F`` is the sum of all tree graphs with the leaves ``S`` and one off-shell line
that enters the rest of the diagram as ``F`` (Berends & Giele, Nucl. Phys. B306 (1988) 759; the
general form of Kanaki & Papadopoulos, HELAC, hep-ph/0002082):

``J_S^F = P_F(P_S) sum_{S = S1 + S2 (+ S3)} sum_vertices V(J_S1, J_S2 (, J_S3))``

with ``P_F`` the propagator of ``F`` (its Feynman-rule ``i`` included) and each unordered split
counted once. The amplitude is the amputated current of legs ``0 .. n-2`` contracted with the
wavefunction of leg ``n-1``. Fermion currents are column spinors when ``F`` is a fermion (``u``,
``v``, ``S_F psi``) and row spinors when ``F`` is an antifermion (``ubar``, ``vbar``). Fermi
statistics: each term carries the sign of the permutation that brings its external fermions, read
as closed chains ``(bra, ket)`` then the open end, to increasing order (the rule of Wick's theorem;
tested on the identical-quark 2 -> 2 cross sections).

**Colour** is carried as numerical SU(3) tensors over the external colour indices (fundamental
3 for quarks, adjoint 8 for gluons, ``T^a = lambda^a / 2``), one Lorentz current per element of
a basis of the colour tensors that reach ``(S, F)``: a new term's colour tensor is expanded in
that basis (linear algebra once per process, at planning time), so currents stay as few as the
colour space allows. The squared amplitude is ``sum_kl A_k G_kl A_l^*`` with the basis' Gram matrix
``G``, exact for any basis (MadGraph's colour-matrix method, with the basis found numerically).

**Coupling orders** split currents by their (QCD, QED) orders; **s-channel requirements** and
exclusions act on propagators of subsets ``S`` whose momentum is timelike by construction
(``S`` holds both or neither of the incoming legs).

Widths: MadGraph keeps each unstable particle's fixed width in every propagator, t-channel ones
too; ``widths="s-channel"`` drops them in t-channel propagators (the hand-built processes'
convention before this compiler).
"""

from __future__ import annotations

import itertools
import math
import string
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from ._colour import generators, structure_constants
from ._dirac import mdot
from ._model import (
    FFS,
    FFV,
    SSS,
    SSSS,
    VVS,
    VVSS,
    VVV,
    VVVV,
    coupling,
    ew_quartic,
    ew_triple,
    gluon_quartic_colour,
    vertex_table,
)
from ._particles import PARTICLES
from ._vertices import vvv_vertex

_TOL = 1e-10


def _colour_dim(name: str) -> int:
    return PARTICLES[name].colour


def _spin(name: str) -> str:
    kind = PARTICLES[name].kind
    return {"fermion": "ket", "antifermion": "bra", "vector": "V", "scalar": "S"}[kind]


@dataclass
class _Current:
    """Planning record of ``J_S^F`` for one (orders, flags): its colour basis and contributions."""

    mask: int
    field: str
    orders: tuple[int, int]
    flags: frozenset
    basis: list = field(default_factory=list)  # colour tensors (numpy)
    _q: np.ndarray | None = None  # orthonormal rows spanning the basis (flattened)
    _r: np.ndarray | None = None
    terms: list = field(default_factory=list)  # (vertex, out_field, inputs, [(k, coefficient)])

    def expand(self, tensor: np.ndarray) -> list[tuple[int, complex]]:
        """Coefficients of ``tensor`` in the basis, adding it to the basis if it is new.

        The basis tensors ``B = E R`` are kept with an orthonormal ``E`` (rows of ``_q`` are the
        conjugated ``e_k``) and an upper-triangular ``R``, so coefficients are ``R^-1 E^dag t``.
        """
        flat = tensor.reshape(-1)
        norm = np.linalg.norm(flat)
        if norm < _TOL:
            return []
        if self._q is None:
            self.basis.append(tensor)
            self._q = (flat / norm).conj()[None, :]
            self._r = np.array([[norm]], dtype=complex)
            return [(0, 1.0 + 0j)]
        y = self._q @ flat
        resid = flat - self._q.conj().T @ y
        rn = np.linalg.norm(resid)
        if rn > _TOL * norm:
            self.basis.append(tensor)
            self._q = np.vstack([self._q, (resid / rn).conj()])
            k = self._r.shape[0]
            r = np.zeros((k + 1, k + 1), dtype=complex)
            r[:k, :k] = self._r
            r[:k, k] = y
            r[k, k] = rn
            self._r = r
            return [(k, 1.0 + 0j)]
        coef = np.linalg.solve(self._r, y) if self._r.shape[0] > 1 else y / self._r[0, 0]
        out = []
        for k, c in enumerate(coef):
            if abs(c) > 1e-12:
                re, im = _snap(c.real), _snap(c.imag)
                out.append((k, complex(re, im)))
        return out


def _snap(x: float) -> float:
    """Round a colour coefficient to a nearby simple value (0, +-1, +-1/2, ...) when within 1e-13."""
    for den in (1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 27, 36):
        r = round(x * den) / den
        if abs(r - x) < 1e-13:
            return r
    return x


@dataclass(frozen=True)
class Plan:
    """The compiled structure of one process: currents in evaluation order and the final basis."""

    legs: tuple[str, ...]  # all-incoming field of each leg
    currents: tuple  # (key, propagate: bool, terms) in order of increasing subset size
    final_key: tuple
    colour_matrix: np.ndarray
    colour_basis: tuple  # tensors over the coloured legs (in leg order) of the final basis
    n_diagram_terms: int


def _sign_of_merge(a: list[int], b: list[int]) -> int:
    """Parity of the permutation sorting the concatenation of two sorted lists."""
    inversions = sum(1 for x in a for y in b if x > y)
    return -1 if inversions % 2 else 1


def _fermion_legs(mask: int, legs) -> list[int]:
    return [i for i in range(len(legs)) if mask >> i & 1 and PARTICLES[legs[i]].is_fermion]


def _coloured_legs(mask: int, legs) -> list[int]:
    return [i for i in range(len(legs)) if mask >> i & 1 and _colour_dim(legs[i]) != 1]


def _splits(mask: int, parts: int):
    """Unordered partitions of the set bits of ``mask`` into ``parts`` non-empty blocks."""
    bits = [1 << i for i in range(mask.bit_length()) if mask >> i & 1]
    if len(bits) < parts:
        return
    first = bits[0]
    rest = bits[1:]
    if parts == 2:
        # the block holding the lowest bit, then the complement
        for r in range(0, len(rest)):
            for combo in itertools.combinations(rest, r):
                a = first | sum(combo)
                b = mask & ~a
                if b:
                    yield (a, b)
    elif parts == 3:
        for a, bc in _splits(mask, 2):
            for b, c in _splits(bc, 2):
                yield (a, b, c)


_LETTERS = string.ascii_letters


def _colour_product(vertex, fields, inputs, out_field, in_tensors, in_masks, out_mask, legs):
    """Colour tensor of a new term over the coloured legs of ``out_mask`` (sorted) + open index."""
    letter = {}

    def leg_letters(mask):
        return "".join(letter.setdefault(i, _LETTERS[i]) for i in _coloured_legs(mask, legs))

    opens = [_LETTERS[20 + k] for k in range(len(inputs))]
    out_open = _LETTERS[30]
    specs = []
    for k, (m, f) in enumerate(zip(in_masks, fields, strict=False)):
        specs.append(leg_letters(m) + (opens[k] if _colour_dim(f) != 1 else ""))
    out_spec = leg_letters(out_mask) + (out_open if _colour_dim(out_field) != 1 else "")
    operands = list(in_tensors)
    lor = vertex.lorentz
    coloured_fields = [f for f in fields if _colour_dim(f) != 1]
    internal = PARTICLES[out_field].anti  # the vertex's field of the internal line
    if vertex.coloured and lor == FFV:
        # T^a_ij with i the bra (antifermion field), j the ket (fermion field)
        roles = {}
        for k, f in enumerate(fields):
            roles[_spin(f)] = opens[k]
        # the internal line plays the role of the field 'internal' at the vertex
        roles_all = dict(roles)
        roles_all[_spin(internal)] = out_open
        specs.append(roles_all["V"] + roles_all["bra"] + roles_all["ket"])
        operands.append(generators())
    elif vertex.coloured and lor == VVV:
        specs.append(opens[0] + opens[1] + out_open)
        operands.append(structure_constants())
    elif lor in (FFV, FFS) and coloured_fields:
        # colour-neutral boson on a quark line: delta_ij between the two quark indices
        quark_opens = [opens[k] for k, f in enumerate(fields) if _colour_dim(f) != 1]
        if _colour_dim(out_field) != 1:
            specs.append(quark_opens[0] + out_open)
        else:
            specs.append(quark_opens[0] + quark_opens[1])
        operands.append(np.eye(3))
    elif coloured_fields:
        raise AssertionError("coloured vertex without a colour rule")  # pragma: no cover
    spec = ",".join(specs) + "->" + out_spec
    if not operands:
        return np.ones(())
    return np.einsum(spec, *operands, optimize=True)


def plan(legs: tuple[str, ...], *, orders=None, lowest: bool = True, required=frozenset(),
         excluded=frozenset(), s_excluded=frozenset(), decays=()) -> Plan:
    """Plan the recursion for all-incoming ``legs`` (leg ``n-1`` is the root).

    ``orders(qcd, qed) -> bool`` selects amplitude coupling orders; with ``lowest`` only the
    lowest ``2 QED + QCD`` among them that has diagrams is kept (MadGraph's default).
    ``required``: particles that must appear as an s-channel propagator; ``excluded`` (``/``):
    never as a propagator; ``s_excluded`` (``$``): never as an s-channel propagator.
    ``decays``: ``((leg indices, particle), ...)`` decay chains: only diagrams in which those
    final-state legs form one subtree attached through a propagator of ``particle`` (every
    current is laminar with the group; the group's current must carry the particle).
    """
    n = len(legs)
    root = n - 1
    table = vertex_table()
    full = (1 << root) - 1
    by_mask: dict[int, list[_Current]] = {}
    order_list: list[_Current] = []
    index: dict[tuple, _Current] = {}

    def s_channel(mask):
        inc = mask & 0b11
        return inc in (0, 0b11)

    for i in range(root):
        cur = _Current(1 << i, legs[i], (0, 0), frozenset())
        dims = [_colour_dim(legs[i])] if _colour_dim(legs[i]) != 1 else []
        cur.expand(np.eye(dims[0]) if dims else np.ones(()))
        by_mask[1 << i] = [cur]
        index[(1 << i, legs[i], (0, 0), frozenset())] = cur
        order_list.append(cur)

    root_field = PARTICLES[legs[root]].anti
    groups = []  # (mask over legs 0..n-2, the field its current must carry)
    for g, (members, parent) in enumerate(decays):
        members = set(members)
        if root in members:  # the subtree holding the root: constrain its complement instead
            gmask = full & ~sum(1 << i for i in members if i != root)
            groups.append((gmask, parent, ("decay", g)))
        else:
            groups.append((sum(1 << i for i in members), PARTICLES[parent].anti, ("decay", g)))
    required = frozenset(required) | {tag for _, _, tag in groups}
    masks = sorted(range(1, full + 1), key=lambda m: (bin(m).count("1"), m))
    masks = [m for m in masks if all((m & g) in (0, m, g) for g, _, _ in groups)]
    n_terms = 0
    for mask in masks:
        size = bin(mask).count("1")
        if size < 2:
            continue
        is_full = mask == full
        new: dict[tuple, _Current] = {}
        for parts in (2, 3):
            for blocks in _splits(mask, parts):
                if any(b not in by_mask for b in blocks):
                    continue
                for combo in itertools.product(*(by_mask[b] for b in blocks)):
                    fields = tuple(c.field for c in combo)
                    for vertex, internal in table.get(tuple(sorted(fields)), ()):
                        out_field = PARTICLES[internal].anti
                        if is_full and out_field != root_field:
                            continue
                        if not is_full:
                            if out_field in excluded or internal in excluded:
                                continue
                            if s_channel(mask) and (out_field in s_excluded
                                                    or internal in s_excluded):
                                continue
                        qcd = sum(c.orders[0] for c in combo) + vertex.orders[0]
                        qed = sum(c.orders[1] for c in combo) + vertex.orders[1]
                        flags = frozenset().union(*(c.flags for c in combo))
                        if (not is_full and s_channel(mask)
                                and (out_field in required or internal in required)):
                            flags = flags | {out_field, internal}
                        decay = [(f, tag) for g, f, tag in groups if g == mask]
                        if any(out_field != f for f, _ in decay):
                            continue  # a decay group's current must carry the decaying particle
                        flags = flags | {tag for _, tag in decay}
                        key = (mask, out_field, (qcd, qed), flags)
                        cur = new.get(key)
                        if cur is None:
                            cur = new[key] = _Current(mask, out_field, (qcd, qed), flags)
                        # Fermi sign of concatenating the inputs' fermion sequences
                        sign = 1
                        seen: list[int] = []
                        for c in combo:
                            fl = _fermion_legs(c.mask, legs)
                            sign *= _sign_of_merge(seen, fl)
                            seen = sorted(seen + fl)
                        spins = [_spin(f) for f in fields]
                        if "ket" in spins and "bra" in spins and spins.index("ket") < spins.index(
                            "bra"
                        ):
                            sign = -sign  # closing a chain (bra, ket) read in the order ket, bra
                        quartic_colour = vertex.lorentz == VVVV and vertex.coloured
                        for choice in (() if quartic_colour else itertools.product(
                                *(range(len(c.basis)) for c in combo))):
                            tensors = [c.basis[k] for c, k in zip(combo, choice, strict=False)]
                            tensor = _colour_product(vertex, fields, combo, out_field, tensors,
                                                     [c.mask for c in combo], mask, legs)
                            coefs = cur.expand(sign * tensor)
                            if coefs:
                                inputs = tuple((index_key(c), k) for c, k in zip(combo, choice, strict=False))
                                cur.terms.append((vertex, fields, inputs, None, coefs))
                                n_terms += 1
                        if quartic_colour:
                            for s, ff in enumerate(gluon_quartic_colour()):
                                for choice in itertools.product(
                                    *(range(len(c.basis)) for c in combo)
                                ):
                                    tensors = [c.basis[k] for c, k in zip(combo, choice, strict=False)]
                                    tensor = _quartic_colour(ff, tensors, combo, mask, legs)
                                    coefs = cur.expand(sign * tensor)
                                    if coefs:
                                        inputs = tuple(
                                            (index_key(c), k) for c, k in zip(combo, choice, strict=False)
                                        )
                                        cur.terms.append((vertex, fields, inputs, s, coefs))
                                        n_terms += 1
        kept = [c for c in new.values() if c.terms]
        if kept:
            by_mask[mask] = kept
            for c in kept:
                index[index_key(c)] = c
                order_list.append(c)

    finals = by_mask.get(full, [])
    if not finals:
        raise ValueError("no tree-level diagram")
    # coupling orders of the amplitude: (QCD, QED) of the root current
    available = sorted({c.orders for c in finals if required <= c.flags})
    if not available:
        raise ValueError("no diagram has the required s-channel particle(s)")
    chosen = {o for o in available if orders is None or orders(*o)}
    if not chosen:
        raise ValueError(
            f"the coupling orders leave no diagram (available (QCD, QED): {available})"
        )
    if lowest:
        weighted = min(2 * qed + qcd for qcd, qed in chosen)
        chosen = {o for o in chosen if 2 * o[1] + o[0] == weighted}
    selected = [c for c in finals if c.orders in chosen and required <= c.flags]
    # merge the selected root currents into one final colour basis
    final = _Current(full, root_field, (-1, -1), frozenset())
    for c in selected:
        for tensor in c.basis:
            final.expand(tensor)
    merged = []
    for c in selected:
        for k, tensor in enumerate(c.basis):
            merged.append((index_key(c), k, final.expand(tensor)))
    flat = np.stack([b.reshape(-1) for b in final.basis])
    gram = flat @ flat.conj().T
    needed = _needed(index, [m[0] for m in merged])
    currents = tuple(
        (index_key(c), c.mask != full, tuple(c.terms), len(c.basis))
        for c in order_list
        if index_key(c) in needed and bin(c.mask).count("1") >= 2
    )
    return Plan(legs, currents, tuple(merged), gram, tuple(final.basis), n_terms)


def _quartic_colour(ff, tensors, combo, out_mask, legs):
    letter = {}

    def leg_letters(mask):
        return "".join(letter.setdefault(i, _LETTERS[i]) for i in _coloured_legs(mask, legs))

    opens = [_LETTERS[20 + k] for k in range(3)]
    specs = [leg_letters(c.mask) + opens[k] for k, c in enumerate(combo)]
    spec = ",".join(specs + ["".join(opens) + _LETTERS[30]]) + "->" + leg_letters(
        out_mask
    ) + _LETTERS[30]
    return np.einsum(spec, *tensors, ff, optimize=True)


def index_key(c: _Current) -> tuple:
    return (c.mask, c.field, c.orders, c.flags)


def _needed(index, roots) -> set:
    needed = set()
    stack = list(roots)
    while stack:
        key = stack.pop()
        if key in needed:
            continue
        needed.add(key)
        for term in index[key].terms:
            for inp, _ in term[2]:
                stack.append(inp)
    return needed


# --- Dirac algebra written out in the chiral basis (elementwise: XLA fuses these, while 4x4
# matrix products on small trailing axes become slow batched dots on CPU) -------------------


def _slash_ket(v, k):
    """``vslash @ k`` for a vector ``v`` (upper index) and a column spinor ``k``."""
    v0, v1, v2, v3 = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    k1, k2, k3, k4 = k[..., 0], k[..., 1], k[..., 2], k[..., 3]
    vp, vm = v1 + 1j * v2, v1 - 1j * v2
    return jnp.stack([(v0 - v3) * k3 - vm * k4, -vp * k3 + (v0 + v3) * k4,
                      (v0 + v3) * k1 + vm * k2, vp * k1 + (v0 - v3) * k2], axis=-1)


def _bra_slash(b, v):
    """``b @ vslash`` for a row spinor ``b``."""
    v0, v1, v2, v3 = v[..., 0], v[..., 1], v[..., 2], v[..., 3]
    b1, b2, b3, b4 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    vp, vm = v1 + 1j * v2, v1 - 1j * v2
    return jnp.stack([b3 * (v0 + v3) + b4 * vp, b3 * vm + b4 * (v0 - v3),
                      b1 * (v0 - v3) - b2 * vp, -b1 * vm + b2 * (v0 + v3)], axis=-1)


def _chiral_ket(cl, cr, k):
    return jnp.concatenate([cl * k[..., :2], cr * k[..., 2:]], axis=-1)


def _bra_current(b, k):
    """``J^mu = b gamma^mu k``."""
    b1, b2, b3, b4 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    k1, k2, k3, k4 = k[..., 0], k[..., 1], k[..., 2], k[..., 3]
    return jnp.stack([b1 * k3 + b2 * k4 + b3 * k1 + b4 * k2,
                      b1 * k4 + b2 * k3 - b3 * k2 - b4 * k1,
                      1j * (-b1 * k4 + b2 * k3 + b3 * k2 - b4 * k1),
                      b1 * k3 - b2 * k4 - b3 * k1 + b4 * k2], axis=-1)


# --- evaluation -------------------------------------------------------------------------------


def _p2(p):
    return p[..., 0] ** 2 - jnp.sum(p[..., 1:] ** 2, axis=-1)


def _propagate(field_name, value, momentum, params, with_width: bool):
    part = PARTICLES[field_name]
    dtype = value.dtype
    rdtype = momentum.dtype
    mass = (jnp.zeros((), rdtype) if part.mass is None
            else getattr(params, part.mass).astype(rdtype))
    width = (jnp.zeros((), rdtype) if (part.width is None or not with_width)
             else getattr(params, part.width).astype(rdtype))
    denom = (_p2(momentum) - mass**2).astype(dtype) + 1j * (mass * width).astype(dtype)
    pc = momentum.astype(dtype)
    if part.kind == "fermion":  # column: i (P + m) / D acting on the left
        num = _slash_ket(pc, value) + mass.astype(dtype) * value
        return 1j * num / denom[..., None]
    if part.kind == "antifermion":  # row: bra i (-P + m) / D
        num = mass.astype(dtype) * value - _bra_slash(value, pc)
        return 1j * num / denom[..., None]
    if part.kind == "vector":
        if part.mass is None:
            return -1j * value / denom[..., None]
        num = value - pc * (mdot(pc, value) / (mass**2).astype(dtype))[..., None]
        return -1j * num / denom[..., None]
    return 1j * value / denom[..., None]


def _lorentz(vertex, fields, internal, values, momenta, params, structure):
    """The amputated vertex (Feynman-rule factors included) for the given input currents."""
    lor = vertex.lorentz
    spins = [_spin(f) for f in fields]
    dtype = values[0].dtype
    if lor in (FFV, FFS):
        cl, cr = coupling(vertex, params)
        cl, cr = 1j * jnp.asarray(cl).astype(dtype), 1j * jnp.asarray(cr).astype(dtype)
        by = dict(zip(spins, values, strict=False))
        if lor == FFV:
            if "V" in by:
                if "ket" in by:
                    return _slash_ket(by["V"], _chiral_ket(cl, cr, by["ket"]))
                return _chiral_ket(cl, cr, _bra_slash(by["bra"], by["V"]))
            return _bra_current(by["bra"], _chiral_ket(cl, cr, by["ket"]))
        s = by.get("S")
        if s is not None:
            if "ket" in by:
                return _chiral_ket(cl, cr, by["ket"]) * s
            return _chiral_ket(cl, cr, by["bra"]) * s
        return jnp.sum(by["bra"] * _chiral_ket(cl, cr, by["ket"]), axis=-1)[..., None]
    if lor == VVV:
        g = jnp.asarray(coupling(vertex, params)).astype(dtype)
        if not vertex.coloured:
            g = g * ew_triple((*fields, internal), params.cw, params.sw).astype(dtype)
        return g * vvv_vertex(values[0], values[1], momenta[0],
                                                         momenta[1])
    if lor == VVVV:
        j1, j2, j3 = values
        d12, d13, d23 = mdot(j1, j2)[..., None], mdot(j1, j3)[..., None], mdot(j2, j3)[..., None]
        l1 = d13 * j2 - d23 * j1
        l2 = d12 * j3 - d23 * j1
        l3 = d12 * j3 - d13 * j2
        g2 = jnp.asarray(coupling(vertex, params)).astype(dtype)
        if vertex.coloured:
            return -1j * g2 * (l1, l2, l3)[structure]
        g = [x.astype(dtype) for x in ew_quartic((*fields, internal), params.cw, params.sw)]
        return -1j * g2 * (g[0] * l1 + g[1] * l2 + g[2] * l3)
    c = jnp.asarray(coupling(vertex, params)).astype(dtype)
    if lor in (VVS, VVSS):
        vectors = [v for v, s in zip(values, spins, strict=False) if s == "V"]
        scalars = [v for v, s in zip(values, spins, strict=False) if s == "S"]
        scal = math.prod(scalars) if scalars else 1.0
        if len(vectors) == 2:
            return 1j * c * mdot(vectors[0], vectors[1])[..., None] * scal
        return 1j * c * vectors[0] * scal
    if lor in (SSS, SSSS):
        return 1j * c * math.prod(values)
    raise AssertionError(lor)  # pragma: no cover


def evaluate(p: Plan, ext, params, *, widths: str = "all"):
    """Amplitudes ``(..., *helicity grid, K)`` on the plan's final colour basis."""
    n = len(p.legs)
    root = n - 1
    momentum = {}

    def mom(mask):
        if mask not in momentum:
            total = 0.0
            for i in range(root):
                if mask >> i & 1:
                    total = total + ext.gluon_momentum_in(i)
            momentum[mask] = total
        return momentum[mask]

    values: dict[tuple, list] = {}
    for i in range(root):
        wf = ext.wf(i)
        if PARTICLES[p.legs[i]].kind == "scalar":
            wf = wf[..., :1]
        values[(1 << i, p.legs[i], (0, 0), frozenset())] = [wf]
    for key, propagate, terms, n_basis in p.currents:
        mask, out_field = key[0], key[1]
        acc = [0.0] * n_basis
        internal = PARTICLES[out_field].anti
        for vertex, fields, inputs, structure, coefs in terms:
            ins = [values[k][b] for k, b in inputs]
            moms = [mom(k[0]) for k, _ in inputs]
            amp = _lorentz(vertex, fields, internal, ins, moms, params, structure)
            for b, cf in coefs:
                acc[b] = acc[b] + (cf * amp if cf != 1 else amp)
        if propagate:
            inc = mask & 0b11
            width = widths == "all" or inc in (0, 0b11)
            acc = [_propagate(out_field, a, mom(mask), params, width)
                   if not isinstance(a, float) else a for a in acc]
        values[key] = acc
    wf_root = ext.wf(root)
    kind = PARTICLES[p.legs[root]].kind
    n_final = p.colour_matrix.shape[0]
    final = [0.0] * n_final
    for key, b, coefs in p.final_key:
        a = values[key][b]
        if isinstance(a, float):
            continue
        if kind == "vector":
            amp = mdot(a, wf_root)
        elif kind == "scalar":
            amp = a[..., 0]
        elif _spin(p.legs[root]) == "ket":  # root wavefunction is a column: a is a row
            amp = jnp.sum(a * wf_root, axis=-1)
        else:
            amp = jnp.sum(wf_root * a, axis=-1)
        for k, cf in coefs:
            final[k] = final[k] + cf * amp
    shape = jnp.broadcast_shapes(*(jnp.shape(f) for f in final if not isinstance(f, float)))
    dtype = wf_root.dtype
    stacked = [jnp.broadcast_to(jnp.asarray(f, dtype), shape) for f in final]
    return jnp.stack(stacked, axis=-1)
