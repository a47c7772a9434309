"""Held-out splits of a data set by a seeded permutation."""

from __future__ import annotations

import numpy as np


def _split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(training, held-out)`` indices of ``n`` examples, the held-out fraction drawn
    by a seeded NumPy permutation (shared by ``difphys train``, ``difphys finetune`` and the
    flavour tagger, so that a split is reproducible from the run's integer seed)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"the held-out fraction must lie in (0, 1); got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(val_fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
