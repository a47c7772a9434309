"""The package layering of docs/architecture.md, checked on the source (AST), so that a
file-writing job cannot creep back into a library."""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import difphys

ROOT = Path(difphys.__file__).parent
LIBRARIES = ("kinematics", "phasespace", "amplitudes", "pdf", "vertex", "stochad", "sim", "flows", "nn",
             "io", "analysis", "train")
FORBIDDEN = ("matplotlib", "tqdm", "orbax")
CHECKPOINT_MODULE = ROOT / "train" / "_checkpoint.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def _library_files():
    return sorted(f for lib in LIBRARIES for f in (ROOT / lib).rglob("*.py"))


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_libraries_import_no_plotting_progress_bars_or_checkpointing(path):
    for name in _imports(path):
        top = name.lstrip(".").split(".")[0]
        if top == "orbax" and path == CHECKPOINT_MODULE:
            continue
        assert top not in FORBIDDEN, f"{path.relative_to(ROOT)} imports {name}"
        assert "jobs" not in name.split("."), f"{path.relative_to(ROOT)} imports the job layer"


@pytest.mark.parametrize("path", _library_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_libraries_create_no_run_folders(path):
    source = path.read_text()
    for call in ("new_run_dir", "prepare_run_dir", "savefig"):
        assert call not in source, f"{path.relative_to(ROOT)} calls {call}"


def test_every_library_subpackage_is_imported_by_the_package():
    for name in (*LIBRARIES, "data", "sharding", "testing", "progress"):
        assert getattr(difphys, name) is importlib.import_module(f"difphys.{name}")
    assert difphys.__version__ != "0.0.0+unknown"  # read from the installed metadata


def test_every_cli_command_calls_a_job():
    from difphys import cli

    for name, fn in vars(cli).items():
        if name.startswith("_cmd_"):
            src = inspect.getsource(fn)
            assert "from .jobs import" in src, f"{name} does not go through difphys.jobs"
