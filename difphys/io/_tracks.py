"""Per-jet charged tracks of a ``difphys generate`` file as dense arrays for vertexing and
flavour tagging.

A track is a charged particle with its smeared perigee ``(d0, z0, phi0, theta, qoverp)`` (mm,
mm, rad, rad, e/GeV, w.r.t. the origin, which is also the primary vertex of the generated
events) and full 5x5 covariance (branches ``part_trk_*``, ``part_trk_cov_ij``). The first
``max_tracks`` charged particles of a jet are kept in stored order (descending pT); padded
slots hold a harmless dummy track with identity covariance and ``mask = False``.

Network inputs (``TRACK_FEATURES``, float32, zero on padding), with the sign of the impact
parameters taken from the jet axis (positive when the point of closest approach lies on the
jet side of the primary vertex):

==============  ==============================================================
feature         definition
==============  ==============================================================
trk_sd0sig      asinh(signed d0 / sigma_d0)
trk_sz0sig      asinh(signed z0 / sigma_z0)
trk_sd0         asinh(signed d0 / 10 um)
trk_log_sd0     log(sigma_d0 / 20 um)
trk_log_pt      log(pT / 1 GeV)
trk_logptrel    log(pT / jet_pt)
trk_deta        eta(track) - eta(jet)
trk_dphi        phi(track) - phi(jet), wrapped to (-pi, pi]
trk_charge      sign(qoverp)
==============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._checks import check_finite
from ._jetclass import read_jetclass
from ._table import Table

TRACK_PARAMS = ("part_trk_d0", "part_trk_z0", "part_trk_phi0", "part_trk_theta", "part_trk_qoverp")
TRACK_COV = tuple(f"part_trk_cov_{i}{j}" for i in range(5) for j in range(i, 5))
TRACK_FEATURES = ("trk_sd0sig", "trk_sz0sig", "trk_sd0", "trk_log_sd0", "trk_log_pt",
                  "trk_logptrel", "trk_deta", "trk_dphi", "trk_charge")
FLAVOUR_LABELS = ("label_b", "label_c", "label_uds")
#: Origin codes of ``part_origin`` (see ``difphys.data``): primary, b decay, c decay, other.
_ORIGIN_B, _ORIGIN_C = 1, 2
_DUMMY = np.array([0.0, 0.0, 0.0, np.pi / 2, 0.1])


def jet_axis(eta, phi) -> np.ndarray:
    """Unit vectors ``(n, 3)`` along jets of pseudorapidity ``eta`` and azimuth ``phi``."""
    eta, phi = np.asarray(eta, np.float64), np.asarray(phi, np.float64)
    check_finite(eta, "eta")
    check_finite(phi, "phi")
    return np.stack([np.cos(phi), np.sin(phi), np.sinh(eta)], axis=-1) / np.cosh(eta)[..., None]


def jet_tracks(batch: Mapping[str, np.ndarray], *, max_tracks: int = 15, min_pt: float = 0.1,
               labels: Sequence[str] | None = FLAVOUR_LABELS) -> Table:
    """Tracks of a dense batch (:func:`difphys.io.read_jetclass` with the track branches).

    A track is a charged particle whose smeared perigee has ``0 < theta < pi`` and
    ``pT = sin(theta) / |q/p| > min_pt`` (GeV; the tracker's acceptance: softer tracks curl up).

    Returns a :class:`~difphys.io.Table` with ``params (n, T, 5)`` and ``cov (n, T, 5, 5)`` float64, ``mask (n, T)``,
    ``features (n, T, 9)`` float32 (``TRACK_FEATURES``), ``origin (n, T)`` int32 (-1 padded),
    ``hf (n, T)`` bool (from a b or c decay), ``vertex (n, T, 3)`` the true production points
    (mm), ``axis (n, 3)`` the jet direction, ``sv (n, 3)`` the true b-hadron decay vertex (the
    production point nearest the origin among b-decay tracks; zero when there is none) with
    ``has_sv (n,)``, and ``label (n,)`` int32, the index of the true label in ``labels`` (jets
    with none of them are dropped; ``labels=None`` keeps every jet and returns no label).
    """
    if max_tracks < 2:
        raise ValueError(f"max_tracks must be at least 2 (a vertex needs two tracks); got "
                         f"{max_tracks}")
    need = {*TRACK_PARAMS, *TRACK_COV, "part_charge", "part_origin", "part_vx", "part_vy",
            "part_vz", "jet_pt", "jet_eta", "jet_phi", "mask", *(labels or ())}
    missing = sorted(need - set(batch))
    if missing:
        raise KeyError(f"jet_tracks needs branch(es) {missing}: files from `difphys generate` "
                       "carry them")
    keep = np.ones(len(batch["jet_pt"]), bool)
    label = None
    if labels:
        onehot = np.stack([np.asarray(batch[name], bool) for name in labels], axis=1)
        if np.any(onehot.sum(axis=1) > 1):
            raise ValueError(f"labels {list(labels)} are not exclusive")
        keep = onehot.any(axis=1)
        if not keep.any():
            raise ValueError(f"no jet has any of the labels {list(labels)}")
        label = np.argmax(onehot[keep], axis=1).astype(np.int32)
    b = {k: v[keep] for k, v in batch.items()}
    theta_all, qoverp_all = b["part_trk_theta"], b["part_trk_qoverp"]
    with np.errstate(divide="ignore", invalid="ignore"):
        pt_all = np.sin(theta_all) / np.abs(qoverp_all)
    charged = (b["mask"] & (b["part_charge"] != 0) & (theta_all > 0) & (theta_all < np.pi)
               & (pt_all > min_pt))
    if charged.shape[1] < max_tracks:
        pad = max_tracks - charged.shape[1]
        charged = np.pad(charged, ((0, 0), (0, pad)))
        b = {k: (np.pad(v, ((0, 0), (0, pad))) if v.ndim == 2 else v) for k, v in b.items()}
    order = np.argsort(~charged, axis=1, kind="stable")[:, :max_tracks]
    take = lambda name: np.take_along_axis(b[name], order, axis=1)  # noqa: E731
    mask = np.take_along_axis(charged, order, axis=1)
    params = np.stack([take(n) for n in TRACK_PARAMS], axis=-1)
    iu = np.triu_indices(5)
    cov = np.zeros(mask.shape + (5, 5))
    for k, name in enumerate(TRACK_COV):
        cov[..., iu[0][k], iu[1][k]] = cov[..., iu[1][k], iu[0][k]] = take(name)
    bad = ~np.all(np.isfinite(params), axis=-1) | ~np.all(np.isfinite(cov), axis=(-1, -2))
    if np.any(bad & mask):
        raise ValueError(f"{int(np.sum(bad & mask))} track(s) with NaN or infinite parameters")
    params = np.where(mask[..., None], params, _DUMMY)
    cov = np.where(mask[..., None, None], cov, np.eye(5))
    origin = np.where(mask, take("part_origin"), -1).astype(np.int32)
    vertex = np.stack([take("part_vx"), take("part_vy"), take("part_vz")], axis=-1)
    axis = jet_axis(b["jet_eta"], b["jet_phi"])

    d0, z0, phi0, theta, qoverp = np.moveaxis(params, -1, 0)
    sig_d0 = np.sqrt(cov[..., 0, 0])
    sig_z0 = np.sqrt(cov[..., 1, 1])
    pca_dot = -d0 * np.sin(phi0) * axis[:, None, 0] + d0 * np.cos(phi0) * axis[:, None, 1]
    sd0 = np.abs(d0) * np.where(pca_dot >= 0, 1.0, -1.0)
    sz0 = np.abs(z0) * np.where(z0 * axis[:, None, 2] >= 0, 1.0, -1.0)
    pt = np.sin(theta) / np.abs(qoverp)
    eta = -np.log(np.tan(theta / 2))
    jet_eta = np.arcsinh(axis[:, 2] / np.hypot(axis[:, 0], axis[:, 1]))
    dphi = np.angle(np.exp(1j * (phi0 - b["jet_phi"][:, None])))
    cols = [np.arcsinh(sd0 / sig_d0), np.arcsinh(sz0 / sig_z0), np.arcsinh(sd0 / 0.01),
            np.log(sig_d0 / 0.02), np.log(pt), np.log(pt / b["jet_pt"][:, None]),
            eta - jet_eta[:, None], dphi, np.sign(qoverp)]
    features = np.where(mask[..., None], np.stack(cols, axis=-1), 0.0).astype(np.float32)

    from_b = origin == _ORIGIN_B
    r = np.where(from_b, np.linalg.norm(vertex, axis=-1), np.inf)
    nearest = np.argmin(r, axis=1)
    has_sv = np.isfinite(np.min(r, axis=1))
    sv = np.where(has_sv[:, None], vertex[np.arange(len(nearest)), nearest], 0.0)
    out = {"params": params, "cov": cov, "mask": mask, "features": features,
           "origin": origin, "hf": (origin == _ORIGIN_B) | (origin == _ORIGIN_C),
           "vertex": vertex, "axis": axis, "sv": sv, "has_sv": has_sv}
    if label is not None:
        out["label"] = label
    return Table(out)


def load_tracks(files, *, max_tracks: int = 15, min_pt: float = 0.1,
                labels: Sequence[str] | None = FLAVOUR_LABELS,
                max_particles: int = 128) -> Table:
    """Read ``files`` (``difphys generate`` output) and return :func:`jet_tracks` arrays.

    ``max_particles`` bounds how many particles per jet are searched for charged tracks."""
    branches = [*TRACK_PARAMS, *TRACK_COV, "part_charge", "part_origin", "part_vx", "part_vy",
                "part_vz", "jet_pt", "jet_eta", "jet_phi", *(labels or ())]
    batch = read_jetclass(files, branches, max_particles=max_particles)
    return jet_tracks(batch, max_tracks=max_tracks, min_pt=min_pt, labels=labels)
