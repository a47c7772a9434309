"""Peak memory of streamed training (``difphys train --data-config``) over 20 files against
2 files, with the in-memory path (``difphys train FILES``, which loads every jet) as the
reference run in the same command.

Generates Z-pole jets with Pythia 8 + FastJet (``difphys generate``), cuts them into files
of ``--jets-per-file`` jets, and trains a tiny ParT for the same number of steps on 2 and on
20 files, each run in its own process; the child reports its peak resident set size
(``ru_maxrss``). The acceptance target: streamed peak RSS over 20 files within 1.5x of the
2-file run. Prints one JSON line per run and the ratios; ``--json`` appends them.

    python benchmarks/stream_memory.py --json benchmarks/results/stream_memory_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).parent.parent / "tests" / "data" / "zpole_full.yaml"

CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
t0 = time.perf_counter()
from difphys.jobs import train_from_data_config, train_jet_classifier
if args["mode"] == "stream":
    train_from_data_config(args["config"], args["files"], args["out"], model_size="tiny",
                           steps=args["steps"], batch_size=args["batch"], progress=False,
                           chunk_size=args["chunk"], buffer_chunks=args["buffer"])
else:
    train_jet_classifier(args["files"], ["label_b", "label_c", "label_uds"], args["out"],
                         model_size="tiny", steps=args["steps"], batch_size=args["batch"],
                         progress=False, max_particles=64)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0}))
"""


def _split(source: Path, folder: Path, per_file: int, n_files: int) -> list[str]:
    import uproot

    jets = uproot.open(source)["tree"].arrays(library="ak")
    if len(jets) < per_file * n_files:
        raise SystemExit(f"{len(jets)} jets generated, {per_file * n_files} needed")
    out = []
    for i in range(n_files):
        part = jets[per_file * i:per_file * (i + 1)]
        path = folder / f"z{i:02d}.root"
        with uproot.recreate(path) as f:
            f["tree"] = {k: part[k] for k in part.fields}
        out.append(str(path))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jets-per-file", type=int, default=2000)
    parser.add_argument("--files", type=int, nargs=2, default=(2, 20))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--buffer", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--json", default=None, help="append the JSON lines to this file")
    args = parser.parse_args()

    from difphys.data import generate

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_jets = args.jets_per_file * max(args.files)
        t0 = time.perf_counter()
        report = generate("zpole", n_jets // 2 + 200, args.seed, tmp / "all.root",
                          workers=args.workers, progress=False)
        print(f"generated {report.jets} jets in {time.perf_counter() - t0:.0f} s", flush=True)
        files = _split(report.path, tmp, args.jets_per_file, max(args.files))
        for mode in ("stream", "in_memory"):
            for n in args.files:
                spec = dict(mode=mode, config=str(CONFIG), files=files[:n],
                            out=str(tmp / f"{mode}_{n}"), steps=args.steps, batch=args.batch,
                            chunk=args.chunk, buffer=args.buffer)
                r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)],
                                   capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(r.stderr[-3000:])
                row = {"benchmark": "stream_memory", "mode": mode, "files": n,
                       "jets": n * args.jets_per_file, "steps": args.steps,
                       "batch": args.batch, "chunk": args.chunk, "buffer": args.buffer,
                       **json.loads(r.stdout.strip().splitlines()[-1])}
                print(json.dumps(row), flush=True)
                rows.append(row)
    small, large = args.files
    for mode in ("stream", "in_memory"):
        rss = {r["files"]: r["peak_rss_mb"] for r in rows if r["mode"] == mode}
        ratio = rss[large] / rss[small]
        summary = {"benchmark": "stream_memory", "mode": mode, "summary": True,
                   f"peak_rss_ratio_{large}_over_{small}_files": ratio,
                   "target": "<= 1.5 (stream)"}
        print(f"{mode:10s} peak RSS {rss[small]:.0f} MB ({small} files) -> {rss[large]:.0f} MB "
              f"({large} files): ratio {ratio:.2f}")
        rows.append(summary)
    if args.json:
        with open(args.json, "a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
