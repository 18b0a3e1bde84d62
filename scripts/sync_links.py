"""Copy the repository address from pyproject.toml into the README's Colab badges, and write the one
setup cell that opens every notebook (notebooks/*.ipynb and notebooks/solutions/*.ipynb).

    python scripts/sync_links.py                       # rewrite what is out of date
    python scripts/sync_links.py --check               # exit 1 and list the files that are out of date
    python scripts/sync_links.py --colab-install DIR   # the setup cell's pip arguments, one a line,
                                                       # with DIR for /content/course (.ci/colab_lane.sh)

The setup cell does something only on Colab: it clones the course into /content/course (once), checks
the clone, and installs what Colab lacks, vit-pytorch (its range from pyproject.toml) and coursekit,
both with ``--no-deps`` so that pip never replaces Colab's torch, torchvision, numpy, IPython or
ipywidgets. Only the cell's source is written (with nbformat); its outputs and metadata are kept.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/{slug}/blob/main/notebooks/{name})")
BADGE_LINK = re.compile(r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/")
COLAB_COURSE = "/content/course"
SETUP_MARK = "# Setup"  # the setup cell is the first code cell, and its source starts so

SETUP_CELL = '''\
# Setup, the same in every notebook (scripts/sync_links.py writes it). On Colab it fetches the course
# and installs only what Colab lacks, vit-pytorch and the course's package coursekit, with --no-deps:
# Colab's own torch, torchvision, numpy, IPython and ipywidgets stay as they are.
# Anywhere else it does nothing: README.md says how to install the course.
import sys
if "google.colab" in sys.modules:
    import importlib, os, subprocess
    COURSE = "{course}"
    CLONE = ["git", "clone", "-q", "--depth", "1", "{url}", COURSE]
    if not os.path.exists(COURSE):
        cloned = subprocess.run(CLONE, capture_output=True, text=True)
        if cloned.returncode != 0:
            raise RuntimeError(f"{{' '.join(CLONE)}} failed: {{cloned.stderr.strip()}}\\nCheck that "
                               "this runtime reaches github.com, then run this cell again.")
    if not os.path.isfile(os.path.join(COURSE, "coursekit", "__init__.py")):
        raise RuntimeError(f"{{COURSE}} is not a copy of the course (no coursekit/ in it): delete it "
                           f"with `!rm -rf {{COURSE}}`, then run this cell again.")
    %pip install {pip_args}
    sys.path.insert(0, COURSE)
    importlib.invalidate_caches()
    try:
        import coursekit, vit_pytorch
    except ImportError as error:
        raise RuntimeError(f"the install above did not work ({{error}}): read pip's message above, "
                           "then Runtime > Restart session and run this cell again.") from error'''


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def repository_slug() -> str:
    """``owner/name`` from ``[project.urls] Repository`` in pyproject.toml."""
    url = pyproject()["project"]["urls"]["Repository"]
    return url.removeprefix("https://github.com/").strip("/")


def colab_install_args(course: str = COLAB_COURSE) -> list[str]:
    """The setup cell's ``pip install`` arguments: vit-pytorch in pyproject.toml's range and the course
    (editable), both without dependencies; ``course`` is where the course was cloned."""
    deps = pyproject()["project"]["dependencies"]
    vit = [d for d in deps if re.match(r"vit-pytorch\b", d)]
    if len(vit) != 1:
        raise ValueError(f"pyproject.toml names vit-pytorch {len(vit)} times in [project] "
                         "dependencies; name it once, with its tested range")
    return ["-q", "--no-deps", vit[0].replace(" ", ""), "-e", course]


def shell_word(arg: str) -> str:
    return f'"{arg}"' if re.search(r"[^\w./=+-]", arg) else arg


def setup_cell() -> str:
    """The source of every notebook's setup cell."""
    return SETUP_CELL.format(course=COLAB_COURSE, url=f"https://github.com/{repository_slug()}",
                             pip_args=" ".join(map(shell_word, colab_install_args())))


def setup_cell_index(nb) -> int:
    """Index of the notebook's setup cell: its first code cell, which must start with ``# Setup``."""
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if not code or not nb.cells[code[0]].source.startswith(SETUP_MARK):
        raise ValueError(f"the first code cell does not start with {SETUP_MARK!r}: make it the setup "
                         "cell (any source starting so), then run scripts/sync_links.py")
    return code[0]


def synced(text: str, slug: str, notebook: bool = False) -> str:
    text = BADGE_LINK.sub(f"https://colab.research.google.com/github/{slug}/blob/main/", text)
    if not notebook:
        return text
    import nbformat  # here: --colab-install runs before the course's requirements are installed

    nb = nbformat.reads(text, as_version=4)
    nb.cells[setup_cell_index(nb)].source = setup_cell()
    return nbformat.writes(nb) + "\n"


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").rglob("*.ipynb"))


def main(check: bool) -> int:
    slug = repository_slug()
    stale = []
    for path in [ROOT / "README.md", *notebooks()]:
        text = path.read_text()
        try:
            new = synced(text, slug, notebook=path.suffix == ".ipynb")
        except ValueError as error:
            raise SystemExit(f"{path.relative_to(ROOT)}: {error}") from None
        if new != text:
            stale.append(path.relative_to(ROOT))
            if not check:
                path.write_text(new)
    for path in stale:
        print(f"{'out of date' if check else 'updated'}: {path}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--colab-install"]:
        if len(args) != 2:
            raise SystemExit("usage: python scripts/sync_links.py --colab-install COURSE_DIR")
        print("\n".join(colab_install_args(args[1])))
        sys.exit(0)
    sys.exit(main("--check" in args))
