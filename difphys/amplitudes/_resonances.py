"""Which groups of final-state legs of a compiled process can come from one unstable particle.

A parton shower needs the resonances of an event (status 2 in an LHE file) to keep their masses
through recoil and to decay them with the right colour connections (e.g. the tops of
``e+ e- > w+ b w- b~``). The candidates are read off the process's Berends-Giele plan: every
s-channel current whose field is a massive particle with a width is a propagator that some
diagram puts on the final-state legs it spans, except radiation (``t* > t g``). Decay chains
(``t > w+ b``) are always resonant.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..kinematics import mass
from ._particles import PARTICLES

#: MadGraph's default ``bwcutoff``: a propagator is written as a resonance when its invariant
#: mass lies within this many widths of the pole mass.
BW_CUTOFF = 15.0


class Resonance(NamedTuple):
    """An unstable particle that decays into the external legs ``legs`` (indices >= 2, the
    process's leg order); ``forced`` for a decay chain of the process string."""

    legs: tuple[int, ...]
    particle: str
    forced: bool


def resonances(proc) -> tuple[Resonance, ...]:
    """The resonance candidates of a compiled :class:`Process`, largest groups first."""
    plan = getattr(proc, "plan", None)
    if plan is None:
        raise TypeError(f"{getattr(proc, 'name', proc)!r} is not a Process built by "
                        "difphys.amplitudes.process")
    n = len(plan.legs)
    finals = frozenset(range(2, n))
    found: dict[tuple, bool] = {}
    for parent_legs, parent in getattr(proc, "decays", ()):
        found[(tuple(sorted(parent_legs)), parent)] = True
    for key, *_ in plan.currents:
        mask, field = key[0], key[1]
        members = frozenset(i for i in range(n - 1) if mask >> i & 1)
        if not members & {0, 1}:
            group = members
        elif {0, 1} <= members:
            group = finals - members
        else:
            continue  # t-channel
        if len(group) < 2:
            continue
        charge = sum(proc.particles[i].electric_charge for i in group)
        for name in dict.fromkeys((field, PARTICLES[field].anti)):
            part = PARTICLES[name]
            if part.width is None or part.mass is None:
                continue
            if any(proc.particles[i].name == name for i in group):
                continue  # t* > t g is radiation off the top, not a resonance decay
            if abs(part.electric_charge - charge) < 1e-9:
                found.setdefault((tuple(sorted(group)), name), False)
    out = [Resonance(legs, name, forced) for (legs, name), forced in found.items()]
    return tuple(sorted(out, key=lambda r: (-len(r.legs), r.legs, r.particle)))


def select_resonances(proc, momenta, params, cutoff: float = BW_CUTOFF) -> list[list[Resonance]]:
    """Per event, the resonances to write: every forced one, then greedily (closest to the pole
    in widths first) those within ``cutoff`` widths whose legs nest with the ones chosen.

    ``momenta`` (n_events, n_external, 4) in GeV (numpy). Returns one list per event, largest
    groups first.
    """
    candidates = resonances(proc)
    p = np.asarray(momenta, np.float64)
    chosen_all = []
    distance = {}
    for r in candidates:
        m = np.asarray(mass(p[:, list(r.legs)].sum(axis=1)))
        part = PARTICLES[r.particle]
        pole, width = float(getattr(params, part.mass)), float(getattr(params, part.width))
        distance[r] = np.abs(m - pole) / max(width, 1e-300)
    for ev in range(p.shape[0]):
        chosen = [r for r in candidates if r.forced]
        optional = sorted((r for r in candidates if not r.forced and distance[r][ev] <= cutoff),
                          key=lambda r: distance[r][ev])
        for r in optional:
            legs = set(r.legs)
            if all(legs <= set(c.legs) or set(c.legs) <= legs or not legs & set(c.legs)
                   for c in chosen) and all(set(c.legs) != legs for c in chosen):
                chosen.append(r)
        chosen_all.append(sorted(chosen, key=lambda r: (-len(r.legs), r.legs)))
    return chosen_all
