"""JetClass-schema ROOT I/O: write with uproot, read back dense, ParT features."""

import numpy as np
import pytest

from difphys import io


def _synthetic_jets(rng, n_jets):
    """Massless particles around a jet axis; jet four-momentum = sum of its particles."""
    parts = {k: [] for k in io.PARTICLE_BRANCHES}
    jets = {k: [] for k in io.JET_BRANCHES}
    for _ in range(n_jets):
        n = int(rng.integers(1, 40))
        pt = rng.exponential(10.0, n) + 0.5
        eta0, phi0 = rng.uniform(-2, 2), rng.uniform(-np.pi, np.pi)
        eta = eta0 + rng.normal(0, 0.2, n)
        phi = phi0 + rng.normal(0, 0.2, n)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        e = pt * np.cosh(eta)
        jpx, jpy, jpz, je = px.sum(), py.sum(), pz.sum(), e.sum()
        jpt = np.hypot(jpx, jpy)
        jeta, jphi = np.arcsinh(jpz / jpt), np.arctan2(jpy, jpx)
        charge = rng.choice([-1.0, 0.0, 1.0], n)
        values = {
            "part_px": px, "part_py": py, "part_pz": pz, "part_energy": e,
            "part_deta": eta - jeta, "part_dphi": np.angle(np.exp(1j * (phi - jphi))),
            "part_charge": charge, "part_isChargedHadron": (charge != 0).astype(float),
            "part_isNeutralHadron": (charge == 0).astype(float),
            "part_isPhoton": np.zeros(n), "part_isElectron": np.zeros(n), "part_isMuon": np.zeros(n),
            "part_d0val": rng.normal(0, 0.1, n), "part_d0err": rng.uniform(0, 2, n),
            "part_dzval": rng.normal(0, 0.1, n), "part_dzerr": rng.uniform(0, 2, n),
        }
        for k in parts:
            parts[k].append(values[k])
        for k, v in zip(io.JET_BRANCHES, (jpt, jeta, jphi, je, n, 10.0), strict=True):
            jets[k].append(v)
    jets["label_b"] = rng.integers(0, 2, n_jets).astype(bool)
    return parts, {k: np.asarray(v) for k, v in jets.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("jetclass")
    out = []
    for i, n in enumerate((23, 17)):
        parts, jets = _synthetic_jets(rng, n)
        out.append((io.write_jetclass(d / f"jets{i}.root", parts, jets), parts, jets))
    return out


def test_round_trip_dense_padding_and_mask(files):
    path, parts, jets = files[0]
    batch = io.read_jetclass(path, max_particles=16)
    n = jets["jet_nparticles"]
    assert batch["part_px"].shape == (23, 16) and batch["mask"].shape == (23, 16)
    np.testing.assert_array_equal(batch["mask"].sum(1), np.minimum(n, 16))
    for j in range(23):
        k = min(int(n[j]), 16)
        np.testing.assert_allclose(batch["part_px"][j, :k], parts["part_px"][j][:k], rtol=1e-12)
        assert np.all(batch["part_px"][j, k:] == 0)
    np.testing.assert_allclose(batch["jet_pt"], jets["jet_pt"])
    np.testing.assert_array_equal(batch["label_b"], jets["label_b"])


def test_many_files_and_chunks_equal_one_read(files):
    paths = [f[0] for f in files]
    whole = io.read_jetclass(paths, ["part_energy", "jet_pt"], max_particles=32)
    chunks = list(io.iterate_jetclass(paths, ["part_energy", "jet_pt"], max_particles=32,
                                      step_size=7))
    assert len(chunks) >= 4 and all(len(c["jet_pt"]) <= 7 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c["part_energy"] for c in chunks]),
                                  whole["part_energy"])
    assert whole["jet_pt"].shape == (40,)


def test_part_features_match_their_definitions(files):
    path, parts, jets = files[1]
    batch = io.read_jetclass(path, max_particles=64)
    feats = io.part_features(batch)
    assert feats.shape == (17, 64, 17) and feats.dtype == np.float32
    assert np.all(feats[~batch["mask"]] == 0)
    j, i = 3, 0
    pt = np.hypot(parts["part_px"][j][i], parts["part_py"][j][i])
    e = parts["part_energy"][j][i]
    col = {name: feats[j, i, k] for k, name in enumerate(io.PART_FEATURES)}
    assert col["part_pt_log"] == pytest.approx((np.log(pt) - 1.7) * 0.7, rel=1e-5)
    assert col["part_e_log"] == pytest.approx((np.log(e) - 2.0) * 0.7, rel=1e-5)
    assert col["part_logptrel"] == pytest.approx((np.log(pt / jets["jet_pt"][j]) + 4.7) * 0.7,
                                                 rel=1e-5)
    dr = np.hypot(parts["part_deta"][j][i], parts["part_dphi"][j][i])
    assert col["part_deltaR"] == pytest.approx((dr - 0.2) * 4.0, rel=1e-5, abs=1e-6)
    assert col["part_d0err"] == pytest.approx(min(parts["part_d0err"][j][i], 1.0), rel=1e-6)
    # the jet is the sum of its particles: sum of pT fractions weighted by cos(dphi) ~ 1
    frac = np.exp(feats[j, :, 2] / 0.7 - 4.7) * batch["mask"][j]
    assert np.sum(frac * np.cos(batch["part_dphi"][j])) == pytest.approx(1.0, rel=1e-5)


def test_errors(files, tmp_path):
    path = files[0][0]
    with pytest.raises(KeyError, match="part_nonsense"):
        io.read_jetclass(path, ["part_nonsense"])
    with pytest.raises(FileNotFoundError):
        io.read_jetclass(tmp_path / "missing.root")
    with pytest.raises(ValueError, match="no input"):
        io.read_jetclass([])
    with pytest.raises(KeyError, match="jet_energy"):
        io.part_features(io.read_jetclass(path, list(io.PARTICLE_BRANCHES) + ["jet_pt"]))
    with pytest.raises(FileExistsError):
        io.write_jetclass(path, {}, {"jet_pt": np.ones(2)})
    with pytest.raises(ValueError, match="number of jets"):
        io.write_jetclass(tmp_path / "bad.root", {"part_px": [[1.0]]}, {"jet_pt": np.ones(2)})


def test_bad_files_and_values(files, tmp_path):
    path = files[0][0]
    batch = io.read_jetclass(path)
    nan_batch = {k: v.copy() for k, v in batch.items()}
    nan_batch["part_px"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        io.part_features(nan_batch)
    # files of different schemas
    other = tmp_path / "other.root"
    io.write_jetclass(other, {"part_px": [[1.0, 2.0]]}, {"jet_pt": np.ones(1)})
    with pytest.raises(ValueError, match="different schemas"):
        io.read_jetclass([path, other])
    with pytest.raises(KeyError, match="part_py"):
        io.read_jetclass([path, other], ["part_px", "part_py"])
    # a ROOT file without the JetClass tree
    import uproot

    with uproot.recreate(tmp_path / "notjc.root") as f:
        f["events"] = {"x": np.ones(3)}
    with pytest.raises(KeyError, match="no tree"):
        io.read_jetclass(tmp_path / "notjc.root")
    # empty jets and non-exclusive labels in load_jets
    empty = tmp_path / "empty.root"
    parts = {name: [[], [1.0]] for name in io.PARTICLE_BRANCHES}
    io.write_jetclass(empty, parts, {"jet_pt": np.ones(2), "jet_energy": np.ones(2),
                                     "label_a": np.array([1, 0]), "label_b": np.array([0, 1])})
    with pytest.raises(ValueError, match="no particles"):
        io.load_jets(empty, ["label_a", "label_b"])
