"""JetClass-schema ROOT files (Qu, Li, Qian, arXiv:2202.03772) read with uproot into dense arrays.

One entry per jet in the tree ``tree``: jagged particle branches ``part_*`` and flat jet branches
``jet_*`` / ``label_*``. Past this module everything is dense: particle branches are padded to
``max_particles`` (zeros) with a boolean ``mask``; jets with more particles keep the first
``max_particles`` (JetClass stores them in descending pT).

``part_features`` builds the 17 per-particle inputs of ParT's ``JetClass_full`` configuration
(weaver-core), with its standardisation ``(x - centre) * scale``:

==============  =======================================  ==============
feature         definition                               (centre, scale)
==============  =======================================  ==============
part_pt_log     log pT                                   (1.7, 0.7)
part_e_log      log E                                    (2.0, 0.7)
part_logptrel   log(pT / jet_pt)                         (-4.7, 0.7)
part_logerel    log(E / jet_energy)                      (-4.7, 0.7)
part_deltaR     hypot(deta, dphi)                        (0.2, 4.0)
part_charge, part_isChargedHadron, part_isNeutralHadron, part_isPhoton, part_isElectron,
part_isMuon     as stored                                (0, 1)
part_d0         tanh(d0val)                              (0, 1)
part_d0err      d0err clipped to [0, 1]                  (0, 1)
part_dz         tanh(dzval)                              (0, 1)
part_dzerr      dzerr clipped to [0, 1]                  (0, 1)
part_deta, part_dphi  as stored                          (0, 1)
==============  =======================================  ==============

Padded entries are zero in every feature.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ._table import Table, concatenate

TREE = "tree"

PARTICLE_BRANCHES = (
    "part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi", "part_charge",
    "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
    "part_isMuon", "part_d0val", "part_d0err", "part_dzval", "part_dzerr",
)
JET_BRANCHES = ("jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_nparticles", "jet_sdmass")

PART_FEATURES = (
    "part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR", "part_charge",
    "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
    "part_isMuon", "part_d0", "part_d0err", "part_dz", "part_dzerr", "part_deta", "part_dphi",
)
#: The per-jet kinematics :func:`load_events` returns as ``jets``: pT (GeV), eta, soft-drop
#: mass (GeV).
JET_KINEMATICS = ("jet_pt", "jet_eta", "jet_sdmass")
_STANDARDISE = {
    "part_pt_log": (1.7, 0.7),
    "part_e_log": (2.0, 0.7),
    "part_logptrel": (-4.7, 0.7),
    "part_logerel": (-4.7, 0.7),
    "part_deltaR": (0.2, 4.0),
}


def _files(files) -> list[str]:
    if isinstance(files, (str, Path)):
        files = [files]
    files = [str(f) for f in files]
    if not files:
        raise ValueError("no input files given")
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"missing input file(s): {missing}")
    return files


def _dense(batch, max_particles: int) -> Table:
    import awkward as ak

    out: dict[str, np.ndarray] = {}
    mask = None
    for name in batch.fields:
        col = batch[name]
        if col.ndim > 1:  # jagged particle branch
            padded = ak.pad_none(col[:, :max_particles], max_particles, axis=1, clip=True)
            if mask is None:
                mask = ~ak.to_numpy(ak.is_none(padded, axis=1))
            out[name] = ak.to_numpy(ak.fill_none(padded, 0)).astype(np.float64)
        else:
            out[name] = ak.to_numpy(col)
    if mask is not None:
        out["mask"] = mask
    return Table(out)


def iterate_jetclass(
    files,
    branches: Sequence[str] | None = None,
    *,
    max_particles: int = 128,
    step_size: int | str = 100_000,
) -> Iterator[Table]:
    """Yield dense batches (:class:`Table`) of at most ``step_size`` jets (or a size such as ``"100 MB"``) from
    one or many JetClass-schema files, so files larger than memory can be streamed.

    Each batch's columns are the branches: particle branches ``(n, max_particles)`` float64
    (zero-padded), jet/label branches ``(n,)``, and ``mask`` ``(n, max_particles)`` bool when any
    particle branch is read. ``branches=None`` reads every branch.
    """
    import uproot

    files = _files(files)
    if max_particles < 1:
        raise ValueError(f"max_particles must be >= 1; got {max_particles}")
    schemas = {}
    for f in files:
        with uproot.open(f) as handle:
            if TREE not in handle:
                raise KeyError(f"{f} has no tree {TREE!r} (not a JetClass-schema file); it "
                               f"holds {sorted(handle.keys())}")
            schemas[f] = set(handle[TREE].keys())
    for f, available in schemas.items():
        if branches is not None:
            unknown = sorted(set(branches) - available)
            if unknown:
                raise KeyError(f"branch(es) {unknown} not in {f}:{TREE}; available: "
                               f"{sorted(available)}")
        elif available != schemas[files[0]]:
            raise ValueError(
                f"files of different schemas: {f} and {files[0]} differ in branches "
                f"{sorted(available ^ schemas[files[0]])}; pass the common branches explicitly"
            )
    for batch in uproot.iterate([f"{f}:{TREE}" for f in files], expressions=branches,
                                step_size=step_size, library="ak"):
        yield _dense(batch, max_particles)


def read_jetclass(files, branches: Sequence[str] | None = None, *,
                  max_particles: int = 128) -> Table:
    """All jets of ``files`` as one dense :class:`Table` (see :func:`iterate_jetclass`)."""
    batches = list(iterate_jetclass(files, branches, max_particles=max_particles))
    if not batches or all(b.n_rows == 0 for b in batches):
        raise ValueError(f"no jets in {files}")
    return concatenate(batches)


def part_p4(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Four-momenta ``(n, max_particles, 4)`` float32 (E, px, py, pz) GeV of a dense batch."""
    return np.stack([batch["part_energy"], batch["part_px"], batch["part_py"], batch["part_pz"]],
                    axis=-1).astype(np.float32)


def part_features(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """The 17 standardised ParT ``JetClass_full`` particle features, ``(n, max_particles, 17)``
    float32, zero on padded entries; needs the particle branches, ``jet_pt`` and
    ``jet_energy``."""
    need = set(PARTICLE_BRANCHES) | {"jet_pt", "jet_energy", "mask"}
    missing = sorted(need - set(batch))
    if missing:
        raise KeyError(f"part_features needs branch(es) {missing}")
    mask = batch["mask"]
    bad = [name for name in PARTICLE_BRANCHES if not np.all(np.isfinite(batch[name][mask]))]
    if bad:
        raise ValueError(f"NaN or infinity in particle branch(es) {bad}")
    pt = np.hypot(batch["part_px"], batch["part_py"])
    energy = batch["part_energy"]
    if np.any(mask & ((pt <= 0) | (energy <= 0))):
        raise ValueError("particles with non-positive pT or energy: log features are undefined")

    def safe_log(x):
        return np.log(np.where(mask, x, 1.0))

    feats = {
        "part_pt_log": safe_log(pt),
        "part_e_log": safe_log(energy),
        "part_logptrel": safe_log(pt / batch["jet_pt"][:, None]),
        "part_logerel": safe_log(energy / batch["jet_energy"][:, None]),
        "part_deltaR": np.hypot(batch["part_deta"], batch["part_dphi"]),
        "part_d0": np.tanh(batch["part_d0val"]),
        "part_d0err": np.clip(batch["part_d0err"], 0.0, 1.0),
        "part_dz": np.tanh(batch["part_dzval"]),
        "part_dzerr": np.clip(batch["part_dzerr"], 0.0, 1.0),
    }
    cols = []
    for name in PART_FEATURES:
        x = feats[name] if name in feats else batch[name]
        centre, scale = _STANDARDISE.get(name, (0.0, 1.0))
        cols.append(np.where(mask, (x - centre) * scale, 0.0))
    return np.stack(cols, axis=-1).astype(np.float32)


def write_jetclass(path, particles: dict, jets: dict, *, overwrite: bool = False) -> Path:
    """Write jets to a JetClass-schema ROOT file (tree ``tree``) with uproot.

    Args:
      path: output file; an existing file raises ``FileExistsError`` unless ``overwrite``.
      particles: ``part_*`` branches, each a sequence (one entry per jet) of 1D arrays or an
        awkward array; all must have the same number of particles per jet.
      jets: flat ``jet_*`` / ``label_*`` / other per-jet branches, 1D arrays of the jet count.
    """
    import awkward as ak
    import uproot

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    arrays = {k: ak.Array(v) for k, v in particles.items()}
    counts = {k: ak.to_numpy(ak.num(v, axis=1)) for k, v in arrays.items()}
    n_jets = {len(v) for v in arrays.values()} | {len(np.asarray(v)) for v in jets.values()}
    if len(n_jets) != 1:
        raise ValueError(f"branches disagree on the number of jets: {sorted(n_jets)}")
    if counts and any(not np.array_equal(c, next(iter(counts.values()))) for c in counts.values()):
        raise ValueError("particle branches disagree on the number of particles per jet")
    path.parent.mkdir(parents=True, exist_ok=True)
    with uproot.recreate(path) as f:
        f[TREE] = {**arrays, **{k: np.asarray(v) for k, v in jets.items()}}
    return path


def load_jets(files, labels: Sequence[str] | None, *, max_particles: int = 128) -> Table:
    """Jets of ``files`` as training arrays for a classifier.

    Returns a :class:`Table` of ``features (n, max_particles, 17)`` float32 (:func:`part_features`), ``p4 (n,
    max_particles, 4)`` float32 (E, px, py, pz) GeV, ``mask (n, max_particles)`` bool and
    ``label (n,)`` int32: the index in ``labels`` of the one true label branch (``labels=None``:
    every jet, unlabelled, no ``label``). Jets where none
    of ``labels`` is set are left out (e.g. c jets for ``("label_b", "label_uds")``); jets with
    no particle, or with several labels set, raise ``ValueError``.
    """
    labels = [] if labels is None else list(labels)
    if labels and len(labels) < 2:
        raise ValueError(f"a classifier needs at least two label branches; got {labels}")
    batch = read_jetclass(files, [*PARTICLE_BRANCHES, "jet_pt", "jet_energy", *labels],
                          max_particles=max_particles)
    empty = np.flatnonzero(~batch["mask"].any(axis=1))
    if len(empty):
        raise ValueError(f"{len(empty)} jet(s) with no particles (first at entry {empty[0]}) "
                         f"in {files}")
    if not labels:  # unlabelled: every jet, no "label"
        return Table(features=part_features(batch), p4=part_p4(batch), mask=batch["mask"])
    onehot = np.stack([np.asarray(batch[name], dtype=bool) for name in labels], axis=1)
    if np.any(onehot.sum(axis=1) > 1):
        raise ValueError(f"labels {labels} are not exclusive: some jets have several set")
    keep = onehot.any(axis=1)
    if not keep.any():
        raise ValueError(f"no jet in {files} has any of the labels {labels}")
    sub = batch.take(keep)
    return Table(features=part_features(sub), p4=part_p4(sub), mask=sub["mask"],
                 label=np.argmax(onehot[keep], axis=1).astype(np.int32))


def load_events(files, *, max_jets: int = 3, max_particles: int = 64,
                label: str = "label_signal") -> Table:
    """Events of a multi-jet sample (e.g. ``hh4b``, grouped by the ``event_id`` branch) as
    a :class:`Table` for an event classifier: ``features (E, max_jets, max_particles, 17)``, ``p4 (E,
    max_jets, max_particles, 4)``, ``mask (E, max_jets, max_particles)`` (a jet slot without
    particles is padding), ``jet_mask (E, max_jets)``, ``jets (E, max_jets, 3)`` float32 (each
    jet's :data:`JET_KINEMATICS`: pT GeV, eta, soft-drop mass GeV; 0 for padding) and
    ``label (E,)`` int32 from the
    event-level ``label`` branch. Jets beyond ``max_jets`` in an event are dropped (the files
    store at most three, in descending pT)."""
    batch = read_jetclass(files, [*PARTICLE_BRANCHES, *JET_KINEMATICS, "jet_energy",
                                  "event_id", label], max_particles=max_particles)
    feats = part_features(batch)
    p4 = part_p4(batch)
    ids = batch["event_id"]
    if np.any(np.diff(ids) < 0):
        raise ValueError("jets of an event must be stored together, in increasing event_id")
    events, first, counts = np.unique(ids, return_index=True, return_counts=True)
    slot = np.arange(len(ids)) - np.repeat(first, counts)
    row = np.searchsorted(events, batch["event_id"])
    keep = slot < max_jets
    n_events = len(events)
    out = {
        "features": np.zeros((n_events, max_jets, max_particles, feats.shape[-1]), np.float32),
        "p4": np.zeros((n_events, max_jets, max_particles, 4), np.float32),
        "mask": np.zeros((n_events, max_jets, max_particles), bool),
    }
    out["features"][row[keep], slot[keep]] = feats[keep]
    out["p4"][row[keep], slot[keep]] = p4[keep]
    out["mask"][row[keep], slot[keep]] = batch["mask"][keep]
    out["jet_mask"] = out["mask"].any(axis=-1)
    out["jets"] = np.zeros((n_events, max_jets, len(JET_KINEMATICS)), np.float32)
    out["jets"][row[keep], slot[keep]] = np.stack([batch[k] for k in JET_KINEMATICS], -1)[keep]
    labels = np.zeros(n_events, np.int32)
    labels[row] = np.asarray(batch[label], dtype=np.int32)
    out["label"] = labels
    return Table(out)
