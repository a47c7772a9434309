"""Colour flows, resonances and LHE files for compiled processes; Pythia 8 showers them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from difphys import amplitudes as amp
from difphys.io import EventRecord, process_events, write_lhe

pythia8mc = pytest.importorskip("pythia8mc")
pylhe = pytest.importorskip("pylhe")

PDF_NAME = "NNPDF23_lo_as_0130_qed"


def _points(proc, n, key, sqrt_s):
    u = jax.random.uniform(key, (n, proc.phase_space_dim), jnp.float64, 1e-6, 1 - 1e-6)
    momenta, _ = proc.phase_space(u, sqrt_s)
    return momenta


# MadGraph's number of leading-colour flows (NCOLOR of its generated code) for these processes
@pytest.mark.parametrize("name, n_flows", [
    ("g g > t t~", 2), ("g g > t t~ g", 6), ("u u~ > t t~ g", 4), ("g g > g g", 6),
    ("u u~ > d d~", 2), ("e+ e- > u u~ g", 1), ("g u > t t~ u", 4), ("u u > t t~ u u", 6),
])
def test_colour_flows_reproduce_the_full_colour_sum(name, n_flows):
    """``J = A P`` re-expands the amplitude exactly: ``sum_h J G J^dag`` x average is |M|^2."""
    proc = amp.process(name)
    flows = amp.colour_flows(proc)
    assert flows.n_flows == n_flows
    p = _points(proc, 6, jax.random.key(3), 1500.0)
    a = np.asarray(proc.helicity_amplitudes(p))
    jamp = a @ flows.projection
    full = np.einsum("ehs,st,eht->e", jamp, flows.gram, jamp.conj()).real * proc.average
    np.testing.assert_allclose(full, np.asarray(proc(p)), rtol=1e-10)
    w = np.asarray(amp.colour_flow_weights(proc, p))
    np.testing.assert_allclose(w, np.sum(np.abs(jamp) ** 2, axis=1), rtol=1e-12)


@pytest.mark.parametrize("name, madgraph_cf", [
    # madgraph4gpu epochX/cudacpp/gg_tt.sa and gg_ttg.sa, color_sum.cc: colorMatrix / colorDenom
    ("g g > t t~", np.array([[16, -2], [-2, 16]]) / 3),
    ("g g > t t~ g", np.array([[64, -8, -8, 1, 1, 10], [-8, 64, 1, 10, -8, 1],
                               [-8, 1, 64, -8, 10, 1], [1, 10, -8, 64, 1, -8],
                               [1, -8, 10, 1, 64, -8], [10, 1, 1, -8, -8, 64]]) / 9),
])
def test_flow_colour_matrix_is_madgraphs(name, madgraph_cf):
    """The flows' Gram matrix is MadGraph's colour matrix (its spectrum: the flow order and
    signs of MadGraph's JAMPs are conventions)."""
    gram = amp.colour_flows(amp.process(name)).gram
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(gram)),
                               np.sort(np.linalg.eigvalsh(madgraph_cf)), atol=1e-12)


def _check_tags(tags, n_incoming=2):
    """Each tag joins exactly two slots: incoming colour to outgoing colour (or to incoming
    anticolour), outgoing colour to outgoing anticolour, ..."""
    slots = Counter()
    for i, (c, a) in enumerate(tags):
        incoming = i < n_incoming
        if c:
            slots[c] += 1 if incoming else -1
        if a:
            slots[a] += -1 if incoming else 1
    counts = Counter(int(t) for t in tags.reshape(-1) if t)
    assert all(v == 2 for v in counts.values()), counts
    assert all(v == 0 for v in slots.values()), slots  # colour in = colour out, per line


@pytest.mark.parametrize("name", ["g g > t t~ g g", "u u~ > t t~ g", "g u > t t~ u",
                                  "u u > t t~ u u", "g g > g g g", "u d~ > t t~ w+"])
def test_every_flow_conserves_colour(name):
    flows = amp.colour_flows(amp.process(name))
    for tags in flows.tags:
        _check_tags(tags)
    coloured = [i for i, p in enumerate(amp.process(name).particles) if p.colour != 1]
    assert all(np.any(flows.tags[:, i] != 0) for i in coloured)


def test_colour_flow_frequencies_follow_the_colour_ordered_amplitudes():
    """gg > tt~g: the flows written to LHE records occur with frequencies |J_s|^2 / sum, within
    3 sigma per flow (binomial, summed over events)."""
    proc = amp.process("g g > t t~ g")
    n_points, repeats = 40, 150
    p = _points(proc, n_points, jax.random.key(0), 1000.0)
    w = np.asarray(amp.colour_flow_weights(proc, p))
    prob = w / w.sum(axis=1, keepdims=True)
    tiled = np.repeat(np.asarray(p), repeats, axis=0)
    records = process_events(proc, tiled, key=jax.random.key(1))
    flows = amp.colour_flows(proc)
    lookup = {flows.tags[s].tobytes(): s for s in range(flows.n_flows)}
    observed = np.bincount([lookup[r.colours.tobytes()] for r in records],
                           minlength=flows.n_flows)
    expected = repeats * prob.sum(axis=0)
    sigma = np.sqrt(repeats * np.sum(prob * (1 - prob), axis=0))
    assert np.all(np.abs(observed - expected) < 3 * sigma), (observed, expected, sigma)
    assert prob.max(axis=0).min() > 0.05  # every flow matters somewhere


def test_resonances_of_full_and_decay_chain_processes():
    full = {(r.legs, r.particle) for r in amp.resonances(amp.process("e+ e- > w+ b w- b~"))}
    assert ((2, 3), "t") in full and ((4, 5), "t~") in full
    chain = amp.resonances(amp.process("e+ e- > t t~, t > w+ b, t~ > w- b~"))
    assert {(r.legs, r.particle) for r in chain if r.forced} == {((2, 3), "t"), ((4, 5), "t~")}
    assert amp.resonances(amp.process("g u > t t~ u")) == ()  # no s-channel unstable particle
    # t* > t g is radiation, never written as a resonance
    assert all(r.particle not in ("t", "t~") for r in amp.resonances(amp.process("g g > t t~ g")))


def test_process_events_records(tmp_path):
    proc = amp.process("e+ e- > w+ b w- b~")
    params = amp.SMParams()
    p = _points(proc, 60, jax.random.key(2), 500.0)  # Breit-Wigner map: mostly resonant tops
    records = process_events(proc, p, key=jax.random.key(0), params=params)
    tops = 0
    for rec, mom in zip(records, np.asarray(p), strict=True):
        assert isinstance(rec, EventRecord)
        finals = rec.status == 1
        np.testing.assert_allclose(rec.momenta[finals], mom[2:], rtol=1e-12)
        for line in np.flatnonzero(rec.status == 2):  # a resonance is the sum of its daughters
            daughters = np.flatnonzero((rec.mothers[:, 0] == line + 1) & (rec.status != -1))
            np.testing.assert_allclose(rec.momenta[daughters].sum(0), rec.momenta[line],
                                       rtol=1e-12, atol=1e-9)
            m = np.sqrt(rec.momenta[line, 0] ** 2 - np.sum(rec.momenta[line, 1:] ** 2))
            if abs(rec.pdg[line]) == 6:
                tops += 1
                assert abs(m - float(params.MT)) <= amp.BW_CUTOFF * float(params.WT) + 1e-9
        _check_tags(rec.colours[rec.status != 2])
        assert rec.alpha_qcd == pytest.approx(0.118)
        assert rec.scale == pytest.approx(500.0)
    assert tops > 60  # most events have both tops on the Breit-Wigner peak


def test_bad_lhe_requests(tmp_path):
    proc = amp.process("e+ e- > mu+ mu-")
    with pytest.raises(ValueError, match="n_events"):
        process_events(proc, np.zeros((3, 3, 4)), key=jax.random.key(0))
    bad = np.asarray(_points(proc, 2, jax.random.key(0), 200.0)).copy()
    bad[0, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        process_events(proc, bad, key=jax.random.key(0))
    with pytest.raises(ValueError, match="no events"):
        write_lhe(tmp_path / "x.lhe", [], beams=(-11, 11), beam_energies=(100, 100),
                  sigma_pb=1.0, error_pb=0.1)


def _hadronic_ttbar_records(n):
    pdf = amp_pdf()
    procs = amp.process("p p > t t~")
    gg = next(s for s in procs if s.incoming == ("g", "g"))
    uu = next(s for s in procs if s.incoming == ("u", "u~"))
    out = []
    for k, sub in enumerate((gg, uu)):
        u = jax.random.uniform(jax.random.key(k), (n, sub.phase_space_dim + 2), jnp.float64,
                               1e-6, 1 - 1e-6)
        momenta, w = amp.hadronic_integrand(sub, pdf, u, 13000.0, amp.SMParams(), 173.0,
                                            (2212, 2212))
        out += process_events(sub, momenta, key=jax.random.key(10 + k), scale=173.0,
                              process_id=k + 1)
    return out


def amp_pdf():
    from difphys import pdf

    return pdf.load(PDF_NAME, alpha_s=0.130)


_SHOWER = textwrap.dedent("""
    import sys, pythia8mc
    py = pythia8mc.Pythia("", False)
    for s in ["Beams:frameType = 4", "Beams:LHEF = " + sys.argv[1], "Next:numberCount = 0",
              "PartonLevel:MPI = off", "Check:event = on"]:
        py.readString(s)
    assert py.init()
    n = tops = failed = 0
    while True:
        if not py.next():
            if py.infoPython().atEndOfFile():
                break
            failed += 1
            continue
        n += 1
        ev = py.process
        tops += sum(1 for i in range(ev.size()) if abs(ev[i].id()) == 6 and ev[i].isResonance()
                    and ev[i].status() < 0)
    print("RESULT", n, tops, failed)
""")


def _shower(path):
    out = subprocess.run([sys.executable, "-c", _SHOWER, str(path)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = [x for x in out.stdout.splitlines() if "PYTHIA Error" in x]
    n, tops, failed = (int(v) for v in out.stdout.split("RESULT")[1].split())
    return n, tops, failed, errors


@pytest.mark.parametrize("name", ["p p > t t~", "e+ e- > w+ b w- b~"])
def test_pythia_showers_lhe_files_and_finds_the_tops(tmp_path, name):
    """Files read back by pylhe; Pythia 8 (Beams:frameType = 4) showers and hadronises every
    event without an error and sees each top as a decayed resonance."""
    if name.startswith("p p"):
        records = _hadronic_ttbar_records(15)
        path = write_lhe(tmp_path / "pp_tt.lhe.gz", records, beams=(2212, 2212),
                         beam_energies=(6500.0, 6500.0), sigma_pb=560.0, error_pb=5.0,
                         process=name, info={"pdf": PDF_NAME})
        beams = (2212, 2212)
    else:
        proc = amp.process(name)
        records = process_events(proc, _points(proc, 30, jax.random.key(4), 500.0),
                                 key=jax.random.key(5))
        path = write_lhe(tmp_path / "ee.lhe", records, beams=(-11, 11),
                         beam_energies=(250.0, 250.0), sigma_pb=0.5, error_pb=0.01,
                         process=name)
        beams = (-11, 11)
    lhe = pylhe.LHEFile.fromfile(str(path))
    assert (lhe.init.initInfo.beamA, lhe.init.initInfo.beamB) == beams
    text = lhe.header.tolhe()
    assert "<slha>" in text and "BLOCK MASS" in text and name.replace(">", "&gt;") in text
    assert [g.name for g in lhe.init.generators] == ["difphys"]
    events = list(lhe.events)
    assert len(events) == len(records)
    for ev, rec in zip(events, records, strict=True):
        assert [int(q.id) for q in ev.particles] == rec.pdg.tolist()
        assert [int(q.color1) for q in ev.particles] == rec.colours[:, 0].tolist()
        assert ev.eventinfo.aqcd == pytest.approx(rec.alpha_qcd)
    n, tops, failed, errors = _shower(path)
    assert (n, failed, errors) == (len(records), 0, [])
    written_tops = sum(int(np.sum(np.abs(r.pdg[r.status == 2]) == 6)) for r in records)
    if name.startswith("p p"):
        assert tops == 2 * n  # final-state tops, decayed by Pythia as resonances
    else:
        assert written_tops > n and tops >= written_tops


def test_hadronic_target_sums_its_subprocesses():
    """The flows' target for ``p p > t t~`` is the sum of the subprocesses' integrands."""
    import equinox as eqx

    from difphys import flows

    pdf = amp_pdf()
    target = flows.matrix_element_target("p p > t t~", 13000.0, pdf=pdf, scale=173.0)
    assert target.dim == 4 and len(target.subprocesses) == 9
    u = jax.random.uniform(jax.random.key(0), (64, 4), jnp.float64, 1e-6, 1 - 1e-6)
    log_p = eqx.filter_jit(lambda t, x: t.log_prob(x))(target, u)
    # each subprocess compiled on its own (not through the set's generation-swap groups)
    parts = [amp.hadronic_integrand(amp.process(s.name), pdf, u, 13000.0, amp.SMParams(),
                                    173.0)[1] for s in target.subprocesses]
    np.testing.assert_allclose(np.exp(np.asarray(log_p)), np.sum(parts, axis=0), rtol=1e-12)
    _, split = target.subprocess_weights(u)
    np.testing.assert_allclose(np.asarray(split), np.stack(parts, -1), rtol=1e-12)
    with pytest.raises(ValueError, match="different final-state masses"):
        flows.matrix_element_target("define q = t b; define qb = t~ b~; g g > q qb", 1000.0, pdf=pdf, scale=100.0)


def test_generation_swapped_subprocesses_share_one_matrix_element():
    """c c~ > t t~ is u u~ > t t~ (massless, CKM = 1): the set compiles one |M|^2 per group,
    equal to each member compiled alone; u d~ > w+ g pairs with c s~ > w+ g, not u s~."""
    procs = amp.process("p p > t t~")
    assert len(procs.groups) == 5
    wj = amp.process("p p > w+ j")
    names = [s.name for s in wj]
    assert "u d~ > w+ g" in names and "c s~ > w+ g" in names and "u s~ > w+ g" not in names
    checks = [(procs, m) for _, members in procs.groups for m in members]
    checks.append((wj, names.index("c s~ > w+ g")))
    for procset, m in checks:
        sub = procset[m]
        rep = next(r for r, members in procset.groups if m in members)
        alone = amp.process(sub.name)
        p = _points(alone, 3, jax.random.key(m), 2000.0)
        np.testing.assert_allclose(np.asarray(sub(p)), np.asarray(alone(p)), rtol=1e-13)
        assert sub._squared_jit is rep._squared_jit


@pytest.mark.slow
def test_sample_cli_writes_a_proton_proton_file_pythia_showers(tmp_path, capsys):
    from difphys.cli import main

    out = tmp_path / "pp_tt.lhe.gz"
    assert main(["sample", "--process", "p p > t t~", "--sqrt-s", "13000", "--pdf", PDF_NAME,
                 "--alpha-s", "0.130", "--scale", "173", "--method", "vegas", "--steps", "5",
                 "--batch", "128", "--events", "40", "--calibration", "2000", "--out",
                 str(out), "--quiet"]) == 0
    assert "sigma" in capsys.readouterr().out
    lhe = pylhe.LHEFile.fromfile(str(out))
    assert (lhe.init.initInfo.beamA, lhe.init.initInfo.energyA) == (2212, 6500.0)
    events = list(lhe.events)
    assert len(events) == 40
    for ev in events:
        assert all(abs(q.id) in (1, 2, 3, 4, 21) for q in ev.particles if q.status == -1)
        assert ev.eventinfo.scale == pytest.approx(173.0)
    n, tops, failed, errors = _shower(out)
    assert (n, failed, errors, tops) == (40, 0, [], 80)
