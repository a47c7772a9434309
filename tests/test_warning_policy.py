"""The warning policy of pyproject.toml: difphys's own warnings fail the suite; warnings from
upstream packages, and deprecations wherever they are attributed, are reported, not fatal."""

import sys
import tomllib
import warnings
from pathlib import Path

import pytest
from _pytest.config import parse_warning_filter

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


def _apply_policy():
    filters = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"][
        "filterwarnings"]
    warnings.resetwarnings()
    for line in filters:  # pytest applies them in order: later lines win
        warnings.filterwarnings(*parse_warning_filter(line, escape=False))


@pytest.mark.parametrize("category, module, fatal", [
    (UserWarning, "difphys.train._checkpoint", True),
    (RuntimeWarning, "difphys.io._stream", True),
    (UserWarning, "test_stream", True),
    (UserWarning, "orbax.checkpoint.checkpoint_manager", False),
    (RuntimeWarning, "numpy._core.fromnumeric", False),
    (DeprecationWarning, "jax._src.deprecations", False),
    (FutureWarning, "flax.nnx.module", False),
    (DeprecationWarning, "difphys.train._loop", False),  # an upstream API warning at our line
])
def test_policy(category, module, fatal):
    with warnings.catch_warnings():
        _apply_policy()
        call = lambda: warnings.warn_explicit("w", category, "f.py", 1, module=module)  # noqa: E731
        if fatal:
            with pytest.raises(category):
                call()
        else:
            with warnings.catch_warnings(record=True):
                call()


def test_the_suite_runs_under_the_policy(request):
    """This file's checks are of the same lines pytest reads (not a copy of them)."""
    assert request.config.getini("filterwarnings") == tomllib.loads(
        PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]
    assert sys.version_info >= (3, 10)
