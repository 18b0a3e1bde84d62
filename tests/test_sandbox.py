"""Hostile submissions graded in a folder, with the sandbox on: each attack of issue #18 changes nothing.

One submission (mallory) tries, from its kernel: to rewrite the installed grader's modules, to
leave processes behind that rewrite the grades, to fill /tmp, to reach the network, to read the
grader's environment, the instructor's files and the other submissions and echo them through its
feedback, to poison the decoded-data cache, and to look at other processes. Two honest submissions
are graded beside it, two at a time; afterwards nothing outside mallory's sandbox has changed.
"""

import csv
import hashlib
import importlib.util
import json
import os
import py_compile
import socket
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest
import torch

from coursekit.grading import sandbox
from coursekit.feedback import show
from coursekit.config import cache_dir
from coursekit.grading import grade, kernel
from test_grade import SOLUTION, first_tasks, needs_data, needs_sandbox, reading_task, toy_notebook, write

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-of-the-instructor"
ATTACK = r'''
import os, socket, subprocess, sys, pathlib
loot = []
try:
    from coursekit.grading.tasks import flop_ratio  # the grader's registry computes the answers
    loot.append("imported the registry")
except ImportError as e:
    loot.append(type(e).__name__)
try:  # its bytecode, which the .py files' masks do not cover
    import glob, importlib.machinery
    pyc = glob.glob("{package}/grading/__pycache__/tasks.*.pyc")[0]
    importlib.machinery.SourcelessFileLoader("coursekit.grading.tasks", pyc).load_module().flop_ratio
    loot.append("loaded the registry's bytecode")
except Exception as e:
    loot.append(type(e).__name__)
for target in ("{package}/scorers.py", "{package}/grading/grade.py", "{csv}", "{cache}/poison.pt"):
    try:
        with open(target, "a") as f:
            f.write("\nraise SystemExit('pwned')\n")
        loot.append("wrote " + target)
    except OSError as e:
        loot.append(type(e).__name__)
for target in ("{solution}", "{other}", "/root/.bash_history", "/proc/1/environ"):
    try:
        loot.append(open(target).read()[:80])
    except OSError as e:
        loot.append(type(e).__name__)
loot.append(os.environ.get("COURSEKIT_TEST_SECRET", "no secret"))
loot.append(str(len([p for p in os.listdir("/proc") if p.isdigit()])) + " pids")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"hello")
    loot.append("connected")
except OSError as e:
    loot.append(type(e).__name__)
try:
    with open("/tmp/coursekit-attack-file", "wb") as f:
        f.write(b"0" * 2**27)
except OSError as e:
    loot.append(type(e).__name__)
rewrite = ("import time\nwhile True:\n    try:\n        open({csv!r}, 'w').write('notebook,score\\nmallory,14\\n')\n"
           "    except OSError:\n        pass\n    time.sleep(0.2)")
subprocess.Popen([sys.executable, "-c", rewrite], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen(["sleep", "600"], start_new_session=True)
loot_text = " | ".join(loot)
print(loot_text)
'''


def digest(folder: Path, pattern: str = "*") -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob(pattern)) if p.is_file()}


def sandbox_processes() -> list[str]:
    """Processes that run as a sandbox's user (nobody, or a kernel's own uid), on the whole machine."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        uid = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Uid:"))
        if uid == sandbox.NOBODY or uid >= sandbox.UID_BASE:
            found.append(text.splitlines()[0])
    return found


@pytest.fixture
def listener():
    """A TCP server on the host's loopback that records every connection made to it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    connections, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(server.accept())
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    stop.set()
    thread.join()
    server.close()


@needs_data
@needs_sandbox
def test_a_hostile_submission_changes_nothing_outside_its_sandbox(tmp_path, listener, request):
    port, connections = listener
    folder, out = tmp_path / "submissions", tmp_path / "grades"
    folder.mkdir()
    out.mkdir()
    csv_path, json_path = out / "grades.csv", out / "grades.json"
    write(first_tasks(), folder, "alice.ipynb")
    write(first_tasks(), folder, "bob.ipynb")
    package = Path(sandbox.__file__).parent.parent  # coursekit, its grader in coursekit/grading
    registry = package / "grading" / "tasks.py"
    pyc = Path(importlib.util.cache_from_source(str(registry)))
    made_pyc = not pyc.exists()  # the registry's bytecode, as a grader that may write bytecode has it
    py_compile.compile(str(registry), cfile=str(pyc), doraise=True)
    request.addfinalizer(lambda: made_pyc and pyc.unlink(missing_ok=True))
    attack = ATTACK.format(package=package, csv=csv_path, cache=cache_dir(), solution=SOLUTION,
                           other=folder / "alice.ipynb", port=port)
    mallory = first_tasks(config=f"vit_config = dict(patch_size=7)\n{attack}\nn_patches = loot_text")
    write(mallory, folder, "mallory.ipynb")
    before = {"package": digest(package, "**/*.py"), "cache": digest(cache_dir()) if cache_dir().exists() else {},
              "others": digest(folder, "[ab]*.ipynb")}
    env = dict(os.environ, COURSEKIT_TEST_SECRET=SECRET)
    workers = "2" if os.geteuid() == 0 else "1"  # a user other than root grades one at a time (docs/instructors.md)
    command = [sys.executable, "-m", "coursekit.grading.grade", str(folder), "--workers", workers, "--timeout", "120",
               "--csv", str(csv_path), "--json", str(json_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert digest(package, "**/*.py") == before["package"], "the grader's code was changed"
    assert (digest(cache_dir()) if cache_dir().exists() else {}) == before["cache"], "the data cache was changed"
    assert digest(folder, "[ab]*.ipynb") == before["others"]
    assert sandbox_processes() == [], "a process of the sandbox outlived its kernel"
    assert not Path("/tmp/coursekit-attack-file").exists()
    assert connections == [], "the kernel reached the host's network"
    rows = {Path(r["notebook"]).stem: r for r in csv.DictReader(csv_path.open())}
    assert set(rows) == {"alice", "bob", "mallory"}
    for honest in ("alice", "bob"):
        assert (rows[honest]["data"], rows[honest]["patchify"], rows[honest]["config"]) == ("1", "2", "1"), rows[honest]
    everything = csv_path.read_text() + json_path.read_text() + done.stdout
    assert SECRET not in everything and "pwned" not in everything
    config = next(t for t in json.loads(json_path.read_text()) if "mallory" in t["notebook"])["tasks"][2]
    seen = show("ModuleNotFoundError | IndexError | PermissionError")  # what it saw, cut short
    assert f"n_patches={seen}" in config["feedback"]
    assert "pids" not in config["feedback"] and "no secret" not in config["feedback"]


@needs_data
@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0,
                    reason="a user other than root grades one submission at a time (docs/instructors.md)")
def test_grading_two_at_a_time_gives_the_reports_of_grading_one_at_a_time(tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    write(first_tasks(), folder, "alice.ipynb")
    write(first_tasks(patchify="def patchify(images, patch_size):\n    return images.flatten(2)"), folder, "bob.ipynb")
    write(first_tasks(data="def examples_per_class(dataset, k):\n    return None"), folder, "carol.ipynb")
    points = {}
    for workers in (1, 2):
        report = tmp_path / f"workers-{workers}.json"
        command = [sys.executable, "-m", "coursekit.grading.grade", str(folder), "--workers", str(workers),
                   "--timeout", "120",
                   "--csv", str(tmp_path / f"workers-{workers}.csv"), "--json", str(report)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        points[workers] = {(Path(r["notebook"]).stem, t["task"]): (t["points"], t["feedback"])
                           for r in json.loads(report.read_text()) for t in r["tasks"]}
    assert points[1] == points[2]
    assert points[1][("bob", "patchify")][0] == 0 and points[1][("alice", "patchify")][0] == 2


def test_without_a_sandbox_the_grader_refuses_and_names_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert "bwrap, prlimit" in sandbox.problem() and "apt-get install bubblewrap" in sandbox.problem()
    from coursekit.grading import grade

    path = write(nbformat.v4.new_notebook(), tmp_path)
    assert grade.main([str(path)]) == 2


def test_the_grader_keeps_no_output_of_a_cell_but_its_error_and_reads_no_other_message():
    client = kernel._Client(nbformat.v4.new_notebook())
    client.reset_execution_trackers()
    client.clear_before_next_output = False  # as execute_cell sets it
    cell = nbformat.v4.new_code_cell("x")

    def message(kind, content=None, **fields):
        return {"msg_type": kind, "parent_header": {"msg_id": "m"}, "header": {"msg_type": kind},
                "content": dict(fields) if content is None else content}

    client.process_message(message("stream", name="stdout", text="x" * 2**20), cell, 0)
    client.process_message(message("display_data", data={"text/plain": "y"}, metadata={}), cell, 0)
    assert cell.outputs == []  # a flood of printing or pictures stays in the kernel
    for forged in (message("comm_open", comm_id="c", target_name="jupyter.widget", data={}),
                   message("comm_msg", comm_id="c", data=None), message("status", []),
                   message("status", execution_state=None), message("clear_output", wait="x"), {"msg_type": 3}):
        assert client.process_message(forged, cell, 0) is None  # no handler that could fail reads them
    client.process_message(message("error", ename="ValueError", evalue="bad" * 10**6, traceback=["x" * 10**6]), cell, 0)
    client.process_message(message("error", ename="Again", evalue="and again", traceback=[]), cell, 0)
    assert [o["output_type"] for o in cell.outputs] == ["error"]  # the first error only, cut short
    assert len(cell.outputs[0]["evalue"]) == 1000 and cell.outputs[0]["traceback"] == []
    assert kernel._error_of(cell).startswith("ValueError: badbad")
    with pytest.raises(kernel.CellExecutionComplete):
        client.process_message(message("status", execution_state="idle"), cell, 0)


def test_an_answer_whose_tensors_claim_more_than_a_file_may_hold_is_refused(tmp_path):
    path = tmp_path / "answer.pt"
    torch.save({"x": [torch.zeros(1).expand(300_000_000)]}, path)  # a view: a few bytes on disk
    assert path.stat().st_size < 10_000
    with pytest.raises(ValueError, match="claim more than 256 MB"):
        kernel.read_answer(path)
    torch.save({"x": [torch.zeros(3)]}, path)
    assert torch.equal(kernel.read_answer(path)["x"][0], torch.zeros(3))


@needs_sandbox
def test_a_flood_of_output_and_a_giant_message_do_not_stop_grading(tmp_path):
    tasks, seen = reading_task('_out = {"after": _answer("after")}')
    # 200 MB printed a megabyte at a time, then one 100 MB message (over Limits.message_mb: dropped)
    flood = 'for _ in range(200):\n    print("x" * 2**20)\nprint("y" * 100 * 2**20)\nafter = 1'
    report = grade.grade(write(toy_notebook(flood), tmp_path), timeout=120, total=240, tasks=tasks)
    assert report["tasks"][0]["points"] == 1 and seen["after"] == 1  # the cell ended, the answer came


@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0, reason="as a user, the kernel owns its sockets' folder (docs/instructors.md)")
def test_a_kernel_can_make_no_file_beside_its_sockets_and_has_a_uid_of_its_own(tmp_path):
    tasks, seen = reading_task(
        'import os\nfrom ipykernel.connect import get_connection_file\n'
        'folder = os.path.dirname(get_connection_file())\n'
        'try:\n    open(os.path.join(folder, "filler"), "wb").write(b"0" * 2**20)\n    made = "made a file"\n'
        'except OSError as e:\n    made = type(e).__name__\n'
        '_out = {"made": made, "uid": os.getuid()}')
    report = grade.grade(write(toy_notebook("pass"), tmp_path), timeout=60, total=120, tasks=tasks)
    assert report["tasks"][0]["points"] == 1 and seen["made"] == "PermissionError"
    assert seen["uid"] == sandbox.kernel_uid() == sandbox.UID_BASE + os.getpid()
    other = subprocess.run([sys.executable, "-c", "from coursekit.grading import sandbox; print(sandbox.kernel_uid())"],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    assert int(other.stdout) != seen["uid"]  # another grader at the same time: another user
    assert str(seen["uid"]) not in Path("/etc/passwd").read_text()
