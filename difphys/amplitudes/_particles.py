"""Particle table for the processes built in :mod:`difphys.amplitudes` (MadGraph names)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Particle:
    """Static particle data. ``kind``: 'fermion', 'antifermion' or 'vector'."""

    name: str
    pdg: int
    kind: str
    mass: str | None  # SMParams attribute giving the mass, None for massless
    charge: float = 0.0  # of the fermion (for antifermions: of the partner fermion)
    t3: float = 0.0
    colour: int = 1  # 1, 3 or 8

    @property
    def helicities(self) -> tuple[int, ...]:
        if self.kind == "vector" and self.mass is not None:
            return (-1, 0, 1)
        return (-1, 1)


def _pair(name, bar, pdg, mass, charge, t3, colour=1):
    return [
        Particle(name, pdg, "fermion", mass, charge, t3, colour),
        Particle(bar, -pdg, "antifermion", mass, charge, t3, colour),
    ]


_ALL = [
    *_pair("e-", "e+", 11, None, -1.0, -0.5),
    *_pair("mu-", "mu+", 13, None, -1.0, -0.5),
    *_pair("u", "u~", 2, None, 2 / 3, 0.5, 3),
    *_pair("d", "d~", 1, None, -1 / 3, -0.5, 3),
    *_pair("s", "s~", 3, None, -1 / 3, -0.5, 3),
    *_pair("c", "c~", 4, None, 2 / 3, 0.5, 3),
    *_pair("b", "b~", 5, "MB", -1 / 3, -0.5, 3),
    *_pair("t", "t~", 6, "MT", 2 / 3, 0.5, 3),
    Particle("g", 21, "vector", None, colour=8),
    Particle("a", 22, "vector", None),
    Particle("w+", 24, "vector", "MW", charge=1.0),
    Particle("w-", -24, "vector", "MW", charge=-1.0),
]

PARTICLES: dict[str, Particle] = {p.name: p for p in _ALL}
