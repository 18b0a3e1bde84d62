"""The grader end to end: real sandboxed kernels, fast mode (set by conftest), small derived notebooks.

A folder of submissions (the batch) is tested with the student edition in tests/test_release.py;
hostile submissions, each attack of issue #18, in tests/test_sandbox.py.

Grading the whole reference solution takes a minute on two cores (with a CPU burner beside it:
no score depends on time or load); the robustness tests use the solution's first three tasks only
(data, patchify, config), changed in memory.
"""

import contextlib
import csv
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import nbformat
import pytest
import torch

from coursekit import config, homework as hw, vitconfig
from coursekit.grading import collect, grade, sandbox, tasks as registry
from coursekit.feedback import credit

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "notebooks" / "solutions" / "04_fashion_mnist_homework.ipynb"
STUDENT = ROOT / "notebooks" / "04_fashion_mnist_homework.ipynb"
FAST_TASKS = ("data", "patchify", "config")

# the real Fashion-MNIST (COURSEKIT_DATA): without it a skip, under CI a failure (tests/conftest.py)
needs_data = pytest.mark.needs_data("fashion_mnist")


def points(report):
    return {t["task"]: t["points"] for t in report["tasks"]}


def first_tasks(**replace):
    """The solution up to the config check, with task cells' sources replaced by ``replace[task]``."""
    nb = nbformat.read(SOLUTION, as_version=4)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("coursekit", {})
        if meta.get("task") in replace:
            cell.source = replace[meta["task"]]
        cells.append(cell)
        if meta.get("check") == "config":
            break
    nb.cells = cells
    return nb


def write(nb, folder, name="submission.ipynb"):
    path = Path(folder) / name
    nbformat.write(nb, path)
    return path


NO_SANDBOX = sandbox.problem()  # in CI, where .ci/run installs bubblewrap, a missing sandbox fails the tests
needs_sandbox = pytest.mark.skipif(NO_SANDBOX is not None and not os.environ.get("CI"),
                                   reason=f"no sandbox here: {NO_SANDBOX}")


@contextlib.contextmanager
def busy_machine():
    """A process that keeps every core busy while the block runs."""
    burn = "import multiprocessing as m\ndef f(_):\n    while True: pass\nm.Pool(m.cpu_count()).map(f, range(64))"
    process = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        yield
    finally:
        os.killpg(process.pid, 9)
        process.wait()


@pytest.fixture(scope="module")
def solution_report(tmp_path_factory):
    path = write(nbformat.read(SOLUTION, as_version=4), tmp_path_factory.mktemp("solution"))
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with busy_machine():
        report = grade.grade(path, timeout=600, total=1200)
    return report, path, before


@needs_data
@needs_sandbox
def test_reference_solution_scores_full_marks_on_a_busy_machine(solution_report):
    report, path, before = solution_report
    assert report["sandbox"]
    automatic = sum(t.points for t in registry.TASKS.values() if not t.manual)
    assert report["score"] == report["max_score"] == automatic == 14, grade.format_report(report)
    pending = [t for t in report["tasks"] if t["status"] == "pending"]
    assert [t["task"] for t in pending] == ["reflection"] and report["pending"] == 3
    assert "answered" in pending[0]["feedback"]


@needs_data
def test_the_submitted_file_is_not_changed(solution_report):
    report, path, before = solution_report
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


@needs_data
def test_crashing_and_hanging_answers_lose_only_their_own_points(tmp_path):
    nb = first_tasks(data='raise RuntimeError("boom")',
                     patchify="import time\nwhile True:\n    time.sleep(0.1)")
    path = write(nb, tmp_path)
    start = time.monotonic()
    report = grade.grade(path, timeout=40, total=400)
    elapsed = time.monotonic() - start
    tasks = {t["task"]: t for t in report["tasks"]}
    assert tasks["data"]["points"] == 0 and "RuntimeError: boom" in tasks["data"]["feedback"]
    assert tasks["patchify"]["points"] == 0 and "timed out" in tasks["patchify"]["feedback"]
    assert tasks["config"]["points"] == hw.POINTS["config"], grade.format_report(report)
    assert elapsed < 300
    assert tasks["training"]["status"] == "missing"


@needs_data
def test_a_hang_that_ignores_interrupts_restarts_the_kernel_and_grading_goes_on(tmp_path):
    stubborn = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "while True:\n    pass")
    path = write(first_tasks(patchify=stubborn), tmp_path)
    start = time.monotonic()
    report = grade.grade(path, timeout=40, total=400)
    assert time.monotonic() - start < 300
    assert points(report)["patchify"] == 0
    assert points(report)["data"] == 1 and points(report)["config"] == hw.POINTS["config"], grade.format_report(report)


@needs_data
def test_redefining_the_checks_gains_nothing(tmp_path):
    cheat = '''
import coursekit.homework as homework
full = lambda task: {"task": task, "points": 2, "max": 2, "feedback": "perfect"}
for name in dir(homework):
    if name.startswith("score_"):
        setattr(homework, name, lambda *a, _n=name, **k: full(_n.split("_", 1)[1]))
homework.POINTS.update({t: 0 for t in homework.POINTS})
checks.results.update({t: full(t) for t in ("data", "patchify", "config")})
for task in ("data", "patchify", "config", "summary"):
    setattr(homework.Checks, task, lambda self, *a, _t=task, **k: full(_t))
import torch
homework.reference_patchify = lambda images, p: torch.zeros(1)
'''
    nb = first_tasks(
        data="def examples_per_class(dataset, k):\n    return torch.zeros(10, k, dtype=torch.long)",
        patchify="def patchify(images, patch_size):\n    return images.flatten(2).transpose(1, 2)",
        config='vit_config = dict(patch_size=5)\nn_patches = 25')
    nb.cells.insert(3, nbformat.v4.new_code_cell(cheat))  # after the imports, where `checks` is made
    path = write(nb, tmp_path)
    report = grade.grade(path, timeout=60, total=300)
    assert {t: points(report)[t] for t in FAST_TASKS} == {"data": 0, "patchify": 0, "config": 0}
    config_task = next(t for t in report["tasks"] if t["task"] == "config")
    assert "later tasks ran with: vit_config = " in config_task["feedback"]


@needs_data
def test_cli_missing_and_unreadable_files(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "coursekit.grading.grade", str(tmp_path / "nope.ipynb")],
                             capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 2
    nope = tmp_path / "nope.ipynb"
    assert missing.stderr.strip() == f"coursekit.grading.grade: error: {nope}: no such file or folder"
    bad = tmp_path / "bad.ipynb"
    bad.write_bytes(b"\x89PNG not a notebook")
    unreadable = subprocess.run([sys.executable, "-m", "coursekit.grading.grade", str(bad)],
                                capture_output=True, text=True, cwd=ROOT)
    assert unreadable.returncode == 0 and unreadable.stderr == ""  # the submission's fault: a report, 0 points
    assert "the notebook was not run: not a valid notebook (UnicodeDecodeError" in unreadable.stdout
    assert "score: 0/14" in unreadable.stdout


def test_collector_hands_over_plain_answers_and_leaves_no_names_behind(tmp_path):
    inputs, out = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save({}, inputs)
    kernel = {"vit_config": {"patch_size": 7, "dim": torch.tensor(64)}}  # n_patches left undefined
    before = set(kernel)
    exec(collect.collector_source(registry.TASKS["config"].collect, str(inputs), str(out)), kernel)
    answer = torch.load(out, weights_only=True)
    assert answer["config"]["patch_size"] == 7 and torch.equal(answer["config"]["dim"], torch.tensor(64))
    assert answer["n_patches"] == "NameError: n_patches is not defined"
    assert set(kernel) - {"__builtins__"} == before

def test_a_deep_vit_is_handed_over_whole(tmp_path):
    inputs, out = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save({}, inputs)
    deep = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(100)])  # 200 entries, as a 16-layer ViT
    kernel = {"vit": deep, "cnn": torch.nn.Linear(2, 2)}
    exec(collect.collector_source(registry.TASKS["training"].collect, str(inputs), str(out)), kernel)
    answer = torch.load(out, weights_only=True)
    assert list(answer["vit"]) == list(deep.state_dict())


def test_an_invalid_config_runs_the_fallback_even_when_its_patch_count_earns_half(monkeypatch):
    over = dict(hw.FALLBACK_CONFIG, dim=512, mlp_dim=2048)  # over the parameter budget
    answer = {"config": over, "n_patches": vitconfig.patches(over["patch_size"])}
    monkeypatch.setattr(grade, "_collect_and_score", lambda task, runner, context:
                        registry._grade_config(answer, {}, context))
    ran, context = [], registry.Context()
    runner = types.SimpleNamespace(run=lambda cell, limit=None: ran.append(cell.source), replay=[])
    result = grade._grade_task("config", registry.TASKS, None, runner, context)
    assert result["points"] == hw.POINTS["config"] / 2 and context.config is None
    assert ran == [registry.TASKS["config"].fallback] and "later tasks ran with" in result["feedback"]


def test_a_failure_on_the_graders_side_gives_no_score_rather_than_a_zero(tmp_path):
    def broken(answer, inputs, context):
        raise OSError("the test set is gone")

    tasks = {"toy": registry.Task("A task", 1, score=broken, collect="_out = {}")}
    with pytest.raises(grade.GradeError, match="task toy: the grader failed .*the test set is gone"):
        grade.grade(write(toy_notebook("pass"), tmp_path), timeout=60, total=120, tasks=tasks, limits=None)
    def divides(answer, inputs, context):
        return credit(1 / answer["zero"], ["ok"])  # what an answer of 0 does to a careless scorer

    tasks_of_answers = {"toy": registry.Task("A task", 1, score=divides, collect='_out = {"zero": 0}')}
    report = grade.grade(write(toy_notebook("pass"), tmp_path), timeout=60, total=120, tasks=tasks_of_answers,
                         limits=None)  # an error the answer causes scores zero: it cannot dodge the grade
    assert report["tasks"][0]["points"] == 0 and "ZeroDivisionError" in report["tasks"][0]["feedback"]
    for timeout in (0, 1, float("inf")):
        with pytest.raises(grade.GradeError, match=f"--timeout {timeout:g} --total 120: give"):
            grade.grade(write(toy_notebook("pass"), tmp_path), timeout=timeout, total=120, tasks=tasks, limits=None)


def test_a_kernel_that_breaks_its_exchange_folder_scores_zero_and_cannot_dodge_its_grade(tmp_path):
    moved = tmp_path / "moved"  # the kernel's folder goes here; a file takes its place
    breaker = f"import os, shutil\nhere = os.getcwd()\nshutil.move(here, {str(moved)!r})\nopen(here, 'w').close()"
    report = grade.grade(write(toy_notebook(breaker), tmp_path), timeout=60, total=120, tasks=toy_registry(),
                         limits=None)
    assert report["tasks"][0]["points"] == 0 and "unusable" in report["tasks"][0]["feedback"]


def test_missing_data_stops_the_grader_before_any_kernel_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path / "empty"))
    monkeypatch.setattr(grade, "Runner", lambda *a, **k: pytest.fail("a kernel was started"))
    assert grade.main([str(write(toy_notebook("pass"), tmp_path)), "--no-sandbox"]) == 2
    error = capsys.readouterr().err
    assert "coursekit.grading.grade: error: the grader's data:" in error and "Traceback" not in error
    assert str(tmp_path / "empty") in error and "COURSEKIT_DATA" in error  # where it looked, and the fix


def test_odd_metadata_and_a_markdown_cell_last_in_a_task_do_not_stop_grading(tmp_path):
    nb = toy_notebook("def times_seven(a):\n    return 7 * a")
    nb.cells.insert(0, nbformat.v4.new_code_cell("y = 1", metadata={"coursekit": "oops"}))
    nb.cells.insert(1, nbformat.v4.new_code_cell("z = 1", metadata={"coursekit": {"task": ["toy"]}}))
    nb.cells.insert(3, nbformat.v4.new_markdown_cell("my notes", metadata={"coursekit": {"task": "toy"}}))
    assert grade._task(nb.cells[0]) is None and grade._task(nb.cells[1]) is None
    report = grade.grade(write(nb, tmp_path), timeout=60, total=120, tasks=toy_registry(), limits=None)
    assert report["tasks"][0]["points"] == 3, grade.format_report(report)


def toy_registry():
    """A registry with one extra task, as an instructor would add it: one entry, nothing else."""
    def score(answer, inputs, context):
        x = answer["x"]
        if isinstance(x, str):
            return credit(0, [f"answer: {x}"])
        return credit(x == inputs["a"] * 7, [f"expected {inputs['a']} * 7, got {x!r}"])

    toy = registry.Task("Multiply by seven", 3, inputs=lambda: {"a": 6}, score=score,
                  collect='import os\n_out = {"x": _answer("times_seven", lambda f: f(_inputs["a"])), '
                          '"env": os.environ.get("TOY_SETTING", "")}')
    return {"toy": toy, "essay": registry.Task("An essay", 2, manual=True)}


def toy_notebook(body):
    cell = nbformat.v4.new_code_cell(body, metadata={"coursekit": {"task": "toy"}})
    essay = nbformat.v4.new_markdown_cell("_Your answer here._", metadata={"coursekit": {"task": "essay"}})
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), cell, essay])


def test_a_new_task_is_one_registry_entry_graded_end_to_end(tmp_path):
    tasks = toy_registry()
    right = write(toy_notebook("def times_seven(a):\n    return 7 * a"), tmp_path, "right.ipynb")
    wrong = write(toy_notebook("def times_seven(a):\n    return a + 7"), tmp_path, "wrong.ipynb")
    report = grade.grade(right, timeout=60, total=120, tasks=tasks)
    assert [t["task"] for t in report["tasks"]] == ["toy", "essay"]
    assert report["score"] == report["max_score"] == 3 and report["pending"] == 2
    assert report["tasks"][1]["feedback"] == "no answer written"
    bad = grade.grade(wrong, timeout=60, total=120, tasks=tasks)
    assert bad["score"] == 0 and "expected 6 * 7, got 13" in bad["tasks"][0]["feedback"]


def reading_task(collect: str):
    """A one-task registry whose scorer keeps what the kernel handed over: ``(tasks, seen)``."""
    seen = {}

    def score(answer, inputs, context):
        seen.update(answer)
        return credit(1, ["ok"])

    return {"toy": registry.Task("Read the environment", 1, score=score, collect=collect)}, seen


def test_an_unsandboxed_kernel_gets_its_environment_passed_in_and_the_graders_data(tmp_path, monkeypatch):
    tasks, seen = reading_task('import os\n_out = {"setting": os.environ.get("TOY_SETTING", ""), '
                               '"data": os.environ.get("COURSEKIT_DATA", "")}')
    monkeypatch.setenv("COURSEKIT_DATA", "relative/data")
    before = dict(os.environ)
    path = write(toy_notebook("pass"), tmp_path)
    env = config.child_environment(dict(os.environ, TOY_SETTING="42"))
    grade.grade(path, timeout=60, total=120, tasks=tasks, env=env,
                limits=None)
    assert seen["setting"] == "42"
    assert Path(seen["data"]).name == "data" and Path(seen["data"]).parent.name.startswith("coursekit-grade-")
    assert dict(os.environ) == before  # the grader's own environment is left alone


@needs_sandbox
def test_a_sandboxed_kernel_sees_none_of_the_graders_environment(tmp_path, monkeypatch):
    tasks, seen = reading_task('import os\n_out = {"env": dict(os.environ), "uid": os.getuid()}')
    monkeypatch.setenv("TOY_SECRET", "hunter2")
    grade.grade(write(toy_notebook("pass"), tmp_path), timeout=60, total=120, tasks=tasks)
    assert "TOY_SECRET" not in seen["env"] and seen["uid"] == sandbox.kernel_uid()
    assert set(seen["env"]) <= set(sandbox.kernel_environment(sandbox.Limits(), Path("/"))) | {"PWD", "TERM", "PAGER",
           "GIT_PAGER", "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "PYDEVD_USE_FRAME_EVAL"}  # ipykernel's own


def test_reports_graded_elsewhere_merge_into_one_csv(tmp_path):
    reports = []
    for name, points in (("alice", 1), ("bob", 0)):
        report = {"notebook": f"submissions/{name}.ipynb", "score": points, "max_score": 1, "pending": 0,
                  "tasks": [{"task": "data", "points": points, "max": 1, "feedback": "ok"}]}
        reports.append(tmp_path / f"{name}.json")
        reports[-1].write_text(json.dumps(report))
    out = subprocess.run([sys.executable, "-m", "coursekit.grading.grade", "--merge", *map(str, reports[::-1]),
                          "--csv", str(tmp_path / "grades.csv"), "--json", str(tmp_path / "all.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert [(r["notebook"], r["score"], r["data"]) for r in rows] == [
        ("submissions/alice.ipynb", "1", "1"), ("submissions/bob.ipynb", "0", "0")]
    assert [r["notebook"] for r in json.loads((tmp_path / "all.json").read_text())] == [r["notebook"] for r in rows]
    (tmp_path / "broken.json").write_text("{")
    bad = subprocess.run([sys.executable, "-m", "coursekit.grading.grade", "--merge", str(tmp_path / "broken.json")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "not a readable report" in bad.stderr
    (tmp_path / "other.json").write_text('{"score": 3}')  # JSON, but no report
    other = subprocess.run([sys.executable, "-m", "coursekit.grading.grade", "--merge", str(tmp_path / "other.json")],
                           capture_output=True, text=True, cwd=ROOT)
    assert other.returncode == 2 and "not a report of python -m coursekit.grading.grade" in other.stderr
