"""The student edition: the course as students get it, made from this (the instructor's) repository.

Usage::

    python -m coursekit.grading.release OUT          # writes the folder OUT/ and the archive OUT.zip
    python -m coursekit.grading.release --student    # only regenerate notebooks/04_... from its solution
    python -m coursekit.grading.release --check      # exit 1 if the committed student notebook is stale

The repository is the source of truth and holds the answers: the reference solution in
``notebooks/solutions/``, the recipe search in ``benchmarks/``, measured results in docs/.
The release copies what students need (the notebooks with the student homework, ``coursekit``
with its in-notebook checks, the figures, the benchmarks, the install files, the trained weights of
notebooks 03 and 05 (the homework ships none: they would be an answer)) and leaves the rest
out, the grader and its task registry included (they compute what answers are checked against):

- in the solution notebook's code cells, the lines from ``### BEGIN SOLUTION`` to
  ``### END SOLUTION`` become one ``raise NotImplementedError(hint)`` (the hint is the cell's
  ``metadata.coursekit.hint``); in markdown, ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->``
  becomes a placeholder; outputs are cleared, the ``coursekit`` metadata the grader needs is kept;
- README.md loses every region between ``<!-- INSTRUCTOR ONLY -->`` and ``<!-- END INSTRUCTOR ONLY -->``;
- :data:`LEFT_OUT` names what is never copied. :func:`find_answers` then searches the written edition
  for every line of every solution region and fails the release if one is found (lines that the
  course's own code already holds, like ``start = time.perf_counter()``, are no secret and skipped).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import re
import shutil
import sys
from pathlib import Path

import nbformat

from ..homework import ANSWER_PLACEHOLDER

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "notebooks" / "solutions"
HOMEWORK = "04_fashion_mnist_homework.ipynb"
COPIED = ["README.md", "requirements.txt", "pyproject.toml", "conftest.py", ".gitignore",
          "coursekit/*.py", "notebooks/*.ipynb", "imgs/*", "benchmarks/*.py", "benchmarks/results/*",
          "weights/03_*.safetensors", "weights/05_*.safetensors"]  # notebooks 03 and 05 only: never the homework's
LEFT_OUT = ["coursekit/grading/*", "benchmarks/grade_workers.py",
            "notebooks/solutions/*", "benchmarks/homework_recipes*", "benchmarks/results/homework_recipes_*",
            "benchmarks/test_set_attack.py", "benchmarks/results/test_set_attack*"]
MARKDOWN_ANSWER = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.S)
INSTRUCTOR_ONLY = re.compile(r"\n?<!-- INSTRUCTOR ONLY -->.*?<!-- END INSTRUCTOR ONLY -->\n?", re.S)


class ReleaseError(Exception):
    """The release could not be made, or would have shipped an answer."""


def strip_code(source: str, hint: str) -> str:
    """Replace every BEGIN/END SOLUTION region of ``source`` by ``raise NotImplementedError(hint)``."""
    out, inside = [], False
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == "### BEGIN SOLUTION":
            if inside:
                raise ValueError(f"line {number}: BEGIN SOLUTION inside another region; close it first")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}raise NotImplementedError({hint!r})  # replace this line with your answer")
        elif marker == "### END SOLUTION":
            if not inside:
                raise ValueError(f"line {number}: END SOLUTION without a BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("a BEGIN SOLUTION region is never closed: add '### END SOLUTION'")
    return "\n".join(out)


def make_student(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a solution notebook (a new notebook; the solution is not changed)."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            hint = cell.metadata.get("coursekit", {}).get("hint", "write your answer here")
            cell.source = strip_code(cell.source, hint)
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown":
            cell.source = MARKDOWN_ANSWER.sub(ANSWER_PLACEHOLDER, cell.source)
    nb.metadata.pop("widgets", None)
    return nb


def render(solution_path) -> str:
    """The student notebook's text, exactly as it is written to disk."""
    return nbformat.writes(make_student(nbformat.read(solution_path, as_version=4))) + "\n"


def student_readme(text: str) -> str:
    """README.md without its instructor-only regions."""
    if text.count("<!-- INSTRUCTOR ONLY -->") != text.count("<!-- END INSTRUCTOR ONLY -->"):
        raise ReleaseError("README.md: an '<!-- INSTRUCTOR ONLY -->' region is not closed by "
                           "'<!-- END INSTRUCTOR ONLY -->'")
    return INSTRUCTOR_ONLY.sub(lambda m: "\n" if m.group().endswith("\n") else "", text)


def _text(path: Path) -> str:
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":  # a notebook's JSON escapes quotes: search the cells' sources
        text = "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
    return text


TEXT_FILES = {".py", ".md", ".ipynb", ".txt", ".toml", ".json", ".jsonl", ".csv"}


def answer_lines(solutions=SOLUTIONS, common=frozenset()) -> set[str]:
    """Every line (20 characters or more, stripped) of every solution region, less the ``common`` ones.

    common: lines that are no secret, e.g. ``start = time.perf_counter()`` found in coursekit itself.
    """
    lines = set()
    for path in sorted(Path(solutions).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            regions = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S)
            regions += re.findall(r"<!-- BEGIN SOLUTION -->(.*?)<!-- END SOLUTION -->", cell.source, re.S)
            lines |= {line.strip() for region in regions for line in region.splitlines()
                      if len(line.strip()) >= 20}
    return lines - set(common)


def common_lines(root=ROOT) -> set[str]:
    """The stripped lines of the copied files other than README.md, as they are in the repository."""
    return {line.strip() for rel in files_to_copy(root) if rel.suffix in TEXT_FILES and rel.name != "README.md"
            for line in _text(Path(root) / rel).splitlines()}


def find_answers(folder, solutions=SOLUTIONS, common=frozenset()) -> list[str]:
    """``"FILE: line"`` for each solution line (see :func:`answer_lines`) found in a text file under ``folder``."""
    lines, found = answer_lines(solutions, common), []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and path.suffix in TEXT_FILES:
            text = _text(path)
            present = {line.strip() for line in text.splitlines()}  # a whole line, or a long one inside prose
            found += [f"{path.relative_to(folder)}: {line[:80]}" for line in lines
                      if line in present or (len(line) >= 60 and line in text)]
    return found


def student_pyproject(text: str) -> str:
    """pyproject.toml without the grader's package, which the edition does not hold (else pip fails)."""
    entry = '"coursekit.grading", '
    if text.count(entry) != 1:
        raise ReleaseError(f"pyproject.toml: expected {entry!r} once in its packages; update student_pyproject")
    return text.replace(entry, "")


def files_to_copy(root=ROOT) -> list[Path]:
    """The repository files (relative paths) that go into the student edition."""
    root = Path(root)
    chosen = {p.relative_to(root) for pattern in COPIED for p in root.glob(pattern) if p.is_file()}
    return sorted(p for p in chosen if not any(fnmatch.fnmatch(str(p), bad) for bad in LEFT_OUT))


def release(out, root=ROOT, archive: bool = True) -> Path:
    """Write the student edition to the folder ``out`` (and ``out.zip``); returns the folder."""
    root, out = Path(root), Path(out).resolve()
    solutions = root / "notebooks" / "solutions"
    if not solutions.is_dir():
        raise ReleaseError(f"{solutions}: not found; run the release from the instructor's repository")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out}: already exists and is not empty; choose a new folder or remove it")
    if root.resolve() in (out, *out.parents):
        raise ReleaseError(f"{out}: inside the repository; write the release outside it")
    for rel in files_to_copy(root):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, out / rel)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for solution in solutions.glob("*.ipynb"):  # the student homework, fresh from its solution
        (out / "notebooks" / solution.name).write_text(render(solution))
    (out / "README.md").write_text(student_readme((root / "README.md").read_text()))
    if (out / "pyproject.toml").exists():
        (out / "pyproject.toml").write_text(student_pyproject((out / "pyproject.toml").read_text()))
    leaked = find_answers(out, solutions, common_lines(root))
    if leaked:
        shutil.rmtree(out)
        raise ReleaseError("the release would hold answers, so it was removed: " + "; ".join(leaked[:5]))
    if archive:
        shutil.make_archive(str(out), "zip", root_dir=out.parent, base_dir=out.name)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grading.release", description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", help="the folder to write (it must not exist, or be empty)")
    parser.add_argument("--no-zip", action="store_true", help="write the folder only")
    parser.add_argument("--student", action="store_true",
                        help=f"only write notebooks/{HOMEWORK} from notebooks/solutions/{HOMEWORK}")
    parser.add_argument("--check", action="store_true",
                        help="only compare the committed student notebook; exit 1 when it is out of date")
    args = parser.parse_args(argv)
    if not SOLUTIONS.is_dir():  # an installed coursekit (a wheel) lies in site-packages, not in the course
        print(f"coursekit.grading.release: error: {SOLUTIONS}: not found; run the release in a clone of the "
              "instructor's repository, whose coursekit/ lies beside notebooks/ (pip install -e .)",
              file=sys.stderr)
        return 2
    target, text = ROOT / "notebooks" / HOMEWORK, None
    if args.student or args.check:
        text = render(SOLUTIONS / HOMEWORK)
    if args.check:
        fresh = target.exists() and target.read_text() == text
        stale = "OUT OF DATE: run python -m coursekit.grading.release --student"
        print(f"{target}: {'up to date' if fresh else stale}")
        return 0 if fresh else 1
    if args.student:
        target.write_text(text)
        print(f"wrote {target}")
        return 0
    if not args.out:
        parser.error("give the folder to write, e.g. python -m coursekit.grading.release ../student-edition")
    try:
        out = release(args.out, archive=not args.no_zip)
    except ReleaseError as error:
        print(f"coursekit.grading.release: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}/" + ("" if args.no_zip else f" and {out}.zip"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
