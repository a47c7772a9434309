"""weaver-core YAML data configs (difphys.io.DataConfig): the arrays difphys builds from a
hand-written config equal a direct NumPy computation of the config's formulas, jet by jet;
parsing refuses what it cannot honour; ROOT and parquet inputs give the same arrays."""

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import yaml

from difphys.io import (
    DataConfig,
    auto_standardise,
    evaluate_chunk,
    file_chunks,
    iterate_files,
    read_chunk,
    read_fraction,
)

CONFIG = Path(__file__).parent / "data" / "zpole_full.yaml"
LENGTH = 64


@pytest.fixture(scope="module")
def zpole_file(zpole_files):
    """The first 3000 jets of the shared Z-pole sample, as a ROOT file and a parquet file."""
    folder, jets = zpole_files(3000, ["z"])
    pytest.importorskip("pyarrow")
    ak.to_parquet(jets, folder / "z.parquet", row_group_size=700)
    return folder / "z.root", folder / "z.parquet", jets


def _wrap(values, length):
    """weaver-core's wrap padding of one jet, written out: repeat the particles cyclically."""
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return np.zeros(length)
    return values[np.arange(length) % len(values)]


def _constant(values, length, pad):
    out = np.full(length, pad, np.float64)
    n = min(len(values), length)
    out[:n] = np.asarray(values, np.float64)[:n]
    return out


def _by_hand(jets):
    """The config's formulas evaluated jet by jet in plain NumPy (no awkward arithmetic):
    JetClass_full's 17 features with their centres/scales, clip to [-5, 5] (or [0, 1] for
    the d0/dz errors) where a centre is given, wrap padding; the mask padded with 0."""
    specs = [("pt_log", 1.7, 0.7, -5, 5), ("e_log", 2.0, 0.7, -5, 5),
             ("logptrel", -4.7, 0.7, -5, 5), ("logerel", -4.7, 0.7, -5, 5),
             ("deltaR", 0.2, 4.0, -5, 5), ("charge",), ("isChargedHadron",),
             ("isNeutralHadron",), ("isPhoton",), ("isElectron",), ("isMuon",), ("d0",),
             ("d0err", 0, 1, 0, 1), ("dz",), ("dzerr", 0, 1, 0, 1), ("deta",), ("dphi",)]
    rows = {"pf_features": [], "pf_vectors": [], "pf_mask": [], "pf_points": [], "label": []}
    for i in range(len(jets)):
        j = {k: np.asarray(jets[k][i]) for k in jets.fields}
        if not (j["jet_pt"] > 5 and j["jet_nparticles"] >= 2):
            continue
        pt = np.hypot(j["part_px"], j["part_py"])
        x = {"pt_log": np.log(pt), "e_log": np.log(j["part_energy"]),
             "logptrel": np.log(pt / j["jet_pt"]), "logerel": np.log(j["part_energy"] /
                                                                     j["jet_energy"]),
             "deltaR": np.hypot(j["part_deta"], j["part_dphi"]),
             "d0": np.tanh(j["part_d0val"]), "dz": np.tanh(j["part_dzval"])}
        cols = []
        for spec in specs:
            v = x.get(spec[0], j.get(f"part_{spec[0]}"))
            if len(spec) > 1:
                _, c, s, lo, hi = spec
                v = np.clip((v - c) * s, lo, hi)
            cols.append(_wrap(v, LENGTH))
        rows["pf_features"].append(np.stack(cols, -1))
        rows["pf_vectors"].append(np.stack([_wrap(j[f"part_{k}"], LENGTH) for k in
                                            ("px", "py", "pz", "energy")], -1))
        rows["pf_points"].append(np.stack([_wrap(j[f"part_{k}"], LENGTH) for k in
                                           ("deta", "dphi")], -1))
        rows["pf_mask"].append(_constant(np.ones(len(pt)), LENGTH, 0.0)[:, None])
        rows["label"].append(int(np.argmax([j["label_b"], j["label_c"], j["label_uds"]])))
    return {k: np.asarray(v) for k, v in rows.items()}


def test_hand_written_config_builds_the_formulas_of_its_text(zpole_file):
    """The acceptance check: features from the YAML equal the NumPy computation (1e-6)."""
    root, _, jets = zpole_file
    cfg = DataConfig.from_yaml(CONFIG)
    assert cfg.input_dim() == 17 and cfg.num_classes == 3
    (chunk,) = file_chunks([str(root)], 10_000)
    arrays = cfg.evaluate(read_chunk(chunk, cfg.branches()), training=True)
    want = _by_hand(jets)
    assert arrays["pf_features"].shape == (len(want["label"]), LENGTH, 17)
    for name in ("pf_features", "pf_vectors", "pf_points", "pf_mask"):
        np.testing.assert_allclose(arrays[name], want[name], rtol=1e-6, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_array_equal(arrays["label"], want["label"])
    # the selection dropped some jets (it is a real cut on these jets)
    assert 0 < len(jets) - len(want["label"])
    # the ParT batch: (E, px, py, pz), zero on padding, the mask from pf_mask
    batch = cfg.model_inputs(arrays)
    mask = want["pf_mask"][..., 0] > 0
    np.testing.assert_array_equal(batch["mask"], mask)
    np.testing.assert_allclose(batch["p4"][mask], want["pf_vectors"][mask][:, [3, 0, 1, 2]],
                               rtol=1e-6)
    assert not batch["features"][~mask].any() and not batch["p4"][~mask].any()
    np.testing.assert_array_equal(batch["jet_pt"], jets["jet_pt"].to_numpy()[
        (jets["jet_pt"].to_numpy() > 5) & (jets["jet_nparticles"].to_numpy() >= 2)])


def test_root_and_parquet_inputs_give_the_same_arrays(zpole_file):
    root, parquet, _ = zpole_file
    cfg = DataConfig.from_yaml(CONFIG)
    from difphys.io import concatenate

    a = concatenate([t for _, t in iterate_files(cfg, root, chunk_size=500)])
    b = concatenate([t for _, t in iterate_files(cfg, parquet, chunk_size=500)])
    # row groups of 700, 700, 700, 700, 200, each cut at 500 entries
    assert len(file_chunks([str(parquet)], 500)) == 4 * 2 + 1
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_auto_standardisation_is_weavers_median_and_quantile_rule(zpole_file):
    root, _, jets = zpole_file
    text = yaml.safe_load(CONFIG.read_text())
    text["preprocess"] = {"method": "auto", "data_fraction": 0.5}
    feats = text["inputs"]["pf_features"]["vars"]
    feats[0] = "part_pt_log"  # no centre given: computed from data
    feats[4] = ["part_deltaR"]
    cfg = DataConfig.from_dict(text)
    assert cfg.needs_auto
    with pytest.raises(ValueError, match="auto"):
        cfg.evaluate(read_chunk(file_chunks([str(root)], 100)[0], cfg.branches()))
    resolved = auto_standardise(cfg, lambda br: read_fraction(root, 0.5, br))
    half = jets[:1500]
    keep = (half["jet_pt"] > 5) & (half["jet_nparticles"] >= 2)
    pt = np.log(np.hypot(ak.flatten(half["part_px"][keep]), ak.flatten(half["part_py"][keep])))
    dr = np.hypot(ak.flatten(half["part_deta"][keep]), ak.flatten(half["part_dphi"][keep]))
    got = {v.name: v for v in resolved.inputs[1].vars}
    for name, values in (("part_pt_log", pt), ("part_deltaR", dr)):
        lo, c, hi = np.percentile(np.asarray(values), [16, 50, 84])
        assert got[name].centre == pytest.approx(c, rel=1e-12)
        assert got[name].scale == pytest.approx(1 / max(hi - c, c - lo), rel=1e-12)
        assert (got[name].min, got[name].max) == (-5.0, 5.0)
    # explicit null stays untransformed in auto mode (weaver-core: only a missing centre is auto)
    assert got["part_charge"].centre is None
    # the resolved config written back reads as the same config
    back = DataConfig.from_dict(yaml.safe_load(resolved.to_yaml()))
    assert back.inputs == resolved.inputs


def test_constant_padding_value_per_jet_groups_and_custom_labels(zpole_file):
    root, _, jets = zpole_file
    cfg = DataConfig.from_dict({
        "new_variables": {"part_pt": "np.hypot(part_px, part_py)",
                          "part_mask": "ak.ones_like(part_px)",
                          "nconst": "ak.num(part_px)", "klass": "label_c + 2 * label_uds"},
        "inputs": {"pf_features": {"length": 8, "pad_mode": "constant",
                                   "vars": [["part_pt", 0.0, 0.5, -1e9, 1e9, -7.5]]},
                   "pf_vectors": {"length": 8, "vars": ["part_px", "part_py", "part_pz",
                                                        "part_energy"]},
                   "pf_mask": {"length": 8, "vars": ["part_mask"]},
                   "jet": {"length": None, "vars": [["jet_pt", 10.0, 0.1], "nconst"]}},
        "labels": {"type": "custom", "value": {"klass": "klass"}},
    })
    a = cfg.evaluate(read_chunk(file_chunks([str(root)], 50)[0], cfg.branches()))
    first = jets[:50]
    for i in range(50):
        pt = np.hypot(np.asarray(first["part_px"][i]), np.asarray(first["part_py"][i]))
        np.testing.assert_allclose(a["pf_features"][i, :, 0],
                                   _constant(0.5 * pt, 8, -7.5), rtol=1e-6)
    np.testing.assert_allclose(a["jet"][:, 0],
                               np.clip((first["jet_pt"].to_numpy() - 10) * 0.1, -5, 5),
                               rtol=1e-6)
    np.testing.assert_array_equal(a["jet"][:, 1], ak.num(first["part_px"]).to_numpy())
    np.testing.assert_array_equal(a["label"], first["label_c"].to_numpy().astype(int) +
                                  2 * first["label_uds"].to_numpy().astype(int))


def _base():
    return yaml.safe_load(CONFIG.read_text())


@pytest.mark.parametrize("change, error, match", [
    (lambda c: c.update(bogus=1), ValueError, "unknown data-config section"),
    (lambda c: c["inputs"]["pf_features"].update(pad_mode="reflect"), ValueError, "pad_mode"),
    (lambda c: c["inputs"]["pf_mask"].update(pad_mode="wrap"), ValueError, "mask input"),
    (lambda c: c["new_variables"].update(part_e_log="__import__('os')"), ValueError,
     "beginning with '_'"),
    (lambda c: c["new_variables"].update(part_e_log="np.__dict__"), ValueError,
     "beginning with '_'"),
    (lambda c: c["new_variables"].update(part_e_log="[x for x in part_energy]"), ValueError,
     "ListComp"),
    (lambda c: c.update(weights={"reweight_method": "flat", "reweight_vars": {}}),
     NotImplementedError, "histogram reweighting"),
    (lambda c: c.update(labels={"type": "simple", "value": ["label_b"]}), ValueError,
     "at least two"),
    (lambda c: c["inputs"]["pf_features"]["vars"].append(["part_deta", 1.0]), ValueError,
     "different parameters"),
    (lambda c: c.update(selection="jet_pt >"), ValueError, "not a valid expression"),
])
def test_configs_it_cannot_honour_are_refused_by_name(change, error, match):
    options = _base()
    change(options)
    with pytest.raises(error, match=match):
        DataConfig.from_dict(options)


def test_inconsistent_labels_and_missing_branches_are_named(zpole_file, tmp_path):
    root, _, _ = zpole_file
    options = _base()
    options["labels"]["value"] = ["label_b", "label_c", "label_uds", "label_b"]
    cfg = DataConfig.from_dict(options)
    chunk = file_chunks([str(root)], 200)[0]
    with pytest.raises(ValueError, match="inconsistent labels"):
        evaluate_chunk(cfg, chunk, training=True)
    options = _base()
    options["new_variables"]["part_e_log"] = "np.log(part_nosuch)"
    with pytest.raises(KeyError, match="part_nosuch"):
        evaluate_chunk(DataConfig.from_dict(options), chunk, training=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        DataConfig.from_yaml(bad)
