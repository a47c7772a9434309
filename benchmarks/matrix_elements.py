"""|M|^2 throughput per CPU-second versus batch size, side by side with madgraph4gpu's C++.

For each process: the compiler's planning time and the first call's trace + XLA compilation
(separately), then float64 |M|^2 per second of wall time and per CPU-second (the process's
CPU time, so that XLA's threads are all counted: per CPU-second is per core) at batches
1, 10, ..., --max-batch, with XLA's own operation count and memory traffic per event
(``cost_analysis``), and the throughput of one sampled helicity per event
(``Process.per_helicity``: how much of the time is the helicity sum).
The anchor is madgraph4gpu's generated standalone C++ for ``g g > t t~ (g (g))``
(``../shared/anchors/madgraph4gpu/tput.sh``, LGPL, built with g++ in a scratch folder and run
on one thread in this same command), so the ratio is measured on this machine, not against
figures from other CPUs. For ``e+ e- > mu+ mu-`` (no anchor folder) the published single-core
AVX2 figure (madgraph4gpu tput logs, log_eemumu_mad_d_inl0_hrd0.txt, 3.55e6/s on an AMD EPYC
7A53) is printed as indicative.

    python benchmarks/matrix_elements.py [--max-batch 100000] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

from difphys import amplitudes as amp  # noqa: E402

ANCHOR = Path(__file__).resolve().parents[1].parent / "shared" / "anchors" / "madgraph4gpu"
ANCHOR_NAMES = {"g g > t t~": "gg_tt", "g g > t t~ g": "gg_ttg", "g g > t t~ g g": "gg_ttgg"}
PUBLISHED_AVX2 = {"e+ e- > mu+ mu-": 3.55e6}
DEFAULT = ["g g > t t~", "g g > t t~ g", "g g > t t~ g g", "e+ e- > mu+ mu-"]


def _materialised_anchor() -> Path:
    """A scratch copy of the anchor folder with its git symlinks restored.

    The shared copy stores each of madgraph4gpu's symbolic links (``makefile -> cudacpp.mk``,
    ``Bridge.h -> ../Bridge.h``, ...) as a small text file holding the link's target, which
    ``make`` cannot use; the copy turns every such file back into the link it stands for."""
    scratch = Path(tempfile.mkdtemp(prefix="mg4gpu_anchor_"))
    atexit.register(shutil.rmtree, scratch, True)
    target = scratch / "madgraph4gpu"
    shutil.copytree(ANCHOR, target, symlinks=True)
    for path in target.rglob("*"):
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    for path in sorted(target.rglob("*")):
        if not path.is_file() or path.stat().st_size > 200:
            continue
        text = path.read_text(errors="replace").strip()
        if text and "\n" not in text and " " not in text and (path.parent / text).exists():
            path.unlink()
            path.symlink_to(text)
    return target


_ANCHOR_COPY: list[Path] = []


def anchor_rate(name: str, backend: str):
    """madgraph4gpu's single-thread |M|^2 per second (its JSON line), or None without it."""
    tag = ANCHOR_NAMES.get(name)
    if tag is None or not (ANCHOR / "tput.sh").exists():
        return None
    if not _ANCHOR_COPY:
        _ANCHOR_COPY.append(_materialised_anchor())
    out = subprocess.run(["bash", str(_ANCHOR_COPY[0] / "tput.sh"), tag, backend],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {"anchor": "madgraph4gpu", "process": name, "backend": backend,
                "error": out.stderr[-400:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed(fn, *args, budget_s: float, repeats: int):
    """(best wall seconds, CPU seconds of that call) over up to ``repeats`` calls."""
    best, cpu = float("inf"), float("inf")
    spent = 0.0
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        wall, c = time.perf_counter() - w0, time.process_time() - c0
        spent += wall
        if wall < best:
            best, cpu = wall, c
        if spent > budget_s:
            break
    return best, cpu


def measure(name: str, max_batch: int, repeats: int, budget_s: float, chunk: int | None,
            min_batch: int = 1):
    t0 = time.perf_counter()
    proc = amp.process(name)
    plan_s = time.perf_counter() - t0
    proc.chunk_size = chunk
    params = amp.SMParams()
    squared = jax.jit(proc.__call__)
    one_helicity = jax.jit(proc.per_helicity)
    batch = min_batch
    while batch <= max_batch:
        u = jax.random.uniform(jax.random.key(batch), (batch, proc.phase_space_dim),
                               jnp.float64, 0.01, 0.99)
        momenta = proc.phase_space(u, jnp.asarray(1500.0), params)[0]
        t0 = time.perf_counter()
        compiled = squared.lower(momenta, params).compile()
        compile_s = time.perf_counter() - t0
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        jax.block_until_ready(compiled(momenta, params))  # warm
        wall, cpu = _timed(compiled, momenta, params, budget_s=budget_s, repeats=repeats)
        hel = jax.random.randint(jax.random.key(7), (batch,), 0, proc.n_helicities)
        one_c = one_helicity.lower(momenta, hel, params).compile()
        jax.block_until_ready(one_c(momenta, hel, params))
        one_wall, one_cpu = _timed(one_c, momenta, hel, params, budget_s=budget_s,
                                   repeats=repeats)
        # XLA counts a lax.map body once: the cost is that of one chunk when chunked
        counted = min(batch, chunk) if chunk else batch
        record = {
            "benchmark": "matrix_elements", "process": name, "dtype": "float64", "batch": batch,
            "me_per_s_wall": batch / wall, "me_per_cpu_s": batch / max(cpu, 1e-9),
            "cpu_over_wall": cpu / wall, "plan_s": round(plan_s, 3),
            "compile_s": round(compile_s, 3), "n_helicities": proc.n_helicities,
            "n_colour_basis": int(proc.colour_matrix.shape[0]),
            "n_currents": len(proc.plan.currents), "chunk_size": chunk,
            "flops_per_event": float(cost.get("flops", float("nan"))) / counted,
            "bytes_per_event": float(cost.get("bytes accessed", float("nan"))) / counted,
            "one_helicity_per_cpu_s": batch / max(one_cpu, 1e-9),
            "one_helicity_speedup": (cpu / max(one_cpu, 1e-9)),
            "device": jax.devices()[0].platform, "cpus": os.cpu_count(),
            "load_average": float(open("/proc/loadavg").read().split()[0]),
        }
        yield record
        if 10 * wall > 2 * budget_s:
            break  # one call of the next batch (10x) would take more than twice the budget
        batch *= 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-batch", type=int, default=100_000)
    parser.add_argument("--min-batch", type=int, default=1,
                        help="first batch (then x10 up to --max-batch; a GPU wants 10000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of timed calls per point at most (default 30)")
    parser.add_argument("--processes", nargs="*", default=DEFAULT)
    parser.add_argument("--backends", nargs="*", default=["cppnone", "cppavx2"],
                        help="madgraph4gpu backends to build and time (none to skip)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--chunk", type=int, default=amp.Process.chunk_size,
                        help="Process.chunk_size (0: one pass over the whole batch)")
    args = parser.parse_args()
    sink = open(args.out, "a") if args.out else None  # noqa: SIM115

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    for name in args.processes:
        anchors = {}
        for backend in args.backends:
            rec = anchor_rate(name, backend)
            if rec is not None:
                emit(rec)
                if "evts_per_s_me_only" in rec:
                    anchors[backend] = rec["evts_per_s_me_only"]
        if name in PUBLISHED_AVX2 and not anchors and jax.devices()[0].platform == "cpu":
            anchors["published_avx2"] = PUBLISHED_AVX2[name]
        chunk = args.chunk or None
        for record in measure(name, args.max_batch, args.repeats, args.budget, chunk,
                              args.min_batch):
            for backend, rate in anchors.items():
                record[f"ratio_per_core_vs_mg4gpu_{backend}"] = record["me_per_cpu_s"] / rate
            emit(record)


if __name__ == "__main__":
    main()
