"""How long a folder of submissions takes to grade with 1 and with N workers, and whether the reports agree.

    python benchmarks/grade_workers.py [--submissions 8] [--workers 1 2] [--fast]

The folder holds copies of the homework's reference solution. Each worker count grades the whole
folder (``python -m coursekit.grading.grade FOLDER --workers N --threads T``, sandbox on) into its own CSV;
the script prints the wall time of each, the speed-up against the first,
and whether every report gives the same points as the first. ``--fast`` grades in fast mode
(COURSEKIT_FAST=1: tiny subsets, what CI uses), else the homework trains for real (minutes each).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "notebooks" / "solutions" / "04_fashion_mnist_homework.ipynb"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submissions", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per kernel, the same for every run")
    parser.add_argument("--fast", action="store_true", help="fast mode (COURSEKIT_FAST=1)")
    args = parser.parse_args()
    env = dict(os.environ, COURSEKIT_FAST="1" if args.fast else "0")
    with tempfile.TemporaryDirectory(prefix="grade-workers-") as tmp:
        folder = Path(tmp, "submissions")
        folder.mkdir()
        for i in range(args.submissions):
            shutil.copy(SOLUTION, folder / f"student{i:02d}.ipynb")
        import torch

        print(f"{args.submissions} copies of the reference solution, {'fast' if args.fast else 'normal'} mode; "
              f"{os.cpu_count()} cores; torch {torch.__version__}; python {sys.version.split()[0]}")
        first, first_points = None, None
        for workers in args.workers:
            report = Path(tmp, f"workers-{workers}.json")
            command = [sys.executable, "-m", "coursekit.grading.grade", str(folder), "--workers", str(workers),
                       "--threads", str(args.threads),
                       "--csv", str(Path(tmp, f"workers-{workers}.csv")), "--json", str(report)]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
            seconds = time.perf_counter() - start
            points = {(Path(r["notebook"]).name, t["task"]): t["points"]
                      for r in json.loads(report.read_text()) for t in r["tasks"]}
            first = first or seconds
            first_points = first_points or points
            print(f"workers={workers} ({args.threads} threads each): {seconds:7.1f} s, "
                  f"{seconds / args.submissions:5.1f} s per submission, speed-up {first / seconds:4.2f}x, "
                  f"points {'equal to' if points == first_points else 'DIFFERENT from'} the first run")


if __name__ == "__main__":
    main()
