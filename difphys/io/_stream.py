"""Training data streamed from many ROOT or parquet files in chunks, with bounded memory.

A JetClass-sized dataset (100M jets) does not fit in memory, so :class:`JetStream` never
holds more than a few *groups* of chunks: the files are cut into chunks of ``chunk_size``
entries (a parquet row group is cut the same way), and each epoch

1. permutes the chunks (a function of ``(key, epoch)``) and deals them out to ``lanes``
   lanes, round robin;
2. cuts each lane's chunks into groups of ``buffer_chunks`` consecutive chunks (so a group
   mixes chunks of different files: the shuffle buffer), reads a group, applies the data
   config (:class:`difphys.io.DataConfig`: selection, new variables, inputs) and permutes its
   jets (a function of ``(key, epoch, lane, group)``);
3. concatenates the permuted groups into the lane's stream, and gives step ``t`` of the epoch
   the jets ``[t b, (t + 1) b)`` of every lane (``b = batch_size / lanes``), lane after lane.

Every selected jet is seen at most once per epoch; an epoch has ``min over lanes of
(jets in the lane) // b`` steps, so at most ``b - 1`` jets per lane, plus the excess of a
lane over the smallest one (below one chunk), are left out of an epoch (a different few each
epoch). The number of selected jets per chunk is counted once, when the stream is made (a
pass over the branches the selection and the labels read), so batch ``step`` is a function
of ``(key, step)`` and those counts alone: a run resumed at any step, mid-epoch included,
sees bit-identical batches, without replaying the steps before.

Lanes are what several processes share out: with ``P`` processes (``jax.distributed``),
process ``p`` reads only the chunks of lanes ``p L/P .. (p+1) L/P - 1`` and contributes its
rows of the global batch (:func:`jax.make_array_from_process_local_data`). The global batch
of a step is the same whatever the number of processes, so a run on 2 processes equals a run
on 1 process with the same ``lanes`` (tested).
"""

from __future__ import annotations

import bisect
import glob
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from .._checks import check_count
from .._extras import require
from ._data_config import DataConfig
from ._table import Table, concatenate

FILE_SUFFIXES = (".root", ".parquet")
#: The columns of a training batch (observers stay out of the training step).
TRAINING_COLUMNS = ("features", "p4", "mask", "label", "weight")


def expand_files(patterns) -> list[str]:
    """``patterns`` (a path, a glob such as ``'data/*.root'``, or a sequence of them) as a
    sorted list of existing ROOT/parquet files; a pattern that matches nothing is an error
    naming it."""
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        hits = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else (
            [pattern] if Path(pattern).exists() else [])
        if not hits:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        for f in hits:
            if Path(f).suffix not in FILE_SUFFIXES:
                raise ValueError(f"{f}: expected a ROOT or parquet file ({FILE_SUFFIXES})")
        files.extend(hits)
    if not files:
        raise ValueError("no input files given")
    return list(dict.fromkeys(files))


class Chunk(NamedTuple):
    """Entries ``[start, stop)`` of ``file`` (of its tree ``tree``; of its parquet row group
    ``row_group``, whose first entry is ``group_start``)."""

    file: str
    start: int
    stop: int
    tree: str | None = None
    row_group: int | None = None
    group_start: int = 0


def _tree_name(handle, path: str, treename: str | None) -> str:
    trees = [k.split(";")[0] for k, c in handle.classnames().items()
             if c in ("TTree", "ROOT::RNTuple")]
    if treename is not None:
        if treename not in trees:
            raise KeyError(f"{path} has no tree {treename!r}; its trees: {sorted(set(trees))}")
        return treename
    if "tree" in trees:
        return "tree"
    if len(set(trees)) == 1:
        return trees[0]
    raise KeyError(f"{path} holds trees {sorted(set(trees))}: set treename in the data config")


def file_chunks(files: Sequence[str], chunk_size: int, treename: str | None = None
                ) -> list[Chunk]:
    """The chunks of ``files``, in file order: ``chunk_size`` entries each (a file's, or a
    parquet row group's, last chunk may be shorter)."""
    import uproot

    check_count(chunk_size, "chunk_size")
    out = []
    for f in files:
        if f.endswith(".parquet"):
            pq = require("pyarrow.parquet", "parquet", "reading parquet files")
            meta = pq.ParquetFile(f).metadata
            start = 0
            for rg in range(meta.num_row_groups):
                n = meta.row_group(rg).num_rows
                out.extend(Chunk(f, s, min(s + chunk_size, start + n), None, rg, start)
                           for s in range(start, start + n, chunk_size))
                start += n
        else:
            with uproot.open(f) as handle:
                tree = _tree_name(handle, f, treename)
                n = handle[tree].num_entries
            out.extend(Chunk(f, s, min(s + chunk_size, n), tree)
                       for s in range(0, n, chunk_size))
    return out


def read_chunk(chunk: Chunk, branches: Sequence[str]):
    """The entries of ``chunk`` as an awkward record array of ``branches``."""
    import awkward as ak

    branches = list(branches)
    if chunk.row_group is not None:
        require("pyarrow.parquet", "parquet", "reading parquet files")
        try:
            table = ak.from_parquet(chunk.file, columns=branches, row_groups=[chunk.row_group])
        except Exception as err:  # pyarrow names the missing column in its own words
            raise KeyError(f"{chunk.file}: cannot read columns {branches}: {err}") from None
        missing = sorted(set(branches) - set(table.fields))
        if missing:
            raise KeyError(f"{chunk.file} has no column(s) {missing}")
        lo = chunk.start - chunk.group_start
        return table[lo:lo + chunk.stop - chunk.start]
    import uproot

    with uproot.open(chunk.file) as handle:
        tree = handle[chunk.tree]
        missing = sorted(set(branches) - set(tree.keys()))
        if missing:
            raise KeyError(f"{chunk.file}:{chunk.tree} has no branch(es) {missing}")
        return tree.arrays(branches, entry_start=chunk.start, entry_stop=chunk.stop,
                           library="ak")


def read_fraction(files, fraction: float, branches: Sequence[str], *,
                  treename: str | None = None, chunk_size: int = 100_000):
    """The first ``fraction`` of the entries of every file of ``files``, as one awkward record
    array of ``branches`` (what weaver-core's automatic standardisation reads)."""
    import awkward as ak

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction}")
    parts = []
    for f in expand_files(files):
        chunks = file_chunks([f], chunk_size, treename)
        total = chunks[-1].stop if chunks else 0
        last = max(1, int(round(fraction * total)))
        for c in chunks:
            if c.start >= last:
                break
            parts.append(read_chunk(c._replace(stop=min(c.stop, last)), branches))
    if not parts:
        raise ValueError(f"no entries in {files}")
    return ak.concatenate(parts)


def evaluate_chunk(config: DataConfig, chunk: Chunk, *, training: bool,
                   roles=None) -> Table:
    """The ParT inputs (:meth:`DataConfig.model_inputs`) of the selected jets of ``chunk``."""
    return config.model_inputs(config.evaluate(read_chunk(chunk, config.branches(
        training=training)), training=training), roles)


def iterate_files(config: DataConfig, files, *, chunk_size: int = 10_000, training=False,
                  roles=None) -> Iterator[tuple[Chunk, Table]]:
    """``(chunk, inputs)`` for every chunk of ``files`` in file order (evaluation: the
    ``test_time_selection``, every selected jet once), memory bounded by one chunk."""
    for chunk in file_chunks(expand_files(files), chunk_size, config.treename):
        yield chunk, evaluate_chunk(config, chunk, training=training, roles=roles)


class JetStream:
    """Shuffled training batches streamed from ``files`` under a :class:`DataConfig`
    (module docstring).

    Args:
      files: ROOT/parquet paths or globs (:func:`expand_files`).
      config: the data config (its ``"auto"`` centres already resolved).
      batch_size: jets per global batch, divisible by ``lanes``.
      key: the root of the chunk and jet orders.
      chunk_size: entries per chunk; ``buffer_chunks``: chunks per shuffle group (the memory
        bound is about two groups per lane of this process).
      lanes: independent streams that processes share out (a multiple of the process count;
        the batches, and so a run, depend on ``lanes``, not on the number of processes).
      roles: the ParT roles of the input groups (:meth:`DataConfig.roles`).
      progress: a callable ``progress(done, total)`` for the counting pass, or ``None``.
    """

    def __init__(self, files, config: DataConfig, batch_size: int, *, key,
                 chunk_size: int = 4096, buffer_chunks: int = 8, lanes: int = 1,
                 roles=None, progress: Callable[[int, int], None] | None = None):
        check_count(batch_size, "batch_size")
        check_count(buffer_chunks, "buffer_chunks")
        check_count(lanes, "lanes")
        if batch_size % lanes:
            raise ValueError(f"batch_size {batch_size} is not divisible by lanes {lanes}")
        config.roles(roles)  # fails early on groups ParT cannot read
        self.files = expand_files(files)
        self.config, self.roles = config, roles
        self.batch_size, self.lanes, self.buffer_chunks = batch_size, lanes, buffer_chunks
        self.key = key
        self.chunks = file_chunks(self.files, chunk_size, config.treename)
        if not self.chunks:
            raise ValueError(f"no entries in {self.files}")
        count_branches = config.branches(what=[*config._selection(True).names,
                                               *config._label_names_read()])
        counts = []
        for i, chunk in enumerate(self.chunks):
            counts.append(int(config.keep(read_chunk(chunk, count_branches),
                                          training=True).sum()))
            if progress is not None:
                progress(i + 1, len(self.chunks))
        self.counts = np.asarray(counts, np.int64)
        self._cache: dict = {}
        self._order_cache: tuple = (None, None)
        self._epoch_starts = [0]  # global step at which epoch e begins, found lazily
        if self.epoch_steps(0) < 1:
            raise ValueError(f"batch_size {batch_size} is larger than the "
                             f"{int(self.counts.sum())} selected jets allow with {lanes} "
                             "lane(s) (each lane needs batch_size / lanes jets)")

    # -- the plan ---------------------------------------------------------------------------
    @property
    def n_jets(self) -> int:
        """Selected jets in all files."""
        return int(self.counts.sum())

    @property
    def lane_batch(self) -> int:
        return self.batch_size // self.lanes

    def _order(self, epoch: int) -> np.ndarray:
        """The chunk permutation of ``epoch`` (that of the newest epoch asked for is kept:
        every step of an epoch needs it, for each lane)."""
        if self._order_cache[0] != epoch:
            self._order_cache = (epoch, np.asarray(jax.random.permutation(
                jax.random.fold_in(self.key, epoch), len(self.chunks))))
        return self._order_cache[1]

    def lane_chunks(self, epoch: int, lane: int) -> np.ndarray:
        """Indices into :attr:`chunks` of ``lane``'s chunks in ``epoch``, in stream order."""
        return self._order(epoch)[lane::self.lanes]

    def _groups(self, epoch: int, lane: int) -> list[np.ndarray]:
        mine = self.lane_chunks(epoch, lane)
        return [mine[i:i + self.buffer_chunks] for i in range(0, len(mine), self.buffer_chunks)]

    def epoch_steps(self, epoch: int) -> int:
        """Steps in ``epoch``: the smallest lane's selected jets // ``batch_size / lanes``."""
        return int(min(self.counts[self.lane_chunks(epoch, lane)].sum()
                       for lane in range(self.lanes)) // self.lane_batch)

    def locate(self, step: int) -> tuple[int, int]:
        """``(epoch, step within the epoch)`` of global ``step``. The first steps of the
        epochs are kept as they are found, so each epoch's length is computed once."""
        starts = self._epoch_starts
        while starts[-1] <= step:
            epoch = len(starts) - 1
            n = self.epoch_steps(epoch)
            if n < 1:
                raise ValueError(f"epoch {epoch} has no full batch")
            starts.append(starts[-1] + n)
        epoch = bisect.bisect_right(starts, step) - 1
        return epoch, step - starts[epoch]

    # -- reading ----------------------------------------------------------------------------
    def _group(self, epoch: int, lane: int, g: int) -> Table:
        cache_key = (epoch, lane, g)
        if cache_key not in self._cache:
            chunk_ids = self._groups(epoch, lane)[g]
            parts = [evaluate_chunk(self.config, self.chunks[i], training=True,
                                    roles=self.roles) for i in chunk_ids]
            table = concatenate(parts)
            table = Table({k: v for k, v in table.items() if k in TRAINING_COLUMNS})
            row_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
                jax.random.fold_in(self.key, 0x726F7773), epoch), lane), g)  # "rows"
            table = table.take(np.asarray(jax.random.permutation(row_key, table.n_rows)))
            # the cache keeps this lane's newest two groups (a batch spans at most a boundary)
            mine = [k for k in self._cache if k[1] == lane]
            for old in mine[:max(0, len(mine) - 1)]:
                del self._cache[old]
            self._cache[cache_key] = table
        return self._cache[cache_key]

    def lane_batch_at(self, step: int, lane: int) -> Table:
        """The ``batch_size / lanes`` jets of ``lane`` in global ``step``."""
        epoch, t = self.locate(step)
        sizes = [int(self.counts[g].sum()) for g in self._groups(epoch, lane)]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        lo, hi = t * self.lane_batch, (t + 1) * self.lane_batch
        parts = []
        for g in range(len(sizes)):
            a, b = max(lo, bounds[g]), min(hi, bounds[g + 1])
            if a < b:
                table = self._group(epoch, lane, g)
                if table.n_rows != sizes[g]:
                    raise RuntimeError(f"chunk group {g} of lane {lane} holds {table.n_rows} "
                                       f"jets, not the {sizes[g]} counted: the files changed")
                parts.append(table.take(np.arange(a - bounds[g], b - bounds[g])))
        return concatenate(parts)

    def batch_at(self, step: int, lanes: Sequence[int] | None = None) -> Table:
        """The rows of ``lanes`` (default: all) in global ``step``, lane after lane."""
        lanes = range(self.lanes) if lanes is None else lanes
        return concatenate([self.lane_batch_at(step, lane) for lane in lanes])

    def process_lanes(self) -> range:
        """The lanes this process reads (``lanes / process_count`` consecutive ones)."""
        n_proc, p = jax.process_count(), jax.process_index()
        if self.lanes % n_proc:
            raise ValueError(f"lanes {self.lanes} is not a multiple of the {n_proc} processes")
        per = self.lanes // n_proc
        return range(p * per, (p + 1) * per)

    def batch_source(self, mesh=None, axis_name: str = "batch"
                     ) -> Callable[[int], Iterator[tuple[int, Table]]]:
        """``source(start) -> iterator of (step, batch)`` for
        :func:`difphys.train.training_loop`: this process's lanes, as global arrays split
        along ``axis_name`` of ``mesh`` when given."""
        from ..sharding import batch_sharding, shard_batch

        lanes = self.process_lanes()
        multi = jax.process_count() > 1
        if multi and mesh is None:
            raise ValueError("a multi-process stream needs the device mesh")
        if mesh is not None and self.batch_size % mesh.shape[axis_name]:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the "
                             f"{mesh.shape[axis_name]} devices of the mesh")

        sharding = None if mesh is None else batch_sharding(mesh, axis_name)

        def global_array(x):
            return jax.make_array_from_process_local_data(
                sharding, np.asarray(x), (self.batch_size, *np.shape(x)[1:]))

        def source(start: int):
            step = start
            while True:
                local = self.batch_at(step, lanes)
                if mesh is None:
                    yield step, local
                elif multi:
                    yield step, jax.tree.map(global_array, local)
                else:
                    yield step, shard_batch(local, mesh, axis_name)
                step += 1

        return source
