"""Build the course's web site from the committed notebooks, without executing anything.

    python docs/build.py              # writes build/site/; open build/site/index.html
    python docs/build.py OUT          # writes the folder OUT instead

1. The student edition (``coursekit.grading.release``) is written to a temporary folder, so the site is made
   from what students get: no solution notebook, no recipe search, no instructor-only part of README,
   no text between solution markers (the release refuses to write an edition that holds one).
2. A Sphinx source folder is made from it: ``index.md`` is the edition's README (links to files of
   the repository become GitHub addresses, the Colab badge is a local picture), then the notebooks
   in course order. Outputs that only a live widget manager can draw are turned into text: a tqdm
   bar becomes its final line, read from the widget state saved in the notebook (a static page
   would otherwise show the bar as it was drawn first, at 0%); a live widget panel becomes a line
   that says it needs a kernel (the attention explorer's kernel-free view, the next output, works
   on the page). The widget state itself is left out, so no page loads a widget manager.
3. ``sphinx-build -W`` (MyST-NB, ``nb_execution_mode = "off"``, configured in ``docs/conf.py``)
   writes the HTML; any warning fails the build.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import nbformat

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
from coursekit.grading import release as rel  # noqa: E402

NOTEBOOKS = ["01_attention", "02_positional_encoding", "03_vit_mnist", "04_fashion_mnist_homework",
             "05_hybrid_cifar"]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = "figures/open-in-colab.svg"
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


class SiteError(Exception):
    """The site could not be built."""


def repository_url(root: Path = ROOT) -> str:
    """``https://github.com/owner/name`` from ``[project.urls] Repository`` in pyproject.toml."""
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def colab_url(repo: str, notebook: str) -> str:
    return repo.replace("https://github.com/", "https://colab.research.google.com/github/") + \
        f"/blob/main/notebooks/{notebook}.ipynb"


# -- widget-only outputs ------------------------------------------------------------------------------
def _text(value: str) -> str:
    return html.unescape(value).replace("\u2007", " ")


def progress_line(model_id: str, state: dict) -> str | None:
    """The final text line of a tqdm bar (``HBox(HTML, FloatProgress, HTML)``) from its saved state,
    e.g. ``training: 100%|██████████| 2110/2110 [02:25<00:00, 13.11batch/s]``; None if it is not one."""
    box = state.get(model_id)
    if not box or box.get("model_name") != "HBoxModel":
        return None
    parts = [state.get(child.removeprefix("IPY_MODEL_")) for child in box["state"].get("children", [])]
    if [p and p.get("model_name") for p in parts] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    prefix, bar, suffix = (p["state"] for p in parts)
    low, high, value = bar.get("min", 0), bar.get("max", 100), bar.get("value", 0)
    done = 0.0 if high <= low else min(max((value - low) / (high - low), 0.0), 1.0)
    filled = int(done * 10)
    return f"{_text(prefix.get('value', ''))}|{'█' * filled}{' ' * (10 - filled)}|{_text(suffix.get('value', ''))}"


def static_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` with every widget view replaced by text and the saved widget state removed (in place)."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for i, output in enumerate(cell.outputs):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            line = progress_line(view.get("model_id", ""), state)
            if line is None:
                follows = cell.outputs[i + 1].get("data", {}).get("text/html", "") if i + 1 < len(cell.outputs) else ""
                line = "[live widgets: they need a running kernel (open the notebook in Colab or JupyterLab)"
                line += "; the kernel-free view below works on this page]" if "ck-explorer" in follows else "]"
            outputs.append(nbformat.v4.new_output("stream", name="stdout", text=line + "\n"))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


# -- the source folder --------------------------------------------------------------------------------
def landing_page(readme: str, repo: str) -> str:
    """The edition's README as the site's first page: local badge, repository files as GitHub links,
    and the notebooks, in course order, in the navigation."""
    def link(match):
        target = match.group(2)
        if target.startswith(("http://", "https://", "#", "mailto:", "data:")) or target == BADGE or \
                re.fullmatch(r"notebooks/[\w-]+\.ipynb", target):
            return match.group(0)
        kind = "tree" if target.endswith("/") or "." not in Path(target).name else "blob"
        return f"{match.group(1)}{repo}/{kind}/main/{target.rstrip('/')}{match.group(3)}"

    text = LINK.sub(link, readme.replace(COLAB_BADGE, BADGE))
    toc = "\n".join(f"notebooks/{name}" for name in NOTEBOOKS)
    return f"{text.rstrip()}\n\n```{{toctree}}\n:hidden:\n:caption: The notebooks\n\n{toc}\n```\n"


def notebook_page(nb: nbformat.NotebookNode, colab: str) -> nbformat.NotebookNode:
    """A notebook as a page: widget-only outputs as text, an Open-in-Colab badge under the title."""
    static_outputs(nb)
    badge = f"[![Open In Colab](../{BADGE})]({colab})"
    for cell in nb.cells:
        if cell.cell_type == "markdown" and re.search(r"^# ", cell.source, re.M):
            cell.source = re.sub(r"^(# .*)$", lambda m: f"{m.group(1)}\n\n{badge}\n", cell.source, count=1,
                                 flags=re.M)
            break
    else:
        raise SiteError("a notebook has no '# title' in a markdown cell: its page needs one")
    return nb


def make_source(edition: Path, src: Path, repo: str) -> None:
    (src / "notebooks").mkdir(parents=True)
    (src / "figures").mkdir()
    shutil.copy2(DOCS / "_static" / "open-in-colab.svg", src / BADGE)
    (src / "index.md").write_text(landing_page((edition / "README.md").read_text(), repo))
    found = sorted(p.stem for p in (edition / "notebooks").glob("*.ipynb"))
    if found != sorted(NOTEBOOKS):
        raise SiteError(f"the edition's notebooks {found} are not the course's {NOTEBOOKS}: "
                        "update NOTEBOOKS in docs/build.py")
    for name in NOTEBOOKS:
        nb = notebook_page(nbformat.read(edition / "notebooks" / f"{name}.ipynb", as_version=4),
                           colab_url(repo, name))
        nbformat.write(nb, src / "notebooks" / f"{name}.ipynb")


def build(out: Path, root: Path = ROOT) -> Path:
    """Write the site to ``out`` (removed first if it holds an earlier build); returns ``out``."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").exists():
        raise SiteError(f"{out}: exists and is not an earlier site build; choose an empty or new folder")
    with tempfile.TemporaryDirectory(prefix="course-site-") as tmp:
        edition = rel.release(Path(tmp) / "edition", root=root, archive=False)
        src = Path(tmp) / "src"
        make_source(edition, src, repository_url(root))
        if out.exists():
            shutil.rmtree(out)
        sphinx(src, out, Path(tmp) / "doctrees")
    return out


def sphinx(src: Path, out: Path, doctrees: Path) -> None:
    """``sphinx-build`` with docs/conf.py, warnings as errors (all of them reported, then it fails)."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-c", str(DOCS),
               "-d", str(doctrees), str(src), str(out)]
    result = subprocess.run(command)
    if result.returncode:
        raise SiteError(f"sphinx-build failed (exit {result.returncode}); its warnings are above")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/build.py", description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default=str(ROOT / "build" / "site"),
                        help="the folder to write (default: build/site)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = build(Path(args.out))
    except (SiteError, rel.ReleaseError) as error:
        print(f"docs/build.py: error: {error}", file=sys.stderr)
        return 2
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"wrote {out}/ ({len(files)} files, {size:.1f} MB) in {time.perf_counter() - start:.1f} s; "
          f"open {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
