"""The student edition (coursekit.grading.release) and a folder of its blank homework graded by the grader.

The release's copies of notebooks 01-03 and 05 are byte for byte the repository's, which nbval
executes in fast mode; its one new notebook, the student homework, is executed by the grader here.
The edition holds neither the grader nor anything that computes an answer.
"""

import csv
import json
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest

from coursekit import weights
from coursekit.grading import release as rel
from coursekit.grading import tasks as registry

ROOT = Path(__file__).resolve().parent.parent
STUDENT = ROOT / "notebooks" / rel.HOMEWORK
KILLER = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"

# the real Fashion-MNIST (COURSEKIT_DATA): without it a skip, under CI a failure (tests/conftest.py)
needs_data = pytest.mark.needs_data("fashion_mnist")


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    return rel.release(tmp_path_factory.mktemp("release") / "student-edition")


def test_strip_code_regions():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nprint(1)"
    assert rel.strip_code(source, "hint") == (
        "def f(x):\n    raise NotImplementedError('hint')  # replace this line with your answer\nprint(1)")
    with pytest.raises(ValueError, match="never closed"):
        rel.strip_code("### BEGIN SOLUTION\nx = 1", "hint")
    with pytest.raises(ValueError, match="without a BEGIN"):
        rel.strip_code("x = 1\n### END SOLUTION", "hint")


def test_student_notebook_is_up_to_date_and_has_no_answers():
    assert STUDENT.read_text() == rel.render(rel.SOLUTIONS / rel.HOMEWORK), \
        "the student notebook is out of date: run python -m coursekit.grading.release --student"
    student = nbformat.read(STUDENT, as_version=4)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    tasks = {c.metadata.get("coursekit", {}).get("task") for c in student.cells}
    assert set(registry.TASKS) <= tasks, "every task keeps its metadata for the grader"


def test_the_edition_holds_no_answers(edition):
    files = {str(p.relative_to(edition)) for p in edition.rglob("*") if p.is_file()}
    assert f"notebooks/{rel.HOMEWORK}" in files and "coursekit/homework.py" in files and "README.md" in files
    assert not [f for f in files if f.startswith("coursekit/grading")]  # it computes what answers are checked against
    setuptools = tomllib.loads((edition / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in setuptools["packages"]:  # pip install -e . needs each folder it names
        folder = setuptools.get("package-dir", {}).get(package, package.replace(".", "/"))
        assert (edition / folder).is_dir(), f"the edition's pyproject.toml names {package}, which it lacks"
    code = "\n".join((edition / f).read_text() for f in files if f.startswith("coursekit/"))
    for helper in ("reference_patchify", "cost_ratio", "measure", "vit_confusion", "confusion_matrix",
                   "confusion_of", "flop_ratio", "FlopCounterMode"):
        assert f"def {helper}(" not in code and f"import {helper}" not in code, helper
    assert not [f for f in files if f.startswith("notebooks/solutions")]
    assert not [f for f in files if "homework_recipes" in f]
    assert not [f for f in files if f.startswith("tests/")]
    common = rel.common_lines()
    assert rel.find_answers(edition, common=common) == []
    secrets = rel.answer_lines(common=common)
    assert any("vit_config = dict(" in line for line in secrets), "the search must look for the reference config"
    assert any("Reference answer" in line for line in secrets), "... and for the reference reflection"
    readme = (edition / "README.md").read_text()
    for leak in ("90.48", "emb_dropout=0.3", "homework_recipes", "INSTRUCTOR", "solutions/", "Reference answer"):
        assert leak not in readme, leak
    assert "## The notebooks, in order" in readme and "COURSEKIT_DATA" in readme
    homework = nbformat.read(edition / "notebooks" / rel.HOMEWORK, as_version=4)
    assert "Reference answer" not in "\n".join(c.source for c in homework.cells)
    for name in ("01_attention.ipynb", "02_positional_encoding.ipynb", "03_vit_mnist.ipynb", "05_hybrid_cifar.ipynb"):
        assert (edition / "notebooks" / name).read_bytes() == (ROOT / "notebooks" / name).read_bytes()
    # notebooks 03 and 05 load the course's trained weights; the homework's would be an answer
    shipped = {f"weights/{name}" for name in weights.SHIPPED}
    assert {f for f in files if f.startswith("weights/")} == shipped
    for f in shipped:
        assert (edition / f).read_bytes() == (ROOT / f).read_bytes()
    with zipfile.ZipFile(f"{edition}.zip") as archive:
        zipped = {n.split("/", 1)[1] for n in archive.namelist() if not n.endswith("/")}
    assert zipped == files


def test_the_release_copies_notebook_03_and_05_weights_and_never_the_homeworks(tmp_path):
    (tmp_path / "weights").mkdir()
    for name in ("03_mnist_vit", "04_fashion_vit", "05_cpu_cifar10_hybrid", "fashion_mnist_vit"):
        (tmp_path / "weights" / f"{name}.safetensors").write_bytes(b"weights")
    assert [str(p) for p in rel.files_to_copy(tmp_path)] == [
        "weights/03_mnist_vit.safetensors", "weights/05_cpu_cifar10_hybrid.safetensors"]


def test_a_release_that_would_leak_an_answer_is_refused(tmp_path):
    root = tmp_path / "course"
    (root / "notebooks" / "solutions").mkdir(parents=True)
    cell = nbformat.v4.new_code_cell("### BEGIN SOLUTION\nsecret_answer = 'forty-two, the answer'\n### END SOLUTION")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), root / "notebooks" / "solutions" / "hw.ipynb")
    (root / "README.md").write_text("Hint:\n    secret_answer = 'forty-two, the answer'\n")
    with pytest.raises(rel.ReleaseError, match="would hold answers"):
        rel.release(tmp_path / "out", root=root, archive=False)
    assert not (tmp_path / "out").exists()
    (root / "README.md").write_text("<!-- INSTRUCTOR ONLY -->\nsecret_answer = 'forty-two, the answer'\n"
                                    "<!-- END INSTRUCTOR ONLY -->\nWelcome.\n")
    out = rel.release(tmp_path / "out", root=root, archive=False)
    assert (out / "README.md").read_text().strip() == "Welcome."
    with pytest.raises(rel.ReleaseError, match="not empty"):
        rel.release(out, root=root)


@needs_data
def test_a_folder_of_blank_homework_keeps_every_row(edition, tmp_path):
    """Blank homework, a file that is not a notebook, and one that tries to kill its grader: three rows."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "alice.ipynb").write_bytes((edition / "notebooks" / rel.HOMEWORK).read_bytes())
    (folder / "broken.ipynb").write_text("{ not json")
    killer = nbformat.read(edition / "notebooks" / rel.HOMEWORK, as_version=4)
    killer.cells.insert(0, nbformat.v4.new_code_cell(KILLER))
    nbformat.write(killer, folder / "mallory.ipynb")
    command = [sys.executable, "-m", "coursekit.grading.grade", str(folder), "--timeout", "120",
               "--csv", str(tmp_path / "grades.csv"), "--json", str(tmp_path / "all.json")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = {Path(r["notebook"]).name: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert set(rows) == {"alice.ipynb", "broken.ipynb", "mallory.ipynb"}
    assert rows["alice.ipynb"]["score"] == "0" and rows["alice.ipynb"]["max_score"] == "14"
    assert rows["alice.ipynb"]["reflection"] == "pending"
    assert rows["broken.ipynb"]["error"] == "" and rows["broken.ipynb"]["score"] == "0"  # the notebook's fault
    assert "the notebook was not run: not a valid notebook (NotJSONError" in out.stdout
    # in its sandbox, the kernel's parent is the sandbox's own init, which ignores the signal
    assert rows["mallory.ipynb"]["error"] == "" and rows["mallory.ipynb"]["score"] == "0"
    reports = {Path(r["notebook"]).name: r for r in json.loads((tmp_path / "all.json").read_text())}
    alice = {t["task"]: t for t in reports["alice.ipynb"]["tasks"]}
    assert "NotImplementedError" in alice["patchify"]["feedback"]
    assert alice["reflection"]["feedback"] == "no answer written"
    assert "score: 0/14" in out.stdout
    # a rerun skips what the CSV holds with a score
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert again.stdout.count("already graded") == 3 and "3 rows" in again.stdout
    (folder / "alice.ipynb").unlink()
    (folder / "mallory.ipynb").unlink()
    regrade = subprocess.run(command + ["--regrade"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "already graded" not in regrade.stdout and "1 rows" in regrade.stdout
