"""The one run-folder policy of the ``difphys`` commands.

* :func:`new_run_dir` — commands that take a parent folder (``demo``, ``optimize-detector``):
  every run gets a new ``<prefix>-<timestamp>`` folder; existing runs are never touched.
* :func:`prepare_run_dir` — commands that take the run folder itself (``train``, ``tokenize``,
  ``pretrain``, ``finetune``): ``policy`` is

  - ``"new"``: the folder must not exist or be empty;
  - ``"overwrite"``: an existing folder is written into (files of the same names replaced),
    but only if it is a difphys run folder (it holds ``config.json``); anything else is
    refused, so a mistyped path never overwrites a user's files;
  - ``"resume"``: the folder must hold the ``config.json`` of an earlier run whose settings
    equal these, except the keys in ``may_change`` (e.g. ``steps``); a difference is refused
    with the list ``key: recorded -> now``.

  In every case ``config.json`` is (re)written with the run's settings and their
  ``provenance`` (:func:`difphys.provenance.provenance`: versions, devices, git commit; a
  resumed run keeps the earlier records under ``provenance_earlier``), which the resume
  comparison ignores.

Under ``jax.distributed`` only process 0 writes (:func:`difphys.provenance.is_writer`):
files are written once, whatever the number of processes.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..provenance import is_writer, provenance

RUN_POLICIES = ("new", "overwrite", "resume")


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


def _jsonable(value):
    """``value`` as JSON reads it back (tuples become lists), for comparing configurations."""
    return json.loads(json.dumps(value))


def config_diff(recorded: Mapping, config: Mapping, may_change: Iterable[str] = ()) -> list[str]:
    """``key: recorded -> now`` for every setting that differs (keys in ``may_change`` aside)."""
    skip = set(may_change) | {"provenance", "provenance_earlier"}
    now = _jsonable(dict(config))
    return [f"{k}: {recorded.get(k)!r} -> {now.get(k)!r}"
            for k in sorted(set(recorded) | set(now))
            if k not in skip and recorded.get(k) != now.get(k)]


def prepare_run_dir(out, config: Mapping, *, policy: str = "new",
                    may_change: Iterable[str] = ("steps",), write: bool = True) -> Path:
    """Apply the run-folder ``policy`` (module docstring) to ``out`` and write
    ``out/config.json``; returns ``out`` as a :class:`~pathlib.Path`. With ``write=False``
    only the checks run: a command validates its inputs next and then calls
    :func:`write_run_config`, so a request that fails validation leaves no folder behind
    (and a corrected rerun is not refused as "exists")."""
    if policy not in RUN_POLICIES:
        raise ValueError(f"unknown run-folder policy {policy!r}; choose from {RUN_POLICIES}")
    out = Path(out)
    used = out.exists() and any(out.iterdir())
    recorded_path = out / "config.json"
    if used and policy == "new":
        raise FileExistsError(f"{out} exists and is not empty; pass --resume to continue it "
                              f"or --overwrite to replace it")
    if used and policy == "overwrite" and not recorded_path.exists():
        raise FileExistsError(f"{out} is not a difphys run folder (no config.json); "
                              f"refusing to overwrite it")
    if policy == "resume":
        if not recorded_path.exists():
            raise FileNotFoundError(f"nothing to resume: {recorded_path} does not exist")
        diff = config_diff(json.loads(recorded_path.read_text()), config, may_change)
        if diff:
            raise ValueError(f"--resume with a different configuration than "
                             f"{recorded_path}: " + "; ".join(diff))
    if write:
        write_run_config(out, config)
    return out


def write_run_config(out, config: Mapping) -> Path:
    """Create ``out`` if needed and write ``out/config.json`` (after :func:`prepare_run_dir`
    with ``write=False`` has checked the policy), with the run's provenance; on process 0
    only."""
    out = Path(out)
    if not is_writer():
        return out
    out.mkdir(parents=True, exist_ok=True)
    record = _jsonable(dict(config))
    path = out / "config.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        history = list(earlier.get("provenance_earlier", []))
        if "provenance" in earlier:
            history.append(earlier["provenance"])
        if history:
            record["provenance_earlier"] = history
    record["provenance"] = provenance()
    path.write_text(json.dumps(record, indent=2))
    return out


def write_json(path, values: Mapping) -> Path:
    """Write ``values`` and their ``provenance`` as JSON to ``path`` (``metrics.json``,
    ``report.json``, ...), on process 0 only."""
    path = Path(path)
    if is_writer():
        path.write_text(json.dumps({**_jsonable(dict(values)), "provenance": provenance()},
                                   indent=2) + "\n")
    return path


def save_history(path, history, *, append: bool = False) -> None:
    """Write logged metrics (a :class:`difphys.train.History`, or a sequence of mappings) as
    JSON lines, one per logged step. An existing file is refused unless ``append`` (a resumed
    run adds its rows after those of the earlier runs); nothing is ever truncated."""
    rows = history.rows() if hasattr(history, "rows") else history
    path = Path(path)
    if not is_writer():
        return
    if path.exists() and not append:
        raise FileExistsError(f"{path} exists; history is appended only by a resumed run")
    with open(path, "a") as fh:
        for row in rows:
            fh.write(json.dumps(dict(row)) + "\n")
