"""The exercise checks of notebooks 01, 02 and 05: each says "not attempted" for the placeholder, passes a
right answer and fails a wrong one. The check cells are run as the notebook holds them."""

import contextlib
import functools
import io
from pathlib import Path

import matplotlib
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {"01": ("01_attention.ipynb", "## 7. Summary"),
             "02": ("02_positional_encoding.ipynb", "## 5. Positions at work"),
             "05": ("05_hybrid_cifar.ipynb", "## 1. What the convolutional stem")}  # no training before

RIGHT = {
    ("01", 1): """
def my_causal_attention(q, k, v):
    n = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    return F.softmax(scores, dim=-1) @ v
""",
    ("01", 2): """
def post_norm_forward(block, x):
    h = block.norm1(x + block.attn(x, x, x)[0])
    return block.norm2(h + block.ff(h))
""",
    ("01", 3): """
def variance_when_divided_by_dk(d_k):
    return 1 / d_k
largest_weight_limit = 1 / 16
""",
    ("02", 1): """
def similarity_at_distance(k, d_model):
    return sum(math.cos(k / 10000 ** (2 * i / d_model)) for i in range(d_model // 2))
""",
    ("02", 2): """
def pooled_with_positions(x):
    x = x + sinusoidal_positional_encoding(x.shape[1], x.shape[2])
    return mha(x, x, x)[0].mean(1)
""",
    ("02", 3): """
def pe_norm(d_model):
    return math.sqrt(d_model / 2)
last_column = "sin"
""",
    ("05", 1): """
def patch_embedding_as_conv(vit):
    linear, p = vit.to_patch_embedding[2], 4
    conv = torch.nn.Conv2d(3, linear.out_features, p, stride=p)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(-1, p, p, 3).permute(0, 3, 1, 2))
        conv.bias.copy_(linear.bias)
    return conv
""",
}

WRONG = {
    ("01", 1): [RIGHT["01", 1].replace(" / math.sqrt(q.shape[-1])", ""),          # no scaling
                RIGHT["01", 1].replace(".tril()", ".triu()")],                    # the wrong triangle
    ("01", 2): ["def post_norm_forward(block, x):\n    return block(x)\n"],        # pre-norm
    ("01", 3): [RIGHT["01", 3].replace("1 / d_k", "1 / math.sqrt(d_k)"),
                RIGHT["01", 3].replace("largest_weight_limit = 1 / 16", "largest_weight_limit = 1.0")],
    ("02", 1): [RIGHT["02", 1].replace("range(d_model // 2)", "range(d_model)")],
    ("02", 2): ["def pooled_with_positions(x):\n    return mha(x, x, x)[0].mean(1)\n"],  # no positions
    ("02", 3): [RIGHT["02", 3].replace("d_model / 2", "d_model"),
                RIGHT["02", 3].replace('"sin"', '"cos"')],
    ("05", 1): [RIGHT["05", 1].replace("view(-1, p, p, 3).permute(0, 3, 1, 2)", "view(-1, 3, p, p)"),  # (c p1 p2)
                RIGHT["05", 1].replace("        conv.bias.copy_(linear.bias)\n", "")],              # no bias
}


@functools.lru_cache(maxsize=None)
def notebook_state(key):
    """The notebook's cells and the namespace its code leaves before ``stop`` (setup cell skipped)."""
    name, stop = NOTEBOOKS[key]
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    matplotlib.use("Agg")
    namespace = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for cell in nb.cells:
            if cell.cell_type == "markdown" and cell.source.startswith(stop):
                break
            if cell.cell_type == "code" and not cell.source.startswith("# Setup"):
                exec(compile(cell.source, name, "exec"), namespace)
    return nb.cells, namespace


def exercise(key, number):
    """The answer cell and the check cell of an exercise: the two code cells after its text."""
    cells, namespace = notebook_state(key)
    start = next(i for i, c in enumerate(cells) if f"**Exercise {number}." in c.source)
    answer, check = [c.source for c in cells[start + 1:] if c.cell_type == "code"][:2]
    assert "return None" in answer and "not attempted" in check
    return answer, check, namespace


def run(namespace, answer, check):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(answer, namespace)
        exec(check, namespace)
    return out.getvalue()


@pytest.mark.parametrize("key,number", sorted(RIGHT))
def test_exercise_check_accepts_a_right_answer_and_rejects_wrong_ones(key, number):
    answer, check, namespace = exercise(key, number)
    assert "not attempted yet" in run(namespace, answer, check)
    assert f"Exercise {number}: correct!" in run(namespace, RIGHT[key, number], check)
    for wrong in WRONG[key, number]:
        with pytest.raises(AssertionError):
            run(namespace, wrong, check)
