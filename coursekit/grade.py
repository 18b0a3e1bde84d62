"""The homework grader: run a submission in a fresh kernel, score every task, explain each score.

Usage::

    python -m coursekit.grade SUBMISSION.ipynb [--json REPORT.json] [--timeout 1800] [--total 3600]
    python -m coursekit.grade FOLDER [--csv grades.csv] [--json all.json] [--regrade]

The student edition of the course (with the homework made from the reference solution) is
written by ``python -m coursekit.release OUT``.

How it stays fair:

- The submission runs in a separate kernel process (nbclient) on an in-memory copy; the file is
  only read. Every cell has a time limit (``--timeout``); a cell over it is interrupted (the
  kernel is restarted if it does not stop) and the notebook goes on; ``--total`` caps the whole run.
- The grader knows no task by name. It walks the notebook; task cells are found by their
  metadata ``{"coursekit": {"task": ...}}`` and everything else about a task (points, collect
  snippet, scorer) comes from the registry :data:`coursekit.homework.TASKS`. A task whose cell
  raises or times out gets zero; later tasks are still run and graded.
- Points are never read from the kernel. After each task's last cell the grader injects the task's
  collect snippet (wrapped by :mod:`coursekit.collect`), which only hands over the raw answer
  (tensors, numbers, weights) through a file with a random name, read at once and loaded with
  ``torch.load(weights_only=True)``. The grader's own copy of the registry scores it here, against
  inputs chosen here: redefining the checks in the notebook changes nothing.
  (Limit: the kernel runs as the grader's user; grade untrusted work inside a container.)
- The reflection is graded by hand: its points are reported as pending, not in the score.
- A folder is graded one submission at a time, each by a worker process in a session of its own
  (its kernel in another), so a submission that kills its parent takes down only its worker: its
  row says so. Each finished row is written to the CSV at once (atomically); a rerun skips the
  submissions the CSV already holds unless ``--regrade``.
- The kernel gets its environment passed in (:func:`kernel_env`); ``os.environ`` is not changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync

from . import homework as hw
from .collect import collector_source
from .config import DATA_ENV, is_fast
from .scorers import credit

_QUIET = logging.getLogger("coursekit.grade.kernel")  # nbclient's timeout messages: the report says it
_QUIET.setLevel(logging.CRITICAL)


class GradeError(Exception):
    """The grader itself could not run (missing or unreadable file)."""


def read_notebook(path) -> nbformat.NotebookNode:
    path = Path(path)
    if not path.is_file():
        raise GradeError(f"{path}: no such file")
    try:
        return nbformat.reads(path.read_bytes().decode("utf-8"), as_version=4)
    except Exception as error:
        raise GradeError(f"{path}: not a readable notebook ({type(error).__name__}: {error})") from None


def _task(cell) -> str | None:
    meta = cell.get("metadata", {}).get("coursekit", {})
    return meta.get("task") if isinstance(meta, dict) else None


def _error_of(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {str(out.get('evalue'))[:200]}"
    return None


class _Runner:
    """Executes cells one by one in a kernel of its own, with per-cell and total limits."""

    def __init__(self, nb, timeout: float, total: float, workdir: str, env: dict):
        self.nb, self.workdir, self.env = nb, workdir, env
        self.timeout, self.deadline = timeout, time.monotonic() + total
        self.replay: list = []  # cells that ran without error, run again in a restarted kernel
        self._start()

    def _start(self) -> None:
        self.client = NotebookClient(self.nb, timeout=int(self.timeout), kernel_name="python3",
                                     allow_errors=True, interrupt_on_timeout=False, record_timing=False,
                                     resources={"metadata": {"path": self.workdir}}, log=_QUIET)
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel(env=self.env)  # jupyter_client starts it in a session of its own
        self.client.start_new_kernel_client()

    def close(self) -> None:
        """Stop the kernel for good (SIGKILL: a submission may ignore gentler signals)."""
        try:
            self.client.kc.stop_channels()
        finally:
            process = getattr(self.client.km.provisioner, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, cell, limit: float | None = None) -> str | None:
        """Run one cell: None if fine, else why not (its error, or a time limit)."""
        limit = min(limit or self.timeout, self.left())
        if limit <= 1:
            return "not run: the total time limit of the notebook was reached"
        self.client.timeout = int(limit)
        try:
            self.client.execute_cell(cell, 0)
        except CellTimeoutError:
            self._recover()
            return f"timed out after {int(limit)} s and was interrupted"
        except DeadKernelError:
            self._restart()
            return "the kernel died (out of memory?) and was restarted"
        return _error_of(cell)

    def _recover(self) -> None:
        """Interrupt the cell; if the kernel does not answer within 15 s, start a new one."""
        run_sync(self.client.km.interrupt_kernel)()
        self.client.timeout = 15
        try:
            self.client.execute_cell(nbformat.v4.new_code_cell("pass"), 0)
        except (CellTimeoutError, DeadKernelError):
            self._restart()

    def _restart(self) -> None:
        """A fresh kernel that re-runs every cell that had worked, so that later tasks still run."""
        self.close()
        self._start()
        for cell in self.replay:
            self.client.timeout = int(max(1, min(self.timeout, self.left())))
            try:
                self.client.execute_cell(nbformat.v4.new_code_cell(cell.source), 0)
            except (CellTimeoutError, DeadKernelError):
                return


def _manual(cells) -> str:
    text = "\n".join(c.source for c in cells).strip()
    words = len(text.replace(hw.ANSWER_PLACEHOLDER, " ").split())
    return f"answered ({words} words): grade by hand" if words >= 10 else "no answer written"


def kernel_env(base=None) -> dict:
    """The environment a submission's kernel gets: ``base`` (default: ours), the data folder made absolute."""
    env = dict(os.environ if base is None else base)
    if env.get(DATA_ENV):  # the kernel runs in another folder
        env[DATA_ENV] = str(Path(env[DATA_ENV]).expanduser().resolve())
    return env


def grade(path, timeout: float = 1800, total: float = 3600, tasks: dict | None = None,
          env: dict | None = None) -> dict:
    """Grade one submission: ``{"notebook", "score", "max_score", "pending", "tasks": [...]}``.

    tasks: the registry (default :data:`coursekit.homework.TASKS`); env: the kernel's environment
    (default :func:`kernel_env`). This process's own ``os.environ`` is not changed.
    """
    tasks = hw.TASKS if tasks is None else tasks
    nb = read_notebook(path)
    cells = {t: [c for c in nb.cells if _task(c) == t] for t in tasks}
    results = {}
    with tempfile.TemporaryDirectory(prefix="coursekit-grade-") as workdir:
        runner = _Runner(nb, timeout, total, workdir, kernel_env() if env is None else env)
        last = {id(cs[-1]): t for t, cs in cells.items() if cs and not tasks[t].manual}
        failed: dict[str, str] = {}
        context: dict = {}
        try:
            for cell in list(nb.cells):
                task = _task(cell)
                if cell.cell_type != "code":
                    continue
                why = runner.run(cell)
                if why and task in tasks:
                    failed.setdefault(task, f"your cell: {why}")
                if not why and not cell.get("metadata", {}).get("coursekit", {}).get("check"):
                    runner.replay.append(cell)  # what a restarted kernel needs to go on
                if id(cell) in last:
                    results[task] = _grade_task(task, tasks, failed.get(task), runner, context)
        finally:
            runner.close()
    report_tasks = []
    for name, task in tasks.items():
        if task.manual:
            entry = {"task": name, "points": None, "max": task.points, "status": "pending",
                     "feedback": _manual(cells[name]) if cells[name] else "answer cell not found"}
        elif name in results:
            entry = dict(results[name], status="graded")
        else:
            entry = {"task": name, "points": 0, "max": task.points, "status": "missing",
                     "feedback": "task cell not found (deleted, or its metadata removed?)"}
        report_tasks.append({"title": task.title, **entry})
    auto = [t for t in report_tasks if t["status"] != "pending"]
    return {"notebook": str(path), "score": hw.tidy(sum(t["points"] for t in auto)),
            "max_score": sum(t["max"] for t in auto),
            "pending": sum(t["max"] for t in report_tasks if t["status"] == "pending"),
            "fast_mode": is_fast(), "tasks": report_tasks}


def _grade_task(name: str, tasks: dict, failure: str | None, runner: _Runner, context: dict) -> dict:
    task = tasks[name]
    if failure:
        outcome = credit(0, [failure])
    else:
        try:
            outcome = _collect_and_score(task, runner, context)
        except Exception as error:  # a bug or missing data on the grader's side: say so, go on
            outcome = credit(0, [f"grader error: {type(error).__name__}: {error}"])
    if task.fallback and outcome["credit"] == 0:  # later tasks still get what they need
        cell = nbformat.v4.new_code_cell(task.fallback)
        if not runner.run(cell, 30):
            runner.replay.append(cell)
        outcome["feedback"] += f"; later tasks ran with: {task.fallback}"
    return hw.result(name, outcome, tasks)


def _collect_and_score(task: hw.Task, runner: _Runner, context: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="coursekit-") as tmp:
        token = secrets.token_hex(8)
        inputs = task.inputs() if task.inputs else {}
        inputs_path, out_path = Path(tmp, f"in-{token}.pt"), Path(tmp, f"out-{token}.pt")
        torch.save(inputs, inputs_path)
        cell = nbformat.v4.new_code_cell(collector_source(task.collect, str(inputs_path), str(out_path)))
        why = runner.run(cell, min(runner.timeout, 300))
        if why or not out_path.exists():
            return credit(0, [f"could not read your answer: {why or 'no answer was handed over'}"])
        answer = torch.load(out_path, weights_only=True)  # read at once; plain data only
    return task.score(answer, inputs, context)


# --- command line ------------------------------------------------------------------------------------

def format_report(report: dict) -> str:
    """The per-task table a person reads: task, points, max, feedback."""
    rows = [f"{report['notebook']}" + ("  (FAST MODE: thresholds lowered, for CI only)" if report["fast_mode"] else ""),
            f"{'task':<11} {'points':>6} {'max':>4}  feedback"]
    for t in report["tasks"]:
        pts = "pending" if t["points"] is None else f"{t['points']:g}"
        rows.append(f"{t['task']:<11} {pts:>6} {t['max']:>4}  {t['feedback']}")
    rows.append(f"score: {report['score']:g}/{report['max_score']} "
                f"(+ {report['pending']} points pending manual grading)")
    return "\n".join(rows)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grade", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="a submitted .ipynb, or a folder of them")
    parser.add_argument("--json", help="write the report(s) as JSON to this file")
    parser.add_argument("--csv", help="folder mode: the summary CSV, one row per submission "
                                      "(default FOLDER/grades.csv)")
    parser.add_argument("--regrade", action="store_true",
                        help="folder mode: grade again the submissions the CSV already holds")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--total", type=float, default=3600, help="seconds allowed per notebook (default 3600)")
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # poll tasks nbclient leaves after a timeout
    target = Path(args.notebook)
    try:
        if target.is_dir():
            from .batch import grade_folder  # it starts workers that run this module

            grade_folder(target, args)
            return 0
        read_notebook(target)  # fail early with a clear message
        report = grade(target, args.timeout, args.total)
    except GradeError as error:
        print(f"coursekit.grade: error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        write_atomically(Path(args.json), json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
