"""What produced an output: software versions, devices and the git commit.

Every file a ``difphys`` command writes (``config.json``, ``metrics.json``, ``report.json``,
LHE headers) carries :func:`provenance`, so a result can be traced to the code and machine
that made it::

    >>> from difphys.provenance import provenance
    >>> sorted(provenance())[:3]
    ['created', 'device_count', 'device_kind']
"""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

#: The packages whose versions are recorded (those that change numbers or formats).
PACKAGES = ("difphys", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "equinox", "numpy",
            "uproot", "awkward")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout difphys is imported from (``+dirty`` with uncommitted
    changes to tracked files), or ``None`` for an installed copy or without git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def provenance() -> dict:
    """A JSON-ready record: ``versions`` (:data:`PACKAGES`, Python), ``device_kind``,
    ``device_count`` (all processes), ``process_count``, ``platform``, ``git_commit`` and the
    UTC ``created`` time."""
    import jax

    devices = jax.devices()
    return {
        "versions": {**{p: _version(p) for p in PACKAGES}, "python": platform.python_version()},
        "device_kind": devices[0].device_kind if devices else None,
        "device_platform": devices[0].platform if devices else None,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def is_writer() -> bool:
    """True on the process that writes files (process 0; the only one without
    ``jax.distributed``)."""
    import jax

    return jax.process_index() == 0
