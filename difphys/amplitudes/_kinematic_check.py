"""The eager kinematic check of |M|^2 inputs as one pass over host memory (numba).

:meth:`Process.__call__` checks, outside ``jit``, that the momenta are finite, have positive
incoming energy, conserve four-momentum and put every leg on its mass shell. On the GPU the
jitted reduction ``_process._kinematic_summary`` does that in a fraction of the evaluation.
On the CPU the same reduction reads the batch several times (XLA:CPU runs the small
per-event sums as separate passes): ~7 ms for 10^5 events of a 2 -> 2 process, 5% of its
|M|^2. This loop reads each event once (~1 ms). Hand-written because no library fuses these
four per-event reductions; numba is already a dependency (the vertex kernel). Where numba is
missing, ``_process`` keeps the jitted reduction.
"""

from __future__ import annotations

import math

import numpy as np

try:  # a dependency of difphys; the jitted reduction is the fallback
    import numba as nb
except ImportError:  # pragma: no cover - exercised where numba is absent
    nb = None


def available() -> bool:
    """Whether the host loop can run (numba importable)."""
    return nb is not None


if nb is not None:

    @nb.njit(nogil=True, cache=False, error_model="numpy")
    def _summary(flat, masses2, n):
        finite = True
        e_min = math.inf
        rel_max = 0.0
        off_max = 0.0
        for ev in range(flat.shape[0]):
            e_in = flat[ev, 0] + flat[ev, 4]
            s0 = s1 = s2 = s3 = 0.0
            for leg in range(n):
                o = 4 * leg
                e, px, py, pz = flat[ev, o], flat[ev, o + 1], flat[ev, o + 2], flat[ev, o + 3]
                finite = finite and math.isfinite(e + px + py + pz)
                sign = 1.0 if leg < 2 else -1.0
                s0 += sign * e
                s1 += sign * px
                s2 += sign * py
                s3 += sign * pz
                m2 = masses2[leg]
                off = abs(e * e - px * px - py * py - pz * pz - m2) / max(e * e, m2)
                off_max = off if off > off_max else off_max
            e_min = e_in if e_in < e_min else e_min
            rel = max(max(abs(s0), abs(s1)), max(abs(s2), abs(s3))) / e_in
            rel_max = rel if rel > rel_max else rel_max
        return finite, e_min, rel_max, off_max


def summary(momenta: np.ndarray, masses: np.ndarray) -> tuple[bool, float, float, float]:
    """(every entry finite, the smallest incoming energy (GeV), the largest relative momentum
    imbalance, the largest relative off-shellness) of ``momenta (..., n, 4)`` with external
    ``masses (n,)`` (GeV), as ``_process._kinematic_summary`` defines them. Any NaN makes
    ``finite`` False; the caller then locates the event (the other values are not used)."""
    n = momenta.shape[-2]
    flat = np.ascontiguousarray(momenta.reshape(-1, 4 * n))
    masses2 = np.ascontiguousarray(np.asarray(masses, flat.dtype) ** 2)
    finite, e_min, rel, off = _summary(flat, masses2, n)
    return bool(finite), float(e_min), float(rel), float(off)
