"""Make the student version of the homework from the reference solution.

    python scripts/make_student.py            # notebooks/solutions/04_... -> notebooks/04_...
    python scripts/make_student.py SOLUTION STUDENT
    python scripts/make_student.py --check    # exit 1 if the committed student version is stale

In code cells, the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` become one
``raise NotImplementedError(hint)`` (the hint is the cell's ``metadata.coursekit.hint``); in markdown
cells, ``<!-- BEGIN SOLUTION -->`` ... ``<!-- END SOLUTION -->`` becomes a placeholder. Outputs and
execution counts are cleared; the ``coursekit`` metadata that the grader needs is kept.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from coursekit.homework import ANSWER_PLACEHOLDER  # noqa: E402

SOLUTION = ROOT / "notebooks" / "solutions" / "04_fashion_mnist_homework.ipynb"
STUDENT = ROOT / "notebooks" / "04_fashion_mnist_homework.ipynb"
MARKDOWN_ANSWER = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.S)


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


def render(solution_path=SOLUTION) -> str:
    """The student notebook's text, exactly as it is written to disk."""
    return nbformat.writes(make_student(nbformat.read(solution_path, as_version=4))) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("solution", nargs="?", default=SOLUTION)
    parser.add_argument("student", nargs="?", default=STUDENT)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args(argv)
    text = render(args.solution)
    target = Path(args.student)
    if args.check:
        fresh = target.exists() and target.read_text() == text
        print(f"{target}: {'up to date' if fresh else 'OUT OF DATE: run python scripts/make_student.py'}")
        return 0 if fresh else 1
    target.write_text(text)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
