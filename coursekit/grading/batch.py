"""Grade a folder of submissions: a worker process each, ``--workers`` at once, one CSV row each.

``python -m coursekit.grading.grade FOLDER`` lands here. Each submission is graded by
``python -m coursekit.grading.grade FILE --json REPORT`` in a process of its own session, whose sandboxed
kernel runs in yet another: a submission can stop only its own worker, and its row records that.
With ``--workers N``, N submissions are graded at once, each kernel with ``--threads`` threads
(default 1, whatever N is: training's numbers depend on the thread count) and its own memory limit
and user id; no score is computed from a time, so the reports equal those of grading one at a time,
as long as the machine is not loaded so far beyond its cores that cells run over ``--timeout``.

The CSV (and the JSON list, if asked for) lies where no kernel can reach, and is rewritten
atomically after every submission in the order of the file names, so a batch stopped halfway
keeps every finished row. A rerun skips the submissions the CSV already holds with a score, grades
again those whose row ended in an error, and with ``--regrade`` grades them all.

Beyond one machine: grade each file with ``python -m coursekit.grading.grade FILE --json REPORT`` wherever
you like, then ``python -m coursekit.grading.grade --merge REPORT ... --csv grades.csv`` (docs/instructors.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from . import sandbox
from ..config import child_environment
from ..files import remove_tree
from .reports import GradeError, csv_row, finished, format_report, printable, write_reports


def limits_from(args) -> sandbox.Limits | None:
    """The sandbox limits the command line asks for, or None with ``--no-sandbox``."""
    if args.no_sandbox:
        return None
    if args.threads < 1 or args.memory_gb <= 0:
        raise GradeError(f"--threads {args.threads} --memory-gb {args.memory_gb:g}: give each kernel at least "
                         "one thread and some memory")
    return sandbox.Limits(memory_gb=args.memory_gb, threads=args.threads)


def _worker_command(path: Path, out: Path, args) -> list[str]:
    limits = limits_from(args)
    command = [sys.executable, "-m", "coursekit.grading.grade", str(path), "--json", str(out),
               "--timeout", str(args.timeout), "--total", str(args.total)]
    if limits is None:
        return command + ["--no-sandbox"]
    return command + ["--threads", str(limits.threads), "--memory-gb", str(limits.memory_gb)]


def _grade_in_worker(path: Path, args) -> dict:
    """Grade one submission in a worker process of its own session: its kernel cannot reach us.
    Whatever happens, the answer is a report or an error row, never an exception."""
    # the worker's own temporary folders go inside ours: removed here even if the worker was killed
    tmp = Path(tempfile.mkdtemp(prefix="coursekit-worker-"))
    try:
        return _run_worker(path, args, tmp)
    except Exception as error:
        return {"notebook": str(path), "error": f"the grader failed on this submission ({type(error).__name__}: "
                                                f"{str(error)[:200]}); grade it alone to see"}
    finally:
        remove_tree(tmp)


def _run_worker(path: Path, args, tmp: Path) -> dict:
    out = tmp / "report.json"
    worker = subprocess.Popen(_worker_command(path, out, args), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, errors="replace",
                              env=dict(child_environment(), TMPDIR=str(tmp)), start_new_session=True)
    try:
        stdout, stderr = worker.communicate(timeout=args.total + 300)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.communicate()
        return {"notebook": str(path), "error": f"the grading worker ran over {args.total + 300:g} s "
                                                "and was stopped"}
    if out.exists():
        return json.loads(out.read_text())
    if worker.returncode < 0:
        why = f"killed by {signal.Signals(-worker.returncode).name}"
    else:
        why = stderr.strip().splitlines()[-1][:300] if stderr.strip() else f"exit status {worker.returncode}"
    return {"notebook": str(path), "error": f"the grading worker stopped without a report ({why}); "
                                            "the submission may have killed it: grade it alone to see"}


def grade_folder(folder: Path, args) -> list[dict]:
    """Grade every .ipynb in ``folder``, ``args.workers`` at a time; the CSV (and JSON) gets each row
    as it is done."""
    paths = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not paths:
        raise GradeError(f"{folder}: no .ipynb files in this folder")
    if args.workers < 1:
        raise GradeError(f"--workers {args.workers}: grade at least one submission at a time")
    if args.workers > 1 and not args.no_sandbox and os.geteuid() != 0:
        raise GradeError(f"--workers {args.workers}: as a user other than root every kernel runs as you, so "
                         "they share one process limit and one kernel could starve the others; grade with "
                         "--workers 1, or as root (each kernel then has a user id and cgroups of its own)")
    if args.workers * args.threads > (os.cpu_count() or 1):
        print(f"note: {args.workers} workers x {args.threads} threads is more than this machine's "
              f"{os.cpu_count()} cores: grading will be slower, and a cell that runs over --timeout "
              "scores zero\n")
    csv_path = Path(args.csv or folder / "grades.csv")
    json_path = Path(args.json) if args.json else None
    rows, reports = ({}, {}) if args.regrade else finished(csv_path, json_path)
    todo = []
    for path in paths:
        if str(path) in rows:
            print(f"{printable(path)}: already graded in {csv_path}, skipped (--regrade grades it again)\n")
        else:
            todo.append(path)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for done in as_completed([pool.submit(_grade_in_worker, path, args) for path in todo]):
            report = done.result()  # never raises: a failure is that submission's error row
            failed = "error" in report
            print(printable(f"{report['notebook']}: {report['error']}") if failed else format_report(report),
                  end="\n\n", flush=True)
            rows[report["notebook"]], reports[report["notebook"]] = csv_row(report), report
            write_reports(rows, reports, csv_path, json_path)
    print(f"{len(rows)} rows in {csv_path}")
    return [reports[k] for k in sorted(reports)]
