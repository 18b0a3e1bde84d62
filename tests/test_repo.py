"""The repository keeps its promises: README's commands, CI, pinned versions, links in sync."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python -m pip install -r requirements.txt && python -m pytest"


def test_ci_runs_the_readme_test_command():
    assert f"\n{TEST_COMMAND}\n" in (ROOT / "README.md").read_text()
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text().splitlines()


def test_requirements_pin_vit_pytorch_and_install_coursekit():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("vit-pytorch>=") and "<" in line for line in lines)
    assert "-e ." in lines


def test_colab_links_match_the_repository_address():
    result = subprocess.run([sys.executable, "scripts/sync_links.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
