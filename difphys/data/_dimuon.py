"""The dimuon sample of the source-estimation problem: e+ e- -> gamma*/Z -> mu+ mu- at
sqrt(s) = 91.1876 GeV with initial-state radiation (Pythia 8, ``SETTINGS["dimuon"]``).

Per event the *source* is the hard dimuon system before any final-state radiation: its mass
``sqrt(s')`` (GeV; below sqrt(s) by the energy the beams radiated) and ``cos(theta*)``, the
cosine of the mu- polar angle in the dimuon rest frame with respect to the e- beam (+z; the
hard pair has no transverse momentum, so the rest frame is reached by a boost along z).
The final-state muons (after the QED shower) are kept for detector simulation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import check_count
from ..progress import progress_bar
from ._pythia import make_pythia

DIMUON_SQRT_S = 91.1876


class DimuonSample(NamedTuple):
    """``x (n, 2)``: true ``(sqrt(s') GeV, cos theta*)``; ``hard (n, 2, 4)``: the hard mu- and
    mu+ (E, px, py, pz) GeV; ``muons (n, 2, 4)``: the final-state mu- and mu+ (after the QED
    shower); ``sqrt_s`` GeV; ``n_failed``: events Pythia could not make (skipped)."""

    x: np.ndarray
    hard: np.ndarray
    muons: np.ndarray
    sqrt_s: float
    n_failed: int


def _cos_theta_star(mu_minus: np.ndarray, pair: np.ndarray) -> float:
    """cos of the mu- direction in the pair rest frame with respect to +z (boost along the
    pair's momentum)."""
    m = np.sqrt(max(pair[0] ** 2 - pair[1:] @ pair[1:], 0.0))
    beta = pair[1:] / pair[0]
    gamma = pair[0] / m
    b2 = beta @ beta
    bp = beta @ mu_minus[1:]
    coef = (gamma - 1) * bp / b2 - gamma * mu_minus[0] if b2 > 0 else 0.0
    p_star = mu_minus[1:] + coef * beta
    return float(p_star[2] / np.linalg.norm(p_star))


def _muon_pair(record, final: bool):
    minus = plus = None
    for p in record:
        if p.idAbs() != 13 or (final and not p.isFinal()):
            continue
        row = np.array([p.e(), p.px(), p.py(), p.pz()])
        if p.id() == 13 and minus is None:
            minus = row
        elif p.id() == -13 and plus is None:
            plus = row
    return minus, plus


def dimuon_sample(n_events: int, seed: int, *, progress=False) -> DimuonSample:
    """``n_events`` Pythia events of e+ e- -> mu+ mu- with ISR (deterministic per ``seed``,
    1 <= seed <= 900,000,000). Needs the ``data`` extra (pythia8mc)."""
    check_count(n_events, "n_events")
    pythia = make_pythia("dimuon", seed)
    xs, hards, finals, failed = [], [], [], 0
    with progress_bar(progress, total=n_events, desc="dimuon events") as bar:
        while len(xs) < n_events:
            if not pythia.next():
                failed += 1
                if failed > 100 + n_events // 10:
                    raise RuntimeError(f"Pythia failed {failed} times making dimuon events")
                continue
            h_minus, h_plus = _muon_pair(pythia.process, final=False)
            f_minus, f_plus = _muon_pair(pythia.event, final=True)
            if h_minus is None or h_plus is None or f_minus is None or f_plus is None:
                failed += 1
                continue
            pair = h_minus + h_plus
            mass = np.sqrt(max(pair[0] ** 2 - pair[1:] @ pair[1:], 0.0))
            xs.append((mass, _cos_theta_star(h_minus, pair)))
            hards.append((h_minus, h_plus))
            finals.append((f_minus, f_plus))
            bar.update(1)
    return DimuonSample(np.asarray(xs), np.asarray(hards), np.asarray(finals), DIMUON_SQRT_S,
                        failed)
