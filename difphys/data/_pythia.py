"""Pythia 8 set-up for the difphys samples and extraction of the final state of one event.

Pythia's units are GeV and mm (vertices), as difphys's. Particles with proper lifetime
c tau > 10 mm are kept stable (``ParticleDecays:tau0Max = 10``), so K0S, Lambda, K+- and pi+-
reach the detector; B and D hadrons (c tau < 0.5 mm) decay and their products carry displaced
production vertices.
"""

from __future__ import annotations

import numpy as np

_COMMON = (
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
    "Print:quiet = on",
    "Next:numberCount = 0",
    "Random:setSeed = on",
)

#: Pythia settings of each sample (before the seed).
SETTINGS: dict[str, tuple[str, ...]] = {
    # e+ e- -> Z -> q q~ (d u s c b) at the Z pole, no ISR (PDF:lepton = off).
    "zpole": (
        "Beams:idA = 11",
        "Beams:idB = -11",
        "Beams:eCM = 91.1876",
        "PDF:lepton = off",
        "WeakSingleBoson:ffbar2gmZ = on",
        "WeakZ0:gmZmode = 2",
        "23:onMode = off",
        "23:onIfAny = 1 2 3 4 5",
    ),
    # e+ e- -> gamma*/Z -> mu+ mu- at the Z pole with initial-state radiation (the electron
    # PDF, PDF:lepton = on, and the QED shower); no hadrons to make.
    "dimuon": (
        "Beams:idA = 11",
        "Beams:idB = -11",
        "Beams:eCM = 91.1876",
        "PDF:lepton = on",
        "WeakSingleBoson:ffbar2gmZ = on",
        "23:onMode = off",
        "23:onIfAny = 13",
        "HadronLevel:all = off",
    ),
    # g g -> X (H_2 of Pythia's BSM Higgs sector, m = 1 TeV, narrow) -> h h -> b b~ b b~ at 13 TeV.
    "hh4b_signal": (
        "Beams:eCM = 13000",
        "Higgs:useBSM = on",
        "HiggsBSM:gg2H2 = on",
        "35:m0 = 1000",
        "35:mWidth = 1.0",
        "35:doForceWidth = on",
        "35:onMode = off",
        "35:onIfMatch = 25 25",
        "25:onMode = off",
        "25:onIfMatch = 5 -5",
    ),
    # QCD 2 -> 2 multijet with pTHat > 300 GeV at 13 TeV.
    "hh4b_qcd": (
        "Beams:eCM = 13000",
        "HardQCD:all = on",
        "PhaseSpace:pTHatMin = 300",
    ),
    # QCD b b~ production (g g -> b b~, q q~ -> b b~) with pTHat > 300 GeV at 13 TeV: the
    # b-enriched background of the event task (Vigl et al. train against such a mixture).
    "hh4b_qcd_bb": (
        "Beams:eCM = 13000",
        "HardQCD:hardbbbar = on",
        "PhaseSpace:pTHatMin = 300",
    ),
}

NEUTRINOS = (12, 14, 16)

#: Origin labels of the charged-particle tracks.
ORIGIN_PRIMARY, ORIGIN_B, ORIGIN_C, ORIGIN_OTHER = 0, 1, 2, 3

#: A production vertex further than this (mm) from the origin counts as displaced.
DISPLACED_MM = 1e-6


def heavy_flavour(pdg: int) -> int:
    """5 for a b hadron, 4 for a charm hadron (without b), 0 otherwise, quarkonia included as 0
    (PDG numbering scheme: the quark digits of a meson are the hundreds and tens, of a baryon
    the thousands, hundreds and tens; excited states add 10000s)."""
    a = abs(pdg)
    if a < 100 or a >= 1_000_000:
        return 0
    a %= 10_000
    if (a // 1000) % 10 == 0:  # meson
        q1, q2 = (a // 100) % 10, (a // 10) % 10
        if q1 == q2:  # hidden flavour (b b~, c c~): no open b or c
            return 0
        digits = {q1, q2}
    else:
        digits = {(a // 1000) % 10, (a // 100) % 10, (a // 10) % 10}
    if 5 in digits:
        return 5
    if 4 in digits:
        return 4
    return 0


def make_pythia(sample: str, seed: int):
    """An initialised ``pythia8mc.Pythia`` for ``sample`` with Pythia seed ``seed``
    (1 <= seed <= 900,000,000)."""
    try:
        import pythia8mc
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            "event generation needs the 'data' extra: pip install 'difphys[data]' "
            "(pythia8mc==8.317.2 and fastjet)"
        ) from err
    if sample not in SETTINGS:
        raise ValueError(f"unknown Pythia sample {sample!r}; known: {sorted(SETTINGS)}")
    if not 1 <= seed <= 900_000_000:
        raise ValueError(f"Pythia seeds lie in [1, 900000000]; got {seed}")
    pythia = pythia8mc.Pythia("", False)
    for line in (*SETTINGS[sample], *_COMMON, f"Random:seed = {seed}"):
        if not pythia.readString(line):
            raise RuntimeError(f"Pythia rejected the setting {line!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise the {sample!r} sample")
    return pythia


def _origin(event, i: int) -> int:
    """Origin label of final particle ``i``: primary when produced at the origin, else the
    heaviest weakly-decaying flavour among its ancestors (b, then c), else other."""
    p = event[i]
    if np.hypot(np.hypot(p.xProd(), p.yProd()), p.zProd()) < DISPLACED_MM:
        return ORIGIN_PRIMARY
    flavour = 0
    j = p.mother1()
    while j > 0:
        flavour = max(flavour, heavy_flavour(event[j].id()))
        if flavour == 5:
            break
        j = event[j].mother1()
    return {5: ORIGIN_B, 4: ORIGIN_C}.get(flavour, ORIGIN_OTHER)


def final_state(event) -> dict[str, np.ndarray]:
    """Visible final-state particles of a Pythia event (neutrinos dropped).

    Returns arrays over particles: ``p4 (n, 4)`` (E, px, py, pz) GeV, ``pid``, ``charge`` (e),
    ``vertex (n, 3)`` mm (true production point) and ``origin`` (see ``ORIGIN_*``).
    """
    rows, vtx, pid, charge, origin = [], [], [], [], []
    for p in event:
        if not p.isFinal() or p.idAbs() in NEUTRINOS:
            continue
        rows.append((p.e(), p.px(), p.py(), p.pz()))
        vtx.append((p.xProd(), p.yProd(), p.zProd()))
        pid.append(p.id())
        charge.append(p.charge())
        origin.append(_origin(event, p.index()) if p.charge() != 0 else ORIGIN_PRIMARY)
    return {
        "p4": np.asarray(rows, dtype=np.float64).reshape(-1, 4),
        "vertex": np.asarray(vtx, dtype=np.float64).reshape(-1, 3),
        "pid": np.asarray(pid, dtype=np.int32),
        "charge": np.asarray(charge, dtype=np.float64),
        "origin": np.asarray(origin, dtype=np.int32),
    }


def weak_heavy_hadrons(event, flavour: int) -> np.ndarray:
    """Three-momenta ``(k, 3)`` of the weakly decaying hadrons of ``flavour`` (5 or 4): those
    none of whose daughters carries the same flavour (the last hadron of the chain)."""
    out = []
    for p in event:
        if not p.isHadron() or heavy_flavour(p.id()) != flavour:
            continue
        if any(heavy_flavour(event[d].id()) == flavour for d in p.daughterList()):
            continue
        out.append((p.px(), p.py(), p.pz()))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def last_copies(event, pdg: int) -> np.ndarray:
    """Three-momenta ``(k, 3)`` of the last copies of particle ``pdg`` (e.g. 25: the Higgs
    bosons just before they decay)."""
    out = []
    for p in event:
        if p.idAbs() == pdg and p.index() == p.iBotCopyId():
            out.append((p.px(), p.py(), p.pz()))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)
