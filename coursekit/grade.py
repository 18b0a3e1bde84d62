"""The homework grader: run a submission in a fresh kernel, score every task, explain each score.

Usage::

    python -m coursekit.grade SUBMISSION.ipynb [--json REPORT.json] [--timeout 1800] [--total 3600]
    python -m coursekit.grade FOLDER --csv grades.csv        # every .ipynb in FOLDER

The student version of the homework is made from the reference solution by
``python scripts/make_student.py``.

How it stays fair:

- The submission runs in a separate kernel process (nbclient) on an in-memory copy; the file is
  only read. Every cell has a time limit (``--timeout``); a cell over it is interrupted (the
  kernel is restarted if it does not stop) and the notebook goes on; ``--total`` caps the whole run.
- Task cells are found by their metadata ``{"coursekit": {"task": ...}}``. A task whose cell
  raises or times out gets zero; later tasks are still run and graded.
- Points are never read from the kernel. After each task the grader injects its own snippet
  (:mod:`coursekit.collect`) that only hands over the raw answer (tensors, numbers, weights)
  through a file with a random name, read at once and loaded with
  ``torch.load(weights_only=True)``. The grader's own copy of :mod:`coursekit.homework` scores it
  here, against inputs chosen here: redefining the checks in the notebook changes nothing.
  (Limit: the kernel runs as the grader's user; grade untrusted work inside a container.)
- The reflection is graded by hand: its points are reported as pending, not in the score.
"""

from __future__ import annotations

import argparse
import csv
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
from .data import DATA_ENV

_QUIET = logging.getLogger("coursekit.grade.kernel")  # nbclient's timeout messages: the report says it
_QUIET.setLevel(logging.CRITICAL)

FALLBACK_CONFIG = dict(patch_size=7, dim=64, depth=4, heads=4, dim_head=16, mlp_dim=128)
DATA_K = 4  # images per class the data task is asked for

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

    def __init__(self, nb, timeout: float, total: float, workdir: str):
        self.nb, self.workdir = nb, workdir
        self.timeout, self.deadline = timeout, time.monotonic() + total
        self.replay: list = []  # cells that ran without error, run again in a restarted kernel
        self._start()

    def _start(self) -> None:
        self.client = NotebookClient(self.nb, timeout=int(self.timeout), kernel_name="python3",
                                     allow_errors=True, interrupt_on_timeout=False, record_timing=False,
                                     resources={"metadata": {"path": self.workdir}}, log=_QUIET)
        self.client.km = self.client.create_kernel_manager()
        self.client.start_new_kernel()
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


def grade(path, timeout: float = 1800, total: float = 3600) -> dict:
    """Grade one submission: ``{"notebook", "score", "max_score", "pending", "tasks": [...]}``."""
    nb = read_notebook(path)
    if os.environ.get(DATA_ENV):  # the kernel runs elsewhere: give it an absolute data folder
        os.environ[DATA_ENV] = str(Path(os.environ[DATA_ENV]).resolve())
    cells = {t: [c for c in nb.cells if _task(c) == t] for t in hw.TASKS}
    results = {}
    with tempfile.TemporaryDirectory(prefix="coursekit-grade-") as workdir:
        runner = _Runner(nb, timeout, total, workdir)
        last = {id(cs[-1]): t for t, cs in cells.items() if cs}
        failed: dict[str, str] = {}
        context: dict = {}
        try:
            for cell in list(nb.cells):
                task = _task(cell)
                if cell.cell_type != "code":
                    continue
                why = runner.run(cell)
                if why and task in hw.TASKS:
                    failed.setdefault(task, f"your cell: {why}")
                if not why and not cell.get("metadata", {}).get("coursekit", {}).get("check"):
                    runner.replay.append(cell)  # what a restarted kernel needs to go on
                if id(cell) in last:
                    results[task] = _grade_task(task, failed.get(task), runner, context)
        finally:
            runner.close()
    report_tasks = []
    for task, (title, points, manual) in hw.TASKS.items():
        if manual:
            entry = {"task": task, "points": None, "max": points, "status": "pending",
                     "feedback": _manual(cells[task]) if cells[task] else "answer cell not found"}
        elif task in results:
            entry = dict(results[task], status="graded")
        else:
            entry = {"task": task, "points": 0, "max": points, "status": "missing",
                     "feedback": "task cell not found (deleted, or its metadata removed?)"}
        report_tasks.append({"title": title, **entry})
    auto = [t for t in report_tasks if t["status"] != "pending"]
    return {"notebook": str(path), "score": sum(t["points"] for t in auto),
            "max_score": sum(t["max"] for t in auto),
            "pending": sum(t["max"] for t in report_tasks if t["status"] == "pending"),
            "fast_mode": hw.is_fast(), "tasks": report_tasks}


def _grade_task(task: str, failure: str | None, runner: _Runner, context: dict) -> dict:
    if failure:
        result = hw._result(task, 0, [failure])
    else:
        try:
            result = _collect_and_score(task, runner, context)
        except Exception as error:  # a bug or missing data on the grader's side: say so, go on
            result = hw._result(task, 0, [f"grader error: {type(error).__name__}: {error}"])
    if task == "config" and result["points"] == 0:  # later tasks still get a configuration
        fallback = nbformat.v4.new_code_cell(f"vit_config = {FALLBACK_CONFIG!r}")
        if not runner.run(fallback, 30):
            runner.replay.append(fallback)
        result["feedback"] += "; later tasks ran with the fallback vit_config"
    return result


def _collect_and_score(task: str, runner: _Runner, context: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="coursekit-") as tmp:
        token = secrets.token_hex(8)
        inputs = {"k": DATA_K, "cases": hw.patchify_cases(secrets.randbelow(1 << 30))}
        inputs_path, out_path = Path(tmp, f"in-{token}.pt"), Path(tmp, f"out-{token}.pt")
        torch.save(inputs if task in ("data", "patchify") else {}, inputs_path)
        cell = nbformat.v4.new_code_cell(collector_source(task, str(inputs_path), str(out_path)))
        why = runner.run(cell, min(runner.timeout, 300))
        if why or not out_path.exists():
            return hw._result(task, 0, [f"could not read your answer: {why or 'no answer was handed over'}"])
        payload = torch.load(out_path, weights_only=True)  # read at once; plain data only
    return _score(task, payload, inputs, context)


def _score(task: str, payload: dict, inputs: dict, context: dict) -> dict:
    def error_text(value):
        return value if isinstance(value, str) else None

    if task == "data":
        if error_text(payload["indices"]):
            return hw._result(task, 0, [f"examples_per_class: {payload['indices']}"])
        return hw.score_data(payload["indices"], hw.test_targets(), inputs["k"])
    if task == "patchify":
        return hw.score_patchify(inputs["cases"], payload["outputs"])
    if task == "config":
        context["config"] = payload["config"]
        return hw.score_config(payload["config"], payload["n_patches"])
    if task == "training":
        config = context.get("config")
        if not isinstance(config, dict) or hw.score_config(config, None)["points"] == 0:
            config = FALLBACK_CONFIG
        states = [payload[k] for k in ("vit", "cnn")]
        models, errors = hw.load_models(config, *[s if isinstance(s, dict) else None for s in states])
        errors = [f"{n}: {s}" for n, s in zip(("vit", "cnn"), states) if isinstance(s, str)] or errors
        context["models"] = models
        context["test"] = hw.loaders()[2]
        context["measured"] = hw.measure(models, context["test"]) if models else {}
        return hw.score_training(context["measured"], errors)
    if task == "comparison":
        return hw.score_comparison(payload["rows"], context.get("measured", {}))
    if task == "attention":
        vit = context.get("models", {}).get("ViT")
        test = context.get("test") or hw.loaders()[2]
        return hw.score_attention(payload["index"], payload["attention"], vit, test.dataset)
    raise ValueError(f"unknown task {task!r}")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coursekit.grade", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="a submitted .ipynb, or a folder of them")
    parser.add_argument("--json", help="write the report(s) as JSON to this file")
    parser.add_argument("--csv", help="folder mode: write a summary CSV (one row per submission)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--total", type=float, default=3600, help="seconds allowed per notebook (default 3600)")
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # poll tasks nbclient leaves after a timeout
    target = Path(args.notebook)
    try:
        if target.is_dir():
            paths = sorted(p for p in target.glob("*.ipynb") if p.is_file())
            if not paths:
                raise GradeError(f"{target}: no .ipynb files in this folder")
        else:
            read_notebook(target)  # fail early with a clear message
            paths = [target]
        reports = []
        for path in paths:
            try:
                reports.append(grade(path, args.timeout, args.total))
            except GradeError as error:  # one bad file in a folder: report it, grade the rest
                if len(paths) == 1:
                    raise
                reports.append({"notebook": str(path), "error": str(error)})
            print(format_report(reports[-1]) if "error" not in reports[-1] else f"{path}: {reports[-1]['error']}")
            print()
    except GradeError as error:
        print(f"coursekit.grade: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(reports[0] if len(reports) == 1 and not target.is_dir()
                                              else reports, indent=2) + "\n")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["notebook", "score", "max_score", "pending", *hw.TASKS, "error"])
            for r in reports:
                points = {t["task"]: t["points"] for t in r.get("tasks", [])}
                out.writerow([r["notebook"], r.get("score", ""), r.get("max_score", ""), r.get("pending", ""),
                              *["pending" if points.get(t, 0) is None else points.get(t, "") for t in hw.TASKS],
                              r.get("error", "")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
