"""An install that works outside the repository: the wheel of coursekit carries the course's trained
weights (exactly the files of ``coursekit.weights.SHIPPED``, never the homework's), and installed into
a fresh virtual environment it loads them with their hashes checked, builds the attention explorer and
runs the grader's command, from a folder that is not the repository, with no network.

The wheel is built from a clean copy of the repository (the repository itself is never written) with
the installed setuptools (``--no-build-isolation``), and installed with ``--no-index --no-deps``; the
environment sees this one's packages (``--system-site-packages``), so torch and the rest come from
here: nothing is downloaded.
"""

import os
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

from coursekit import weightfile, weights

# What the installed course must do, run by the environment's Python in a folder of its own. It
# prints one line per step; an exception fails the test with its traceback.
SCRIPT = r"""
import sys
from pathlib import Path

import coursekit
from coursekit import weights

venv = Path(sys.argv[1]).resolve()
assert Path(coursekit.__file__).resolve().is_relative_to(venv), f"coursekit came from {coursekit.__file__}"
assert weights.FOLDER == weights.PACKAGED and weights.FOLDER.is_relative_to(venv), weights.FOLDER
print("coursekit from", Path(coursekit.__file__).parent)
for name in weights.SHIPPED:  # load() checks each file's sha256 before reading it
    model, info = weights.load(name.removesuffix(".safetensors"))
print("loaded", len(weights.SHIPPED), "weight files, hashes checked")

import torch
from coursekit.explorer import AttentionExplorer

vit, _ = weights.load("03_mnist_vit")
digit = torch.full((1, 1, 28, 28), -0.42)  # MNIST's normalized black, and a bright bar: a "1"
digit[..., 6:22, 13:16] = 2.8
explorer = AttentionExplorer(vit, digit, labels=[1])
assert explorer.picture.value and "ck-explorer-" in explorer.html()
print("explorer:", explorer.title(0))
"""


def run(argv, **options):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **options)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{argv} exited {result.returncode}:\n{output}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, clean_copy):
    """The wheel of a clean copy of the repository, built offline with the installed setuptools."""
    source, dist = clean_copy(tmp_path_factory.mktemp("clone")), tmp_path_factory.mktemp("dist")
    start = time.perf_counter()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(dist), str(source)])
    print(f"wheel built in {time.perf_counter() - start:.1f} s")
    (path,) = dist.glob("coursekit-*.whl")
    return path


def test_the_wheel_carries_exactly_the_shipped_weights_with_their_hashes(wheel):
    with zipfile.ZipFile(wheel) as archive:
        packaged = {Path(n).name: n for n in archive.namelist() if n.startswith("coursekit/_weights/")}
        assert sorted(packaged) == sorted(weights.SHIPPED), "the wheel's weights are SHIPPED's files"
        for file, member in packaged.items():
            copy = Path(archive.extract(member, wheel.parent / "unpacked"))
            assert weightfile.sha256(copy) == weights.SHIPPED[file], f"{file}: not the pinned file"
        names = archive.namelist()
    assert not [n for n in names if n.startswith(("weights/", "notebooks/", "tests/"))], "only the package"


def test_the_installed_wheel_loads_the_weights_and_runs_outside_the_repository(wheel, tmp_path):
    start = time.perf_counter()
    env_dir = tmp_path / "venv"
    # pip too comes from this environment's site-packages, and installs into the new one (its sys.prefix)
    venv.create(env_dir, system_site_packages=True, with_pip=False, symlinks=True)
    python = env_dir / "bin" / "python"
    # --ignore-installed: this environment's own (editable) coursekit is visible through the system
    # site-packages, and pip would otherwise call the wheel installed already
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)])
    elsewhere = tmp_path / "elsewhere"  # not the repository, which must not be on sys.path
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(COURSEKIT_FAST="1", MPLBACKEND="Agg", PYTHONNOUSERSITE="1", PIP_NO_INDEX="1")
    out = run([str(python), "-c", SCRIPT, str(env_dir)], cwd=elsewhere, env=env).stdout
    assert f"loaded {len(weights.SHIPPED)} weight files, hashes checked" in out and "explorer: image 0" in out
    grade = run([str(python), "-m", "coursekit.grading.grade", "--help"], cwd=elsewhere, env=env).stdout
    assert grade.startswith("usage: python -m coursekit.grading.grade")
    # the release needs the instructor's repository, and says so rather than failing somewhere inside
    release = subprocess.run([str(python), "-m", "coursekit.grading.release", "--check"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
    assert release.returncode == 2 and "run the release in a clone" in release.stderr, release.stderr
    print(f"installed and run in {time.perf_counter() - start:.1f} s")
