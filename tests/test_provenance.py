"""Every output records what made it (difphys.provenance): versions, devices, git commit."""

import json
import subprocess
from importlib import metadata
from pathlib import Path

import jax
import pytest

from difphys.jobs import prepare_run_dir
from difphys.jobs._runs import write_json, write_run_config
from difphys.provenance import PACKAGES, provenance

ROOT = Path(__file__).parent.parent


def test_provenance_names_versions_devices_and_commit():
    p = provenance()
    for name in PACKAGES:
        assert p["versions"][name] == metadata.version(name)
    assert p["device_count"] == len(jax.devices()) and p["process_count"] == 1
    assert p["device_kind"] == jax.devices()[0].device_kind
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert p["git_commit"].split("+")[0] == head
    json.dumps(p)  # JSON-ready


def test_run_folders_record_provenance_and_resume_ignores_it(tmp_path):
    run = tmp_path / "run"
    config = {"steps": 10, "seed": 1}
    prepare_run_dir(run, config)
    first = json.loads((run / "config.json").read_text())
    assert first["provenance"]["versions"]["jax"] == jax.__version__
    # an earlier record from another machine: resuming is allowed and keeps it
    first["provenance"]["device_kind"] = "elsewhere"
    (run / "config.json").write_text(json.dumps(first))
    prepare_run_dir(run, {"steps": 20, "seed": 1}, policy="resume")
    second = json.loads((run / "config.json").read_text())
    assert second["provenance_earlier"][0]["device_kind"] == "elsewhere"
    assert second["provenance"]["device_kind"] == jax.devices()[0].device_kind
    with pytest.raises(ValueError, match="seed"):
        prepare_run_dir(run, {"steps": 20, "seed": 2}, policy="resume")
    write_run_config(run, {"steps": 20, "seed": 1})
    metrics = json.loads(write_json(run / "metrics.json", {"auc": 0.5}).read_text())
    assert metrics["auc"] == 0.5 and metrics["provenance"]["device_count"] >= 1


def test_sampled_lhe_header_records_versions_and_device(tmp_path):
    jax.config.update("jax_enable_x64", True)
    from difphys.jobs import sample_events

    out = tmp_path / "mumu.lhe"
    sample_events("e+ e- > mu+ mu-", 91.1876, method="rkl", n_events=5, out=out,
                  train_steps=2, batch=32, calibration=200, flow_layers=2, progress=False)
    header = out.read_text().split("</header>")[0]
    assert f"jax = {jax.__version__}" in header
    assert f"difphys = {metadata.version('difphys')}" in header
    assert f"device = {len(jax.devices())} x {jax.devices()[0].device_kind}" in header
    assert "git_commit = " in header


def test_figures_carry_the_provenance_in_their_metadata(tmp_path):
    import numpy as np
    from PIL import Image

    from difphys.jobs._plots import plot_roc

    path = tmp_path / "roc.png"
    plot_roc(path, np.linspace(0, 1, 5), np.linspace(0.01, 1, 5), 0.8, "b vs light")
    text = Image.open(path).text
    assert text["Software"] == f"difphys {metadata.version('difphys')}"
    assert json.loads(text["Description"])["versions"]["jax"] == jax.__version__
