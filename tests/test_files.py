"""coursekit.files: the one atomic writer that caches, checkpoints, results and grade reports use."""

import os
import stat

import pytest
import torch

from coursekit import files
from coursekit.grading import grade, reports
from coursekit.files import save_atomically


def test_text_bytes_and_tensors_are_written_whole(tmp_path):
    save_atomically("grüße\n", tmp_path / "a" / "b" / "note.txt")  # missing folders are made
    assert (tmp_path / "a" / "b" / "note.txt").read_text(encoding="utf-8") == "grüße\n"
    save_atomically(b"\x00\x01", tmp_path / "raw.bin")
    assert (tmp_path / "raw.bin").read_bytes() == b"\x00\x01"
    save_atomically({"x": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))
    save_atomically("new", tmp_path / "raw.bin")  # replaces the old file
    assert (tmp_path / "raw.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "raw.bin", "t.pt"]  # no temporary files


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "model.pt"
    save_atomically("old", target)
    with pytest.raises(Exception):
        save_atomically({"f": lambda: 0}, target)  # a lambda cannot be pickled
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_the_file_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_atomically("x", tmp_path / "report.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644  # not a temp file's 0600


def test_the_graders_reports_go_through_the_same_writer(tmp_path):
    assert grade.save_atomically is reports.save_atomically is files.save_atomically
