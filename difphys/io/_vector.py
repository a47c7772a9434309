"""Four-momenta to and from scikit-hep's ``vector`` (awkward ``Momentum4D`` records), at the
edges of difphys: dense ``(..., n, 4)`` (E, px, py, pz) arrays with a mask inside, jagged
``vector`` arrays outside (the ``hep`` extra). No physics is done here: ``vector`` computes
its own masses, pT and boosts from the same numbers."""

from __future__ import annotations

import numpy as np

from .._extras import require


def to_vector(p4, mask=None):
    """``p4 (n, P, 4)`` (E, px, py, pz) GeV as an awkward array of ``vector`` Momentum4D
    records, ``n`` lists of the particles where ``mask (n, P)`` is true (all ``P`` without a
    mask); ``p4 (n, 4)`` gives ``n`` records."""
    ak = require("awkward", "hep", "to_vector")
    vector = require("vector", "hep", "to_vector")
    vector.register_awkward()
    p4 = np.asarray(p4, np.float64)
    if p4.shape[-1] != 4:
        raise ValueError(f"p4 must end in (E, px, py, pz); got shape {p4.shape}")
    if p4.ndim == 2:
        if mask is not None:
            raise ValueError("a mask needs p4 of shape (n, P, 4)")
        fields = {k: p4[:, i] for i, k in enumerate(("E", "px", "py", "pz"))}
        return ak.zip(fields, with_name="Momentum4D")
    if p4.ndim != 3:
        raise ValueError(f"p4 must be (n, 4) or (n, P, 4); got shape {p4.shape}")
    mask = np.ones(p4.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != p4.shape[:2]:
        raise ValueError(f"mask {mask.shape} must match p4 {p4.shape[:2]}")
    counts = mask.sum(axis=1)
    flat = p4[mask]
    fields = {k: ak.unflatten(flat[:, i], counts) for i, k in enumerate(("E", "px", "py", "pz"))}
    return ak.zip(fields, with_name="Momentum4D")


def from_vector(vectors, max_particles: int | None = None):
    """``(p4 (n, P, 4) float64 (E, px, py, pz), mask (n, P) bool)`` from jagged ``vector``
    momenta (any coordinates ``vector`` knows: pt/eta/phi/mass, px/py/pz/E, ...), padded with
    zeros to ``max_particles`` (default: the longest list; longer lists keep their first
    ``max_particles``). A flat array of ``n`` vectors gives ``(p4 (n, 4), None)``."""
    ak = require("awkward", "hep", "from_vector")
    vector = require("vector", "hep", "from_vector")
    vector.register_awkward()
    v = vectors if isinstance(vectors, ak.Array) else ak.Array(vectors)
    comps = [v.E, v.px, v.py, v.pz]
    if v.ndim == 1:
        return np.stack([np.asarray(ak.to_numpy(c), np.float64) for c in comps], -1), None
    counts = np.asarray(ak.num(v, axis=1))
    length = int(counts.max(initial=0)) if max_particles is None else int(max_particles)
    if length < 1:
        raise ValueError("max_particles must be >= 1 (or the vectors hold no particle)")
    out = np.zeros((len(counts), length, 4))
    for i, c in enumerate(comps):
        out[..., i] = ak.to_numpy(ak.fill_none(ak.pad_none(c, length, axis=1, clip=True), 0.0))
    mask = np.arange(length)[None, :] < np.minimum(counts, length)[:, None]
    return out, mask
