"""The code keeps one style: ruff (pycodestyle and pyflakes, lines of at most 120 characters, as
pyproject.toml's [tool.ruff] says) over every Python file of the repository."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        if os.environ.get("CI"):
            pytest.fail("ruff is not installed: pip install -r requirements.txt")
        pytest.skip("ruff is not installed (pip install -r requirements.txt)")
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    done = subprocess.run([ruff, "check", "--no-cache", *files], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_ruff_rejects_a_line_that_breaks_the_style(tmp_path):
    ruff = shutil.which("ruff") or pytest.skip("ruff is not installed")
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nx = 1\n" + "y = '" + "z" * 130 + "'\n")
    done = subprocess.run([ruff, "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "F401" in done.stdout and "E501" in done.stdout
