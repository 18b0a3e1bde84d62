"""The notebooks' one setup cell, and what it would do on Colab: install only what Colab lacks and
never replace Colab's own packages (their versions: .ci/colab-pins.txt). The notebooks themselves are
executed on Colab's stack by the Colab lane of CI, .ci/colab_lane.sh."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import nbformat
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_links = load("sync_links")
colab_stack = load("colab_stack")
PINS = colab_stack.read_pins()


def setup_source(path):
    nb = nbformat.read(path, as_version=4)
    return nb.cells[sync_links.setup_cell_index(nb)].source


def pip_line(source):
    lines = [line.strip() for line in source.splitlines() if line.strip().startswith("%pip")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])[1:]


def test_every_notebook_opens_with_the_same_setup_cell():
    paths = sync_links.notebooks()
    assert {p.relative_to(ROOT).as_posix() for p in paths} >= {
        "notebooks/01_attention.ipynb", "notebooks/03_vit_mnist.ipynb",
        "notebooks/04_fashion_mnist_homework.ipynb", "notebooks/solutions/04_fashion_mnist_homework.ipynb"}
    cells = {p.name if p.parent.name == "notebooks" else f"solutions/{p.name}": setup_source(p) for p in paths}
    assert len(set(cells.values())) == 1, "setup cells differ: run python scripts/sync_links.py"
    assert next(iter(cells.values())) == sync_links.setup_cell()


def test_the_setup_cell_installs_vit_pytorch_and_the_course_without_dependencies():
    args = pip_line(sync_links.setup_cell())
    assert args == ["install", *sync_links.colab_install_args()]
    assert "--no-deps" in args
    targets = [a for a in args[1:] if not a.startswith("-")]
    assert [Requirement(targets[0]).name, targets[1]] == ["vit-pytorch", "/content/course"]
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert targets[0] in [d.replace(" ", "") for d in deps], "vit-pytorch's range is pyproject.toml's"


def test_the_setup_cell_clones_the_repository_address_and_checks_the_clone():
    source = sync_links.setup_cell()
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert f'"{url}"' in source
    assert 'os.path.join(COURSE, "coursekit", "__init__.py")' in source
    assert "rm -rf" in source and "reaches github.com" in source  # the two failures say what to do


def test_colab_already_has_what_coursekit_and_vit_pytorch_need():
    # --no-deps leaves a working environment only if Colab's versions satisfy every requirement
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    needs = [Requirement(d) for d in deps] + [Requirement(r) for r in requires("vit-pytorch") or []]
    unmet = []
    for req in needs:
        name = canonicalize_name(req.name)
        if name in colab_stack.ADDED or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        if name not in PINS or not req.specifier.contains(PINS[name], prereleases=True):
            unmet.append(f"{req} (Colab: {PINS.get(name, 'absent')})")
    assert not unmet, unmet


def test_pins_name_their_source_and_the_versions_colab_ships():
    text = (ROOT / ".ci" / "colab-pins.txt").read_text()
    assert "googlecolab/backend-info" in text and "pip-freeze.txt" in text and "Python 3.13" in text
    assert {k: PINS[k] for k in ("torch", "torchvision", "numpy", "ipython", "ipywidgets")} == {
        "torch": "2.11.0", "torchvision": "0.26.0", "numpy": "2.1.3", "ipython": "7.34.0",
        "ipywidgets": "7.7.1"}
    assert "vit-pytorch" not in PINS


def test_the_report_check_catches_an_install_that_replaces_colabs_torch():
    def item(name, version):
        return {"metadata": {"name": name, "version": version}}
    good = {"install": [item("vit-pytorch", "1.26.14"), item("coursekit", "0.1.0")]}
    assert colab_stack.report_problems(good, PINS) == []
    bad = {"install": [*good["install"], item("torch", "2.14.1"), item("triton", "3.6.0")]}
    assert colab_stack.report_problems(bad, PINS) == [
        "torch 2.14.1 would replace Colab's 2.11.0",
        "triton 3.6.0 would be installed: only ['coursekit', 'vit-pytorch'] are expected"]


def wheels_folder():
    """Where .ci/run downloads the wheels of what the setup cell's install needs from an index: the
    vit-pytorch it installs and the build backend of coursekit (setuptools)."""
    folder = Path(os.environ.get("COURSEKIT_WHEELS", Path.home() / ".cache" / "coursekit" / "wheels"))
    missing = [name for name in ("vit_pytorch", "setuptools") if not list(folder.glob(f"{name}-*.whl"))]
    if missing:
        if os.environ.get("COURSEKIT_WHEELS"):  # CI (.ci/run) promised them: a failure
            pytest.fail(f"COURSEKIT_WHEELS={folder} holds no wheel of {missing}")
        pytest.skip(f"no wheel of {missing} in {folder}: .ci/run downloads them there (pip download "
                    "--no-deps -d FOLDER 'vit-pytorch>=1.26.11,<1.27' 'setuptools>=68')")
    return folder


def test_a_dry_run_of_the_setup_cell_install_touches_no_colab_package(tmp_path):
    # exactly the setup cell's arguments, with this repository for /content/course; offline
    args = pip_line(setup_source(ROOT / "notebooks" / "03_vit_mnist.ipynb"))[1:]
    args = [str(ROOT) if a == sync_links.COLAB_COURSE else a for a in args]
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--report", str(report),
               "--ignore-installed", "--no-index", "--find-links", str(wheels_folder()),
               "-c", str(colab_stack.PINS), *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(report.read_text())
    assert set(colab_stack.installed_by(report)) == colab_stack.ADDED
    assert colab_stack.report_problems(report, PINS) == []


def run_colab_branch(tmp_path, monkeypatch, course, url):
    """Run the setup cell as on Colab, with ``course`` for /content/course and ``url`` for the
    repository; its ``%pip`` line is recorded, not run. Returns the recorded magic lines."""
    from types import ModuleType

    from IPython.core.inputtransformer2 import TransformerManager

    source = sync_links.setup_cell().replace(sync_links.COLAB_COURSE, str(course))
    source = source.replace(f"https://github.com/{sync_links.repository_slug()}", url)
    calls = []

    class Shell:
        def run_line_magic(self, name, line):
            calls.append(f"%{name} {line}")

    monkeypatch.setitem(sys.modules, "google.colab", ModuleType("google.colab"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(TransformerManager().transform_cell(source), {"get_ipython": Shell})
    return calls


def test_on_colab_the_cell_clones_then_installs_with_the_one_pip_line(tmp_path, monkeypatch):
    course = tmp_path / "course"
    calls = run_colab_branch(tmp_path, monkeypatch, course, ROOT.as_uri())
    assert (course / "coursekit" / "__init__.py").is_file()
    assert calls == ["%pip " + shlex.join(["install", *sync_links.colab_install_args(str(course))])
                     .replace("'", '"')]
    assert sys.path[0] == str(course)  # the clone is importable at once (monkeypatch restores the path)


def test_on_colab_a_failed_clone_says_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="(?s)failed: fatal: .*\nCheck that this runtime reaches github.com"):
        run_colab_branch(tmp_path, monkeypatch, tmp_path / "course", (tmp_path / "nowhere").as_uri())


def test_on_colab_a_folder_that_is_not_the_course_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "course").mkdir()
    with pytest.raises(RuntimeError, match=r"is not a copy of the course .*`!rm -rf .*course`"):
        run_colab_branch(tmp_path, monkeypatch, tmp_path / "course", ROOT.as_uri())
