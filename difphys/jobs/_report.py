"""The one result type of the ``difphys`` jobs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Report(Mapping):
    """What a job computed and where it wrote it.

    Attributes:
      command: the ``difphys`` subcommand (``"train"``, ``"sample"``, ...).
      folder: the run folder or output file, or None when nothing was written.
      values: the figures, JSON-serialisable (also reachable as ``report[name]``).
      lines: the human-readable summary, one line each (:meth:`summary`).
    """

    command: str
    folder: Path | None
    values: Mapping[str, Any]
    lines: tuple[str, ...] = ()

    def summary(self) -> str:
        """The text the command line prints."""
        return "\n".join(self.lines)

    def to_json(self) -> str:
        return json.dumps({"command": self.command,
                           "folder": None if self.folder is None else str(self.folder),
                           **self.values}, indent=2)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)
