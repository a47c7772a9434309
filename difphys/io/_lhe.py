"""Les Houches Event files (Alwall et al., hep-ph/0609017) for unweighted parton-level events,
written through ``pylhe`` (2.x); a name ending in ``.gz`` is gzip-compressed.

:func:`process_events` turns a compiled process's momenta into event records: one
leading-colour flow per event (:func:`difphys.amplitudes.sample_colour_flow`), status-2
resonances with their mothers (decay chains always; other unstable propagators within
``bwcutoff`` widths of the pole, as MadGraph writes them), the scale and couplings used.
:func:`write_lhe` writes records with a header holding the generator, the process string and
the param card (``<slha>``).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from ..amplitudes import SMParams, colour_flows, sample_colour_flow
from ..amplitudes._particles import PARTICLES
from ..amplitudes._resonances import BW_CUTOFF, select_resonances


class EventRecord(NamedTuple):
    """One LHE event: ``n`` lines, incoming first (1-based ``mothers``, 0 for none).

    Attributes:
      pdg: (n,) PDG ids; status: (n,) -1 incoming, 2 resonance, 1 final; mothers: (n, 2);
      colours: (n, 2) colour and anticolour tags; momenta: (n, 4) (E, px, py, pz) in GeV;
      scale: the event's scale (GeV); alpha_qed, alpha_qcd: the couplings used;
      process_id: the subprocess's id (``<init>`` has one line per id).
    """

    pdg: np.ndarray
    status: np.ndarray
    mothers: np.ndarray
    colours: np.ndarray
    momenta: np.ndarray
    scale: float
    alpha_qed: float
    alpha_qcd: float
    process_id: int = 1


def _mass(p):
    return np.sqrt(np.maximum(p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1), 0.0))


def _resonance_colour(tags):
    """(colour, anticolour) left over by a resonance's final-state descendants' tags."""
    cols = [int(c) for c in tags[:, 0] if c]
    acols = [int(a) for a in tags[:, 1] if a]
    open_cols = [c for c in cols if c not in acols]
    open_acols = [a for a in acols if a not in cols]
    return open_cols, open_acols


def process_events(proc, momenta, *, key, params=None, scale=None, bwcutoff: float = BW_CUTOFF,
                   process_id: int = 1, batch_size: int = 4096) -> list[EventRecord]:
    """LHE event records for events of a compiled :class:`difphys.amplitudes.Process`.

    Args:
      proc: the process (``difphys.amplitudes.process(...)``).
      momenta: (n_events, n_external, 4) in GeV, incoming first, in the frame to write (the lab
        frame for hadron colliders: incoming partons carry ``x E_beam``).
      key: draws the colour flow of each event.
      params: the ``SMParams`` used (alpha_s and alpha_EM are written per event).
      scale: per-event scale (n_events,) or a number in GeV (default: the partonic sqrt(s)).
      bwcutoff: an optional resonance is written when its mass is within this many widths.
    Raises ``NotImplementedError`` when the process's colour flows cannot be assigned.
    """
    params = SMParams() if params is None else params
    p = np.asarray(momenta, np.float64)
    n_ext = proc.n_external
    if p.ndim != 3 or p.shape[1:] != (n_ext, 4):
        raise ValueError(f"momenta must be (n_events, {n_ext}, 4) for {proc.name!r}; got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("momenta contain NaN or infinite values")
    flows = colour_flows(proc)
    picks = []
    for k, start in enumerate(range(0, p.shape[0], batch_size)):
        chunk = jax.numpy.asarray(p[start:start + batch_size])
        picks.append(np.asarray(sample_colour_flow(jax.random.fold_in(key, k), proc, chunk,
                                                   params)))
    flow = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    total = p[:, :2].sum(axis=1)
    if scale is None:
        scales = _mass(total)
    else:
        scales = np.broadcast_to(np.asarray(scale, np.float64), (p.shape[0],))
    chosen = select_resonances(proc, p, params, bwcutoff)
    pdg = np.array([q.pdg for q in proc.particles], np.int64)
    alpha_qed, alpha_qcd = 1.0 / float(params.aEWM1), float(params.aS)
    records = []
    for ev in range(p.shape[0]):
        tags = flows.tags[flow[ev]]
        res = []
        for r in chosen[ev]:
            cols, acols = _resonance_colour(tags[list(r.legs)])
            colour = _open_tags(r.particle)
            if (len(cols), len(acols)) == colour:
                res.append((r, (cols[0] if cols else 0, acols[0] if acols else 0)))
        n_lines = n_ext + len(res)
        line_of_leg = {i: (i if i < 2 else i + len(res)) for i in range(n_ext)}
        ids = np.zeros(n_lines, np.int64)
        status = np.zeros(n_lines, np.int64)
        mothers = np.zeros((n_lines, 2), np.int64)
        colours = np.zeros((n_lines, 2), np.int64)
        mom = np.zeros((n_lines, 4))

        def enclosing(legs, res=res):
            """1-based line of the smallest written resonance strictly containing ``legs``."""
            best = None
            for j, (r, _) in enumerate(res):
                if set(legs) < set(r.legs) and (best is None or len(r.legs) < len(best[1])):
                    best = (j, r.legs)
            return (2 + best[0] + 1, 2 + best[0] + 1) if best else (1, 2)

        for i in range(n_ext):
            line = line_of_leg[i]
            ids[line], mom[line], colours[line] = pdg[i], p[ev, i], tags[i]
            status[line] = -1 if i < 2 else 1
            mothers[line] = (0, 0) if i < 2 else enclosing((i,))
        for j, (r, colour) in enumerate(res):
            line = 2 + j
            ids[line] = PARTICLES[r.particle].pdg
            status[line] = 2
            mom[line] = p[ev, list(r.legs)].sum(axis=0)
            colours[line] = colour
            mothers[line] = enclosing(r.legs)
        records.append(EventRecord(ids, status, mothers, colours, mom, float(scales[ev]),
                                   alpha_qed, alpha_qcd, process_id))
    return records


def _open_tags(name: str) -> tuple[int, int]:
    """(number of open colour tags, of anticolour tags) a particle ``name`` carries."""
    part = PARTICLES[name]
    if part.colour == 1:
        return (0, 0)
    if part.colour == 8:
        return (1, 1)
    return (1, 0) if part.kind == "fermion" else (0, 1)


def write_lhe(path, events, *, beams, beam_energies, sigma_pb: float, error_pb: float,
              process: str = "", params=None, overwrite: bool = False, info: dict | None = None,
              pdf_ids=(0, 0)) -> Path:
    """Write unweighted events to a Les Houches Event file (version 3.0) through pylhe.

    Args:
      path: output file (``.lhe`` or ``.lhe.gz``); an existing file raises ``FileExistsError``
        unless ``overwrite``.
      events: :class:`EventRecord` list (:func:`process_events`).
      beams: PDG ids of the two beams (2212 for protons, the leptons for a lepton collider);
      beam_energies: their energies in GeV.
      sigma_pb, error_pb: the cross section and its error (pb), in ``<init>``; every event has
        the weight ``sigma_pb`` (unweighted events, IDWTUP = 3).
      process: the process string, written in the header; ``params``: the ``SMParams`` whose
        param card goes into ``<slha>``; ``info``: more ``key: value`` header lines (after
        them: the versions of :data:`difphys.provenance.PACKAGES`, the device and the git
        commit, :func:`difphys.provenance.provenance`);
      pdf_ids: LHAPDF ids of the beams' PDF sets (0: none or unknown).
    """
    import pylhe

    from .. import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (or --overwrite) to replace it")
    events = list(events)
    if not events:
        raise ValueError("no events to write")
    for name, value, strict in (("sigma_pb", sigma_pb, True), ("error_pb", error_pb, False)):
        v = float(value)
        if not (math.isfinite(v) and (v > 0 if strict else v >= 0)):
            raise ValueError(f"{name} must be finite and {'> 0' if strict else '>= 0'} (pb); "
                             f"got {value!r}")
    if len(beam_energies) != 2 or not all(math.isfinite(float(e)) and float(e) > 0
                                          for e in beam_energies):
        raise ValueError(f"beam_energies must be two finite positive energies (GeV); "
                         f"got {beam_energies!r}")
    for k, ev in enumerate(events):
        if not np.all(np.isfinite(np.asarray(ev.momenta))):
            raise ValueError(f"event {k} has NaN or infinite momenta")
    params = SMParams() if params is None else params
    ids = sorted({ev.process_id for ev in events})
    counts = {i: sum(ev.process_id == i for ev in events) for i in ids}
    proc_info = [pylhe.LHEProcInfo(xSection=sigma_pb * counts[i] / len(events),
                                   error=error_pb * counts[i] / len(events),
                                   unitWeight=sigma_pb, procId=i) for i in ids]
    init = pylhe.LHEInit(
        initInfo=pylhe.LHEInitInfo(beamA=int(beams[0]), beamB=int(beams[1]),
                                   energyA=float(beam_energies[0]),
                                   energyB=float(beam_energies[1]), PDFgroupA=0, PDFgroupB=0,
                                   PDFsetA=int(pdf_ids[0]), PDFsetB=int(pdf_ids[1]),
                                   weightingStrategy=3, numProcesses=len(ids)),
        procInfo=proc_info,
        generators=[pylhe.LHEGenerator(name="difphys", version=__version__,
                                       description=process)],
    )
    run = ET.Element("difphys")
    from ..provenance import provenance

    prov = provenance()
    lines = [f"process = {process}"] + [f"{k} = {v}" for k, v in (info or {}).items()
                                          if v is not None]
    lines += [f"{k} = {v}" for k, v in prov["versions"].items()]
    lines += [f"device = {prov['device_count']} x {prov['device_kind']} "
              f"({prov['device_platform']}, {prov['process_count']} process(es))",
              f"git_commit = {prov['git_commit']}", f"created = {prov['created']}"]
    run.text = "\n" + "\n".join(lines) + "\n"
    slha = ET.Element("slha")
    slha.text = "\n" + params.param_card_text()
    header = pylhe.LHEHeader(initrwgt=pylhe.LHEInitRWGT(entries=[]), extra_elements=[run, slha])

    def lhe_events():
        for ev in events:
            m = _mass(ev.momenta)
            particles = [
                pylhe.LHEParticle(id=int(ev.pdg[i]), status=int(ev.status[i]),
                                  mother1=int(ev.mothers[i, 0]), mother2=int(ev.mothers[i, 1]),
                                  color1=int(ev.colours[i, 0]), color2=int(ev.colours[i, 1]),
                                  px=float(ev.momenta[i, 1]), py=float(ev.momenta[i, 2]),
                                  pz=float(ev.momenta[i, 3]), e=float(ev.momenta[i, 0]),
                                  m=float(m[i]), lifetime=0.0, spin=9.0)
                for i in range(len(ev.pdg))
            ]
            info_ = pylhe.LHEEventInfo(nparticles=len(particles), pid=int(ev.process_id),
                                       weight=float(sigma_pb), scale=float(ev.scale),
                                       aqed=float(ev.alpha_qed), aqcd=float(ev.alpha_qcd))
            yield pylhe.LHEEvent(eventinfo=info_, particles=particles)

    path.parent.mkdir(parents=True, exist_ok=True)
    # an XML comment may not contain "--" (a process string with "-->" would end it early)
    comment = f"generated by difphys {__version__}: {process}".replace("--", "- -")
    lhe = pylhe.LesHouchesEvents(init=init, events=lhe_events(), header=header, comment=comment)
    # write next to the target and rename: an interrupted write never leaves a truncated
    # file under ``path`` (nor destroys the file that ``overwrite`` replaces)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        lhe.tofile(str(partial), _lhe_format(path))
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def _lhe_format(path: Path):
    """pylhe's XML format with MadGraph's precision (11 digits for momenta and masses; pylhe
    writes 8 by default, too few for the mass of a 1 TeV system)."""
    import pylhe

    particle = ("{id:9d} {status:2d} {mother1:4d} {mother2:4d} {color1:4d} {color2:4d} "
                "{px:+.11e} {py:+.11e} {pz:+.11e} {e:.11e} {m:.11e} {lifetime:.4e} {spin:.4e}")
    eventinfo = ("{nparticles:2d} {pid:4d} {weight:+.11e} {scale:.11e} {aqed:.11e} "
                 "{aqcd:.11e}")
    return pylhe.LHEXMLFormat(particle=particle, eventinfo=eventinfo,
                              compress=path.name.endswith((".gz", ".gzip")))
