"""The ``difphys`` command line: help, the demo's report, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from difphys import cli, phasespace


def test_help_lists_demo():
    out = subprocess.run(
        [sys.executable, "-m", "difphys.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "demo" in out.stdout


def test_demo_report_is_correct(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path), "--points", "20000", "--quiet", "--seed", "3",
                             "--physics-only"])
    assert code == 0
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1
    report = json.loads((runs[0] / "report.json").read_text())
    assert (runs[0] / "demo.png").stat().st_size > 10_000
    vol = report["massless_3body_volume"]
    np.testing.assert_allclose(
        vol["analytic"], float(phasespace.massless_volume(3, 91.1876)), rtol=1e-14
    )
    assert abs(vol["monte_carlo"] - vol["analytic"]) < 4 * vol["error"]
    grad = report["gradient"]
    # I(sqrt s) = s^2 / (768 pi^3) for massless 3-body, so dI/dsqrt(s) = 4 I / sqrt(s).
    np.testing.assert_allclose(grad["I_analytic"], 91.1876**4 / (768 * np.pi**3), rtol=1e-14)
    np.testing.assert_allclose(
        grad["dI_dsqrt_s_autodiff"], grad["dI_dsqrt_s_finite_difference"], rtol=1e-6
    )
    assert report["all_checks_pass"]
    # the report records what made it (versions, device)
    import jax

    assert report["provenance"]["versions"]["jax"] == jax.__version__
    assert report["provenance"]["device_count"] == len(jax.devices())
    out = capsys.readouterr().out
    assert "massless Phi_3" in out and "sigma(e+ e- > mu+ mu-)" in out
    xs = report["cross_section"]
    assert abs(xs["sigma_pb"] - xs["analytic_pb"]) < 4 * xs["error_pb"]
    # A second run never overwrites the first.
    assert cli.main(["demo", "--out", str(tmp_path), "--points", "2000", "--quiet",
                     "--physics-only"]) in (0, 1)
    assert len(list(tmp_path.iterdir())) == 2


def test_demo_rejects_bad_input(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--points", "10"]) == 2
    assert "n_points" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--sqrt-s", "nan", "--quiet"]) == 2


def test_train_trim_flags_parse_and_reject_bad_quantiles(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "z.root", "--out", "run", "--trim", "16",
                              "--trim-quantile", "0.9,1.02"])
    assert args.trim == 16 and args.trim_quantile == (0.9, 1.02)
    assert parser.parse_args(["train", "z.root", "--out", "run"]).trim is None
    assert parser.parse_args(["train", "z.root", "--out", "run", "--trim", "8", "--bucket",
                              "16"]).bucket == 16
    assert parser.parse_args(["train", "z.root", "--out", "r", "--trim-quantile", "0.8"]
                             ).trim_quantile == 0.8
    for bad in ("1.0,0.9", "x", "0,1", "0.5,0.6,0.7"):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "z.root", "--out", "run", "--trim-quantile", bad])
        assert "--trim-quantile" in capsys.readouterr().err


def test_train_and_predict_requests_are_checked_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run)]) == 2
    assert "--data-config with --data-train" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(run), "--data-train", "a.root"]) == 2
    assert "--data-train needs --data-config" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(run), "--data-config", "x.yaml", "f.root"]) == 2
    assert "not as positional arguments" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path), "--data", "f.root",
                     "--out", str(tmp_path / "s.csv")]) == 2
    assert ".root or .parquet" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path), "--data", "f.root",
                     "--out", str(tmp_path / "s.root")]) == 2
    assert "no trained model" in capsys.readouterr().err
    assert not run.exists()
    help_text = subprocess.run([sys.executable, "-m", "difphys.cli", "--help"],
                               capture_output=True, text=True).stdout
    assert "predict" in help_text and "--plot-style" in help_text


def test_a_missing_extra_is_one_line_naming_it():
    from difphys._extras import require

    with pytest.raises(ModuleNotFoundError, match=r"'hep' extra: pip install 'difphys\[hep\]'"):
        require("no_such_package_xyz.sub", "hep", "this feature")
