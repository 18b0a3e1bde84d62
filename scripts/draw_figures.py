"""Draw every figure in imgs/ with matplotlib and embed it in the notebooks that show it.

    python scripts/draw_figures.py           # draw imgs/*.png, then embed them in the notebooks
    python scripts/draw_figures.py --embed   # only embed the committed imgs/*.png (no drawing)
    python scripts/draw_figures.py --check   # exit 1 if a notebook's figure is missing or out of date

imgs/scaled_dot_product_attention.png  the formula as matrices: Q K^T -> scores -> weights -> output
imgs/multi_head_attention.png          projections, split into heads, attention per head, concat
imgs/encoder_block.png                 a pre-norm transformer encoder block (as in ViT)
imgs/vit_pipeline.png                  image -> patches -> tokens (+ class token, + positions) -> class

Nothing is downloaded or copied: the digit in the ViT figure is drawn here with line strokes.

Figures travel inside the notebooks, so they show wherever a notebook is opened without the folder
around it (Colab from a badge, JupyterLab, `jupyter nbconvert --to html`, the course's web site):
each one is a markdown cell of its own that holds only the image, as a `data:` URI, with the
metadata `{"coursekit": {"figure": "imgs/NAME.png"}}`. A data URI, not a cell attachment: Colab and
MyST-NB (the site) do not show attachments. Embedding turns every `![alt](../imgs/NAME.png)` in a
markdown cell into such a cell (the text around it stays in cells of its own) and refreshes the
figure cells from imgs/; a test checks that no notebook refers to an image by a relative path.
"""

from __future__ import annotations

import base64
import re
import sys
import uuid
from pathlib import Path

import nbformat

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "imgs"
DPI = 100
HEAD_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52"]
BOX = "#EEF2F7"


def canvas(w, h):
    """A figure w x h inches whose axes use data units = inches, origin bottom left."""
    fig = plt.figure(figsize=(w, h))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.axis("off")
    return fig, ax


def box(ax, x, y, w, h, text, color=BOX, fontsize=10, edge="#333333", text_color="black"):
    """A rounded box centred at (x, y)."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, edgecolor=edge, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=text_color)


def arrow(ax, start, end, text=None, color="#333333", style="-|>", offset=(0.08, 0), fontsize=8, **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, color=color,
                                 linewidth=1.2, shrinkA=0, shrinkB=0, **kw))
    if text:
        mx, my = (start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1]
        ax.text(mx, my, text, fontsize=fontsize, color="#555555", ha="left", va="center")


def matrix(ax, x, y, values, cell, cmap="Blues", label=None, shape=None, masked=None, vmin=None, vmax=None):
    """Draw a matrix of coloured cells with its top-left corner at (x, y); return its width, height."""
    rows, cols = values.shape
    norm = plt.Normalize(values.min() if vmin is None else vmin, values.max() if vmax is None else vmax)
    cm = plt.get_cmap(cmap)
    for r in range(rows):
        for c in range(cols):
            hidden = masked is not None and masked[r, c]
            ax.add_patch(Rectangle((x + c * cell, y - (r + 1) * cell), cell, cell,
                                   facecolor="white" if hidden else cm(norm(values[r, c])),
                                   edgecolor="#444444", linewidth=0.6, hatch="///" if hidden else None))
    w, h = cols * cell, rows * cell
    if label:
        ax.text(x + w / 2, y + 0.12, label, ha="center", va="bottom", fontsize=11)
    if shape:
        ax.text(x + w / 2, y - h - 0.1, shape, ha="center", va="top", fontsize=8, color="#555555")
    return w, h


def save(fig, name):
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / name, dpi=DPI, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    print(f"wrote imgs/{name} ({(OUT / name).stat().st_size / 1024:.0f} KB)")


def scaled_dot_product_attention():
    rng = np.random.default_rng(0)
    N, M, d, cell = 4, 5, 3, 0.32
    q, k, v = rng.normal(size=(N, d)), rng.normal(size=(M, d)), rng.normal(size=(M, d))
    s = q @ k.T / np.sqrt(d)
    mask = np.triu(np.ones((N, M), bool), k=2)   # a causal-style mask: query i sees keys <= i + 1
    a = np.exp(np.where(mask, -np.inf, s))
    a /= a.sum(1, keepdims=True)
    fig, ax = canvas(11, 3.6)
    top = 2.6
    matrix(ax, 0.3, top, q, cell, "Purples", "Q", "[N, d_k]")
    ax.text(1.45, top - 0.65, "·", fontsize=22, ha="center", va="center")
    matrix(ax, 1.7, top, k.T, cell, "Greens", "Kᵀ", "[d_k, M]")
    arrow(ax, (3.45, top - 0.65), (4.05, top - 0.65))
    ax.text(3.75, top - 0.25, "÷ √d_k", fontsize=9, ha="center")
    matrix(ax, 4.15, top, s, cell, "RdBu_r", "scores S", "[N, M]", vmin=-2, vmax=2)
    arrow(ax, (5.9, top - 0.65), (6.5, top - 0.65))
    ax.text(6.2, top - 0.2, "mask,\nsoftmax\nper row", fontsize=8, ha="center", va="bottom")
    matrix(ax, 6.6, top, a, cell, "Oranges", "weights A", "[N, M], rows sum to 1", masked=mask, vmin=0, vmax=1)
    ax.text(8.35, top - 0.65, "·", fontsize=22, ha="center", va="center")
    matrix(ax, 8.55, top, v, cell, "Greens", "V", "[M, d_v]")
    arrow(ax, (9.6, top - 0.65), (10.0, top - 0.65))
    matrix(ax, 10.05, top, a @ v, cell * 0.8, "Purples", "out", "[N, d_v]")
    ax.text(5.5, 0.35, r"$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\left(QK^\top/\sqrt{d_k}\right)V$"
            "      hatched cells: masked (weight exactly 0)", fontsize=11, ha="center")
    save(fig, "scaled_dot_product_attention.png")


def multi_head_attention():
    H, fig_w = 4, 10.5
    fig, ax = canvas(fig_w, 5.2)
    box(ax, 0.8, 2.6, 1.2, 0.7, "tokens X\n[B, N, D]")
    ys = {"Q": 4.0, "K": 2.6, "V": 1.2}
    for name, y in ys.items():
        arrow(ax, (1.4, 2.6), (2.2, y))
        box(ax, 2.75, y, 1.1, 0.55, f"Linear W_{name}\n[D → D]", fontsize=8)
        arrow(ax, (3.3, y), (3.75, y))
        for h in range(H):  # the D columns cut into H slices of D/H
            ax.add_patch(Rectangle((3.8 + h * 0.22, y - 0.28), 0.22, 0.56, facecolor=HEAD_COLORS[h],
                                   edgecolor="white", alpha=0.85))
        ax.text(4.24, y + 0.38, name, ha="center", fontsize=10)
    ax.text(4.24, 0.45, "split D into H heads\n[B, N, D] → [B, H, N, D/H]", ha="center", fontsize=8)
    for h in range(H):
        y = 4.3 - h * 1.0
        for src in ys.values():
            arrow(ax, (4.7, src), (5.55, y), color=HEAD_COLORS[h], alpha=0.35)
        box(ax, 6.25, y, 1.4, 0.6, f"head {h + 1}\nsoftmax(QKᵀ/√d)V", color=HEAD_COLORS[h], fontsize=8,
            text_color="white", edge=HEAD_COLORS[h])
        arrow(ax, (6.95, y), (7.55, 2.6), color=HEAD_COLORS[h])
    for h in range(H):
        ax.add_patch(Rectangle((7.6 + h * 0.22, 2.32), 0.22, 0.56, facecolor=HEAD_COLORS[h],
                               edgecolor="white"))
    ax.text(8.04, 3.0, "concat", ha="center", fontsize=9)
    ax.text(8.04, 2.1, "[B, N, D]", ha="center", va="top", fontsize=8, color="#555555")
    arrow(ax, (8.5, 2.6), (8.85, 2.6))
    box(ax, 9.5, 2.6, 1.2, 0.7, "Linear W_O\n→ output", fontsize=9)
    ax.text(fig_w / 2, 5.0, "Multi-head attention: H heads look at D/H-wide slices in parallel",
            ha="center", fontsize=11)
    save(fig, "multi_head_attention.png")


def encoder_block():
    fig, ax = canvas(5.6, 7.4)
    x = 2.4
    steps = [(0.6, None), (1.55, "LayerNorm"), (2.55, "Multi-head\nself-attention"), (3.55, "+"),
             (4.45, "LayerNorm"), (5.45, "MLP: Linear → GELU\n→ Linear"), (6.45, "+"), (7.1, None)]
    ax.text(x, 0.3, "x  [B, N, D]", ha="center", fontsize=10)
    ax.text(x, 7.15, "out  [B, N, D]", ha="center", fontsize=10)
    colors = {"LayerNorm": "#FFF3C4", "+": "white"}
    for (y0, _), (y1, label) in zip(steps[:-1], steps[1:]):
        arrow(ax, (x, y0 + (0.3 if _ not in (None, "+") else 0.18 if _ == "+" else 0.15)),
              (x, y1 - (0.3 if label not in (None, "+") else 0.18 if label == "+" else 0.2)))
    for y, label in steps[1:-1]:
        if label == "+":
            ax.add_patch(plt.Circle((x, y), 0.18, facecolor="white", edgecolor="#333333", linewidth=1.2))
            ax.text(x, y, "+", ha="center", va="center", fontsize=14)
        else:
            box(ax, x, y, 2.3, 0.6, label, color=colors.get(label, "#DCE8F5" if "attention" in label
                                                             else "#DFF0DA"), fontsize=9)
    for start, plus in ((1.05, 3.55), (3.85, 6.45)):  # residual connections around each sub-layer
        ax.plot([x, 0.55, 0.55], [start, start, plus], color="#C44E52", lw=1.4)
        ax.plot([x], [start], "o", color="#C44E52", ms=4)
        arrow(ax, (0.55, plus), (x - 0.19, plus), color="#C44E52")
        ax.text(0.4, (start + plus) / 2, "residual", rotation=90, color="#C44E52", fontsize=9, va="center")
    ax.text(4.0, 2.05, "h = x + MHA(LN(x))", fontsize=9, color="#555555")
    ax.text(4.0, 4.95, "out = h + MLP(LN(h))", fontsize=9, color="#555555")
    ax.text(3.95, 3.55, "pre-norm, as in ViT\n(norm_first=True)", fontsize=8, color="#555555", va="center")
    save(fig, "encoder_block.png")


def toy_digit(size=28):
    """A hand-drawn-looking 7: two thick strokes rasterised on a size x size grid."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    img = np.zeros((size, size))
    for (x0, y0), (x1, y1) in [((0.2, 0.2), (0.8, 0.2)), ((0.8, 0.2), (0.42, 0.85)), ((0.4, 0.5), (0.7, 0.5))]:
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
        dist = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
        img = np.maximum(img, np.clip(1.6 - dist / 0.045, 0, 1))
    return img


def vit_pipeline():
    img, p = toy_digit(), 7
    n = 28 // p
    fig, ax = canvas(13, 4.6)
    ax.imshow(img, cmap="gray", extent=(0.2, 2.4, 1.2, 3.4))
    for i in range(1, n):  # the patch grid
        ax.plot([0.2 + i * 2.2 / n] * 2, [1.2, 3.4], color="#DD8452", lw=1.5)
        ax.plot([0.2, 2.4], [1.2 + i * 2.2 / n] * 2, color="#DD8452", lw=1.5)
    ax.text(1.3, 3.55, "image 28×28", ha="center", fontsize=10)
    ax.text(1.3, 0.95, f"{n}×{n} = {n * n} patches\nof {p}×{p} pixels", ha="center", va="top", fontsize=9)
    arrow(ax, (2.55, 2.3), (3.0, 2.3))
    # the patches in reading order, each flattened to p*p = 49 numbers
    for i in range(n * n):
        r, c = divmod(i, n)
        x0 = 3.1 + (i % 8) * 0.36
        y0 = 2.75 - (i // 8) * 0.62
        ax.imshow(img[r * p:(r + 1) * p, c * p:(c + 1) * p], cmap="gray", vmin=0, vmax=1,
                  extent=(x0, x0 + 0.3, y0, y0 + 0.3))
        ax.text(x0 + 0.15, y0 - 0.05, str(i + 1), ha="center", va="top", fontsize=6)
    ax.text(4.5, 3.55, "flatten each patch: 16 × 49 values", ha="center", fontsize=10)
    arrow(ax, (6.0, 2.3), (6.35, 2.3))
    box(ax, 6.9, 2.3, 0.95, 1.0, "Linear\n49 → D", fontsize=9)
    arrow(ax, (7.4, 2.3), (7.75, 2.3))
    # tokens: class token + 16 patch tokens, plus position embeddings
    for i in range(n * n + 1):
        x0 = 7.85 + i * 0.14
        ax.add_patch(Rectangle((x0, 1.75), 0.11, 1.0, facecolor="#C44E52" if i == 0 else "#4C72B0",
                               edgecolor="white"))
        ax.add_patch(Rectangle((x0, 1.15), 0.11, 0.35, facecolor="#55A868", edgecolor="white"))
    ax.text(7.9, 2.95, "[CLS]", fontsize=8, color="#C44E52", ha="center")
    ax.text(9.05, 3.3, "17 tokens of width D", ha="center", fontsize=10)
    ax.text(9.05, 1.6, "+", ha="center", va="center", fontsize=11)
    ax.text(9.05, 1.0, "+ learned position\nembeddings [17, D]", ha="center", va="top", fontsize=8, color="#55A868")
    arrow(ax, (10.3, 2.3), (10.6, 2.3))
    box(ax, 11.1, 2.3, 0.85, 1.6, "Transformer\nencoder\n× depth", fontsize=8, color="#DCE8F5")
    arrow(ax, (11.55, 2.3), (11.85, 2.3), text="CLS", offset=(-0.15, 0.2))
    box(ax, 12.3, 2.3, 0.75, 0.8, "MLP\nhead", fontsize=9)
    ax.text(12.3, 1.45, "class: 7", ha="center", va="top", fontsize=11, fontweight="bold")
    ax.text(6.5, 4.2, "Vision transformer: an image becomes a sequence of patch tokens", ha="center", fontsize=12)
    save(fig, "vit_pipeline.png")


# -- the figures inside the notebooks ------------------------------------------------------------
RELATIVE_FIGURE = re.compile(r"!\[([^\]]*)\]\(\.\./imgs/([\w.-]+\.png)\)")
FIGURE_CELL = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,[A-Za-z0-9+/=]*\)")


def data_uri(name: str, folder: Path = OUT) -> str:
    """``data:image/png;base64,...`` of ``folder/name``."""
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such figure; draw it with python scripts/draw_figures.py")
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure_cell(alt: str, name: str, folder: Path = OUT) -> nbformat.NotebookNode:
    """A markdown cell that shows ``imgs/name`` and nothing else."""
    cell = nbformat.v4.new_markdown_cell(f"![{alt}]({data_uri(name, folder)})",
                                         metadata={"coursekit": {"figure": f"imgs/{name}"}})
    cell.id = uuid.uuid4().hex[:8]
    return cell


def embed(nb: nbformat.NotebookNode, folder: Path = OUT) -> nbformat.NotebookNode:
    """``nb`` with every relative figure moved into a figure cell and every figure cell refreshed."""
    cells = []
    for cell in nb.cells:
        name = cell.metadata.get("coursekit", {}).get("figure", "") if cell.cell_type == "markdown" else ""
        if name:  # a figure cell: its picture again from imgs/, its alt text kept
            match = FIGURE_CELL.fullmatch(cell.source.strip())
            if not match:
                raise ValueError(f"a cell marked as figure {name} holds more than its image: "
                                 "move the text into a cell of its own")
            cell.source = f"![{match.group(1)}]({data_uri(Path(name).name, folder)})"
            cells.append(cell)
            continue
        if cell.cell_type != "markdown" or not RELATIVE_FIGURE.search(cell.source):
            cells.append(cell)
            continue
        rest, first = cell.source, True
        for match in list(RELATIVE_FIGURE.finditer(cell.source)):
            before, rest = rest.split(match.group(0), 1)
            if before.strip():
                if first:  # the text before the first figure keeps the cell (and its id)
                    cell.source = before.strip("\n")
                    cells.append(cell)
                else:
                    cells.append(_text_cell(before))
            first = first and not before.strip()
            cells.append(figure_cell(match.group(1), match.group(2), folder))
        if rest.strip():
            cells.append(_text_cell(rest))
    nb.cells = cells
    return nb


def _text_cell(text: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    cell.id = uuid.uuid4().hex[:8]
    return cell


def notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook of the course, the solutions included."""
    return sorted((root / "notebooks").rglob("*.ipynb"))


def stale_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks that :func:`embed` would change."""
    stale = []
    for path in notebooks(root):
        text = path.read_text()
        if nbformat.writes(embed(nbformat.reads(text, as_version=4), root / "imgs")) + "\n" != text:
            stale.append(path)
    return stale


def embed_all(root: Path = ROOT) -> None:
    for path in stale_notebooks(root):
        nb = embed(nbformat.read(path, as_version=4), root / "imgs")
        path.write_text(nbformat.writes(nb) + "\n")
        print(f"embedded the figures of {path.relative_to(root)}")


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_notebooks()
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run python scripts/draw_figures.py --embed)")
        return 1 if stale else 0
    if "--embed" not in argv:
        scaled_dot_product_attention()
        multi_head_attention()
        encoder_block()
        vit_pipeline()
    embed_all()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
