"""End-to-end check in a real browser: JupyterLab on localhost, notebooks run in headless Chromium.

    make e2e          # or: python scripts/e2e_browser.py [--out build/e2e]

Starts JupyterLab, opens notebooks 00 and 01 in Debian's Chromium driven by Playwright (Playwright
never downloads a browser of its own here), runs all cells from the Run menu, fails on any cell
error, then moves notebook 01's max_length slider and checks that its figure changes. Screenshots
go to build/e2e/ (gitignored). Needs `apt-get install chromium` and `pip install playwright`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOTEBOOKS = ("00_setup", "01_token_lengths")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str, folder: Path, settings: Path) -> subprocess.Popen:
    # Render every cell (JupyterLab otherwise renders only those in view), so that every prompt
    # and every error output can be checked.
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text('{"windowingMode": "none"}')
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = dict(
        os.environ, COURSE_PROFILE="tiny", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        JUPYTERLAB_SETTINGS_DIR=str(settings),
    )  # fmt: skip
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
        f"--LabApp.workspaces_dir={settings / 'workspaces'}",
        "--allow-root",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    lab = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1)
            return lab
        except OSError:
            time.sleep(0.5)
    lab.kill()
    raise RuntimeError("JupyterLab did not start within 60 s")


ACTIVE = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def run_all(page: Page, name: str, folder: Path, out: Path, timeout_s: int) -> None:
    """Open a notebook, run all cells from the Run menu, save it, and fail on any cell error."""
    panel = page.locator(ACTIVE)
    panel.locator(".jp-Notebook").first.wait_for(timeout=60_000)
    try:  # JupyterLab may ask which kernel to start: the notebook's own (python3)
        page.locator(".jp-Dialog button", has_text="Select").first.click(timeout=10_000)
    except PlaywrightTimeout:
        pass
    idle = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first
    idle.wait_for(state="attached", timeout=60_000)  # the kernel is up
    n_code = panel.locator(".jp-CodeCell").count()
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    # Done when nothing is queued or running ([*]) and the first cell has its number; after an
    # error JupyterLab clears the queue, so this also ends a failed run.
    finished = """active => {
        const prompts = [...document.querySelectorAll(active + " .jp-CodeCell .jp-InputPrompt")]
            .map(e => e.textContent.trim());
        return prompts.length > 0 && /^\\[\\d+\\]:$/.test(prompts[0]) && !prompts.includes("[*]:");
    }"""
    try:
        page.wait_for_function(finished, arg=ACTIVE, timeout=timeout_s * 1000, polling=1000)
    except PlaywrightTimeout:
        page.screenshot(path=str(out / f"{name}-timeout.png"))
        raise TimeoutError(f"{name}: not every cell ran within {timeout_s} s") from None
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    page.keyboard.press("Control+s")  # the saved copy says exactly which cells ran and failed
    saved = "() => !document.querySelector('.lm-TabBar-tab.lm-mod-current.jp-mod-dirty')"
    page.wait_for_function(saved, timeout=30_000, polling=250)
    notebook = json.loads((folder / f"{name}.ipynb").read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    if errors:
        raise AssertionError(f"{name}: a cell failed: {errors[0]['ename']}: {errors[0]['evalue']}")
    not_run = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    if not_run or len(code) != n_code:
        raise AssertionError(f"{name}: code cells {not_run} did not run ({n_code} shown, {len(code)} saved)")
    print(f"{name}: {n_code} code cells ran in the browser, no errors; screenshot {out / (name + '.png')}")


def check_slider(page: Page, out: Path) -> None:
    """Notebook 01: the max_length slider renders, and moving it redraws the figure."""
    widget = page.locator(ACTIVE).locator(".widget-interact").first
    widget.scroll_into_view_if_needed()
    figure = widget.locator("img").first
    try:
        figure.wait_for(timeout=30_000)
    except PlaywrightTimeout:
        page.screenshot(path=str(out / "01_no_widget.png"))
        raise AssertionError(
            "01: the max_length slider and its figure did not render (ipywidgets?)"
        ) from None
    before = figure.get_attribute("src")
    value = widget.locator(".widget-readout").first.inner_text()
    widget.locator(".noUi-handle, .ui-slider-handle").first.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    redrawn = """([sel, before]) => {
        const img = document.querySelector(sel + " .widget-interact img");
        return img !== null && img.getAttribute("src") !== before;
    }"""
    try:
        page.wait_for_function(redrawn, arg=[ACTIVE, before], timeout=30_000, polling=500)
    except PlaywrightTimeout:
        widget.screenshot(path=str(out / "01_slider_stuck.png"))
        raise AssertionError("01: moving the max_length slider did not redraw the figure") from None
    after = widget.locator(".widget-readout").first.inner_text()
    widget.screenshot(path=str(out / "01_slider_moved.png"))
    print(
        f"01: slider moved from max_length {value} to {after}, figure redrawn; {out / '01_slider_moved.png'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "e2e")
    parser.add_argument("--timeout", type=int, default=180, help="seconds per notebook")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print("no Chromium: `apt-get install chromium` (Debian's package; Playwright's own is not used)")
        return 1
    # JupyterLab saves what it runs: work on copies, never on the committed notebooks.
    shutil.rmtree(args.out, ignore_errors=True)
    folder = args.out / "notebooks"
    folder.mkdir(parents=True)
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", folder)
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(port, token, folder, args.out / "lab-settings")
    start = time.perf_counter()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name in NOTEBOOKS:
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{name}.ipynb?reset&token={token}")
                run_all(page, name, folder, args.out, args.timeout)
                if name == "01_token_lengths":
                    check_slider(page, args.out)
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    print(f"browser check passed in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
