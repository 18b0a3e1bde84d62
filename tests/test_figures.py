"""Figures travel inside the notebooks (scripts/draw_figures.py): no notebook points at an image by a
relative path, which breaks in Colab, on GitHub and on any page that has no folder around it."""

import base64
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursekit.grading import release as rel

ROOT = Path(__file__).resolve().parents[1]
IMAGE_REF = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)|<img\b[^>]*\bsrc\s*=\s*[\"']([^\"']+)", re.I)


def load_draw_figures():
    spec = importlib.util.spec_from_file_location("draw_figures", ROOT / "scripts" / "draw_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def relative_images(path: Path) -> list[str]:
    """``"cell N: TARGET"`` for each image in a cell's source that is neither a data: URI nor https."""
    found = []
    for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for match in IMAGE_REF.finditer(cell.source):
            target = match.group(1) or match.group(2)
            if not target.startswith(("data:image/", "https://")):
                found.append(f"cell {number}: {target[:80]}")
        if "imgs/" in cell.source and cell.cell_type == "code":
            found.append(f"cell {number}: a code cell reads a file from imgs/")
    return found


def test_relative_image_refs_are_found():
    assert IMAGE_REF.search("see ![a](../imgs/x.png)").group(1) == "../imgs/x.png"
    assert IMAGE_REF.search('<img width=3 src="imgs/x.png">').group(2) == "imgs/x.png"
    assert IMAGE_REF.search("![a](attachment:x.png)").group(1) == "attachment:x.png"


def test_no_notebook_refers_to_an_image_by_a_relative_path(tmp_path):
    edition = rel.release(tmp_path / "edition", archive=False)
    paths = [*sorted((ROOT / "notebooks").rglob("*.ipynb")), *sorted((edition / "notebooks").rglob("*.ipynb"))]
    assert len(paths) >= 11 and any("solutions" in str(p) for p in paths)
    found = {str(p): relative_images(p) for p in paths}
    assert not {p: f for p, f in found.items() if f}, "run python scripts/draw_figures.py --embed"


def test_every_figure_of_imgs_is_embedded_and_up_to_date():
    result = subprocess.run([sys.executable, "scripts/draw_figures.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            name = cell.metadata.get("coursekit", {}).get("figure")
            if name:
                data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", cell.source).group(1)
                assert base64.b64decode(data) == (ROOT / name).read_bytes(), (path.name, name)
                shown.add(name)
    assert shown == {f"imgs/{p.name}" for p in (ROOT / "imgs").glob("*.png")}


def test_embed_moves_each_figure_into_a_cell_of_its_own(tmp_path):
    draw = load_draw_figures()
    (tmp_path / "a.png").write_bytes(b"\x89PNG fake bytes")
    text = nbformat.v4.new_markdown_cell("Before.\n\n![the a figure](../imgs/a.png)\n\nAfter, $x$.")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1"), text])
    out = draw.embed(nb, tmp_path)
    assert [c.source[:8] for c in out.cells] == ["1", "Before.", "![the a ", "After, $"]
    assert out.cells[1].id == text.id  # the text before keeps the cell
    figure = out.cells[2]
    assert figure.metadata == {"coursekit": {"figure": "imgs/a.png"}}
    assert figure.source == "![the a figure](data:image/png;base64," + \
        base64.b64encode(b"\x89PNG fake bytes").decode() + ")"
    (tmp_path / "a.png").write_bytes(b"\x89PNG redrawn")  # a redrawn figure refreshes its cell
    again = draw.embed(out, tmp_path)
    assert len(again.cells) == 4 and base64.b64encode(b"\x89PNG redrawn").decode() in again.cells[2].source
    nbformat.validate(again)
    again.cells[2].source += "\n\nsome text"
    with pytest.raises(ValueError, match="holds more than its image"):
        draw.embed(again, tmp_path)
    missing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("![b](../imgs/b.png)")])
    with pytest.raises(FileNotFoundError, match="draw_figures.py"):
        draw.embed(missing, tmp_path)


def test_the_html_export_shows_each_figure_from_the_notebook_itself():
    """``jupyter nbconvert --to html`` keeps each figure as a data: URI, so the page needs no imgs/ folder."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(ROOT / "notebooks" / "01_attention.ipynb", as_version=4)
    figures = [re.match(r"!\[([^\]]*)\]", c.source).group(1) for c in nb.cells
               if c.metadata.get("coursekit", {}).get("figure")]
    assert len(figures) == 4
    page, _ = HTMLExporter().from_notebook_node(nb)
    for alt in figures:
        assert re.search(rf'<img[^>]*alt="{re.escape(alt)}"[^>]*src="data:image/png;base64,', page), alt
    assert "imgs/" not in page
