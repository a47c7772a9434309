"""Progress reporting for long library loops: a pluggable callback, tqdm only when asked for.

Every long-running library function (Monte-Carlo integrals, training loops, fits, sample
generation) takes ``progress``, which is one of

* ``False`` or ``None``: silent (the library default);
* ``True``: a ``tqdm.auto`` bar (this module is the only one in difphys that imports tqdm,
  lazily, so physics modules never depend on it);
* a callable ``factory(*, total, desc, unit, initial) -> bar``, where ``bar`` has
  ``update(n)``, ``set_postfix(**values)`` and ``close()`` (``tqdm.tqdm`` itself is such a
  factory; so is a logger, a notebook widget or a test recorder).

Library code calls :func:`progress_bar` and never looks at which of the three it got::

    with progress_bar(progress, total=n_points, desc="integrate", unit="pt") as bar:
        for ...:
            bar.update(n)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class ProgressBar(Protocol):
    """What :func:`progress_bar` returns (tqdm's interface, the part difphys uses)."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, **values: Any) -> Any: ...

    def close(self) -> Any: ...


Progress = bool | None | Callable[..., ProgressBar]


class _Silent:
    """A bar that records nothing (``progress=False``)."""

    def update(self, n: int = 1) -> None:
        return None

    def set_postfix(self, **values: Any) -> None:
        return None

    def close(self) -> None:
        return None


class _Managed:
    """Context-manager wrapper closing any bar on exit."""

    def __init__(self, bar: ProgressBar):
        self.bar = bar

    def __enter__(self) -> ProgressBar:
        return self.bar

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def __getattr__(self, name):  # used without ``with``: behave as the bar itself
        return getattr(self.bar, name)


def progress_bar(progress: Progress, *, total: int | None, desc: str, unit: str = "it",
                 initial: int = 0) -> _Managed:
    """A progress bar for ``total`` units of work, as chosen by ``progress`` (see the module
    docstring); usable as a context manager (closed on exit) or directly (call ``close``)."""
    if progress is None or progress is False:
        return _Managed(_Silent())
    if progress is True:
        from tqdm.auto import tqdm

        return _Managed(tqdm(total=total, desc=desc, unit=unit, initial=initial))
    if callable(progress):
        return _Managed(progress(total=total, desc=desc, unit=unit, initial=initial))
    raise TypeError(
        f"progress must be True, False, None or a bar factory; got {type(progress).__name__}"
    )
