"""Checks of Colab's stack for the Colab lane (.ci/colab_lane.sh) and tests/test_colab.py.

    python scripts/colab_stack.py installed [NAME...]  # exit 1 unless every installed package that
                                                       # Colab has is at Colab's version, and each
                                                       # NAME is installed
    python scripts/colab_stack.py report REPORT.json   # exit 1 unless the install that pip's
                                                       # --report describes adds only what Colab lacks

Colab's versions live in one file, .ci/colab-pins.txt (it names its source).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / ".ci" / "colab-pins.txt"
ADDED = {"vit-pytorch", "coursekit"}  # what the setup cell installs: all Colab lacks


def read_pins(path: Path = PINS) -> dict[str, str]:
    """``{canonical name: version}`` from a constraints file of ``name==version`` lines."""
    pins = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        if len(spec) != 1 or spec[0].operator != "==":
            raise ValueError(f"{path}:{number}: {line!r} is not an exact pin; write name==version")
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def version_mismatches(pins: dict[str, str], required=()) -> list[str]:
    """One line per installed package that Colab has at another version, and per ``required`` name
    that is not installed."""
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    problems = [f"{name}: {found[name]} installed, Colab has {pins[name]}"
                for name in sorted(set(found) & set(pins))
                if found[name].split("+")[0] != pins[name]]  # a local tag (+cu130) is the same release
    problems += [f"{name}: not installed" for name in map(canonicalize_name, required) if name not in found]
    return problems


def installed_by(report: dict) -> dict[str, str]:
    """``{canonical name: version}`` that a ``pip install --report`` would install."""
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in report["install"]}


def report_problems(report: dict, pins: dict[str, str]) -> list[str]:
    """What is wrong with an install that pip's report describes: it replaces a Colab package, or adds
    something beyond vit-pytorch and coursekit."""
    added = installed_by(report)
    problems = [f"{name} {v} would replace Colab's {pins[name]}" for name, v in added.items() if name in pins]
    problems += [f"{name} {v} would be installed: only {sorted(ADDED)} are expected"
                 for name, v in added.items() if name not in pins and name not in ADDED]
    problems += [f"{name} would not be installed" for name in sorted(ADDED - set(added))]
    return problems


def main(argv: list[str]) -> int:
    pins = read_pins()
    if argv[:1] == ["installed"]:
        problems = version_mismatches(pins, argv[1:])
        label = f"installed packages against Colab's {len(pins)} versions"
    elif len(argv) == 2 and argv[0] == "report":
        report = json.loads(Path(argv[1]).read_text())
        problems = report_problems(report, pins)
        label = "the setup cell's install: " + ", ".join(f"{n} {v}" for n, v in installed_by(report).items())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for line in problems:
        print(f"  {line}")
    print(f"{label}: {'FAILED' if problems else 'ok'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
