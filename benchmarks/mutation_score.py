"""How many wrong versions of the course's code its tests catch: mutation testing with mutmut.

    python benchmarks/mutation_score.py                      # every module below, one after another
    python benchmarks/mutation_score.py scorers feedback     # some of them
    python benchmarks/mutation_score.py --out benchmarks/results/mutation_score.md

For each module, mutmut (PyPI: ``mutmut``, 3.x; not in requirements.txt: ``pip install mutmut``)
changes the code one small edit at a time (``>=`` to ``>``, a constant, a dropped argument, ...) and
runs the tests that reach the changed function; a mutant is *killed* when a test fails. The work
happens in a temporary copy of the repository (``git ls-files``), so nothing here is touched.
It prints, per module, the share of mutants killed, the aim (``AIMS``, from issue #31), and every
survivor's diff, which is either a missing test or an equivalent mutant (one that changes nothing a
caller can observe); judge each, and list the equivalent ones in the results file.
Set ``COURSEKIT_DATA`` for the data tests, as for the test suite.
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

ROOT = Path(__file__).resolve().parents[1]
# module -> (the tests that exercise it, the share of mutants they must kill)
AIMS = {
    "scorers": (["tests/test_homework.py",
                 "tests/test_grade_attacks.py::test_accuracy_on_the_test_images_counts_no_more_than_the_model_generalizes"],
                0.90),
    "feedback": (["tests/test_homework.py"], 0.90),
    "vitconfig": (["tests/test_homework.py"], 0.90),
    "maps": (["tests/test_maps.py", "tests/test_viz.py", "tests/test_faithfulness.py"], 0.80),
    "tensordata": (["tests/test_tensordata.py", "tests/test_data.py"], 0.80),
    # the real-MNIST learning test (seconds per mutant) is left out: the toy runs reach the same loop
    "train": (["tests/test_train.py", "--deselect", "tests/test_train.py::test_cnn_learns_real_mnist_in_two_epochs"],
              0.80),
}
CONFIG = """
[tool.mutmut]
source_paths = ["coursekit"]
only_mutate = ["coursekit/{module}.py"]
also_copy = ["notebooks", "benchmarks", "weights", "imgs", "docs", "scripts", "README.md", "conftest.py"]
pytest_add_cli_args_test_selection = {tests}
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
# torch is not fork-safe once it has run: mutants forked from a process that ran the tests sometimes
# spun until their CPU limit (reported as timeouts, counted as killed); a fork server has not run them
process_isolation = "forkserver"
"""


def copy_repository(to: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)


def mutate(module: str, tests: list[str], workdir: Path) -> dict:
    """Run mutmut on ``coursekit/<module>.py`` in ``workdir``; its counts and the survivors' diffs."""
    copy_repository(workdir)
    with open(workdir / "pyproject.toml", "a") as f:
        f.write(CONFIG.format(module=module, tests=json.dumps(tests)))
    start = time.perf_counter()
    # the mutants' tests keep their decoded-data cache in the copy: a mutant of tensordata must not
    # write a wrong cache where the course and its tests read it
    env = dict(os.environ, COURSEKIT_CACHE=str(workdir / "cache"))
    run = subprocess.run(["mutmut", "run", "--max-children", "1"], cwd=workdir, capture_output=True, text=True,
                         env=env)
    seconds = time.perf_counter() - start
    meta = workdir / "mutants" / "coursekit" / f"{module}.py.meta"
    if not meta.exists():
        raise RuntimeError(f"mutmut made no results for {module}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    if all(c is None for c in codes.values()):  # e.g. a test failed on the unchanged code, so nothing ran
        raise RuntimeError(f"mutmut ran no mutant of {module}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    killed = [k for k, c in codes.items() if c not in (0, None)]  # a failing test, a crash or a timeout
    timeouts = [k for k in killed if abs(codes[k]) in (24, 152)]  # SIGXCPU: its CPU limit, see mutmut's stats.py
    survived = sorted(k for k, c in codes.items() if c == 0)
    diffs = {k: subprocess.run(["mutmut", "show", k], cwd=workdir, capture_output=True, text=True).stdout
             for k in survived}
    return dict(module=module, mutants=len(codes), killed=len(killed), timeouts=timeouts, seconds=round(seconds),
                not_run=sorted(k for k, c in codes.items() if c is None), survivors=diffs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("modules", nargs="*", default=list(AIMS), help=f"default: {' '.join(AIMS)}")
    p.add_argument("--out", help="also write the report to this markdown file")
    args = p.parse_args(argv)
    if shutil.which("mutmut") is None:
        print("mutmut is not installed: pip install mutmut", file=sys.stderr)
        return 2
    lines, missed = [], []
    for module in args.modules:
        tests, aim = AIMS[module]
        with tempfile.TemporaryDirectory() as tmp:
            result = mutate(module, tests, Path(tmp))
        share = result["killed"] / max(result["mutants"], 1)
        verdict = "meets" if share >= aim else "BELOW"
        missed += [module] if share < aim else []
        lines.append(f"## {module}: {result['killed']}/{result['mutants']} killed ({share:.1%}; "
                     f"{len(result['timeouts'])} of them by timeout), aim {aim:.0%}: {verdict} "
                     f"({result['seconds']} s; tests: {', '.join(tests)})")
        if result["timeouts"]:  # a mutant that loops, or one that only ran slowly: `mutmut show` tells
            lines[-1] += "\n\ntimed out: " + ", ".join(result["timeouts"])
        for key, diff in result["survivors"].items():
            lines.append(f"\nsurvived: {key}\n```diff\n{diff.strip()}\n```")
        print("\n".join(lines[-1 - len(result["survivors"]):]), flush=True)
    if args.out:
        Path(args.out).write_text("\n\n".join(lines) + "\n")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
