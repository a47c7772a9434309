"""Jet clustering with FastJet (exclusive Durham for e+e-, anti-kT for pp) and the soft-drop
mass (Larkoski, Marzani, Soyez, Thaler, arXiv:1402.2657) from FastJet's Cambridge/Aachen
reclustering."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from .._checks import check_finite

_BANNER_SHOWN = False


@contextlib.contextmanager
def _quiet_banner():
    """FastJet prints its banner to stdout on the first clustering; keep it off the CLI output."""
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
    finally:
        os.close(saved)
        _BANNER_SHOWN = True


def _pseudojets(p4: np.ndarray):
    import fastjet

    out = []
    for i, (e, px, py, pz) in enumerate(p4):
        pj = fastjet.PseudoJet(float(px), float(py), float(pz), float(e))
        pj.set_user_index(i)
        out.append(pj)
    return out


def _p4(pj) -> np.ndarray:
    return np.array([pj.e(), pj.px(), pj.py(), pj.pz()])


def _particles(p4) -> np.ndarray:
    p4 = np.asarray(p4, np.float64)
    if p4.ndim != 2 or p4.shape[-1] != 4:
        raise ValueError(f"particles must be (n, 4) four-momenta (E, px, py, pz); got shape "
                         f"{p4.shape}")
    check_finite(p4, "particle four-momenta")
    return p4


def cluster(
    p4: np.ndarray,
    algorithm: str,
    *,
    n_exclusive: int | None = None,
    radius: float = 0.8,
    pt_min: float = 0.0,
    abs_eta_max: float = np.inf,
    max_jets: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cluster particles ``p4 (n, 4)`` (E, px, py, pz) GeV.

    ``algorithm="ee_kt"`` gives the ``n_exclusive`` exclusive Durham jets; ``"antikt"`` gives
    inclusive anti-kT jets of ``radius`` with pT > ``pt_min`` and |eta| < ``abs_eta_max``, at
    most ``max_jets`` of them, in descending pT. Returns ``(jet four-momentum (4,), constituent
    indices in descending pT)`` per jet.
    """
    import fastjet

    p4 = _particles(p4)
    if not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be finite and > 0; got {radius!r}")

    if algorithm == "ee_kt":
        if n_exclusive is None or len(p4) < n_exclusive:
            return []
        # the Python wrapper insists on a radius, which ee_kt (Durham) does not take
        definition = fastjet._swig.JetDefinition(fastjet.ee_kt_algorithm)
    elif algorithm == "antikt":
        definition = fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    else:
        raise ValueError(f"unknown jet algorithm {algorithm!r}; use 'ee_kt' or 'antikt'")
    with _quiet_banner():
        sequence = fastjet.ClusterSequence(_pseudojets(p4), definition)
    if algorithm == "ee_kt":
        jets = sorted(sequence.exclusive_jets(n_exclusive), key=lambda j: -j.e())
    else:
        jets = [j for j in fastjet.sorted_by_pt(sequence.inclusive_jets(pt_min))
                if abs(j.eta()) < abs_eta_max]
        jets = jets[:max_jets] if max_jets is not None else jets
    out = []
    for jet in jets:
        idx = np.array([c.user_index() for c in jet.constituents()], dtype=np.int64)
        pt = np.hypot(p4[idx, 1], p4[idx, 2])
        out.append((_p4(jet), idx[np.argsort(-pt, kind="stable")]))
    return out


def softdrop_mass(p4: np.ndarray, *, zcut: float = 0.1, beta: float = 0.0, r0: float = 0.8,
                  ee: bool = False) -> float:
    """Soft-drop groomed mass (GeV) of the jet made of constituents ``p4 (n, 4)``.

    The constituents are reclustered with Cambridge/Aachen (its e+e- form, in angles and
    energies, when ``ee``) and declustered from the top, dropping the softer branch until
    ``z > zcut (dR / r0)^beta`` with ``z`` the pT (energy) fraction of the softer branch.
    The defaults (zcut = 0.1, beta = 0: modified mass-drop) are those of JetClass.
    """
    import fastjet

    p4 = _particles(p4)
    if not 0.0 <= zcut < 1.0:
        raise ValueError(f"zcut must lie in [0, 1); got {zcut!r}")
    if not (np.isfinite(r0) and r0 > 0):
        raise ValueError(f"r0 must be finite and > 0; got {r0!r}")

    if len(p4) == 0:
        raise ValueError("soft drop of an empty jet")
    if ee:
        definition = fastjet.JetDefinition(fastjet.ee_genkt_algorithm, 4.0, 0.0)
    else:
        definition = fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0)
    with _quiet_banner():
        sequence = fastjet.ClusterSequence(_pseudojets(p4), definition)
    jet = fastjet.sorted_by_E(sequence.inclusive_jets())[0]
    a, b = fastjet.PseudoJet(), fastjet.PseudoJet()
    while jet.has_parents(a, b):
        sa, sb = (a.e(), b.e()) if ee else (a.pt(), b.pt())
        if beta == 0.0:
            angle_factor = 1.0
        else:
            dr = _angle(_p4(a), _p4(b)) if ee else a.delta_R(b)
            angle_factor = (dr / r0) ** beta
        if min(sa, sb) / (sa + sb) > zcut * angle_factor:
            break
        jet = a if sa >= sb else b
        a, b = fastjet.PseudoJet(), fastjet.PseudoJet()
    return float(max(jet.m(), 0.0))


def _angle(p, q) -> float:
    u, v = p[1:], q[1:]
    c = np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-300)
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def eta_phi(p3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudorapidity and azimuth of three-momenta ``(..., 3)``; a particle along the beam
    gets |eta| = arcsinh(1e4) ~ 9.9 rather than an infinity."""
    pt = np.hypot(p3[..., 0], p3[..., 1])
    ratio = np.where(pt > 0, p3[..., 2] / np.where(pt > 0, pt, 1.0), np.sign(p3[..., 2]) * 1e4)
    return np.arcsinh(ratio), np.arctan2(p3[..., 1], p3[..., 0])


def match(jet_p3: np.ndarray, objects: np.ndarray, *, ee: bool, max_distance: float
          ) -> np.ndarray:
    """For each object (rows of ``objects (k, 3)``), the index of the closest jet (rows of
    ``jet_p3 (m, 3)``) by opening angle (``ee``) or Delta R, or -1 beyond ``max_distance``."""
    if len(objects) == 0 or len(jet_p3) == 0:
        return np.full(len(objects), -1, dtype=np.int64)
    if ee:
        uj = jet_p3 / np.linalg.norm(jet_p3, axis=-1, keepdims=True)
        uo = objects / np.linalg.norm(objects, axis=-1, keepdims=True)
        dist = np.arccos(np.clip(uo @ uj.T, -1.0, 1.0))
    else:
        ej, pj = eta_phi(jet_p3)
        eo, po = eta_phi(objects)
        dphi = np.angle(np.exp(1j * (po[:, None] - pj[None, :])))
        dist = np.hypot(eo[:, None] - ej[None, :], dphi)
    best = np.argmin(dist, axis=1)
    return np.where(dist[np.arange(len(objects)), best] < max_distance, best, -1)
