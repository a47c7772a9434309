"""The story steps of ``difphys demo`` (vertex fit, stochastic AD; FAB and the foundation step
in the slow full-demo test)."""

import json

import numpy as np
import pytest

from difphys import cli
from difphys.jobs import _story as story


def test_vertex_step_checks_hold(key):
    r = story.vertex_step(key, n_jets=400, n_tracks=5)
    assert all(r["checks"].values()), r
    assert r["converged_fraction"] > 0.99
    assert np.isclose(r["dx_dw0_implicit"], r["dx_dw0_finite_difference"], rtol=1e-4, atol=1e-9)


def test_stochad_step_estimators_agree(key):
    r = story.stochad_step(key, n=500, steps=5)
    assert all(r["checks"].values()), r
    assert r["variance_ratio_score_over_stochad"] > 1.0  # stochastic AD is the better estimator


@pytest.mark.slow
def test_full_demo(tmp_path, capsys):
    """The README's run command end to end (about 3 minutes on 2 CPU cores)."""
    pytest.importorskip("pythia8mc")
    assert cli.main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    report = json.loads((run / "report.json").read_text())
    assert report["all_checks_pass"]
    assert (run / "story.png").stat().st_size > 10_000
    assert (run / "fab_events.lhe").exists()
    assert report["foundation"]["finetune_auc_b_vs_light"] > 0.6
    assert "foundation" in capsys.readouterr().out
