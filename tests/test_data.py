"""Pythia 8 + FastJet samples: physics checks of generated files read back with difphys.io."""

import numpy as np
import pytest

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from difphys.data import (  # noqa: E402
    ORIGIN_B,
    ORIGIN_PRIMARY,
    generate,
    heavy_flavour,
)
from difphys.io import load_events, load_jets, read_jetclass  # noqa: E402

SQRT_S = 91.1876
#: R_b = Gamma(Z -> b b~) / Gamma(Z -> hadrons), PDG 2024: 0.21629 +- 0.00066.
R_B = 0.21629


@pytest.fixture
def zpole(zpole_sample):
    return zpole_sample


def test_two_jets_per_event_and_energy(zpole):
    report, jets = zpole
    assert report.generated == 5000 and report.jets == 10_000
    counts = np.bincount(jets["event_id"])
    assert np.all(counts == 2)
    e_sum = np.bincount(jets["event_id"], weights=jets["jet_energy"])
    # all visible particles are clustered: the sum is sqrt(s) minus the neutrinos' energy
    assert np.all(e_sum <= SQRT_S * (1 + 1e-9))
    assert np.median(e_sum) > 0.99 * SQRT_S
    assert np.mean(e_sum < 0.95 * SQRT_S) < 0.3  # semileptonic heavy-flavour decays
    assert np.all(jets["jet_nparticles"] >= 1)


def test_b_jet_fraction_is_r_b(zpole):
    """Each Z -> b b~ event gives two b jets (plus rare g -> b b~): the b-jet fraction is R_b.
    With 5000 events the standard error is about 0.006."""
    _, jets = zpole
    assert abs(jets["label_b"].mean() - R_B) < 0.02
    assert not np.any(jets["label_b"] & jets["label_c"])
    np.testing.assert_array_equal(jets["label_uds"], ~jets["label_b"] & ~jets["label_c"])


def test_b_decay_tracks_are_displaced(zpole):
    _, jets = zpole
    charged = jets["mask"] & (jets["part_charge"] != 0)
    d0 = np.abs(jets["part_d0val"])
    primary = d0[charged & (jets["part_origin"] == ORIGIN_PRIMARY)]
    from_b = d0[charged & (jets["part_origin"] == ORIGIN_B)]
    assert len(from_b) > 1000
    assert np.median(from_b) > 5 * np.median(primary)
    # true vertex of primary particles is the origin; b-decay products are displaced
    r = np.hypot(jets["part_vx"], jets["part_vy"])
    assert np.all(r[charged & (jets["part_origin"] == ORIGIN_PRIMARY)] < 1e-6)
    assert np.median(r[charged & (jets["part_origin"] == ORIGIN_B)]) > 0.5
    # neutral particles have no track
    neutral = jets["mask"] & (jets["part_charge"] == 0)
    assert np.all(jets["part_d0err"][neutral] == 0) and np.all(jets["part_d0err"][charged] > 0)


def test_particle_flags_are_exclusive_and_consistent(zpole):
    _, jets = zpole
    m = jets["mask"]
    flags = sum(jets[k] for k in ("part_isChargedHadron", "part_isNeutralHadron",
                                  "part_isPhoton", "part_isElectron", "part_isMuon"))
    np.testing.assert_array_equal(flags[m], 1.0)
    pid = np.abs(jets["part_pid"][m])
    assert np.all(jets["part_isPhoton"][m][pid == 22] == 1)
    k0s = pid == 310  # c tau = 26.8 mm > 10 mm: kept stable, a neutral hadron
    assert k0s.sum() > 100 and np.all(jets["part_isNeutralHadron"][m][k0s] == 1)
    # four-momenta are on shell and consistent with the jet axis
    e, px, py, pz = (jets[k][m] for k in ("part_energy", "part_px", "part_py", "part_pz"))
    assert np.all(e * e - px * px - py * py - pz * pz > -1e-6 * e * e)


def test_same_seed_same_file_whatever_the_workers(tmp_path):
    generate("zpole", 300, 5, tmp_path / "a.root", workers=1, progress=False)
    generate("zpole", 300, 5, tmp_path / "b.root", workers=2, progress=False)
    generate("zpole", 300, 6, tmp_path / "c.root", workers=1, progress=False)
    a, b, c = (read_jetclass(tmp_path / f"{x}.root") for x in "abc")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["jet_energy"], c["jet_energy"])
    with pytest.raises(FileExistsError, match="exists"):
        generate("zpole", 10, 5, tmp_path / "a.root", progress=False)


def test_hh4b_selection_and_higgs_jets(tmp_path):
    path = tmp_path / "hh.root"
    generate("hh4b", 60, 1, path, progress=False)
    jets = read_jetclass(path)
    assert np.all(jets["jet_pt"] > 300) and np.all(np.abs(jets["jet_eta"]) < 2)
    assert np.bincount(jets["event_id"]).max() <= 3
    sig = jets["label_signal"]
    assert 0 < sig.sum() < len(sig)
    higgs = sig & jets["label_Hbb"]
    assert higgs.sum() > 10
    # soft-drop mass of Higgs jets peaks near m_h = 125 GeV (neutrinos and out-of-cone
    # radiation pull it down); QCD jets sit far lower
    assert 90 < np.median(jets["jet_sdmass"][higgs]) < 135
    assert np.median(jets["jet_sdmass"][~sig]) < 60
    events = load_events(path)
    assert events["jets"].shape == (*events["jet_mask"].shape, 3)
    pt = events["jets"][..., 0]
    assert np.all(pt[events["jet_mask"]] > 300) and np.all(events["jets"][~events["jet_mask"]] == 0)


def test_bb_fraction_enriches_the_hh4b_background_with_b_jets(tmp_path):
    from difphys.data._generate import _plan

    # bb_fraction = 0 keeps the inclusive plan; otherwise the QCD half is split, events add up
    assert [c[0] for c in _plan("hh4b", 1000, 0.0)].count("hh4b_qcd_bb") == 0
    plan = _plan("hh4b", 1000, 0.5)
    per_sub = {s: sum(c[3] for c in plan if c[0] == s) for s in {c[0] for c in plan}}
    assert per_sub == {"hh4b_signal": 500, "hh4b_qcd": 250, "hh4b_qcd_bb": 250}
    ids = np.concatenate([np.arange(c[2], c[2] + c[3]) for c in plan])
    assert np.array_equal(np.sort(ids), np.arange(1000))
    with pytest.raises(ValueError, match="bb_fraction"):
        generate("zpole", 10, 1, tmp_path / "x.root", bb_fraction=0.5, progress=False)
    with pytest.raises(ValueError, match="bb_fraction"):
        generate("hh4b", 10, 1, tmp_path / "x.root", bb_fraction=1.5, progress=False)
    # QCD b b~ jets are b jets; inclusive QCD jets mostly are not (about 5%)
    generate("hh4b_qcd_bb", 40, 5, tmp_path / "bb.root", progress=False)
    generate("hh4b_qcd", 40, 5, tmp_path / "qcd.root", progress=False)
    bb, qcd = read_jetclass(tmp_path / "bb.root"), read_jetclass(tmp_path / "qcd.root")
    assert len(bb["label_b"]) > 30 and np.mean(bb["label_b"]) > 0.8
    assert np.mean(qcd["label_b"]) < 0.25 and not np.any(bb["label_signal"])


def test_load_jets_for_b_versus_light(zpole, tmp_path):
    report, _ = zpole
    data = load_jets(report.path, ["label_b", "label_uds"], max_particles=64)
    n = len(data["label"])
    assert data["features"].shape == (n, 64, 17) and data["p4"].shape == (n, 64, 4)
    assert 0.2 < np.mean(data["label"] == 0) < 0.3  # b among b + light
    with pytest.raises(KeyError, match="label_x"):
        load_jets(report.path, ["label_b", "label_x"])
    with pytest.raises(ValueError, match="two label"):
        load_jets(report.path, ["label_b"])


def test_heavy_flavour_codes():
    assert heavy_flavour(511) == 5 and heavy_flavour(-5122) == 5 and heavy_flavour(541) == 5
    assert heavy_flavour(421) == 4 and heavy_flavour(4122) == 4 and heavy_flavour(10411) == 4
    assert heavy_flavour(443) == 0 and heavy_flavour(553) == 0  # quarkonia: hidden flavour
    assert heavy_flavour(211) == 0 and heavy_flavour(5) == 0 and heavy_flavour(22) == 0
