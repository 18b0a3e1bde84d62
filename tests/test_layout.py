"""The package's floors: no import cycle, data flowing one way, every module listed in order, and two
wings: the learner's modules in ``coursekit/``, the instructor's grader in ``coursekit/grading/``."""

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import coursekit
import coursekit.grading

PACKAGE = Path(coursekit.__file__).parent
GRADING = PACKAGE / "grading"
LEARNER = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
GRADER = sorted(f"grading.{p.stem}" for p in GRADING.glob("*.py") if p.stem != "__init__")
MODULES = LEARNER + GRADER  # names below coursekit: "maps", "grading.grade", ...
# Imports that still climb back up, in modules other branches are rewriting now; each one must be
# removed here when its module stops making it (the test below fails until then).
PENDING: dict = {}  # (module, import) -> why an import still climbs back up: none now


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute name an ImportFrom names: ``from ..x import y`` in grading.grade is coursekit.x."""
    if node.level == 0:
        return node.module or ""
    package = ["coursekit", *module.split(".")[:-1]][:len(module.split(".")) + 1 - node.level]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(module: str, source: str | None = None) -> set[str]:
    """The coursekit modules ``module`` imports anywhere in its file (or ``source``), in functions too."""
    found = set()
    source = (PACKAGE / f"{module.replace('.', '/')}.py").read_text() if source is None else source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            inner = name.removeprefix("coursekit.")
            if name.startswith("coursekit.") and inner != module:
                found |= {m for m in MODULES if inner == m or inner.startswith(m + ".")}
                if inner == "grading" or inner.startswith("grading."):
                    found.add("grading")  # the subpackage itself, or a module of it
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_import_reader_sees_every_form_of_import():
    assert {"config", "sources", "files"} <= GRAPH["tensordata"]  # from .x import y
    assert "homework" in GRAPH["grading.grade"]  # from .. import homework as hw
    assert "grading.batch" in GRAPH["grading.grade"]  # from . import batch
    assert "config" in GRAPH["grading.sandbox"]  # from ..config import ...
    assert imports_of("maps", "from coursekit.grading import grade\n") == {"grading.grade", "grading"}
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


def test_no_learner_module_imports_the_grader():
    for module in LEARNER:
        assert not {m for m in GRAPH[module] if m.startswith("grading")}, f"{module} imports the grader"


def listed_in(package) -> list[str]:
    """The modules a package's docstring lists, in its order: "maps", ..., or "grading.grade", ..."""
    return re.findall(r"``coursekit\.([\w.]+)``", package.__doc__)


def test_each_wing_lists_every_module_above_those_that_import_it():
    for package, modules in ((coursekit, LEARNER), (coursekit.grading, GRADER)):
        listed = [m for m in listed_in(package) if m in modules]
        assert sorted(listed) == modules, f"{package.__name__}'s docstring names each of its modules once"
        for i, module in enumerate(listed):
            below = set(listed[i + 1:]) & GRAPH[module]
            below -= {b for a, b in PENDING if a == module}
            assert not below, f"{module} imports {sorted(below)}, listed below it in {package.__name__}"


def test_readme_layout_names_the_modules_in_the_packages_order():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme[readme.index("## Repository layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    for package, prefix in ((coursekit, ""), (coursekit.grading, "grading.")):
        listed = [m.removeprefix(prefix) for m in listed_in(package) if m in MODULES and m.startswith(prefix)]
        named = [m for m in re.findall(r"`(\w+)`", layout) if m in listed]  # module names in backticks
        assert set(listed) <= set(named), f"README's layout leaves out {sorted(set(listed) - set(named))}"
        first = [named.index(m) for m in listed]  # each module's first mention
        assert first == sorted(first), f"README's layout follows another order than {listed}"
