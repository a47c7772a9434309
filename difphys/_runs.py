"""Output folders for command-line runs: each run gets a new folder, nothing is overwritten."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path


def new_run_dir(root: str | Path, prefix: str) -> Path:
    """Create and return ``root/<prefix>-<timestamp>[-i]``; existing runs are never touched."""
    root = Path(root)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        run = root / (f"{prefix}-{stamp}" if i == 0 else f"{prefix}-{stamp}-{i}")
        try:
            run.mkdir(parents=True, exist_ok=False)
            return run
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {root}")
