"""Particle table of MadGraph's ``sm`` model (names, PDG ids, spins, colours, masses, widths).

Masses and widths name :class:`SMParams` fields (``None``: zero). As in the ``sm`` model the b,
t and tau are massive, the other fermions massless, and CKM is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Particle:
    """Static particle data.

    ``kind``: 'fermion', 'antifermion', 'vector' or 'scalar'. ``charge`` and ``t3`` are those of
    the fermion (for an antifermion: of its partner fermion, as the couplings use them);
    :attr:`electric_charge` is the particle's own. ``colour``: 1, 3 (quarks and antiquarks) or 8.
    """

    name: str
    pdg: int
    kind: str
    mass: str | None  # SMParams attribute giving the mass, None for massless
    charge: float = 0.0
    t3: float = 0.0
    colour: int = 1
    width: str | None = None  # SMParams attribute giving the width, None for stable
    antiname: str = ""  # the antiparticle's name ("" for a self-conjugate particle)

    @property
    def helicities(self) -> tuple[int, ...]:
        if self.kind == "scalar":
            return (0,)
        if self.kind == "vector" and self.mass is not None:
            return (-1, 0, 1)
        return (-1, 1)

    @property
    def anti(self) -> str:
        """The antiparticle's name."""
        return self.antiname or self.name

    @property
    def electric_charge(self) -> float:
        return -self.charge if self.kind == "antifermion" else self.charge

    @property
    def spin_states(self) -> int:
        return len(self.helicities)

    @property
    def is_fermion(self) -> bool:
        return self.kind in ("fermion", "antifermion")


def _pair(name, bar, pdg, mass, charge, t3, colour=1, width=None):
    return [
        Particle(name, pdg, "fermion", mass, charge, t3, colour, width, bar),
        Particle(bar, -pdg, "antifermion", mass, charge, t3, colour, width, name),
    ]


_ALL = [
    *_pair("e-", "e+", 11, None, -1.0, -0.5),
    *_pair("mu-", "mu+", 13, None, -1.0, -0.5),
    *_pair("ta-", "ta+", 15, "MTA", -1.0, -0.5),
    *_pair("ve", "ve~", 12, None, 0.0, 0.5),
    *_pair("vm", "vm~", 14, None, 0.0, 0.5),
    *_pair("vt", "vt~", 16, None, 0.0, 0.5),
    *_pair("u", "u~", 2, None, 2 / 3, 0.5, 3),
    *_pair("d", "d~", 1, None, -1 / 3, -0.5, 3),
    *_pair("s", "s~", 3, None, -1 / 3, -0.5, 3),
    *_pair("c", "c~", 4, None, 2 / 3, 0.5, 3),
    *_pair("b", "b~", 5, "MB", -1 / 3, -0.5, 3),
    *_pair("t", "t~", 6, "MT", 2 / 3, 0.5, 3, "WT"),
    Particle("g", 21, "vector", None, colour=8),
    Particle("a", 22, "vector", None),
    Particle("z", 23, "vector", "MZ", width="WZ"),
    Particle("w+", 24, "vector", "MW", charge=1.0, width="WW", antiname="w-"),
    Particle("w-", -24, "vector", "MW", charge=-1.0, width="WW", antiname="w+"),
    Particle("h", 25, "scalar", "MH", width="WH"),
]

PARTICLES: dict[str, Particle] = {p.name: p for p in _ALL}

#: Fermion generations for the W couplings (CKM = 1): down-type/lepton -> up-type/neutrino.
WEAK_PARTNERS = {"d": "u", "s": "c", "b": "t", "e-": "ve", "mu-": "vm", "ta-": "vt"}
