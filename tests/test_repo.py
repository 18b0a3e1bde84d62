"""The repository keeps its promises: README's commands, CI, pinned versions, links in sync."""

import subprocess
import sys
from pathlib import Path

from coursekit.models import KINDS

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python -m pip install -r requirements.txt && python -m pytest"


def test_ci_runs_the_readme_test_command():
    assert f"\n{TEST_COMMAND}\n" in (ROOT / "README.md").read_text()
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text().splitlines()


def test_pyproject_pins_and_requirements_agree():
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    deps = {r.name: r for r in map(Requirement, tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"])}
    assert {"vit-pytorch", "einops", "ipywidgets", "torch"} <= set(deps)
    assert all(r.specifier for r in deps.values()), "every dependency of coursekit has a version range"
    assert "<" in str(deps["vit-pytorch"].specifier)
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert "-e ." in lines
    for line in lines:  # a package both files name: the versions requirements.txt allows fit pyproject's
        if line and not line.startswith(("#", "-")) and Requirement(line).name in deps:
            req = Requirement(line)
            assert deps[req.name].specifier.contains(version(req.name)), (line, deps[req.name])
            lower = [s.version for s in req.specifier if s.operator == ">="]
            assert all(deps[req.name].specifier.contains(v) for v in lower), (line, deps[req.name])


def test_colab_links_match_the_repository_address():
    result = subprocess.run([sys.executable, "scripts/sync_links.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_reference_grid_script_trains_each_model_in_its_own_process_then_writes_the_tables(tmp_path):
    shim = tmp_path / "bin" / "python"  # stands in for python: records each call's arguments
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin"}
    subprocess.run(["bash", "scripts/reference_grid.sh", str(tmp_path / "out"), "mnist,cifar10"],
                   cwd=ROOT, env=env, check=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    grid = "-m coursekit.reproduce --grid reference --datasets mnist,cifar10"
    assert sorted(calls[:-1]) == sorted(f"{grid} --models {m} --out {tmp_path / 'out'}"
                                        for m in KINDS)  # every kind in its own process
    assert calls[-1:] == [f"{grid} --out {tmp_path / 'out'}"]
    assert (tmp_path / "out" / "logs").is_dir()
