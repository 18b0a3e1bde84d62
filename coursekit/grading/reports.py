"""What grading produced, for people and spreadsheets: the report as text, one CSV row per
submission, the CSV and JSON files of a class (written atomically), and reports merged from elsewhere.

A report is the dict :func:`coursekit.grading.grade.grade` returns: ``{"notebook", "score", "max_score",
"pending", "tasks": [{"task", "points", "max", "feedback", ...}]}``, or ``{"notebook", "error"}`` when
a submission could not be graded.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..files import save_atomically
from .tasks import TASKS


class GradeError(Exception):
    """The grader itself could not run (missing or unreadable file)."""


COLUMNS = ["notebook", "score", "max_score", "pending", *TASKS, "error"]


def printable(text) -> str:
    """``text`` as the grader shows or files it, the one escape for anything a submission may have
    written (file names, errors, feedback): characters a terminal would act on (escape sequences,
    carriage returns, direction overrides) written out as ``\\x1b``, ``\\r``, ``\\u202e``."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))


def _cell(value):
    """A CSV cell: text escaped, and never read as a formula by a spreadsheet (``=``, ``+``, ``-``, ``@``)."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


def csv_row(report: dict) -> dict:
    points = {t["task"]: t["points"] for t in report.get("tasks", [])}
    row = {"notebook": report["notebook"], "score": report.get("score", ""),
           "max_score": report.get("max_score", ""), "pending": report.get("pending", "")}
    row.update({t: "pending" if points.get(t, 0) is None else points.get(t, "") for t in TASKS})
    return {k: _cell(v) for k, v in dict(row, error=report.get("error", "")).items()}


def format_report(report: dict) -> str:
    """The per-task table a person reads: task, points, max, feedback."""
    rows = [f"{report['notebook']}" + ("  (FAST MODE: thresholds lowered, for CI only)" if report["fast_mode"] else "")
            + ("" if report.get("sandbox", True) else "  (NO SANDBOX)"),
            f"{'task':<11} {'points':>6} {'max':>4}  feedback"]
    for t in report["tasks"]:
        pts = "pending" if t["points"] is None else f"{t['points']:g}"
        rows.append(f"{t['task']:<11} {pts:>6} {t['max']:>4}  {t['feedback']}")
    rows = [printable(row) for row in rows]
    rows.append(f"score: {report['score']:g}/{report['max_score']} "
                f"(+ {report['pending']} points pending manual grading)")
    return "\n".join(rows)


def write_reports(rows: dict, reports: dict, csv_path: Path, json_path: Path | None) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[k] for k in sorted(rows))
    save_atomically(buffer.getvalue(), csv_path)
    if json_path:
        save_atomically(json.dumps([reports[k] for k in sorted(reports)], indent=2) + "\n", json_path)


def finished(csv_path: Path, json_path: Path | None) -> tuple[dict, dict]:
    """The rows (and reports) of an earlier run that ended with a score: a rerun keeps them."""
    rows, reports = {}, {}
    if csv_path.exists():
        with csv_path.open(newline="") as f:
            rows = {r["notebook"]: r for r in csv.DictReader(f) if not r.get("error")}
    if json_path and json_path.exists():
        reports = {r["notebook"]: r for r in json.loads(json_path.read_text()) if r["notebook"] in rows}
    return rows, reports


def merge_reports(paths: list[Path], csv_path: Path, json_path=None) -> None:
    """One CSV (and JSON list) from reports written by ``python -m coursekit.grading.grade FILE --json REPORT``."""
    reports = {}
    for path in paths:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise GradeError(f"{path}: not a readable report ({error})") from None
        for r in report if isinstance(report, list) else [report]:
            if not isinstance(r, dict) or not isinstance(r.get("notebook"), str):
                raise GradeError(f"{path}: not a report of python -m coursekit.grading.grade (no 'notebook' in it)")
            reports[r["notebook"]] = r
    rows = {k: csv_row(r) for k, r in reports.items()}
    write_reports(rows, reports, csv_path, Path(json_path) if json_path else None)
    print(f"{len(reports)} rows in {csv_path}")
