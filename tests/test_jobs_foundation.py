"""The file-level foundation workflow: difphys tokenize -> pretrain -> finetune."""

import json

import pytest

from difphys.cli import main


@pytest.mark.slow  # about 220 s on 2 cores; the library steps are tested in test_train_foundation
def test_tokenize_pretrain_finetune(zpole_sample, tmp_path, capsys):
    report, _ = zpole_sample
    f = str(report.path)
    assert main(["tokenize", f, "--out", str(tmp_path / "tok"), "--method", "kmeans",
                 "--codebook", "16", "--max-particles", "32", "--quiet"]) == 0
    assert "codebook used" in capsys.readouterr().out
    tok_meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    assert tok_meta["input_dim"] == 14 and not {4, 15, 16} & set(tok_meta["token_features"])
    assert tok_meta["rank_gauss"] and tok_meta["token_r2"]["d0"] > 0.1  # ParT features: 0.00
    assert main(["pretrain", f, "--tokenizer", str(tmp_path / "tok"), "--out",
                 str(tmp_path / "pre"), "--model", "tiny", "--steps", "30", "--batch", "64",
                 "--max-particles", "32", "--quiet"]) == 0
    meta = json.loads((tmp_path / "pre" / "meta.json").read_text())
    assert meta["final_loss"] < meta["first_loss"]
    for strategy in ("frozen", "scratch"):
        out = tmp_path / f"ft-{strategy}"
        assert main(["finetune", f, "--out", str(out), "--pretrained", str(tmp_path / "pre"),
                     "--strategy", strategy, "--budget", "500", "--steps", "30",
                     "--max-particles", "32", "--quiet"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["train_examples"] == 500 and 0.5 < metrics["test_auc"] <= 1.0
    # an existing output folder is never overwritten silently
    assert main(["finetune", f, "--out", str(tmp_path / "ft-frozen"), "--pretrained",
                 str(tmp_path / "pre"), "--strategy", "frozen", "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    # supervised pretraining on b vs uds, fine-tuned on b vs c
    assert main(["pretrain", f, "--method", "supervised", "--labels", "label_b,label_uds",
                 "--out", str(tmp_path / "sup"), "--model", "tiny", "--steps", "30",
                 "--batch", "64", "--max-particles", "32", "--quiet"]) == 0
    sup = json.loads((tmp_path / "sup" / "meta.json").read_text())
    assert sup["method"] == "supervised" and 0.5 < sup["source_test_auc"] <= 1.0
    assert main(["finetune", f, "--out", str(tmp_path / "ft-sup"), "--pretrained",
                 str(tmp_path / "sup"), "--labels", "label_b,label_c", "--budget", "300",
                 "--steps", "20", "--max-particles", "32", "--quiet"]) == 0
    assert json.loads((tmp_path / "ft-sup" / "metrics.json").read_text())["train_examples"] == 300
    capsys.readouterr()
    assert main(["pretrain", f, "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "needs --tokenizer" in capsys.readouterr().err
    # a strategy that needs a backbone without one
    assert main(["finetune", f, "--out", str(tmp_path / "x"), "--strategy", "finetune",
                 "--quiet"]) == 2


def test_event_level_finetune_on_hh4b(tmp_path):
    pytest.importorskip("pythia8mc")
    from difphys.data import generate

    path = tmp_path / "hh.root"
    generate("hh4b", 80, 3, path, progress=False)
    out = tmp_path / "ev"
    assert main(["finetune", str(path), "--out", str(out), "--events", "--strategy", "scratch",
                 "--model", "tiny", "--steps", "10", "--batch", "16", "--max-particles", "32",
                 "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["event_level"] and 0.0 <= metrics["test_auc"] <= 1.0
