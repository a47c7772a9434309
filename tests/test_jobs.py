"""The application layer: run-folder policy, reports, and that nothing a user owns is lost."""

import json

import pytest

from difphys.jobs import Report, new_run_dir, prepare_run_dir
from difphys.progress import progress_bar


def test_new_policy_refuses_a_used_folder_and_names_the_flags(tmp_path):
    out = prepare_run_dir(tmp_path / "run", {"steps": 3, "lr": 0.1})
    recorded = json.loads((out / "config.json").read_text())
    assert {k: v for k, v in recorded.items() if k != "provenance"} == {"steps": 3, "lr": 0.1}
    with pytest.raises(FileExistsError, match="--resume.*--overwrite"):
        prepare_run_dir(out, {"steps": 3, "lr": 0.1})


def test_resume_policy_lists_every_changed_setting(tmp_path):
    out = prepare_run_dir(tmp_path / "run", {"steps": 3, "lr": 0.1, "labels": ("a", "b")})
    # steps may grow; tuples compare as JSON lists
    prepare_run_dir(out, {"steps": 9, "lr": 0.1, "labels": ["a", "b"]}, policy="resume")
    assert json.loads((out / "config.json").read_text())["steps"] == 9
    with pytest.raises(ValueError, match=r"lr: 0\.1 -> 0\.2; seed: None -> 4"):
        prepare_run_dir(out, {"steps": 9, "lr": 0.2, "labels": ["a", "b"], "seed": 4},
                        policy="resume")
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        prepare_run_dir(tmp_path / "fresh", {"steps": 1}, policy="resume")


def test_overwrite_policy_refuses_a_folder_difphys_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not a difphys run folder"):
        prepare_run_dir(mine, {"steps": 1}, policy="overwrite")
    assert (mine / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="unknown run-folder policy"):
        prepare_run_dir(tmp_path / "x", {}, policy="append")


def test_timestamped_runs_never_collide(tmp_path):
    a, b = new_run_dir(tmp_path, "demo"), new_run_dir(tmp_path, "demo")
    assert a != b and a.is_dir() and b.is_dir()


def test_report_summary_and_values():
    r = Report("train", None, {"auc": 0.9}, ("line one", "line two"))
    assert r.summary() == "line one\nline two"
    assert r["auc"] == 0.9 and dict(r) == {"auc": 0.9}
    assert json.loads(r.to_json()) == {"command": "train", "folder": None, "auc": 0.9}


def test_progress_bar_accepts_a_factory_and_refuses_garbage():
    seen = []

    class Recorder:
        def __init__(self, *, total, desc, unit, initial):
            seen.append(("open", total, desc, initial))

        def update(self, n=1):
            seen.append(("update", n))

        def set_postfix(self, **values):
            seen.append(("postfix", values))

        def close(self):
            seen.append(("close",))

    with progress_bar(Recorder, total=3, desc="x", initial=1) as bar:
        bar.update(2)
    assert seen == [("open", 3, "x", 1), ("update", 2), ("close",)]
    with progress_bar(False, total=3, desc="x") as bar:
        bar.update(1)  # silent
    with pytest.raises(TypeError, match="progress must be"):
        progress_bar("yes", total=1, desc="x")


def test_sample_checkpoint_never_deletes_a_users_folder(tmp_path):
    """``difphys sample --checkpoint DIR`` on a folder it did not write: refused, file kept."""
    from difphys.cli import main

    ck = tmp_path / "ck"
    (ck / "state").mkdir(parents=True)
    (ck / "state" / "precious.txt").write_text("mine")
    args = ["sample", "--method", "rkl", "--steps", "2", "--batch", "32", "--events", "5",
            "--flow-layers", "2", "--calibration", "200", "--out", str(tmp_path / "e.lhe"),
            "--checkpoint", str(ck), "--quiet"]
    assert main(args) == 2
    assert (ck / "state" / "precious.txt").read_text() == "mine"


def test_one_model_size_map_for_every_command():
    from difphys.cli import build_parser
    from difphys.nn import MODEL_SIZES, ParTConfig

    assert ParTConfig.named("small") == ParTConfig.small()
    assert ParTConfig.named("full", num_classes=3) == ParTConfig(num_classes=3)
    assert ParTConfig.named("tiny").embed_dims[-1] < ParTConfig.small().embed_dims[-1]
    with pytest.raises(ValueError, match="model size must be one of"):
        ParTConfig.named("huge")
    parser = build_parser()
    for command in ("train", "pretrain", "finetune"):
        args = parser.parse_args([command, "x.root", "--out", "o", "--model", "tiny",
                                  *(["--tokenizer", "t"] if command == "pretrain" else [])])
        assert args.model == "tiny" and set(MODEL_SIZES) == {"tiny", "small", "full"}


def test_sample_checkpoint_recovers_from_a_save_interrupted_between_renames(tmp_path):
    """A crash after ``state -> state.old`` but before ``state.new -> state`` leaves the last
    good copy in ``state.old``: the next save keeps it until the new one is in place."""
    import jax.numpy as jnp

    from difphys.jobs.sample import _CHECKPOINT_META, _save_checkpoint
    from difphys.train import restore_pytree, save_pytree

    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / _CHECKPOINT_META).write_text("{}")
    save_pytree(ck / "state.old", {"x": jnp.zeros(3)})
    _save_checkpoint(ck, {"x": jnp.ones(3)}, {"step": 2})
    assert not (ck / "state.old").exists() and not (ck / "state.new").exists()
    assert float(restore_pytree(ck / "state", {"x": jnp.zeros(3)})["x"].sum()) == 3.0


def test_sample_checks_its_request_before_training(tmp_path, monkeypatch):
    """An impossible request fails at once, before the flow trains; a possible one (any
    process's LHE colour flows) reaches the training."""
    from difphys.jobs import sample as sample_job

    class TrainingStarted(Exception):
        pass

    def no_training(*args, **kwargs):
        raise TrainingStarted

    monkeypatch.setattr(sample_job, "_train_flow", no_training)
    with pytest.raises(ValueError, match="needs a hadron collider"):
        sample_job.sample_events("p p > t t~", 13000.0, out=tmp_path / "tt.lhe", progress=False)
    with pytest.raises(ValueError, match="needs --scale"):
        sample_job.sample_events("p p > t t~", 13000.0, progress=False,
                                 pdf="NNPDF23_lo_as_0130_qed", alpha_s_mz=0.130)
    with pytest.raises(ValueError, match="scale = 0.1 GeV is outside the PDF grid"):
        sample_job.sample_events("p p > t t~", 13000.0, progress=False,
                                 pdf="NNPDF23_lo_as_0130_qed", alpha_s_mz=0.130, scale=0.1)
    with pytest.raises(TrainingStarted):
        sample_job.sample_events("g g > t t~ g", 1000.0, out=tmp_path / "ttg.lhe",
                                 progress=False)
    assert not list(tmp_path.iterdir())
