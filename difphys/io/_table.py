"""``Table``: named arrays with a common leading axis, the one container of jets, events and
tracks that difphys's readers return and its training loops consume.

A plain ``dict`` of arrays would do the storing; the type adds what a dict cannot promise: on
construction every column is checked to have the same number of rows (a ragged read or a
mis-sliced column is an error naming the columns, not a silent broadcast later), columns are
reached as ``table["mask"]`` or ``table.mask``, ``table.take(idx)`` selects rows of every
column at once, and the table is a JAX PyTree (columns are the leaves, their names the static
structure), so a ``jit``-compiled step takes it as its batch. It is read-only: ``replace``
returns a new table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np


@jax.tree_util.register_pytree_with_keys_class
class Table(Mapping):
    """Named arrays sharing their leading axis (rows: jets, events or particles).

    Args:
      columns: a mapping ``name -> array``; every array has the same length ``n_rows``.

    ``len(table)`` is the number of columns (Mapping semantics); ``table.n_rows`` the number
    of rows. Inside ``jit``/``vmap`` the leaves may be tracers whose leading axis was mapped
    away; the row check applies only where every column has a leading axis.
    """

    __slots__ = ("_columns",)

    def __init__(self, columns: Mapping[str, Any] | None = None, /, **named):
        cols = dict(columns or {}, **named)
        for name in cols:
            if not isinstance(name, str):
                raise TypeError(f"column names must be strings; got {name!r}")
        shapes = {k: np.shape(v) for k, v in cols.items()}
        if all(len(s) > 0 for s in shapes.values()):
            sizes = {s[0] for s in shapes.values()}
            if len(sizes) > 1:
                detail = ", ".join(f"{k}: {s[0]}" for k, s in sorted(shapes.items()))
                raise ValueError(f"the columns of a Table must share their number of rows; "
                                 f"got {detail}")
        object.__setattr__(self, "_columns", cols)

    # -- Mapping -------------------------------------------------------------------------
    def __getitem__(self, name: str):
        try:
            return self._columns[name]
        except KeyError:
            raise KeyError(f"no column {name!r}; the table holds {sorted(self._columns)}") \
                from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._columns[name]
        except KeyError:
            raise AttributeError(f"no column {name!r}; the table holds "
                                 f"{sorted(self._columns)}") from None

    def __setattr__(self, name, value):
        raise AttributeError("a Table is read-only; use table.replace(name=value)")

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}: {getattr(v, 'dtype', type(v).__name__)}{list(np.shape(v))}"
                         for k, v in self._columns.items())
        return f"{type(self).__name__}({cols})"

    # -- rows ----------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """The common length of the columns (0 for a table without columns)."""
        for v in self._columns.values():
            return int(np.shape(v)[0])
        return 0

    def take(self, index) -> Table:
        """The rows ``index`` (an integer array, a boolean mask or a slice) of every column."""
        return type(self)({k: v[index] for k, v in self._columns.items()})

    def replace(self, **columns) -> Table:
        """A new table with ``columns`` added or replaced."""
        return type(self)(self._columns, **columns)

    def select(self, *names: str) -> Table:
        """A new table with only the columns ``names`` (in that order)."""
        return type(self)({n: self[n] for n in names})

    # -- PyTree --------------------------------------------------------------------------
    def tree_flatten_with_keys(self):
        names = tuple(self._columns)
        return [(jax.tree_util.DictKey(n), self._columns[n]) for n in names], names

    @classmethod
    def tree_unflatten(cls, names, leaves):
        table = object.__new__(cls)
        object.__setattr__(table, "_columns", dict(zip(names, leaves, strict=True)))
        return table


def concatenate(tables) -> Table:
    """Row-wise concatenation of tables with the same columns."""
    tables = list(tables)
    if not tables:
        raise ValueError("concatenate needs at least one table")
    names = list(tables[0])
    for t in tables[1:]:
        if list(t) != names:
            raise ValueError(f"tables disagree on their columns: {names} vs {list(t)}")
    return Table({n: np.concatenate([t[n] for t in tables]) for n in names})
