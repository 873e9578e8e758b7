"""The package tree is the architecture (shared/DESIGN.md, "The parts"): each part uses only the parts below it,
and no module imports itself back through others. Read from the source with `ast`, lazy imports included."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nanogpt"
# lowest first; a module may import its own part and the parts before it, never one after it
LAYERS = ["core", "data", "run", "serve", "study", "bench", "faces"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else "faces"


def imports_of(path: Path) -> set[str]:
    """Every nanogpt module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nanogpt")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nanogpt") and not node.level:
            for alias in node.names:  # `from nanogpt.study import params` imports the module nanogpt.study.params
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() else node.module)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_the_top_folder_shows_the_parts():
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith("__pycache__"))
    assert top == ["__init__.py", "__main__.py", "bench", "cli.py", "core", "data", "gpucheck.py", "run", "serve", "study"]
    for part in LAYERS[:-1]:
        assert (PACKAGE / part / "__init__.py").read_text().startswith('"""'), part  # says what the part holds


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_part_never_imports_a_higher_one(module):
    mine = LAYERS.index(part_of(module))
    upward = sorted(i for i in GRAPH[module] if LAYERS.index(part_of(i)) > mine)
    assert not upward, f"{module} ({part_of(module)}) imports higher parts: {upward}"


def test_no_import_cycles():
    """Depth-first search over every import, lazy ones too (cluster and the study once imported each other)."""
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(GRAPH[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_modules_stay_small_enough_to_read_in_one_sitting():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert max(sizes.values()) <= 440, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
