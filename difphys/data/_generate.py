"""Generate jet samples with Pythia 8 + FastJet and write them in the JetClass branch schema.

Events are produced in fixed chunks of ``CHUNK_EVENTS``; chunk ``c`` of a sample always gets the
same Pythia seed (derived from the user seed, the sub-sample and ``c``) and the same track-
smearing key, so a file depends only on ``(sample, events, seed)`` and not on the number of
worker processes.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing as mp
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import write_jetclass
from ..io._tracks import TRACK_COV, TRACK_PARAMS
from ..progress import progress_bar
from ..vertex import simulate_tracks
from ._jets import cluster, eta_phi, match, softdrop_mass
from ._pythia import final_state, last_copies, make_pythia, weak_heavy_hadrons

CHUNK_EVENTS = 250

#: The samples ``difphys generate`` knows, and the Pythia sub-samples each is made of.
SAMPLES: dict[str, tuple[str, ...]] = {
    "zpole": ("zpole",),
    "hh4b": ("hh4b_signal", "hh4b_qcd"),
    "hh4b_signal": ("hh4b_signal",),
    "hh4b_qcd": ("hh4b_qcd",),
    "hh4b_qcd_bb": ("hh4b_qcd_bb",),
}

#: Branches beyond JetClass's written for every particle: PDG id, true production vertex (mm),
#: track origin (0 primary, 1 b decay, 2 c decay, 3 other), smeared perigee (mm, mm, rad, rad,
#: e/GeV) and its covariance (upper triangle ``part_trk_cov_ij``); zero for neutral particles.


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate` wrote: file, events asked for and generated, jets written, wall
    time (s) and events per second."""

    path: Path
    events: int
    generated: int
    jets: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.generated / max(self.seconds, 1e-9)


def _pythia_seed(seed: int, sub_sample: str, chunk: int) -> int:
    tag = zlib.crc32(f"{seed}/{sub_sample}/{chunk}".encode())
    return tag % 900_000_000 + 1


def _sub_events(sample: str, n_events: int, bb_fraction: float) -> list[tuple[str, int]]:
    """``(sub_sample, events)``: equal shares, except that ``hh4b`` with ``bb_fraction > 0``
    takes that fraction of its QCD half from ``hh4b_qcd_bb``."""
    subs = SAMPLES[sample]
    shares = [(sub, n_events // len(subs) + (1 if k < n_events % len(subs) else 0))
              for k, sub in enumerate(subs)]
    if sample == "hh4b" and bb_fraction > 0:
        n_qcd = shares[1][1]
        n_bb = int(round(bb_fraction * n_qcd))
        shares = [shares[0], ("hh4b_qcd", n_qcd - n_bb), ("hh4b_qcd_bb", n_bb)]
    return [(sub, n) for sub, n in shares if n > 0]


def _plan(sample: str, n_events: int, bb_fraction: float = 0.0
          ) -> list[tuple[str, int, int, int]]:
    """``(sub_sample, chunk, first event id, events)`` for every chunk."""
    plan, first = [], 0
    for sub, n_sub in _sub_events(sample, n_events, bb_fraction):
        for chunk, start in enumerate(range(0, n_sub, CHUNK_EVENTS)):
            plan.append((sub, chunk, first + start, min(CHUNK_EVENTS, n_sub - start)))
        first += n_sub
    return plan


def _jet_record(fs, idx, jet_p4, *, ee: bool) -> dict:
    p4 = fs["p4"][idx]
    jet_eta, jet_phi = eta_phi(jet_p4[None, 1:])
    eta, phi = eta_phi(p4[:, 1:])
    return {
        "p4": p4,
        "pid": fs["pid"][idx],
        "charge": fs["charge"][idx],
        "vertex": fs["vertex"][idx],
        "origin": fs["origin"][idx],
        "deta": eta - jet_eta[0],
        "dphi": np.angle(np.exp(1j * (phi - jet_phi[0]))),
        "jet": (np.hypot(jet_p4[1], jet_p4[2]), jet_eta[0], jet_phi[0], jet_p4[0], len(idx),
                softdrop_mass(p4, ee=ee)),
    }


def _run_chunk(task: tuple[str, int, int, int, int]) -> dict:
    """Generate one chunk (runs in a worker process): a list of jet records and counters."""
    sub, chunk, first, n, seed = task
    pythia = make_pythia(sub, _pythia_seed(seed, sub, chunk))
    ee = sub == "zpole"
    jets, generated, t0 = [], 0, time.perf_counter()
    for k in range(n):
        if not pythia.next():
            continue
        generated += 1
        event = pythia.event
        fs = final_state(event)
        if ee:
            clustered = cluster(fs["p4"], "ee_kt", n_exclusive=2)
        else:
            clustered = cluster(fs["p4"], "antikt", radius=0.8, pt_min=300.0, abs_eta_max=2.0,
                                max_jets=3)
        if not clustered:
            continue
        jet_p3 = np.stack([j[0][1:] for j in clustered])
        dist = np.pi if ee else 0.8
        b_jets = set(match(jet_p3, weak_heavy_hadrons(event, 5), ee=ee, max_distance=dist))
        c_jets = set(match(jet_p3, weak_heavy_hadrons(event, 4), ee=ee, max_distance=dist))
        h_jets = set(match(jet_p3, last_copies(event, 25), ee=ee, max_distance=dist))
        for j, (jet_p4, idx) in enumerate(clustered):
            rec = _jet_record(fs, idx, jet_p4, ee=ee)
            rec["labels"] = {
                "label_b": j in b_jets,
                "label_c": j in c_jets and j not in b_jets,
                "label_uds": j not in b_jets and j not in c_jets,
                "label_Hbb": j in h_jets,
                "label_signal": sub == "hh4b_signal",
            }
            rec["event"] = first + k
            rec["chunk"] = (sub, chunk)
            jets.append(rec)
    return {"jets": jets, "generated": generated, "seconds": time.perf_counter() - t0,
            "task": task}


def _smear_tracks(jets: list[dict], seed: int, key_tag: int, bfield: float, resolution):
    """Smeared perigee parameters and covariances for every charged particle of ``jets``
    (exact helix from the true production vertex, :func:`difphys.vertex.simulate_tracks`)."""
    import jax

    charged = [np.nonzero(r["charge"] != 0)[0] for r in jets]
    n = sum(len(c) for c in charged)
    if n == 0:
        return
    vtx = np.concatenate([r["vertex"][c] for r, c in zip(jets, charged, strict=True)])
    p3 = np.concatenate([r["p4"][c, 1:] for r, c in zip(jets, charged, strict=True)])
    q = np.concatenate([r["charge"][c] for r, c in zip(jets, charged, strict=True)])
    size = 1 << max(int(n - 1).bit_length(), 6)  # pad to a power of two: few compilations
    pad = size - n
    vtx = np.concatenate([vtx, np.zeros((pad, 3))])
    p3 = np.concatenate([p3, np.tile([[1.0, 0.0, 0.0]], (pad, 1))])
    q = np.concatenate([q, np.ones(pad)])
    with jax.enable_x64(True):
        key = jax.random.fold_in(jax.random.key(seed), key_tag)
        tracks, _ = _simulate_jit()(key, vtx, p3, q, bfield, resolution)
        params, cov = np.asarray(tracks.params)[:n], np.asarray(tracks.cov)[:n]
    start = 0
    for r, c in zip(jets, charged, strict=True):
        m = len(r["charge"])
        r["trk_params"] = np.zeros((m, 5))
        r["trk_cov"] = np.zeros((m, 5, 5))
        r["trk_params"][c] = params[start:start + len(c)]
        r["trk_cov"][c] = cov[start:start + len(c)]
        start += len(c)


@functools.cache
def _simulate_jit():
    """``vertex.simulate_tracks`` compiled once per process (JAX is imported lazily here)."""
    import jax


    return jax.jit(simulate_tracks)


def _branches(jets: list[dict]) -> tuple[dict, dict]:
    particles: dict[str, list] = {k: [] for k in (
        "part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi", "part_charge",
        "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
        "part_isMuon", "part_d0val", "part_d0err", "part_dzval", "part_dzerr", "part_pid",
        "part_vx", "part_vy", "part_vz", "part_origin", *TRACK_PARAMS, *TRACK_COV)}
    jet_cols: dict[str, list] = {k: [] for k in (
        "jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass",
        "label_b", "label_c", "label_uds", "label_Hbb", "label_signal", "event_id")}
    iu = np.triu_indices(5)
    counts = []
    for r in jets:
        p4, pid, q = r["p4"], np.abs(r["pid"]), r["charge"]
        lepton_e, lepton_mu = pid == 11, pid == 13
        photon = pid == 22
        charged = q != 0
        trk, cov = r.get("trk_params", np.zeros((len(q), 5))), r.get("trk_cov",
                                                                   np.zeros((len(q), 5, 5)))
        sig = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
        cols = {
            "part_px": p4[:, 1], "part_py": p4[:, 2], "part_pz": p4[:, 3],
            "part_energy": p4[:, 0], "part_deta": r["deta"], "part_dphi": r["dphi"],
            "part_charge": q,
            "part_isChargedHadron": charged & ~lepton_e & ~lepton_mu,
            "part_isNeutralHadron": ~charged & ~photon,
            "part_isPhoton": photon, "part_isElectron": lepton_e, "part_isMuon": lepton_mu,
            "part_d0val": trk[:, 0], "part_d0err": sig[:, 0],
            "part_dzval": trk[:, 1], "part_dzerr": sig[:, 1],
            "part_pid": r["pid"],
            "part_vx": r["vertex"][:, 0], "part_vy": r["vertex"][:, 1],
            "part_vz": r["vertex"][:, 2], "part_origin": r["origin"],
        }
        for k, name in enumerate(TRACK_PARAMS):
            cols[name] = trk[:, k]
        for k, name in enumerate(TRACK_COV):
            cols[name] = cov[:, iu[0][k], iu[1][k]]
        for name, col in cols.items():
            col = np.asarray(col)
            particles[name].append(col.astype(np.float32) if col.dtype == bool else col)
        counts.append(len(q))
        for name, value in zip(jet_cols, (*r["jet"], *r["labels"].values(), r["event"]),
                               strict=True):
            jet_cols[name].append(value)
    import awkward as ak

    particles = {k: ak.unflatten(np.concatenate(v), counts) for k, v in particles.items()}
    jet_arrays = {k: np.asarray(v, dtype=np.int32 if k in ("jet_nparticles", "event_id")
                                else (np.bool_ if k.startswith("label") else np.float64))
                  for k, v in jet_cols.items()}
    return particles, jet_arrays


def generate(
    sample: str,
    events: int,
    seed: int,
    out,
    *,
    workers: int = 1,
    bfield: float = 2.0,
    resolution=None,
    progress: bool = True,
    overwrite: bool = False,
    bb_fraction: float = 0.0,
) -> GenerationReport:
    """Generate ``events`` events of ``sample`` and write their jets to the JetClass-schema
    ROOT file ``out`` (one entry per jet, see :data:`SAMPLES`).

    Args:
      sample: ``"zpole"`` (e+e- -> Z -> q q~ at 91.1876 GeV, two exclusive Durham jets),
        ``"hh4b"`` (half X -> h h -> 4b signal, half QCD with pTHat > 300 GeV; anti-kT R = 0.8
        jets with pT > 300 GeV, |eta| < 2, up to 3 per event), or one half of it.
      events: number of events (> 0); the file holds their jets.
      seed: user seed; the output is a deterministic function of (sample, events, seed).
      out: output path; an existing file raises ``FileExistsError`` unless ``overwrite``.
      workers: processes generating chunks of ``CHUNK_EVENTS`` events in parallel.
      bfield: solenoid field (T) for the track helices.
      resolution: :class:`difphys.vertex.TrackResolution` (default model when None).
      progress: a progress bar over events (True, False or a bar factory; :mod:`difphys.progress`).
      bb_fraction: for ``"hh4b"``, the fraction of the QCD half generated as QCD b b~
        (``hh4b_qcd_bb``: ``HardQCD:hardbbbar``), so that the background has b jets and the
        event task needs more than a displaced-track count; 0 keeps the inclusive QCD half.

    Returns: a :class:`GenerationReport` (events per second included).
    """

    if sample not in SAMPLES:
        raise ValueError(f"unknown sample {sample!r}; known: {sorted(SAMPLES)}")
    if events < 1:
        raise ValueError(f"events must be positive; got {events}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if not 0.0 <= bb_fraction <= 1.0:
        raise ValueError(f"bb_fraction must lie in [0, 1]; got {bb_fraction}")
    if bb_fraction and sample != "hh4b":
        raise ValueError(f"bb_fraction is for the hh4b sample; got sample {sample!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    plan = [(*p, seed) for p in _plan(sample, events, bb_fraction)]
    results: dict[int, dict] = {}
    t0 = time.perf_counter()
    bar = progress_bar(progress, total=events, desc=f"generate {sample}", unit="ev")
    if workers == 1:
        for i, task in enumerate(plan):
            results[i] = _run_chunk(task)
            bar.update(task[3])
    else:
        ctx = mp.get_context("spawn")  # JAX in the parent is multithreaded: never fork it
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_run_chunk, task): i for i, task in enumerate(plan)}
            for fut in cf.as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(plan[futures[fut]][3])
    bar.close()
    jets: list[dict] = []
    for i in range(len(plan)):
        chunk_jets = results[i]["jets"]
        _smear_tracks(chunk_jets, seed, i, bfield, resolution)
        jets.extend(chunk_jets)
    if not jets:
        raise RuntimeError(f"no jets passed the {sample!r} selection in {events} events")
    particles, jet_arrays = _branches(jets)
    write_jetclass(out, particles, jet_arrays, overwrite=overwrite)
    generated = sum(r["generated"] for r in results.values())
    return GenerationReport(out, events, generated, len(jets), time.perf_counter() - t0)
