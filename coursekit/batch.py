"""Grade a folder of submissions: a worker process each, ``--workers`` at once, one CSV row each.

``python -m coursekit.grade FOLDER`` lands here. Each submission is graded by
``python -m coursekit.grade FILE --json REPORT`` in a process of its own session, whose sandboxed
kernel runs in yet another: a submission can stop only its own worker, and its row records that.
With ``--workers N``, N submissions are graded at once, each kernel with ``--threads`` threads
(default 1, whatever N is: training's numbers depend on the thread count) and its own memory limit
and user id; scores do not depend on time or load, so the reports equal those of grading one at a
time.

The CSV (and the JSON list, if asked for) lies where no kernel can reach, and is rewritten
atomically after every submission in the order of the file names, so a batch stopped halfway
keeps every finished row. A rerun skips the submissions the CSV already holds with a score, grades
again those whose row ended in an error, and with ``--regrade`` grades them all.

Beyond one machine: grade each file with ``python -m coursekit.grade FILE --json REPORT`` wherever
you like, then ``python -m coursekit.grade --merge REPORT ... --csv grades.csv`` (README).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .grade import GradeError, format_report, kernel_env, limits_from, write_atomically
from .tasks import TASKS

COLUMNS = ["notebook", "score", "max_score", "pending", *TASKS, "error"]


def _csv_row(report: dict) -> dict:
    points = {t["task"]: t["points"] for t in report.get("tasks", [])}
    row = {"notebook": report["notebook"], "score": report.get("score", ""),
           "max_score": report.get("max_score", ""), "pending": report.get("pending", "")}
    row.update({t: "pending" if points.get(t, 0) is None else points.get(t, "") for t in TASKS})
    return dict(row, error=report.get("error", ""))


def _worker_command(path: Path, out: Path, args) -> list[str]:
    limits = limits_from(args)
    command = [sys.executable, "-m", "coursekit.grade", str(path), "--json", str(out),
               "--timeout", str(args.timeout), "--total", str(args.total)]
    if limits is None:
        return command + ["--no-sandbox"]
    return command + ["--threads", str(limits.threads), "--memory-gb", str(limits.memory_gb)]


def _grade_in_worker(path: Path, args) -> dict:
    """Grade one submission in a worker process of its own session: its kernel cannot reach us."""
    # the worker's own temporary folders go inside ours: removed here even if the worker was killed
    with tempfile.TemporaryDirectory(prefix="coursekit-worker-", ignore_cleanup_errors=True) as tmp:
        out = Path(tmp, "report.json")
        worker = subprocess.Popen(_worker_command(path, out, args), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=dict(kernel_env(), TMPDIR=tmp),
                                  start_new_session=True)
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


def _write(rows: dict, reports: dict, csv_path: Path, json_path: Path | None) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[k] for k in sorted(rows))
    write_atomically(csv_path, buffer.getvalue())
    if json_path:
        write_atomically(json_path, json.dumps([reports[k] for k in sorted(reports)], indent=2) + "\n")


def _finished(csv_path: Path, json_path: Path | None) -> tuple[dict, dict]:
    """The rows (and reports) of an earlier run that ended with a score: a rerun keeps them."""
    rows, reports = {}, {}
    if csv_path.exists():
        rows = {r["notebook"]: r for r in csv.DictReader(csv_path.open(newline="")) if not r.get("error")}
    if json_path and json_path.exists():
        reports = {r["notebook"]: r for r in json.loads(json_path.read_text()) if r["notebook"] in rows}
    return rows, reports


def grade_folder(folder: Path, args) -> list[dict]:
    """Grade every .ipynb in ``folder``, ``args.workers`` at a time; the CSV (and JSON) gets each row
    as it is done."""
    paths = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not paths:
        raise GradeError(f"{folder}: no .ipynb files in this folder")
    if args.workers < 1:
        raise GradeError(f"--workers {args.workers}: grade at least one submission at a time")
    if args.workers * args.threads > (os.cpu_count() or 1):
        print(f"note: {args.workers} workers x {args.threads} threads is more than this machine's "
              f"{os.cpu_count()} cores: grading will be slower, the scores the same\n")
    csv_path = Path(args.csv or folder / "grades.csv")
    json_path = Path(args.json) if args.json else None
    rows, reports = ({}, {}) if args.regrade else _finished(csv_path, json_path)
    todo = []
    for path in paths:
        if str(path) in rows:
            print(f"{path}: already graded in {csv_path}, skipped (--regrade grades it again)\n")
        else:
            todo.append(path)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for done in as_completed([pool.submit(_grade_in_worker, path, args) for path in todo]):
            report = done.result()
            print(format_report(report) if "error" not in report else f"{report['notebook']}: {report['error']}",
                  end="\n\n", flush=True)
            rows[report["notebook"]], reports[report["notebook"]] = _csv_row(report), report
            _write(rows, reports, csv_path, json_path)
    print(f"{len(rows)} rows in {csv_path}")
    return [reports[k] for k in sorted(reports)]


def merge_reports(paths: list[Path], csv_path: Path, json_path=None) -> None:
    """One CSV (and JSON list) from reports written by ``python -m coursekit.grade FILE --json REPORT``."""
    reports = {}
    for path in paths:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise GradeError(f"{path}: not a readable report ({error})") from None
        for r in report if isinstance(report, list) else [report]:
            reports[r["notebook"]] = r
    _write({k: _csv_row(r) for k, r in reports.items()}, reports, csv_path, Path(json_path) if json_path else None)
    print(f"{len(reports)} rows in {csv_path}")
