"""Leading-colour flows of a compiled process: the basis, the colour-ordered amplitudes and a
per-event draw, for the colour tags a parton shower reads from an LHE file.

Hand-written because the colour basis of :mod:`._recursion` is numerical (whatever tensors the
recursion meets), while a shower needs colour *connections*. The flow basis here is MadGraph's
(Maltoni, Paul, Stelzer, Willenbrock, hep-ph/0209271): with all legs incoming, every quark line
is a string of generators between a colour triplet (a ``ket`` leg: incoming quark or outgoing
antiquark) and an anti-triplet (a ``bra`` leg), ``(t^{g1} ... t^{gm})_{bra, ket}``, every pairing
of kets with bras and every ordered distribution of the gluons over the strings; with no quark,
the single traces ``Tr(t^{g1} ... t^{gn})`` with ``g1`` fixed. The amplitude's tensor
``M = sum_k A_k B_k`` (basis ``B`` of the plan) is re-expanded as ``M = sum_s J_s F_s`` by a
least-squares solve once per process (the residual is checked: the flows must span ``B``), so
``J_s`` are the colour-ordered ("JAMP") amplitudes. One flow per event is drawn with
probability ``sum_h |J_s|^2 / sum_s' sum_h |J_s'|^2``, as MadGraph's ``select_color`` does (it
further restricts the choice to the flows of the event's integration channel; difphys has no
channels and draws among all flows).

Tags follow the Les Houches convention (hep-ph/0109068): outgoing legs swap the colour and
anticolour of their all-incoming crossing; tags start at 501.
"""

from __future__ import annotations

import itertools
import string
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._colour import generators
from ._particles import PARTICLES

#: largest (flows x colour-space dimension) the least-squares projection is built for
_MAX_ELEMENTS = 2**27
_FIRST_TAG = 501


class ColourFlows(NamedTuple):
    """The leading-colour flows of one process.

    Attributes:
      tags: (n_flows, n_external, 2) int LHE (colour, anticolour) tags of each flow, legs in the
        process's order (incoming first); 0 for no colour.
      projection: (n_basis, n_flows) complex: ``J = A @ projection`` turns the amplitudes on the
        plan's colour basis (:meth:`Process.helicity_amplitudes`) into colour-ordered ones.
      gram: (n_flows, n_flows) ``sum_colours F_s F_s'^*``, MadGraph's colour matrix ``CF / denom``
        in this basis: ``J gram J^dag`` summed over helicities is the full-colour |M|^2 (before
        averaging), its diagonal part the leading-colour one.
    """

    tags: np.ndarray
    projection: np.ndarray
    gram: np.ndarray

    @property
    def n_flows(self) -> int:
        return self.tags.shape[0]


def _role(name: str) -> str | None:
    part = PARTICLES[name]
    if part.colour == 1:
        return None
    if part.colour == 8:
        return "g"
    return "ket" if part.kind == "fermion" else "bra"


def _ordered_distributions(items, n_bins):
    """Every way to place the ``items`` into ``n_bins`` ordered lists."""
    for perm in itertools.permutations(items):
        for cuts in itertools.combinations_with_replacement(range(len(items) + 1), n_bins - 1):
            bounds = (0, *cuts, len(items))
            yield tuple(perm[bounds[k]:bounds[k + 1]] for k in range(n_bins))


def _flows(legs):
    """Flows as lists of connections ``(leg with colour, leg with anticolour)``, all incoming,
    and their tensors over the coloured legs (leg order)."""
    kets = [i for i, f in enumerate(legs) if _role(f) == "ket"]
    bras = [i for i, f in enumerate(legs) if _role(f) == "bra"]
    gluons = [i for i, f in enumerate(legs) if _role(f) == "g"]
    if len(kets) != len(bras):
        raise NotImplementedError("colour flows need as many triplets as anti-triplets")
    flows = []
    if not kets:
        if gluons:
            first, rest = gluons[0], gluons[1:]
            for perm in itertools.permutations(rest):
                flows.append([("trace", (first, *perm))])
        else:
            flows.append([])
    else:  # each (pairing, distribution) is a different flow: no duplicates to remove
        for pairing in itertools.permutations(bras):
            for dist in _ordered_distributions(gluons, len(kets)):
                flows.append([("line", (b, *gs, k))
                              for k, b, gs in zip(kets, pairing, dist, strict=True)])
    return flows


def _connections(flow):
    """``(colour leg, anticolour leg)`` pairs of a flow. A string ``(bra, g1, ..., gm, ket)``
    stands for ``(t^{g1} ... t^{gm})_{bra, ket}``: the ket's colour meets ``gm``'s anticolour,
    ``g_{i+1}``'s colour meets ``g_i``'s anticolour, ``g1``'s colour meets the bra's
    anticolour; a trace closes ``g_n``'s anticolour on ``g1``'s colour."""
    pairs = []
    for kind, chain in flow:
        if kind == "line":
            bra, *gs, ket = chain
            nodes = [bra, *gs, ket]
            for left, right in zip(nodes[:-1], nodes[1:], strict=True):
                pairs.append((right, left))  # right's colour, left's anticolour
        else:
            n = len(chain)
            for k in range(n):
                pairs.append((chain[(k + 1) % n], chain[k]))
    return pairs


def _flow_tensor(flow, coloured):
    """The flow's tensor over the coloured legs ``coloured`` (in order)."""
    letters = iter(string.ascii_letters)
    leg_letter = {i: next(letters) for i in coloured}
    t = generators()
    specs, operands = [], []
    for kind, chain in flow:
        if kind == "line":
            bra, *gs, ket = chain
            idx = [leg_letter[bra]] + [next(letters) for _ in gs[:-1]] + [leg_letter[ket]]
            if not gs:
                specs.append(leg_letter[bra] + leg_letter[ket])
                operands.append(np.eye(3))
            for k, g in enumerate(gs):
                specs.append(leg_letter[g] + idx[k] + idx[k + 1])
                operands.append(t)
        else:
            ring = [next(letters) for _ in chain]
            for k, g in enumerate(chain):
                specs.append(leg_letter[g] + ring[k] + ring[(k + 1) % len(chain)])
                operands.append(t)
    out = "".join(leg_letter[i] for i in coloured)
    if not operands:
        return np.ones(())
    return np.einsum(",".join(specs) + "->" + out, *operands, optimize=True)


def _tags(flow, n_legs):
    """LHE tags (n_legs, 2) of a flow: outgoing legs (index >= 2) swap colour and anticolour."""
    tags = np.zeros((n_legs, 2), np.int64)
    for k, (col_leg, acol_leg) in enumerate(_connections(flow)):
        tag = _FIRST_TAG + k
        tags[col_leg, 0 if col_leg < 2 else 1] = tag
        tags[acol_leg, 1 if acol_leg < 2 else 0] = tag
    return tags


def colour_flows(proc) -> ColourFlows:
    """The leading-colour flows of a compiled :class:`Process` (computed once, then cached).

    Raises ``NotImplementedError`` when the flows do not span the process's colour space (no
    tree-level SM process is known to do so) or the colour space is too large to project.
    """
    cached = getattr(proc, "_colour_flows", None)
    if cached is not None:
        return cached
    plan = getattr(proc, "plan", None)
    if plan is None:
        raise TypeError(f"{getattr(proc, 'name', proc)!r} is not a Process built by "
                        "difphys.amplitudes.process")
    legs = plan.legs
    coloured = [i for i, f in enumerate(legs) if _role(f) is not None]
    flows = _flows(legs)
    size = len(flows) * int(np.prod([PARTICLES[legs[i]].colour for i in coloured]))
    if size > _MAX_ELEMENTS:
        raise NotImplementedError(
            f"{proc.name!r} has {len(flows)} colour flows; projecting onto them needs "
            f"{size:.2g} numbers (at most {_MAX_ELEMENTS:.2g} are supported)")
    flat = np.stack([_flow_tensor(f, coloured).reshape(-1) for f in flows])  # (S, D)
    basis = np.stack([np.asarray(b).reshape(-1) for b in plan.colour_basis])  # (K, D)
    coef, *_ = np.linalg.lstsq(flat.T, basis.T, rcond=None)  # basis^T = flat^T coef
    residual = np.linalg.norm(flat.T @ coef - basis.T) / max(np.linalg.norm(basis), 1e-300)
    if residual > 1e-8:
        raise NotImplementedError(
            f"the colour flows of {proc.name!r} do not span its colour space "
            f"(residual {residual:.2g}); LHE colour tags cannot be assigned")
    tags = np.stack([_tags(f, len(legs)) for f in flows])
    result = ColourFlows(tags, coef.T.astype(np.complex128), flat @ flat.conj().T)
    proc._colour_flows = result
    return result


def colour_flow_weights(proc, momenta, params=None) -> jax.Array:
    """``sum_h |J_s|^2`` per flow ``s`` (unnormalised), shape (..., n_flows).

    ``momenta`` (..., n_external, 4) in GeV as for ``proc(momenta, params)``.
    """
    flows = colour_flows(proc)
    amps = proc.helicity_amplitudes(momenta, params)  # (..., H, K)
    jamp = jnp.einsum("...hk,ks->...hs", amps, jnp.asarray(flows.projection, amps.dtype))
    return jnp.sum(jnp.abs(jamp) ** 2, axis=-2)


def sample_colour_flow(key, proc, momenta, params=None) -> jax.Array:
    """One flow index per event, drawn with probability proportional to its weight
    (:func:`colour_flow_weights`), shape ``momenta.shape[:-2]``; ``colour_flows(proc).tags``
    turns it into LHE tags. Where every weight is zero (|M|^2 = 0) the flow is uniform."""
    w = colour_flow_weights(proc, momenta, params)
    positive = jnp.any(w > 0, axis=-1, keepdims=True)
    logits = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    logits = jnp.where(positive, logits, 0.0)  # |M|^2 = 0 at this point: any flow, uniformly
    return jax.random.categorical(key, logits, axis=-1)
