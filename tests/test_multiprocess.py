"""Two processes on localhost (jax.distributed, CPU collectives): ``difphys train
--data-config`` on 2 processes equals the same run on 1 process, and writes its files once."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import uproot
from flax import nnx

CONFIG = Path(__file__).parent / "data" / "zpole_full.yaml"
STEPS = 12


@pytest.fixture(scope="module")
def files(zpole_files):
    """1600 Z-pole jets in 4 training files and one validation file of 320."""
    folder, _ = zpole_files(1600, ["train0", "train1", "train2", "train3", "val4"])
    return folder


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_args(folder, out):
    return [sys.executable, "-m", "difphys.cli", "train", "--data-config", str(CONFIG),
            "--data-train", str(folder / "train*.root"), "--data-val",
            str(folder / "val4.root"), "--out", str(out), "--model", "tiny",
            "--steps", str(STEPS), "--batch", "32", "--chunk-size", "100",
            "--buffer-chunks", "2", "--lanes", "2", "--quiet"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "SLURM_", "OMPI_", "PMI_")) and k != "XLA_FLAGS"}
    env.update(extra)
    return env


def _run(args, env, timeout=600):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def _params(run):
    from difphys.jobs import load_trained

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(load_trained(run)[0]))]


def test_two_processes_equal_one_and_write_once(files, tmp_path):
    port = _port()
    two = tmp_path / "two"
    procs = [subprocess.Popen(_train_args(files, two), env=_env(
        JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "2 device(s) in 2 process(es), 2 lane(s)" in out
    # the same run in one process: the same two devices (so the same reductions), and one
    one_two = tmp_path / "one_two_devices"
    r = _run(_train_args(files, one_two),
             _env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    one = tmp_path / "one_device"
    r = _run(_train_args(files, one), _env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 device(s) in 1 process(es), 2 lane(s)" in r.stdout

    for a, b in zip(_params(two), _params(one_two), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # on one device the float32 reductions run in another order: the losses still agree
    hist = {name: [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
            for name, run in (("two", two), ("one", one))}
    assert [h["step"] for h in hist["two"]] == [10, STEPS]  # written once, not per process
    np.testing.assert_allclose([h["loss"] for h in hist["two"]],
                               [h["loss"] for h in hist["one"]], rtol=1e-5)
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["provenance"]["process_count"] == 2
    assert metrics["provenance"]["device_count"] == 2
    single = json.loads((one / "metrics.json").read_text())
    assert metrics["val_jets"] == single["val_jets"] > 0
    assert metrics["val_auc"] == pytest.approx(single["val_auc"], abs=1e-3)
    names = sorted(p.name for p in two.iterdir())
    assert names == ["checkpoints", "config.json", "data_config.yaml", "history.jsonl",
                     "metrics.json", "model", "roc.png"]
    assert not list(two.glob("*.partial"))


def test_commands_that_do_not_share_their_work_refuse_several_processes(tmp_path):
    port = _port()
    args = [sys.executable, "-m", "difphys.cli", "predict", str(tmp_path), "--data",
            "x.root", "--out", str(tmp_path / "s.root")]
    procs = [subprocess.Popen(args, env=_env(
        JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
        JAX_PROCESS_ID=str(i)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2
        assert "difphys predict runs in one process" in err and "2 processes" in err
    assert not (tmp_path / "s.root").exists()


def test_the_trained_run_predicts_to_root_and_parquet(files, tmp_path):
    """train --data-config, then predict: one row per selected jet, with its file entry, the
    label, the observers, and probabilities that sum to one; ROOT and parquet agree."""
    run = tmp_path / "run"
    r = _run(_train_args(files, run), _env())
    assert r.returncode == 0, r.stderr[-3000:]
    val = json.loads((run / "metrics.json").read_text())["val_jets"]
    from difphys.cli import main

    root, parquet = tmp_path / "s.root", tmp_path / "s.parquet"
    for out in (root, parquet):
        assert main(["predict", str(run), "--data", str(files / "val4.root"), "--out",
                     str(out), "--quiet"]) == 0
    events = uproot.open(root)["Events"].arrays(library="np")
    assert len(events["label"]) == val
    scores = np.stack([events[f"score_{n}"] for n in ("label_b", "label_c", "label_uds")], 1)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(events["label"], np.argmax(np.stack(
        [events[n] for n in ("label_b", "label_c", "label_uds")], 1), 1))
    raw = uproot.open(files / "val4.root")["tree"].arrays(["jet_pt"], library="np")
    np.testing.assert_array_equal(events["jet_pt"], raw["jet_pt"][events["entry"]])
    assert np.all(events["jet_pt"] > 5)  # the config's selection
    assert json.loads(str(uproot.open(root)["provenance"]))["versions"]["jax"] == jax.__version__
    pytest.importorskip("pyarrow")
    import awkward as ak

    table = ak.from_parquet(parquet)
    np.testing.assert_array_equal(ak.to_numpy(table["score_label_b"]), events["score_label_b"])
    assert main(["predict", str(run), "--data", str(files / "val4.root"), "--out", str(root),
                 "--quiet"]) == 2  # never replaced without --overwrite
