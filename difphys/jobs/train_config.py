"""``difphys train --data-config``: a Particle Transformer trained on files described by a
weaver-core YAML data config, streamed in chunks (memory bounded whatever the dataset size),
on one or many processes; and ``difphys predict``, which writes its scores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
import optax
from flax import nnx

from .._checks import check_count
from .._extras import require
from ..io import (
    DataConfig,
    JetStream,
    auto_standardise,
    expand_files,
    file_chunks,
    iterate_files,
    read_chunk,
)
from ..io import read_fraction as _read_fraction
from ..nn import ParTConfig, ParticleTransformer, count_params
from ..progress import progress_bar
from ..provenance import is_writer, provenance
from ..sharding import make_mesh
from ..train import (
    accuracy,
    binary_metrics,
    class_logit,
    fit,
    load_module,
    predict,
    roc_curve,
    save_module,
)
from ._classes import SIGNAL_CLASS
from ._plots import plot_roc
from ._report import Report
from ._runs import prepare_run_dir, save_history, write_json, write_run_config

PREDICTION_TREE = "Events"
"""The tree of a ROOT prediction file (weaver-core's name)."""


def _sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _local(model: nnx.Module) -> nnx.Module:
    """``model`` with every array on this process's first device: after data-parallel
    training on many processes the replicated parameters span devices this process cannot
    address, and evaluation here is local."""
    state = nnx.state(model)

    def local(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(np.asarray(x.addressable_data(0)), jax.local_devices()[0])
        return x

    nnx.update(model, jax.tree.map(local, state))
    return model


def _evaluate(model, config: DataConfig, files, *, chunk_size: int, roles, progress, desc):
    """Logits and labels of every selected jet of ``files`` (evaluation selection)."""
    logits, labels = [], []
    bar = progress_bar(progress, total=None, desc=desc, unit="chunk")
    try:
        for _, table in iterate_files(config, files, chunk_size=chunk_size, roles=roles):
            if table.n_rows:
                logits.append(predict(model, table))
                labels.append(table["label"])
            bar.update(1)
    finally:
        bar.close()
    if not logits:
        raise ValueError(f"no jet of {files} passes the data config's selection")
    return np.concatenate(logits), np.concatenate(labels)


def _metrics(logits, labels, prefix: str) -> dict:
    score = class_logit(logits, SIGNAL_CLASS)
    roc = binary_metrics(score, labels == SIGNAL_CLASS)
    return {f"{prefix}_jets": int(len(labels)), f"{prefix}_auc": roc.auc,
            f"{prefix}_accuracy": accuracy(logits, labels),
            f"{prefix}_rejection_at_50": roc.rejection_at(0.5),
            f"{prefix}_rejection_at_30": roc.rejection_at(0.3)}


def train_from_data_config(
    data_config,
    data_train,
    out,
    *,
    data_val=None,
    data_test=None,
    model_size: str = "small",
    steps: int = 1000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    resume: bool = False,
    chunk_size: int = 4096,
    buffer_chunks: int = 8,
    lanes: int | None = None,
    roles: dict | None = None,
    progress: bool = True,
) -> Report:
    """Train a ParT classifier of the data config's labels (class 0, the first, is the signal
    of the ROC metrics) on ``data_train`` (ROOT/parquet paths or globs), streamed
    (:class:`difphys.io.JetStream`), and evaluate it on ``data_val`` and ``data_test``.

    Writes to the run folder ``out`` (on process 0 only): ``config.json`` (settings, the
    expanded file list, the data config's SHA-256, provenance), ``data_config.yaml`` (the
    config with resolved standardisation, as weaver-core writes it), ``history.jsonl``,
    ``checkpoints/`` (orbax; ``resume`` continues mid-epoch exactly), ``model/`` (for
    :func:`predict_files`), ``metrics.json`` and ``roc.png`` (with ``data_val`` or
    ``data_test``). ``lanes`` (default: the number of processes) fixes the batches: a run
    on any number of processes that divides it gives the same result. Under
    ``jax.distributed`` every process runs this function (``difphys`` does), reads its own
    lanes' chunks and trains on the global mesh.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size),
                        ("chunk_size", chunk_size), ("buffer_chunks", buffer_chunks)):
        check_count(value, name)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and positive; got {learning_rate!r}")
    lanes = jax.process_count() if lanes is None else lanes
    check_count(lanes, "lanes")
    config_path = Path(data_config).absolute()
    cfg = DataConfig.from_yaml(config_path)
    train_files = expand_files(data_train)
    val_files = None if data_val is None else expand_files(data_val)
    test_files = None if data_test is None else expand_files(data_test)
    if cfg.num_classes is None:
        raise ValueError("a custom label needs its number of classes; use labels.type simple")
    part_cfg = ParTConfig.named(model_size, num_classes=cfg.num_classes,
                                input_dim=cfg.input_dim(roles))
    record = dict(data_config=str(config_path), data_config_sha256=_sha256(config_path),
                  data_train=[str(Path(f).absolute()) for f in train_files],
                  data_val=None if val_files is None else [str(Path(f).absolute())
                                                           for f in val_files],
                  data_test=None if test_files is None else [str(Path(f).absolute())
                                                             for f in test_files],
                  labels=list(cfg.label_names), model_size=model_size, steps=steps,
                  batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                  chunk_size=chunk_size, buffer_chunks=buffer_chunks, lanes=lanes,
                  roles=cfg.roles(roles)._asdict())
    out = prepare_run_dir(out, record, policy="resume" if resume else "new", write=False)
    mesh = make_mesh()
    if batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {mesh.size} devices")
    if cfg.needs_auto:
        cfg = auto_standardise(cfg, lambda branches: _read_fraction(
            train_files, cfg.data_fraction, branches, treename=cfg.treename))
    root = jax.random.key(seed)
    bar = progress_bar(progress and is_writer(), total=None, desc="count jets", unit="chunk")
    try:
        stream = JetStream(train_files, cfg, batch_size, key=jax.random.fold_in(root, 1),
                           chunk_size=chunk_size, buffer_chunks=buffer_chunks, lanes=lanes,
                           roles=roles, progress=lambda done, total: bar.update(1))
    finally:
        bar.close()
    write_run_config(out, record)  # only a request that passed every check leaves a folder
    if is_writer():
        cfg.write_yaml(out / "data_config.yaml")
    model = ParticleTransformer(part_cfg, rngs=nnx.Rngs(seed))
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(100, steps // 10 + 1),
                                                  steps)
    t0 = time.perf_counter()
    model, history = fit(model, stream, steps=steps, batch_size=batch_size,
                         key=jax.random.fold_in(root, 2), optimizer=optax.adamw(schedule),
                         checkpoint_dir=out / "checkpoints", checkpoint_every=max(1, steps // 10),
                         mesh=mesh, progress=progress and is_writer())
    train_seconds = time.perf_counter() - t0
    # every process takes part in orbax's save of the replicated global arrays (process 0
    # writes them and meta.json); evaluation then runs on local copies
    save_module(out / "model", model, {"part_config": dataclasses.asdict(part_cfg),
                                       "labels": list(cfg.label_names),
                                       "provenance": provenance()})
    model = _local(model)
    metrics = {"labels": list(cfg.label_names), "train_jets_selected": stream.n_jets,
               "train_files": len(train_files), "params": count_params(model),
               "devices": int(mesh.size), "processes": jax.process_count(), "lanes": lanes,
               "steps": steps, "train_seconds_this_run": train_seconds,
               "final_train_loss": history.last("loss") if history.n_rows else None}
    curves = {}
    for prefix, files in (("val", val_files), ("test", test_files)):
        if files is not None:
            logits, labels = _evaluate(model, cfg, files, chunk_size=chunk_size, roles=roles,
                                       progress=progress and is_writer(), desc=prefix)
            metrics.update(_metrics(logits, labels, prefix))
            curves[prefix] = roc_curve(class_logit(logits, SIGNAL_CLASS),
                                       labels == SIGNAL_CLASS)
    save_history(out / "history.jsonl", history, append=resume)
    write_json(out / "metrics.json", metrics)
    if curves and is_writer():
        which = "test" if "test" in curves else "val"
        plot_roc(out / "roc.png", *curves[which], metrics[f"{which}_auc"],
                 f"{cfg.label_names[0]} vs rest ({which})")
    lines = [f"{len(train_files)} training file(s), {stream.n_jets} selected jets, "
             f"{metrics['params']} parameters, {metrics['devices']} device(s) in "
             f"{metrics['processes']} process(es), {lanes} lane(s)"]
    for prefix in ("val", "test"):
        if f"{prefix}_auc" in metrics:
            lines.append(f"{prefix}: {metrics[prefix + '_jets']} jets, ROC AUC "
                         f"{metrics[prefix + '_auc']:.4f}, accuracy "
                         f"{metrics[prefix + '_accuracy']:.4f}")
    lines.append(f"wrote {out}/metrics.json, model/, data_config.yaml, history, checkpoints")
    return Report("train", out, metrics, tuple(lines))


class TrainedRun(NamedTuple):
    """A run folder of :func:`train_from_data_config`: the trained ``model``, its resolved
    data ``config`` and the recorded ``settings`` (``config.json``)."""

    model: ParticleTransformer
    config: DataConfig
    settings: dict


def load_trained(run) -> TrainedRun:
    """The model, resolved data config and ``config.json`` of a run folder written by
    :func:`train_from_data_config`."""
    run = Path(run)
    meta_path = run / "model" / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{run} holds no trained model (no model/meta.json): train it "
                                "with difphys train --data-config")
    meta = json.loads(meta_path.read_text())
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["part_config"].items()}
    model = ParticleTransformer(ParTConfig(**fields), rngs=nnx.Rngs(0))
    load_module(run / "model", model)
    cfg = DataConfig.from_yaml(run / "data_config.yaml")
    return TrainedRun(model, cfg, json.loads((run / "config.json").read_text()))


def predict_files(run, files, out, *, data_config=None, chunk_size: int = 10_000,
                  overwrite: bool = False, progress: bool = True) -> Report:
    """Write the scores of the model in the run folder ``run`` for every jet of ``files``
    that passes the evaluation selection, to ``out`` (``.root``: tree ``Events``; ``.parquet``).

    Columns: ``score_<label>`` (softmax probabilities, float32) per class, ``label`` (the
    class index), each label branch as 0/1 for a simple label, and the data config's
    observers and monitor variables; ``file`` and ``entry`` say where each jet came from.
    The ROOT file also holds the provenance as a string ``provenance`` (JSON), the parquet
    file in its key-value metadata. ``data_config`` replaces the run's resolved config (same
    inputs). Written in chunks (memory bounded by one chunk), on process 0 only; an existing
    ``out`` is refused unless ``overwrite``.
    """
    out = Path(out)
    if out.suffix not in (".root", ".parquet"):
        raise ValueError(f"{out}: predictions are written to .root or .parquet")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    model, cfg, record = load_trained(run)
    if data_config is not None:
        cfg = DataConfig.from_yaml(data_config)
    roles = record.get("roles")
    names = list(cfg.label_names)
    files = expand_files(files)
    if not is_writer():
        return Report("predict", out, {}, ())
    prov = json.dumps(provenance())
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    n = 0
    bar = progress_bar(progress, total=None, desc="predict", unit="chunk")
    writer = None
    try:
        for chunk in file_chunks(files, chunk_size, cfg.treename):
            jets = read_chunk(chunk, cfg.branches(training=False))
            keep = cfg.keep(jets, training=False)
            entries = chunk.start + np.flatnonzero(keep)
            table = cfg.model_inputs(cfg.evaluate(jets, training=False, keep=keep), roles)
            if not table.n_rows:
                continue
            logits = predict(model, table)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            cols = {f"score_{name}": p[:, k].astype(np.float32) for k, name in enumerate(names)}
            cols["label"] = table["label"].astype(np.int32)
            if cfg.label_type == "simple":
                for k, name in enumerate(names):
                    cols[name] = (table["label"] == k).astype(np.int32)
            for name in (*cfg.observers, *cfg.monitor_variables):
                cols[name] = np.asarray(table[name])
            cols["entry"] = entries.astype(np.int64)
            cols["file"] = np.full(len(cols["label"]), files.index(chunk.file), np.int32)
            writer = _write(writer, partial, cols, prov, files)
            n += len(cols["label"])
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if n == 0:
        partial.unlink(missing_ok=True)
        raise ValueError(f"no jet of {files} passes the data config's selection")
    partial.replace(out)
    lines = (f"wrote scores of {n} jets from {len(files)} file(s) to {out}",)
    return Report("predict", out, {"jets": n, "files": files, "out": str(out)}, lines)


class _RootWriter:
    def __init__(self, path, cols, prov, files):
        import uproot

        self.file = uproot.recreate(path)
        self.file["provenance"] = prov
        self.file["files"] = json.dumps(files)
        self.file.mktree(PREDICTION_TREE, {k: v.dtype for k, v in cols.items()})

    def write(self, cols):
        self.file[PREDICTION_TREE].extend(cols)

    def close(self):
        self.file.close()


class _ParquetWriter:
    def __init__(self, path, cols, prov, files):
        pa = require("pyarrow", "parquet", "writing parquet files")
        import pyarrow.parquet as pq

        schema = pa.table(cols).schema.with_metadata({"provenance": prov,
                                                      "files": json.dumps(files)})
        self.schema = schema
        self.writer = pq.ParquetWriter(str(path), schema)

    def write(self, cols):
        import pyarrow as pa

        self.writer.write_table(pa.table(cols, schema=self.schema))

    def close(self):
        self.writer.close()


def _write(writer, path, cols, prov, files):
    if writer is None:
        writer = (_RootWriter if path.suffix == ".root" else _ParquetWriter)(path, cols, prov,
                                                                            files)
    writer.write(cols)
    return writer
