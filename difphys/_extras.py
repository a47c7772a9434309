"""Optional dependencies: one clear line naming the extra to install when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise ``ModuleNotFoundError`` saying that ``what`` needs the
    ``extra`` of difphys (``pip install 'difphys[extra]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModuleNotFoundError(
            f"{what} needs the '{module.split('.')[0]}' package, in difphys's '{extra}' extra: "
            f"pip install 'difphys[{extra}]'", name=module) from None
