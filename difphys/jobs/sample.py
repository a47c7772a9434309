"""The event-sampling job behind ``difphys sample``: train (or resume), unweight, write LHE.

Methods: ``fab`` (FAB with replay buffer), ``rkl`` (reverse KL) and ``vegas`` (the ``vegas``
package, Lepage's adaptive grid) on the process's unit-cube phase space. Weighted events
``w = |M|^2 dPhi / (2s) / q(u)`` (pb) give the cross section; hit-or-miss against the largest
weight of a calibration sample gives unweighted events (events above it are kept once and
counted in ``overweight_fraction``). Flow sampling runs sharded along the batch over the
devices of a mesh.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import pdf as pdfs
from .._checks import check_count
from ..amplitudes import SMParams, colour_flows
from ..flows import (
    TrainConfig,
    flow_from_state,
    log_z_estimate,
    make_spline_flow,
    make_trainer,
    matrix_element_target,
    sampling_efficiency,
    unweighting_efficiency,
    vegas_sampler,
)
from ..io import process_events, write_lhe
from ..phasespace import hit_or_miss
from ..progress import progress_bar
from ..sharding import make_mesh, shard_batch
from ..train import restore_pytree, save_pytree, training_loop
from ._report import Report

SAMPLING_METHODS = ("fab", "rkl", "vegas")
_CHECKPOINT_META = "difphys_sampling.json"


def _short(value, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _save_checkpoint(checkpoint: Path, state, meta: dict) -> None:
    """Save the sampler state in ``checkpoint/state`` without ever losing the last good copy:
    write ``state.new``, then swap it in. Only a folder this job wrote (it holds
    ``difphys_sampling.json``) has its ``state`` replaced; anything else is refused."""
    target = checkpoint / "state"
    if target.exists() and not (checkpoint / _CHECKPOINT_META).exists():
        raise FileExistsError(f"{checkpoint} is not a difphys sampling checkpoint (no "
                              f"{_CHECKPOINT_META}); refusing to replace {target}")
    fresh, old = checkpoint / "state.new", checkpoint / "state.old"
    if not target.exists() and old.exists():
        old.rename(target)  # a save interrupted between its two renames left the good copy here
    for leftover in (fresh, old):  # our own scratch names from an interrupted save
        if leftover.exists():
            shutil.rmtree(leftover)
    save_pytree(fresh, state)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    from ..provenance import provenance

    (checkpoint / _CHECKPOINT_META).write_text(json.dumps({**meta, "provenance": provenance()}))
    if old.exists():
        shutil.rmtree(old)


def _train_flow(key, method, target, steps, batch, checkpoint, progress, n_layers, lr=1e-3, *,
                run_config=None):
    flow = make_spline_flow(
        jax.random.fold_in(key, 1),
        target.dim,
        support="unit_cube",
        n_layers=n_layers,
        hidden=64,
        n_bins=10,
    )
    config = TrainConfig(
        batch=batch,
        n_levels=4,
        n_leapfrog=4,
        step_size=0.02,
        buffer_capacity=(16 * batch if method == "fab" else 0),
        updates_per_ais=4,
    )
    trainer = make_trainer(method, flow, target.log_prob, optax.adam(lr), config)
    state = trainer.init(key)
    done = 0
    if checkpoint is not None:
        checkpoint = Path(checkpoint).absolute()
        meta = checkpoint / _CHECKPOINT_META
        if meta.exists():
            info = json.loads(meta.read_text())
            recorded = info.get("config", {"method": info.get("method"),
                                           "process": info.get("process")})
            wanted = run_config or {"method": method, "process": target.process_name}
            differ = sorted(k for k in set(recorded) | set(wanted)
                            if recorded.get(k) != wanted.get(k))
            if differ:
                shown = "; ".join(f"{k}: checkpoint {_short(recorded.get(k))} vs this run "
                                  f"{_short(wanted.get(k))}" for k in differ)
                raise ValueError(f"checkpoint {checkpoint} was made with a different "
                                 f"configuration ({shown}); use another --checkpoint folder")
            if int(info.get("step", 0)) > steps:
                raise ValueError(f"checkpoint {checkpoint} has {info['step']} steps, more than "
                                 f"the {steps} requested; ask for at least {info['step']}")
            saved = checkpoint / "state"
            if not saved.exists() and (checkpoint / "state.old").exists():
                saved = checkpoint / "state.old"  # a save was interrupted between its renames
            state = restore_pytree(saved, state)
            done = int(state.step)
    if steps > done:
        state, _ = training_loop(jax.jit(trainer.step), state, key=jax.random.fold_in(key, 1000),
                                 steps=steps, log_every=20, progress=progress,
                                 desc=f"train [{method}]")
    if checkpoint is not None and steps > done:
        checkpoint.mkdir(parents=True, exist_ok=True)
        _save_checkpoint(checkpoint, state,
                         {"method": method, "process": target.process_name, "step": steps,
                          "config": run_config or {"method": method,
                                                   "process": target.process_name}})
    counts = (float(state.n_target_values), float(state.n_target_grads), int(state.n_skipped))
    return flow_from_state(flow, state), counts


def _flow_weighted(key, flow, target, n, mesh):
    """(u, log w) for n flow samples, the base samples sharded along the mesh's batch axis."""
    z = jax.random.uniform(key, (n, target.dim), jnp.result_type(float))
    z = shard_batch(z, mesh)

    @eqx.filter_jit
    def run(flow, target, z):
        u, ld = flow.forward_and_log_det(z)
        log_q = -ld
        log_p = jax.vmap(target.log_prob)(u)
        return u, jnp.where(jnp.isfinite(log_p), log_p - log_q, -jnp.inf)

    return run(flow, target, z)


def sample_events(
    process_name: str = "e+ e- > t t~, t > w+ b, t~ > w- b~",
    sqrt_s: float = 1000.0,
    *,
    method: str = "fab",
    n_events: int = 10_000,
    out=None,
    train_steps: int = 300,
    batch: int = 256,
    seed: int = 0,
    checkpoint=None,
    overwrite: bool = False,
    calibration: int = 50_000,
    flow_layers: int = 8,
    progress: bool = True,
    pdf=None,
    scale=None,
    alpha_s_mz=None,
):
    """Train a sampler for ``process_name`` at ``sqrt_s`` (GeV), draw ``n_events`` unweighted
    events and write them to the LHE file ``out`` (if given; ``.lhe.gz`` compresses). Returns
    ``(report, momenta)``: a :class:`Report` with the cross section (pb) and its error,
    sampling and unweighting efficiencies, the numbers of target evaluations and timings, and
    the unweighted events' momenta ``(n_events, n, 4)`` in GeV (lab frame).

    ``pdf`` (a set name or :class:`difphys.pdf.PDFSet`) and ``scale`` (muF = muR in GeV; alpha_s
    is taken from the set at that scale when it has one, else the default ``SMParams``) make
    it a proton-proton collider at beam energy ``sqrt_s`` (``alpha_s_mz``: alpha_s(MZ) for a
    set without ``.info`` metadata, such as those of the pythia8mc wheel); multiparticle processes
    (``"p p > t t~"``) then choose each event's subprocess in proportion to its weight."""
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {SAMPLING_METHODS}")
    for name, value, low in (("n_events", n_events, 1), ("train_steps", train_steps, 1),
                             ("batch", batch, 1), ("flow_layers", flow_layers, 1),
                             ("calibration", calibration, 100)):
        check_count(value, name, low)
    if out is not None and Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    params = None
    if pdf is not None:
        pdf = pdfs.load(pdf, alpha_s=alpha_s_mz) if isinstance(pdf, str) else pdf
        if scale is None:
            raise ValueError("a proton-proton sample needs --scale (muF = muR in GeV)")
        lo, hi = pdf.q_range
        if not lo <= float(scale) <= hi:  # before alpha_s is read there
            raise ValueError(f"scale = {scale} GeV is outside the PDF grid {pdf.q_range} GeV")
        params = SMParams()
        if pdf.alpha_s_mz is not None:
            params = params.replace(aS=float(pdf.alpha_s(float(scale))))
    target = matrix_element_target(process_name, sqrt_s, params, pdf=pdf, scale=scale)
    subprocesses = target.subprocesses
    if out is not None:
        for sub in subprocesses:  # an LHE request the writer cannot serve fails now
            try:
                colour_flows(sub)
            except NotImplementedError as err:
                raise NotImplementedError(f"cannot write LHE for {sub.name!r}: {err}") from None
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    mesh = make_mesh()
    n_dev = len(mesh.devices.flat)
    chunk = max(n_dev, (8192 // n_dev) * n_dev)
    if method == "vegas":
        budget = train_steps * batch * 4 * 4 + train_steps * batch
        weighted = vegas_sampler(jax.jit(jax.vmap(target.log_prob)), target.dim, budget, key=key)
        counts = (float(budget), 0.0, 0)
    else:
        run_config = {"method": method, "process": target.process_name, "sqrt_s": float(sqrt_s),
                      "pdf": None if pdf is None else pdf.name,
                      "scale": None if scale is None else float(scale),
                      "params": target.params.param_card_text(), "batch": batch,
                      "flow_layers": flow_layers, "seed": seed}
        flow, counts = _train_flow(
            key, method, target, train_steps, batch, checkpoint, progress, flow_layers,
            run_config=run_config,
        )

        calls = itertools.count(10_000)

        def weighted(n):
            us, lws = [], []
            for _ in range(-(-n // chunk)):
                u, lw = _flow_weighted(
                    jax.random.fold_in(key, next(calls)), flow, target, chunk, mesh
                )
                us.append(np.asarray(u))
                lws.append(np.asarray(lw))
            return np.concatenate(us)[:n], np.concatenate(lws)[:n]

    t_train = time.perf_counter() - t0
    u_cal, lw_cal = weighted(calibration)
    lz = log_z_estimate(jnp.asarray(lw_cal))
    eff = float(sampling_efficiency(jnp.asarray(lw_cal)))
    unw = float(unweighting_efficiency(jnp.asarray(lw_cal)))
    unw_robust = float(unweighting_efficiency(jnp.asarray(lw_cal), robust_quantile=1e-3))
    log_w_max = float(np.max(lw_cal[np.isfinite(lw_cal)]))

    k_unweight = jax.random.fold_in(key, 3)
    kept, n_tried, n_over = [], 0, 0
    bar = progress_bar(progress, total=n_events, desc="unweighting")
    pool_u, pool_lw = u_cal, lw_cal
    for j in itertools.count():
        if sum(len(k) for k in kept) >= n_events:
            break
        if pool_u is None:
            pool_u, pool_lw = weighted(chunk)
        acc, over = hit_or_miss(jax.random.fold_in(k_unweight, j), jnp.asarray(pool_lw),
                                log_w_max)
        acc = np.asarray(acc)
        n_over += int(np.sum(np.asarray(over)))
        n_tried += acc.shape[0]
        kept.append(pool_u[acc])
        bar.update(int(acc.sum()))
        pool_u = None
    bar.close()
    u_events = np.concatenate(kept)[:n_events]
    momenta, sub_w = eqx.filter_jit(lambda t, u: t.subprocess_weights(u))(
        target, jnp.asarray(u_events))
    momenta = np.asarray(momenta)
    # each event's subprocess, in proportion to its weight at the event's point
    which = np.asarray(jax.random.categorical(
        jax.random.fold_in(key, 4), jnp.log(jnp.maximum(sub_w, 1e-300)), axis=-1))
    if out is not None:
        records = [None] * momenta.shape[0]
        for k, sub in enumerate(subprocesses):
            rows = np.flatnonzero(which == k)
            if rows.size == 0:
                continue
            recs = process_events(sub, momenta[rows], key=jax.random.fold_in(key, 5 + k),
                                  params=target.params, scale=scale, process_id=k + 1)
            for r, rec in zip(rows, recs, strict=True):
                records[r] = rec
        if pdf is None:
            beams = tuple(p.pdg for p in subprocesses[0].particles[:2])
        else:
            beams = target.beams
        write_lhe(
            out,
            records,
            beams=beams,
            beam_energies=(sqrt_s / 2, sqrt_s / 2),
            sigma_pb=float(lz.z),
            error_pb=float(lz.z_error),
            process=process_name,
            params=target.params,
            overwrite=overwrite,
            info={"method": method, "sqrt_s_GeV": sqrt_s,
                  "pdf": None if pdf is None else pdf.name,
                  "scale_GeV": scale, "subprocesses": "; ".join(s.name for s in subprocesses)},
        )
    values = {
        "process": process_name,
        "sqrt_s": sqrt_s,
        "method": method,
        "sigma_pb": float(lz.z),
        "sigma_error_pb": float(lz.z_error),
        "sampling_efficiency": eff,
        "unweighting_efficiency": unw,
        "unweighting_efficiency_robust": unw_robust,
        "overweight_fraction": n_over / max(n_tried, 1),
        "n_events": int(u_events.shape[0]),
        "n_target_values_training": counts[0],
        "n_target_grads_training": counts[1],
        "n_skipped_steps": counts[2],
        "train_seconds": t_train,
        "total_seconds": time.perf_counter() - t0,
        "devices": n_dev,
        "out": None if out is None else str(out),
    }
    v = values
    lines = (
        f"process            {v['process']} at sqrt(s) = {v['sqrt_s']} GeV",
        f"method             {v['method']} ({v['devices']} device(s))",
        f"sigma              {v['sigma_pb']:.6g} +- {v['sigma_error_pb']:.2g} pb",
        f"sampling eff.      {v['sampling_efficiency']:.4f}",
        f"unweighting eff.   {v['unweighting_efficiency']:.4f} "
        f"(robust, 0.1% overweight: {v['unweighting_efficiency_robust']:.4f})",
        f"target evaluations {v['n_target_values_training']:.0f} values, "
        f"{v['n_target_grads_training']:.0f} gradients (training), "
        f"{v['n_skipped_steps']} skipped updates",
        f"wrote {v['n_events']} unweighted events to {v['out']} in {v['total_seconds']:.1f} s",
    )
    return Report("sample", None if out is None else Path(out), values, lines), momenta
