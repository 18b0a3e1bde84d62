"""Grade a folder of submissions: one worker process each, one CSV row each, written as it is done.

``python -m coursekit.grade FOLDER`` lands here. Each submission is graded by
``python -m coursekit.grade FILE --json REPORT`` in a process of its own session, whose kernel runs in
yet another: a submission that kills its parent (``os.kill(os.getppid(), signal.SIGKILL)``) or its
process group takes down only its own worker, and its row records that. The CSV (and the JSON list,
if asked for) is rewritten atomically after every submission, so a batch stopped halfway keeps every
finished row; a rerun skips the submissions the CSV already holds unless ``--regrade``.
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
from pathlib import Path

from . import homework as hw
from .grade import GradeError, format_report, kernel_env, write_atomically


def _csv_row(report: dict, tasks: dict) -> dict:
    points = {t["task"]: t["points"] for t in report.get("tasks", [])}
    row = {"notebook": report["notebook"], "score": report.get("score", ""),
           "max_score": report.get("max_score", ""), "pending": report.get("pending", "")}
    row.update({t: "pending" if points.get(t, 0) is None else points.get(t, "") for t in tasks})
    return dict(row, error=report.get("error", ""))


def _grade_in_worker(path: Path, args) -> dict:
    """Grade one submission in a worker process of its own session: its kernel cannot reach us."""
    with tempfile.TemporaryDirectory(prefix="coursekit-worker-") as tmp:
        out = Path(tmp, "report.json")
        command = [sys.executable, "-m", "coursekit.grade", str(path), "--json", str(out),
                   "--timeout", str(args.timeout), "--total", str(args.total)]
        worker = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=kernel_env(), start_new_session=True)
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
    """Grade every .ipynb in ``folder``, one worker each; the CSV (and JSON) gets each row as it is done."""
    paths = sorted(p for p in folder.glob("*.ipynb") if p.is_file())
    if not paths:
        raise GradeError(f"{folder}: no .ipynb files in this folder")
    csv_path = Path(args.csv or folder / "grades.csv")
    json_path = Path(args.json) if args.json else None
    rows, reports = {}, {}
    if not args.regrade:
        if csv_path.exists():
            rows = {r["notebook"]: r for r in csv.DictReader(csv_path.open(newline=""))}
        if json_path and json_path.exists():
            reports = {r["notebook"]: r for r in json.loads(json_path.read_text())}
    columns = ["notebook", "score", "max_score", "pending", *hw.TASKS, "error"]
    for path in paths:
        if str(path) in rows:
            print(f"{path}: already graded in {csv_path}, skipped (--regrade grades it again)\n")
            continue
        report = _grade_in_worker(path, args)
        print(format_report(report) if "error" not in report else f"{path}: {report['error']}", end="\n\n")
        rows[str(path)], reports[str(path)] = _csv_row(report, hw.TASKS), report
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows.values())
        write_atomically(csv_path, buffer.getvalue())
        if json_path:
            write_atomically(json_path, json.dumps(list(reports.values()), indent=2) + "\n")
    print(f"{len(rows)} rows in {csv_path}")
    return list(reports.values())
