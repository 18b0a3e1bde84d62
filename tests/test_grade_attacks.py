"""Submissions that try to dodge, inflate or overload their grade (issue #32), each graded beside an
honest one: no kernel reads a test image, every submission ends in a report and a CSV row, the
grader's memory and the kernel's stay bounded, and nothing a notebook wrote reaches a terminal raw."""

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
import torch

from coursekit import scorers
from coursekit.grading import batch, grade, kernel, sandbox
from coursekit.files import remove_tree
from coursekit.grading.reports import csv_row, printable
from test_grade import ROOT, first_tasks, needs_data, needs_sandbox, reading_task, toy_notebook, write

# Fashion-MNIST's official files (shared/data/README.md): the test images must stay out of every kernel
TEST_IMAGES_MD5, TRAIN_IMAGES_MD5 = "8181f5470baa50b63fa0f6fddb340f0a", "f4a8712d7a061bf5bd6d2ca38dc4d50a"
SEARCH = r'''
import hashlib, os, torch
from coursekit.data import get_dataset
found = []
for top in ("/usr", "/etc", "/home", "/tmp", "/opt", "/root", "/srv", "/mnt", "/var", "/work", "/data"):
    for folder, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            try:
                if os.path.getsize(path) in (7840016, 47040016):  # the image files' sizes
                    found.append(hashlib.md5(open(path, "rb").read()).hexdigest())
            except OSError:
                pass
_out = {"found": found, "test_targets": torch.as_tensor(get_dataset("fashion_mnist", train=False).targets)}
'''


@needs_data
@needs_sandbox
def test_no_kernel_can_read_a_test_image_and_its_test_split_is_held_out_training_images(tmp_path):
    tasks, seen = reading_task(SEARCH)
    grade.grade(write(toy_notebook("pass"), tmp_path), timeout=300, total=600, tasks=tasks)
    assert TRAIN_IMAGES_MD5 in seen["found"], "the search did not even find the training images"
    assert TEST_IMAGES_MD5 not in seen["found"]
    from coursekit.data import split_indices
    from coursekit.tensordata import load_split
    train = load_split("fashion_mnist", train=True, cache=False)
    held_out = split_indices(train.targets, train.targets[:0])[1]
    assert torch.equal(seen["test_targets"], train.targets[held_out])  # homework.loaders' validation images


def test_accuracy_on_the_test_images_counts_no_more_than_the_model_generalizes():
    targets, floors = {"ViT": 0.90}, {"ViT": 0.85}
    # issue #32's attack: a ViT trained on the 10,000 test images scored 90.08% on them, 86.27% elsewhere
    attack = {"ViT": {"acc": 0.8627, "n": 6000, "test_acc": 0.9008, "test_n": 10_000}}
    result = scorers.score_training(attack, [], targets, floors)
    counted = scorers.credited_accuracy(0.9008, 10_000, 0.8627, 6000)
    assert 0.8627 < counted < 0.8627 + 0.011 and result["credit"] == pytest.approx((counted - 0.85) / 0.05)
    assert "trained on the test images?" in result["feedback"]
    # honest models score a little lower on the test images than on held-out ones: nothing changes
    honest = {"ViT": {"acc": 0.9093, "n": 6000, "test_acc": 0.9051, "test_n": 10_000}}
    assert scorers.score_training(honest, [], targets, floors)["credit"] == 1
    slightly_above = {"ViT": {"acc": 0.9000, "n": 6000, "test_acc": 0.9040, "test_n": 10_000}}  # within noise
    assert scorers.score_training(slightly_above, [], targets, floors)["credit"] == 1
    in_notebook = {"ViT": {"acc": 0.91}}  # the notebook's own check has no held-out images
    assert scorers.score_training(in_notebook, [], targets, floors)["credit"] == 1


def broken_notebooks(folder: Path) -> None:
    """Three notebooks that are not valid: a source that is not text, a cell with no type, no JSON."""
    good = json.loads(nbformat.writes(first_tasks()))
    for name, change in (("int_source", lambda nb: nb["cells"][2].update(source=42)),
                         ("no_type", lambda nb: nb["cells"][2].pop("cell_type"))):
        nb = json.loads(json.dumps(good))
        change(nb)
        (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    (folder / "not_json.ipynb").write_text('{"cells": [')


@needs_data
@needs_sandbox
def test_every_submission_ends_in_a_report_and_a_row_beside_an_honest_one(tmp_path):
    folder, out = tmp_path / "submissions", tmp_path / "grades.csv"
    folder.mkdir()
    write(first_tasks(), folder, "alice.ipynb")
    broken_notebooks(folder)
    # a widget comm with no data, a status whose content is a list, 20 comm messages of 40 MB each
    forge = ("k = get_ipython().kernel\n"
             "send = lambda kind, content: k.session.send(k.iopub_socket, kind, content, parent=k.get_parent())\n"
             "send('comm_open', {'comm_id': 'c', 'target_name': 'jupyter.widget', 'data': {}})\n"
             "send('status', [])\n"
             "for i in range(20):\n"
             "    send('comm_open', {'comm_id': str(i), 'target_name': 'jupyter.widget',\n"
             "                       'data': {'x': 'y' * 40 * 2**20}})\n")
    write(first_tasks(patchify=forge + first_tasks().cells[9].source), folder, "comms.ipynb")
    ansi = "\x1b[31mred\x1b]0;title\x07"
    write(first_tasks(), folder, f"{ansi}.ipynb")
    command = [sys.executable, "-m", "coursekit.grading.grade", str(folder), "--timeout", "120", "--csv", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = {Path(r["notebook"]).stem: r for r in csv.DictReader(out.open())}
    assert len(rows) == 6 and all(not r["error"] for r in rows.values())
    assert (rows["alice"]["data"], rows["alice"]["patchify"], rows["alice"]["config"]) == ("1", "2", "1")
    for name in ("int_source", "no_type", "not_json"):
        assert rows[name]["score"] == "0", rows[name]
    assert "not a valid notebook" in done.stdout
    assert rows["comms"]["data"] == "1" and rows["comms"]["config"] == "1"  # graded on, after the forged messages
    assert "\x1b" not in done.stdout + done.stderr + out.read_text()
    assert printable(ansi) in out.read_text()


@needs_data
@needs_sandbox
def test_the_graders_memory_stays_bounded_under_a_flood_of_comm_messages(tmp_path):
    flood = ("k = get_ipython().kernel\nfor i in range(20):\n"
             "    k.session.send(k.iopub_socket, 'comm_open', {'comm_id': str(i), 'target_name': 'x', "
             "'data': {'x': 'y' * 40 * 2**20}}, parent=k.get_parent())\n")
    honest, hostile = write(first_tasks(), tmp_path, "honest.ipynb"), write(
        first_tasks(data=flood + first_tasks().cells[5].source), tmp_path, "hostile.ipynb")
    peaks = {}
    for path in (honest, hostile):
        measure = ("import resource, sys\nfrom coursekit.grading import grade\n"
                   f"report = grade.grade({str(path)!r}, timeout=120, total=600)\n"
                   "print(report['score'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
        done = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        score, peaks[path.stem] = map(float, done.stdout.split()[-2:])
        assert score == 4
    # 20 messages of 40 MB held at once would add 800 MB: a message over Limits.message_mb is dropped
    assert peaks["hostile"] < peaks["honest"] + 2 * sandbox.Limits.queued * sandbox.Limits.message_mb, peaks


def zip_bomb(path: Path, megabytes: int) -> None:
    """torch.save's layout, but the pickle's entry deflated: megabytes of zeros in a file of kilobytes."""
    plain = io.BytesIO()
    torch.save({"x": 1}, plain)
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as bomb:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("data.pkl"):
                data += b"\0" * (megabytes << 20)
            bomb.writestr(entry.filename, data, compress_type=zipfile.ZIP_DEFLATED)


def test_an_answer_is_read_only_when_every_byte_is_bounded_before_reading(tmp_path):
    bomb = tmp_path / "bomb.pt"
    zip_bomb(bomb, 300)
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(ValueError, match="compressed entries"):
        kernel.read_answer(bomb)
    big_pickle = tmp_path / "pickle.pt"
    torch.save({"x": list(range(3_000_000))}, big_pickle)  # a long list: Python objects, many times its bytes
    with pytest.raises(ValueError, match="pickle is over"):
        kernel.read_answer(big_pickle)
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(ValueError, match="not one torch.save writes"):
        kernel.read_answer(tmp_path / "text.pt")
    fine = tmp_path / "fine.pt"
    torch.save({"state": {"w": torch.ones(1000, 100)}, "rows": [1, 2.5, "a"]}, fine)
    assert kernel.read_answer(fine)["rows"] == [1, 2.5, "a"]


@needs_sandbox
@pytest.mark.skipif(os.geteuid() != 0, reason="a kernel's cgroup needs root (docs/instructors.md, 'Limits')")
def test_the_kernels_memory_limit_counts_shared_memory_and_its_tmpfs(tmp_path):
    memfd = ("import os\nfds = []\nfor _ in range(4):\n    fd = os.memfd_create('x')\n"
             "    os.write(fd, b'x' * (512 << 20))\n    fds.append(fd)\n")
    shm = "open('/dev/shm/big', 'wb').write(b'x' * (1500 << 20))\n"
    limits = sandbox.Limits(memory_gb=1)
    for attack in (memfd, shm):  # killed at 1 GB of memory, or /dev/shm full at 1 GB: the cell fails
        tasks, seen = reading_task('_out = {"x": 1}')
        report = grade.grade(write(toy_notebook(attack), tmp_path), timeout=120, total=300, tasks=tasks, limits=limits)
        feedback = report["tasks"][0]["feedback"]
        assert report["tasks"][0]["points"] == 0 and ("the kernel died" in feedback or "OSError" in feedback), report
    mine = f"coursekit-kernel-{os.getpid()}-*"
    assert not any(Path("/sys/fs/cgroup").glob(f"**/{mine}")), "a kernel's cgroup was left behind"


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made as root")
def test_a_cage_holds_a_process_under_its_memory_limit_and_goes_away():
    cage = sandbox.Cage(sandbox.Limits(memory_gb=0.25), f"coursekit-kernel-test-{os.getpid()}")
    if not cage.folders:
        pytest.skip("no writable cgroup folder on this machine")
    try:
        hog = "import os\nfd = os.memfd_create('x')\nos.write(fd, b'x' * (512 << 20))\nprint('survived')"
        done = subprocess.run(cage.wrap([sys.executable, "-c", hog]), capture_output=True, text=True, timeout=120)
        assert done.returncode == -9 and "survived" not in done.stdout  # killed at 256 MB
        fine = subprocess.run(cage.wrap([sys.executable, "-c", "print(open('/proc/self/cgroup').read())"]),
                              capture_output=True, text=True, timeout=120)
        assert cage.folders[0].name in fine.stdout
    finally:
        cage.remove()
    assert cage.folders == []
    orphan = sandbox._cgroup_bases()[0] / "coursekit-kernel-999999999-dead"  # of a grader killed long ago
    orphan.mkdir()
    sandbox.Cage(sandbox.Limits(), f"coursekit-kernel-test-{os.getpid()}").remove()
    assert not orphan.exists()


def test_nothing_a_kernel_leaves_in_a_folder_stops_its_removal(tmp_path):
    top = tmp_path / "kernel-1"
    deep = top
    os.makedirs(top)
    fd = os.open(top, os.O_RDONLY)
    try:  # 3,000 folders deep: more than a path can name and than shutil.rmtree recurses
        for _ in range(3000):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
        os.chmod(fd, 0)  # and the deepest folder unreadable
    finally:
        os.close(fd)
    (deep / "locked").mkdir()
    (deep / "locked" / "file").write_text("x")
    (deep / "locked").chmod(0)
    remove_tree(top)
    assert not top.exists()


def test_a_batch_writes_a_row_for_every_submission_even_if_grading_one_fails(tmp_path, monkeypatch):
    for name in ("alice", "bob", "carol"):
        write(first_tasks(), tmp_path, f"{name}.ipynb")

    def worker(path, args, tmp):
        if path.stem == "bob":
            raise RecursionError("a folder too deep")  # what a kernel's leftovers once did to the clean-up
        return {"notebook": str(path), "score": 1, "max_score": 14, "pending": 3, "fast_mode": True, "tasks": []}

    monkeypatch.setattr(batch, "_run_worker", worker)
    args = argparse.Namespace(workers=1, threads=1, memory_gb=8.0, no_sandbox=True, csv=None, json=None,
                              regrade=False, timeout=60, total=120)
    batch.grade_folder(tmp_path, args)
    rows = {Path(r["notebook"]).stem: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert set(rows) == {"alice", "bob", "carol"} and rows["alice"]["score"] == "1"
    assert "RecursionError" in rows["bob"]["error"] and rows["bob"]["score"] == ""
    graded = []
    monkeypatch.setattr(batch, "_run_worker", lambda path, args, tmp: graded.append(path.stem) or worker(
        path.with_stem("alice"), args, tmp) | {"notebook": str(path)})
    batch.grade_folder(tmp_path, args)  # a rerun grades again only the row that ended in an error
    rows = {Path(r["notebook"]).stem: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert graded == ["bob"] and rows["bob"]["score"] == "1" and rows["bob"]["error"] == ""


def test_a_user_other_than_root_grades_one_submission_at_a_time(tmp_path, monkeypatch):
    write(first_tasks(), tmp_path, "alice.ipynb")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args = argparse.Namespace(workers=2, threads=1, memory_gb=8.0, no_sandbox=False, csv=None, json=None,
                              regrade=False, timeout=60, total=120)
    with pytest.raises(grade.GradeError, match="--workers 1, or as root"):
        batch.grade_folder(tmp_path, args)


def test_text_from_a_submission_is_escaped_one_way_for_terminals_and_spreadsheets():
    assert printable("ok\x1b[2J\r\u202eevil\n") == "ok\\x1b[2J\\r\\u202eevil\\n"
    row = csv_row({"notebook": "=HYPERLINK(\"x\")\x1b.ipynb", "error": "+1\x07"})
    assert row["notebook"] == "'=HYPERLINK(\"x\")\\x1b.ipynb" and row["error"] == "'+1\\x07"


def test_only_notebooks_that_are_not_valid_are_refused_before_any_kernel_starts(tmp_path):
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": "x = 1"}
    accepted = {"no_ids": {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
                "colab": {"cells": [dict(cell, metadata={"id": "a1", "colab": {}}, source=["x = 1\n", "y = 2"])],
                          "metadata": {"colab": {"provenance": []}}, "nbformat": 4, "nbformat_minor": 0}}
    refused = {"int_source": {"cells": [dict(cell, source=42)], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
               "no_type": {"cells": [{k: v for k, v in cell.items() if k != "cell_type"}], "metadata": {},
                           "nbformat": 4, "nbformat_minor": 4}}
    for name, nb in {**accepted, **refused}.items():
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    assert grade.read_notebook(tmp_path / "no_ids.ipynb").cells[0].source == "x = 1"
    assert grade.read_notebook(tmp_path / "colab.ipynb").cells[0].source == "x = 1\ny = 2"
    for name in refused:
        with pytest.raises(grade.InvalidNotebook, match="not a valid notebook"):
            grade.read_notebook(tmp_path / f"{name}.ipynb")
