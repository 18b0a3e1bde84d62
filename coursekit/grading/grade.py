"""The homework grader: run a submission in a sandboxed kernel, score every task, explain each score.

Usage::

    python -m coursekit.grading.grade SUBMISSION.ipynb [--json REPORT.json] [--timeout 1800] [--total 3600]
    python -m coursekit.grading.grade FOLDER [--csv grades.csv] [--json all.json] [--workers 2] [--regrade]
    python -m coursekit.grading.grade --merge REPORT.json ... --csv grades.csv   # reports graded elsewhere

The student edition of the course (with the homework made from the reference solution) is
written by ``python -m coursekit.grading.release OUT``; it holds neither this grader nor its task registry.

How it stays fair:

- Every kernel runs in a sandbox (:mod:`coursekit.grading.sandbox`): an unprivileged user, no network, its
  own PID namespace, a read-only view of Python, ``coursekit`` and the data only, private writable
  folders, limits on memory, processes and file size; nothing it starts outlives it. Without a
  working sandbox the grader refuses, unless told ``--no-sandbox`` (then a submission can do
  anything the grader's user can).
- The submission runs on an in-memory copy; the file is only read. Every cell has a time limit
  (``--timeout``); a cell over it is interrupted (the kernel is restarted if it does not stop) and
  the notebook goes on; ``--total`` caps the whole run (:mod:`coursekit.grading.kernel`).
- The grader knows no task by name. Task cells are found by their metadata
  ``{"coursekit": {"task": ...}}`` and everything else about a task (points, collect snippet,
  scorer) comes from the registry :data:`coursekit.grading.tasks.TASKS`, imported with everything it
  scores with before the first kernel starts. A task whose cell raises or times out gets zero;
  later tasks are still run and graded.
- Points are never read from the kernel. After each task's last cell the grader injects the task's
  collect snippet (:mod:`coursekit.grading.collect`), which only hands over the raw answer through a file
  with a random name, loaded with ``torch.load(weights_only=True)``, and scores it here against
  what the grader computes itself (the test set from the raw files, operation counts): redefining
  the checks in the notebook changes nothing, and no score depends on time or machine load.
- The reflection is graded by hand: its points are reported as pending, not in the score.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import secrets
import sys
import tempfile
import warnings
from pathlib import Path

import nbformat
import torch

from . import batch
from .. import homework as hw
from . import reports, sandbox
from .collect import collector_source
from ..config import child_environment, is_fast
from ..feedback import credit, show
from ..files import remove_tree, save_atomically
from .kernel import Runner, read_answer
from .reports import GradeError, format_report, printable
from .tasks import TASKS, Context, Task, check_data, make_kernel_data


class InvalidNotebook(Exception):
    """The submission is not a valid notebook: it scores zero, and the message says why."""


def read_notebook(path) -> nbformat.NotebookNode:
    """The notebook at ``path``, checked against the notebook format before any kernel starts.

    ``GradeError`` if there is no such file (the grader's problem); ``InvalidNotebook`` if it is not
    a valid notebook (the submission's: a cell whose source is not text, a cell with no type, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise GradeError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():  # a missing cell id is repaired by nbformat, and harmless
            warnings.simplefilter("ignore")
            nb = nbformat.reads(path.read_bytes().decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as error:
        raise InvalidNotebook(f"not a valid notebook ({type(error).__name__}: "
                              f"{show(str(error).splitlines()[0] if str(error) else '', 160)})") from None
    return nb


def _meta(cell) -> dict:
    """A cell's ``coursekit`` metadata, ``{}`` unless it is a dict (a submission may have changed it)."""
    metadata = cell.get("metadata")
    meta = metadata.get("coursekit") if isinstance(metadata, dict) else None
    return meta if isinstance(meta, dict) else {}


def _task(cell) -> str | None:
    task = _meta(cell).get("task")
    return task if isinstance(task, str) else None


def _manual(cells) -> str:
    text = "\n".join(c.source for c in cells).strip()
    words = len(text.replace(hw.ANSWER_PLACEHOLDER, " ").split())
    return f"answered ({words} words): grade by hand" if words >= 10 else "no answer written"


def grade(path, timeout: float = 1800, total: float = 3600, tasks: dict | None = None,
          env: dict | None = None, limits: sandbox.Limits | None = sandbox.Limits()) -> dict:
    """Grade one submission: ``{"notebook", "score", "max_score", "pending", "tasks": [...]}``.

    tasks: the registry (default :data:`coursekit.grading.tasks.TASKS`); limits: the sandbox's, or None for
    an unsandboxed kernel whose environment is ``env`` (default :func:`coursekit.config.child_environment`).
    This process's
    own ``os.environ`` is not changed.
    """
    tasks = TASKS if tasks is None else tasks
    _check_times(timeout, total)
    try:
        nb = read_notebook(path)
    except InvalidNotebook as error:
        return _report(path, tasks, {}, {}, limits, f"the notebook was not run: {error}")
    cells = {t: [c for c in nb.cells if _task(c) == t] for t in tasks}
    results = {}
    workdir = tempfile.mkdtemp(prefix="coursekit-grade-")
    try:
        data = make_kernel_data(Path(workdir, "data"))  # no test image in it
        try:
            runner = Runner(nb, timeout, total, workdir, child_environment() if env is None else env, limits, data)
        except RuntimeError as error:  # e.g. "Kernel died before replying to kernel_info"
            memory = (f" with --memory-gb {limits.memory_gb:g} (importing torch alone reserves about 4 GB "
                      "of address space)") if limits else ""
            raise GradeError(f"the kernel did not start{memory}: {error}") from None
        code = {t: [c for c in cs if c.cell_type == "code"] for t, cs in cells.items()}
        last = {id(cs[-1]): t for t, cs in code.items() if cs and not tasks[t].manual}
        failed: dict[str, str] = {}
        context = Context(kernel_data=data)
        try:
            for cell in list(nb.cells):
                task = _task(cell)
                if cell.cell_type != "code":
                    continue
                why = runner.run(cell)
                if why and task in tasks:
                    failed.setdefault(task, f"your cell: {why}")
                if not why and not _meta(cell).get("check"):
                    runner.replay.append(cell)  # what a restarted kernel needs to go on
                if id(cell) in last:
                    results[task] = _grade_task(task, tasks, failed.get(task), runner, context)
        finally:
            runner.close()
    finally:
        remove_tree(workdir)  # whatever a kernel left in its folders
    return _report(path, tasks, cells, results, limits, "task cell not found (deleted, or its metadata removed?)")


def _report(path, tasks: dict, cells: dict, results: dict, limits, missing: str) -> dict:
    """The report of one submission: ``results`` per task, ``missing`` as the reason for the others."""
    report_tasks = []
    for name, task in tasks.items():
        if task.manual:
            entry = {"task": name, "points": None, "max": task.points, "status": "pending",
                     "feedback": _manual(cells[name]) if cells.get(name) else "answer cell not found"}
        elif name in results:
            entry = dict(results[name], status="graded")
        else:
            entry = {"task": name, "points": 0, "max": task.points, "status": "missing", "feedback": missing}
        report_tasks.append({"title": task.title, **entry})
    auto = [t for t in report_tasks if t["status"] != "pending"]
    return {"notebook": str(path), "score": hw.tidy(sum(t["points"] for t in auto)),
            "max_score": sum(t["max"] for t in auto),
            "pending": sum(t["max"] for t in report_tasks if t["status"] == "pending"),
            "fast_mode": is_fast(), "sandbox": limits is not None, "tasks": report_tasks}


def _check_times(timeout: float, total: float) -> None:
    if not all(math.isfinite(t) and t > 1 for t in (timeout, total)):
        raise GradeError(f"--timeout {timeout:g} --total {total:g}: give each cell and the notebook a "
                         "number of seconds, more than 1")


def _grade_task(name: str, tasks: dict, failure: str | None, runner: Runner, context: Context) -> dict:
    task = tasks[name]
    if failure:
        outcome = credit(0, [failure])
    else:
        try:
            outcome = _collect_and_score(task, runner, context)
        except (OSError, ImportError) as error:  # the grader's side (its files, its packages): no grade
            raise GradeError(f"task {name}: the grader failed ({type(error).__name__}: {show(str(error), 300)}); "
                             "fix that and grade this submission again") from error
        except Exception as error:  # anything else comes from what the answer holds
            outcome = credit(0, [f"your answer has an unexpected form ({type(error).__name__}: "
                                 f"{show(str(error), 120)})"])
    if task.fallback and outcome.pop("unusable", outcome["credit"] == 0):  # later tasks get what they need
        cell = nbformat.v4.new_code_cell(task.fallback)
        if not runner.run(cell, 30):
            runner.replay.append(cell)
        outcome["feedback"] += f"; later tasks ran with: {task.fallback}"
    return hw.result(name, outcome, task.points)


def _collect_and_score(task: Task, runner: Runner, context: Context) -> dict:
    token = secrets.token_hex(8)
    inputs = task.inputs() if task.inputs else {}
    inputs_path, out_path = runner.exchange / f"in-{token}.pt", runner.exchange / f"out-{token}.pt"
    try:  # the exchange folder is the kernel's too: a kernel may have broken it
        with os.fdopen(os.open(inputs_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as f:
            torch.save(inputs, f)
        runner.answer_file(out_path)
    except OSError as error:
        return credit(0, [f"the notebook made the folder its answers are handed over in unusable "
                          f"({type(error).__name__})"])
    cell = nbformat.v4.new_code_cell(collector_source(task.collect, str(inputs_path), str(out_path)))
    why = runner.run(cell, min(runner.timeout, 300))
    try:
        answer = None if why else read_answer(out_path)
    except Exception as error:
        return credit(0, [f"could not read your answer: it is not plain data ({type(error).__name__})"])
    finally:
        for leftover in (inputs_path, out_path):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:  # the kernel put something else there; its folder goes with the kernel
                pass
    if answer is None:
        return credit(0, [f"could not read your answer: {why or 'no answer was handed over'}"])
    return task.score(answer, inputs, context)


# --- command line ------------------------------------------------------------------------------------

NO_SANDBOX_WARNING = ("--no-sandbox: each submission runs with your user's rights, can read and change your "
                      "files (this grader, the grades, other submissions) and reach the network")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grading.grade", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", nargs="+", help="a submitted .ipynb, or a folder of them "
                                                    "(with --merge: JSON reports)")
    parser.add_argument("--json", help="write the report(s) as JSON to this file")
    parser.add_argument("--csv", help="folder mode: the summary CSV, one row per submission "
                                      "(default FOLDER/grades.csv)")
    parser.add_argument("--regrade", action="store_true",
                        help="folder mode: grade again the submissions the CSV already holds")
    parser.add_argument("--workers", type=int, default=1, help="folder mode: submissions graded at once")
    parser.add_argument("--merge", action="store_true",
                        help="merge the JSON reports given (graded elsewhere, one per submission) into --csv")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--total", type=float, default=3600, help="seconds allowed per notebook (default 3600)")
    parser.add_argument("--threads", type=int, default=sandbox.Limits.threads,
                        help=f"CPU threads per kernel (default {sandbox.Limits.threads}; training's numbers "
                             "depend on it, so keep it the same for a whole class)")
    parser.add_argument("--memory-gb", type=float, default=sandbox.Limits.memory_gb,
                        help=f"address space per kernel (default {sandbox.Limits.memory_gb:g})")
    parser.add_argument("--no-sandbox", action="store_true", help="run kernels without the sandbox: "
                        "only for your own notebooks, never for submissions")
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # poll tasks nbclient leaves after a timeout

    try:
        if args.merge:
            reports.merge_reports([Path(p) for p in args.notebook], Path(args.csv or "grades.csv"), args.json)
            return 0
        if len(args.notebook) != 1:
            raise GradeError("give one notebook or one folder (or --merge with several reports)")
        target = Path(args.notebook[0])
        if args.no_sandbox:
            print(f"coursekit.grading.grade: warning: {NO_SANDBOX_WARNING}", file=sys.stderr)
        elif why := sandbox.problem():
            raise GradeError(f"no sandbox for the submissions' kernels: {why}. Grade inside a Linux "
                             f"container that has bubblewrap, or pass --no-sandbox ({NO_SANDBOX_WARNING})")
        limits = batch.limits_from(args)
        _check_times(args.timeout, args.total)
        if not target.exists():
            raise GradeError(f"{target}: no such file or folder")
        try:
            check_data()  # before any kernel starts: a missing test set is the grader's problem, not a 0
        except FileNotFoundError as error:
            raise GradeError(f"the grader's data: {error}") from None
        if target.is_dir():
            batch.grade_folder(target, args)
            return 0
        torch.set_num_threads(limits.threads if limits else torch.get_num_threads())
        report = grade(target, args.timeout, args.total, limits=limits)
    except GradeError as error:
        print(f"coursekit.grading.grade: error: {printable(error)}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        save_atomically(json.dumps(report, indent=2) + "\n", Path(args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
