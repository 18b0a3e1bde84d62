"""The package's floors: no import cycle, data flowing one way, and every module listed in order."""

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import coursekit

PACKAGE = Path(coursekit.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
# Imports that still climb back up, in modules other branches are rewriting now; each one must be
# removed here when its module stops making it (the test below fails until then).
PENDING: dict = {}  # (module, import) -> why an import still climbs back up: none now


def imports_of(module: str, source: str | None = None) -> set[str]:
    """The coursekit modules ``module`` imports anywhere in its file (or ``source``), in functions too."""
    found = set()
    source = (PACKAGE / f"{module}.py").read_text() if source is None else source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "coursekit" if node.level == 1 else (node.module or "")
            if node.level == 1 and node.module:
                base += f".{node.module}"
            names = [base] if base != "coursekit" else [f"coursekit.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "coursekit" and len(parts) > 1 and parts[1] in MODULES and parts[1] != module:
                found.add(parts[1])
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_import_reader_sees_every_form_of_import():
    assert {"config", "sources", "files"} <= GRAPH["tensordata"]  # from .x import y
    assert "homework" in GRAPH["grade"]  # from . import homework as hw
    assert "batch" in GRAPH["grade"]  # from . import batch
    assert "maps" in GRAPH["explorer"]  # from coursekit.maps import ...
    assert imports_of("viz", "def f():\n    from .explorer import AttentionExplorer\n") == {"explorer"}  # in a function


def test_no_import_cycle_remains():
    for edge, why in PENDING.items():
        assert edge[1] in GRAPH[edge[0]], f"{edge} is gone ({why}): remove it from PENDING"
    graph = {m: deps - {b for a, b in PENDING if a == m} for m, deps in GRAPH.items()}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        raise AssertionError(f"import cycle in coursekit: {' -> '.join(error.args[1])}") from None


def test_a_dataset_name_walks_down_the_data_floors_without_climbing_back():
    assert GRAPH["config"] == set() and GRAPH["files"] == set()
    assert GRAPH["sources"] == {"config"}  # reads files; knows nothing of caches or loaders
    assert GRAPH["tensordata"] == {"config", "files", "sources"}
    assert GRAPH["data"] == {"sources", "tensordata"}
    for floor in ("config", "files", "sources", "tensordata"):
        assert "data" not in GRAPH[floor]


def test_the_package_lists_every_module_above_those_that_import_it():
    listed = re.findall(r"``coursekit\.(\w+)``", coursekit.__doc__)
    assert sorted(listed) == MODULES, "coursekit/__init__.py names each module once"
    for i, module in enumerate(listed):
        below = set(listed[i + 1:]) & GRAPH[module]
        below -= {b for a, b in PENDING if a == module}
        assert not below, f"{module} imports {sorted(below)}, listed below it in coursekit/__init__.py"


def test_readme_layout_names_the_modules_in_the_packages_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Repository layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    listed = re.findall(r"``coursekit\.(\w+)``", coursekit.__doc__)
    named = [m for m in re.findall(r"`(\w+)`", layout) if m in MODULES]  # module names in backticks
    assert set(listed) <= set(named), f"README's layout leaves out {sorted(set(listed) - set(named))}"
    first = [named.index(m) for m in listed]  # each module's first mention
    assert first == sorted(first), f"README's layout follows another order than {listed}"
