"""The course's web site (docs/build.py): built once per session from a clean copy of the repository
with the command of docs/instructors.md, warnings as errors; it holds no answer; every page works in Chromium from
file:// with every network request blocked, and the attention explorer on it responds within 50 ms."""

import html
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from coursekit.grading import release as rel

ROOT = Path(__file__).resolve().parents[1]
BUILD_COMMAND = "python docs/build.py"
# the only request a page may try: MathJax from its CDN (without it the formulas stay TeX source)
ALLOWED_REQUESTS = re.compile(r"^https://cdn\.jsdelivr\.net/npm/mathjax@\d+/")


def load_build():
    spec = importlib.util.spec_from_file_location("site_build", ROOT / "docs" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build()


@pytest.fixture(scope="module")
def site(tmp_path_factory, clean_copy):
    copy = clean_copy(tmp_path_factory.mktemp("clone"))  # tests/conftest.py: skipped outside a git checkout
    out = tmp_path_factory.mktemp("site") / "site"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "docs/build.py", str(out)], cwd=copy, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"site built in {time.perf_counter() - start:.1f} s, {size / 1e6:.1f} MB")
    return out


def pages(site: Path) -> list[Path]:
    """Every HTML page of the site (not the theme's template fragments in _static)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)


def page_text(path: Path) -> str:
    """What a file of the site says: HTML without its tags (so highlighted code reads as written)."""
    text = path.read_text(errors="replace")
    if path.suffix == ".ipynb":
        return "\n".join(c.source for c in nbformat.reads(text, as_version=4).cells)
    return html.unescape(re.sub(r"<[^>]+>", "", text)) if path.suffix == ".html" else text


# -- without a build -----------------------------------------------------------------------------------
def test_the_instructors_page_gives_the_build_command_and_ci_runs_it():
    assert f"\n{BUILD_COMMAND}\n" in (ROOT / "docs" / "instructors.md").read_text()
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()  # which collects this file, so CI builds it
    assert (ROOT / "requirements.txt").read_text().count("myst-nb") == 1
    assert "/build/" in (ROOT / ".gitignore").read_text().split()


def test_a_tqdm_bar_becomes_its_final_line():
    state = {"box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_a", "IPY_MODEL_b", "IPY_MODEL_c"]}},
             "a": {"model_name": "HTMLModel", "state": {"value": "training:\u2007100%"}},
             "b": {"model_name": "FloatProgressModel", "state": {"min": 0, "max": 40.0, "value": 40.0}},
             "c": {"model_name": "HTMLModel", "state": {"value": "\u200740/40\u2007[00:02&lt;00:00]"}}}
    assert build.progress_line("box", state) == "training: 100%|██████████| 40/40 [00:02<00:00]"
    state["b"]["state"]["value"] = 13  # stopped early: the bar says so
    assert build.progress_line("box", state).split("|")[1] == "███       "
    assert build.progress_line("a", state) is None and build.progress_line("gone", state) is None

    state["b"]["state"]["value"] = 40.0
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    cell = nbformat.v4.new_code_cell("fit()", outputs=[
        nbformat.v4.new_output("display_data", {"application/vnd.jupyter.widget-view+json": view,
                                                "text/plain": "training:   0%|          | 0/40"}),
        nbformat.v4.new_output("display_data", {"application/vnd.jupyter.widget-view+json": dict(view, model_id="x"),
                                                "text/plain": "VBox(children=(...))"}),
        nbformat.v4.new_output("display_data", {"text/html": "<div class='ck-explorer'></div>"})])
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"widgets": {
        "application/vnd.jupyter.widget-state+json": {"state": state, "version_major": 2, "version_minor": 0}}})
    out = build.static_outputs(nb)
    assert "widgets" not in out.metadata
    texts = [o.get("text") for o in out.cells[0].outputs]
    assert texts[0] == "training: 100%|██████████| 40/40 [00:02<00:00]\n"
    assert "need a running kernel" in texts[1] and "kernel-free view below" in texts[1]
    assert out.cells[0].outputs[2]["data"]["text/html"].startswith("<div class='ck-explorer'>")
    nbformat.validate(out)


def test_the_landing_page_links_files_to_the_repository_and_keeps_notebook_links():
    readme = ("Read [`coursekit`](coursekit/) and [the explorer](coursekit/explorer.py); start with "
              "[01](notebooks/01_attention.ipynb) [![Open In Colab](" + build.COLAB_BADGE + ")](https://x.y/z).")
    page = build.landing_page(readme, "https://github.com/o/n")
    assert "(https://github.com/o/n/tree/main/coursekit)" in page
    assert "(https://github.com/o/n/blob/main/coursekit/explorer.py)" in page
    assert "(notebooks/01_attention.ipynb)" in page and f"({build.BADGE})" in page
    assert page.index("notebooks/01_attention\n") < page.index("notebooks/05_hybrid_cifar\n")


def test_a_warning_fails_the_build(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.md").write_text("# Title\n\n### A heading two levels down\n\n[a link](missing.md)\n")
    with pytest.raises(build.SiteError, match="sphinx-build failed"):
        build.sphinx(src, tmp_path / "out", tmp_path / "doctrees")


def test_the_build_refuses_to_overwrite_a_folder_that_is_not_a_site(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(build.SiteError, match="not an earlier site build"):
        build.build(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_page_text_reads_highlighted_code_as_written(tmp_path):
    path = tmp_path / "sample.html"
    path.write_text('<pre><span class="n">vit_config</span> <span class="o">=</span> <span class="nb">dict</span>'
                    '(a&lt;b)</pre>')
    assert "vit_config = dict(a<b)" in page_text(path)


# -- the built site --------------------------------------------------------------------------------------
def test_every_notebook_is_a_page_in_course_order(site):
    index = (site / "index.html").read_text()
    assert "A short course on attention" in index
    order = list(dict.fromkeys(re.findall(r'href="notebooks/(\d\d_\w+)\.html"', index)))
    assert order == build.NOTEBOOKS
    assert index.count("https://colab.research.google.com/github/") >= len(build.NOTEBOOKS)
    words = page_text(site / "index.html")
    assert "Install" in words and "pip install -r requirements.txt" in words
    for name in build.NOTEBOOKS:
        page = (site / "notebooks" / f"{name}.html").read_text()
        assert f"/blob/main/notebooks/{name}.ipynb" in page, f"{name}: no Open-in-Colab link"
    executed = (site / "notebooks" / "03_vit_mnist.html").read_text()
    assert executed.count('src="../_images/') >= 8  # its figures and plots, as files of the site


def test_every_internal_link_resolves(site):
    broken, checked = [], 0
    for path in pages(site):
        for target in re.findall(r'(?:href|src)="([^"]+)"', path.read_text()):
            if re.match(r"^(?:[a-z]+:|#|//)", target):
                continue
            file = target.split("#")[0].split("?")[0]
            checked += 1
            if file and not (path.parent / file).exists():
                broken.append(f"{path.relative_to(site)}: {target}")
    assert checked > 100 and broken == []


def test_the_site_holds_no_answer(site):
    files = [p for p in site.rglob("*") if p.is_file() and p.suffix in {".html", ".js", ".txt", ".ipynb", ".md"}]
    assert any(p.suffix == ".ipynb" for p in files)  # the notebooks offered for download are searched too
    text = "\n".join(page_text(p) for p in files)
    assert not [p for p in site.rglob("*") if "solution" in p.name.lower()]
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "INSTRUCTOR ONLY", "Reference answer", "homework_recipes"):
        assert marker not in text, marker
    common = rel.common_lines()
    secrets = rel.answer_lines(common=common)
    assert any("Reference answer" in line for line in secrets), "the reflection's reference must be searched for"
    assert not [line for line in secrets if line in text]
    recipes = [json.loads(line)["name"] for line in
               (ROOT / "benchmarks" / "results" / "homework_recipes_h100.jsonl").read_text().splitlines()]
    assert len(recipes) > 10 and not [name for name in recipes if name in text]
    readme = (ROOT / "README.md").read_text()
    student = rel.student_readme(readme)
    instructor = {line.strip() for region in re.findall(r"<!-- INSTRUCTOR ONLY -->(.*?)<!-- END INSTRUCTOR ONLY -->",
                                                        readme, re.S)
                  for line in region.splitlines() if len(line.strip()) >= 40 and line.strip() not in student}
    instructor |= {line.strip() for page in (ROOT / "docs").glob("*.md") for line in page.read_text().splitlines()
                   if len(line.strip()) >= 40 and line.strip() not in student}  # the instructors' pages
    assert len(instructor) > 100 and not [line for line in instructor if line in text]


def test_widget_outputs_read_as_text(site):
    every = "\n".join(p.read_text() for p in pages(site))
    for absent in ("application/vnd.jupyter.widget", "require.min.js", "@jupyter-widgets", "embed-amd"):
        assert absent not in every, absent
    for name in ("03_vit_mnist", "05_hybrid_cifar"):  # both load the course's weights: no training bar
        text = page_text(site / "notebooks" / f"{name}.html")
        assert "0%|          |" not in text, name
        assert "the kernel-free view below works on this page" in text, name


def test_every_page_works_offline_and_the_explorer_responds(site, tmp_path):
    from test_browser import CHROMIUM, chromium_page

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    requests, explorers = set(), 0
    with chromium_page(tmp_path) as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        def block(route):
            requests.add(route.request.url)
            route.abort()

        page.route(re.compile(r"^(?!file:|data:|blob:)"), block)
        for path in pages(site):
            page.goto(path.as_uri(), wait_until="load")
            name = str(path.relative_to(site))
            assert not errors, f"{name}: {errors}"
            images = page.evaluate("() => Array.from(document.images, i => [i.src.slice(0, 80), i.complete && "
                                   "i.naturalWidth > 0])")
            assert [src for src, ok in images if not ok] == [], name
            if name == "index.html":
                assert len(images) >= len(build.NOTEBOOKS)  # the badges
            for root in page.locator(".ck-explorer").element_handles():
                explorers += 1
                assert root.get_attribute("data-drawn") == "0,0,0,0", name
                result = page.evaluate("""(root) => {
                    const canvas = root.querySelector('.ck-picture'), head = root.querySelector('[name=head]');
                    const before = canvas.toDataURL(), t0 = performance.now();
                    head.value = '2';
                    head.dispatchEvent(new Event('input', {bubbles: true}));
                    return {ms: performance.now() - t0, changed: canvas.toDataURL() !== before,
                            drawn: root.getAttribute('data-drawn')};
                }""", root)
                assert result["changed"] and result["drawn"] == "0,0,1,0", (name, result)
                assert result["ms"] < 50, f"{name}: the explorer took {result['ms']:.1f} ms to redraw"
    assert explorers >= 2, "notebooks 03 and 05 each hold a kernel-free explorer"
    assert not [url for url in requests if not ALLOWED_REQUESTS.match(url)], sorted(requests)
