"""The project as a package: its declared dependencies agree with the tested pins, and a wheel of it, installed
into a fresh virtual environment, runs from outside the repository."""

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    """name -> version of every `name==version` line in requirements*.txt (the tested set)."""
    out = {}
    for path in REPO.glob("requirements*.txt"):
        for line in path.read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#;]+)", line.strip())
            if m:
                out[re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")] = m.group(2)
    return out


def test_every_declared_dependency_is_pinned_and_the_pin_satisfies_it():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for name, reqs in project["optional-dependencies"].items() for r in reqs
                 if not r.startswith(project["name"])]
    pinned = pins()
    for req in declared:
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{req} is declared in pyproject.toml but not pinned in requirements*.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"pin {name}=={pinned[name]} is outside {req}"
    assert {"torch", "numpy", "pandas", "datasets", "tiktoken"} <= {r.name for r in declared[:len(project["dependencies"])]}


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_runs_from_outside_the_repository(tmp_path, tiny_run):
    """Build the wheel, install it (no dependencies) into a new venv whose only other packages are the pinned
    set (the project's .venv site-packages on its path, without that venv's editable hook), and from a folder
    outside the checkout: `python -m nanogpt --help`, and a prediction with a checkpoint."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, text=True, timeout=300)
    wheel = next(dist.glob("nanogpt_imdb_study-*.whl"))
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    site = next((fresh / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "pinned-deps.pth").write_text(f"{deps}\n")  # a plain path: that folder's own .pth hooks stay off
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["NANOGPT_CACHE_DIR"] = str(tmp_path / "cache")
    run = lambda *args: subprocess.run([str(python), *args], cwd=away, env=env, capture_output=True, text=True,  # noqa: E731
                                       timeout=300)
    where = run("-c", "import nanogpt, nanogpt.core.resources as r; print(nanogpt.__file__, r.in_checkout())")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(site)) and where.stdout.split()[1] == "False", where.stdout
    helped = run("-m", "nanogpt", "--help")
    assert helped.returncode == 0 and "study" in helped.stdout, helped.stderr
    ckpt = tiny_run["ce"].checkpoint
    predicted = run("-m", "nanogpt", "classify", "--checkpoint", str(ckpt), "A wonderful, moving film.")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert re.search(r"positive|negative", predicted.stdout), predicted.stdout
