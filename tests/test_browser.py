"""A real browser: JupyterLab runs notebook 03 in fast mode and the attention explorer responds;
the exported HTML of notebook 03 (no server, no kernel) has a kernel-free explorer view that responds.

JupyterLab starts on 127.0.0.1 with a random free port and a token, in a temporary folder holding a
copy of the notebook (outputs cleared; the repository's file is never touched). Debian's Chromium,
driven by playwright, runs all cells from the Run menu, moves the explorer's head slider with the
keyboard and checks that the picture changes. Skipped when Chromium, playwright or MNIST is missing.
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from coursekit.data import dataset_info

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "03_vit_mnist.ipynb"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextlib.contextmanager
def chromium_page(tmp_path, **page_options):
    """A page of Debian's Chromium driven by playwright; on failure a full-page screenshot is kept in
    ``tmp_path`` (its path printed) before the error goes on. The browser is closed either way."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(**page_options)
        try:
            yield page
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}; server log, if any: {tmp_path / 'jupyter.log'}")
            raise
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url} within {timeout} s")


@pytest.fixture
def lab(tmp_path, missing_data):
    """(base url, token) of a JupyterLab serving a copy of notebook 03; stopped afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    data = os.environ.get("COURSEKIT_DATA")  # the server's kernel reads it from there
    if not data or not all((Path(data) / f).exists() for f in dataset_info("mnist").files):
        missing_data("real MNIST (COURSEKIT_DATA)")  # a skip, or under CI a failure (tests/conftest.py)

    work = tmp_path / "notebooks"  # the server's root is tmp_path, so ../imgs resolves
    work.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / NOTEBOOK, as_version=4)
    for cell in nb.cells:  # a clean copy: no stored outputs or widget state to confuse the page
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, work / NOTEBOOK)
    shutil.copytree(ROOT / "imgs", tmp_path / "imgs")

    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    # JupyterLab renders only the cells near the view by default: the explorer, far down the notebook,
    # would never be in the page while "Run All Cells" keeps the view on the last cell
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    env.update(COURSEKIT_FAST="1", COURSEKIT_DATA=data, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--IdentityProvider.token={token}",
           "--ServerApp.ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--ServerApp.root_dir={tmp_path}", "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
        cmd.append("--ServerApp.allow_root=True")
    log = open(tmp_path / "jupyter.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(f"{base}/api/status?token={token}", proc)
        yield base, token
    finally:
        if proc.poll() is None:  # SIGTERM lets the server shut its kernels down; then make sure
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def accept_dialog(page) -> bool:
    """Accept a JupyterLab dialog ("Select Kernel" after a kernel restart: keep Python 3)."""
    accept = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if accept.count() and accept.first.is_visible():
        accept.first.click()
        return True
    return False


def wait_until_idle(page, timeout_s: float = 90) -> None:
    """Wait until the kernel reports idle for a few checks in a row, with no dialog open."""
    idle = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\bIdle$"))
    deadline, streak = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        streak = 0 if accept_dialog(page) or not idle.count() else streak + 1
        if streak >= 4:
            return
        page.wait_for_timeout(500)
    raise TimeoutError(f"the kernel was not idle within {timeout_s} s")


def run_all_cells(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_for_explorer(page, slider, timeout_s: float) -> None:
    """Wait until ``slider`` shows; if the kernel was replaced meanwhile, run all cells again."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if slider.is_visible():
            return
        if accept_dialog(page):  # a new kernel has none of the earlier cells' state
            wait_until_idle(page)
            run_all_cells(page)
        page.wait_for_timeout(500)
    raise TimeoutError(f"the explorer's head slider did not appear within {timeout_s} s")


def test_explorer_head_slider_changes_the_picture(lab, tmp_path):
    base, token = lab
    with chromium_page(tmp_path, viewport={"width": 1400, "height": 1000}) as page:
        page.goto(f"{base}/lab/tree/notebooks/{NOTEBOOK}?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        wait_until_idle(page)  # the kernel must be up before "Run All Cells" does anything
        run_all_cells(page)

        head = page.locator(".widget-slider", has=page.locator(
            ".widget-label", has_text=re.compile(r"^head$")))
        wait_for_explorer(page, head.first, timeout_s=300)  # every cell above it runs first, in fast mode
        picture = page.locator("img.widget-image").first
        picture.wait_for()
        before = picture.get_attribute("src")
        readout = head.first.locator(".widget-readout")
        assert readout.inner_text().strip() == "1"

        handle = head.first.locator(".noUi-handle")
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([el, old]) => el.getAttribute('src') !== old",
            arg=[picture.element_handle(), before], timeout=20_000)
        assert readout.inner_text().strip() == "2"
        assert picture.get_attribute("src") != before


def test_kernel_free_view_in_the_exported_html_responds_within_50_ms(tmp_path):
    """The committed notebook 03 exported with ``jupyter nbconvert --to html``, opened from a file://
    page with no server or kernel: moving the explorer's head range input redraws its canvas."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

    nb = nbformat.read(ROOT / "notebooks" / NOTEBOOK, as_version=4)
    if not any("ck-explorer" in o.get("data", {}).get("text/html", "")
               for c in nb.cells if c.cell_type == "code" for o in c.outputs):
        pytest.fail("notebook 03 holds no kernel-free explorer view: execute it and commit it with outputs")
    subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--output-dir",
                    str(tmp_path), str(ROOT / "notebooks" / NOTEBOOK)], check=True, capture_output=True)
    page_file = tmp_path / NOTEBOOK.replace(".ipynb", ".html")
    assert page_file.stat().st_size < 8_000_000
    with chromium_page(tmp_path) as page:
        # nothing may be fetched from the network: only the file itself and data: URIs
        page.route(re.compile(r"^https?://"), lambda route: route.abort())
        page.goto(page_file.as_uri())
        root = page.locator(".ck-explorer").first
        root.wait_for(timeout=20_000)
        assert root.get_attribute("data-drawn") == "0,0,0,0"
        result = page.evaluate("""(root) => {
            const canvas = root.querySelector('.ck-picture'), head = root.querySelector('[name=head]');
            const before = canvas.toDataURL();
            const t0 = performance.now();
            head.value = '2';
            head.dispatchEvent(new Event('input', {bubbles: true}));
            const after = canvas.toDataURL();
            return {ms: performance.now() - t0, changed: before !== after,
                    drawn: root.getAttribute('data-drawn'),
                    title: root.querySelector('.ck-title').textContent};
        }""", root.element_handle())
        assert result["changed"], "moving the head slider did not change the picture"
        assert result["drawn"] == "0,0,1,0" and "Head 2" in result["title"]
        assert result["ms"] < 50, f"redraw took {result['ms']:.1f} ms"
        # a click on the picture picks a query patch and outlines it
        root.locator(".ck-picture").click(position={"x": 10, "y": 10})
        assert root.get_attribute("data-drawn") == "0,0,1,1"
        assert "patch 1 -> patches" in root.locator(".ck-title").inner_text()
        g = round((int(root.locator("[name=query]").get_attribute("max"))) ** 0.5)
        root.locator(".ck-picture").click(position={"x": 279, "y": 280 / g * 1.5})  # last column, second row
        assert root.get_attribute("data-drawn") == f"0,0,1,{2 * g}"
