"""The link a sweep prints, opened in a real browser: headless Chromium (Debian's package) through
Playwright, on `mlflow server` over the sweep's own store.

Screenshots are kept under runs/test-output/ui/ (runs_table.png: the ready view's runs table;
charts.png: its chart view; samples.png: the sample-grid card).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from processes import stop_session

from orchestrator.cli import main
from orchestrator.tracking import ui_view

pytestmark = [pytest.mark.sweep, pytest.mark.browser, pytest.mark.slow]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "runs" / "test-output" / "ui"


def chromium() -> str:
    """Debian's chromium, which scripts/setup installs."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("this test needs Debian's chromium: run scripts/setup (as root), or apt-get install "
                    "chromium")
    return found


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny, ray_address) -> dict:
    """A finished sweep of three GAN trials in a sqlite store, and the view link it printed."""
    root = tmp_path_factory.mktemp("ui-sweep")
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "browser", "trainer": "dcgan", "metric": "fid", "mode": "min", "num_samples": 3,
        "max_concurrent": 1, "resources": {"cpu": 1}, "sampler": {"type": "random", "seed": 0},
        "scheduler": {"type": "fifo"}, "fixed": {**tiny, "epochs": 2}, "stop_when": False,
        "params": {"lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
                   "beta1": {"type": "float", "low": 0.0, "high": 0.9}}}))
    uri = f"sqlite:///{root}/mlflow.db"
    log = root / "sweep.out"
    stdout = sys.stdout
    with log.open("w") as sys.stdout:  # the closing message, with the link, is printed on stdout
        try:
            code = main(["sweep", str(space), "--address", ray_address, "--storage", str(root / "sweeps"),
                         "--tracking-uri", uri])
        finally:
            sys.stdout = stdout
    assert code == 0, log.read_text()[-3000:]
    link = re.search(r"then (http://\S+)", log.read_text()).group(1)
    return {"uri": uri, "link": link, "client": MlflowClient(uri)}


@pytest.fixture(scope="module")
def served(swept, tmp_path_factory):
    """`mlflow server` on the sweep's store, on a free local port; its base URL."""
    port = ui_view.free_port()
    workdir = tmp_path_factory.mktemp("ui-server")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", swept["uri"],
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, stdout=(workdir / "server.log").open("w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    (workdir / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        yield base
    finally:
        stop_session(server)


@pytest.fixture(scope="module")
def page(served, swept):
    """The printed link, pointed at that server, open in headless Chromium."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), headless=True)
        tab = browser.new_page(viewport={"width": 1800, "height": 1100})
        tab.goto(re.sub(r"^http://[^/]+", served, swept["link"]))
        tab.get_by_role("button", name="Close").first.click(timeout=30_000)  # the UI's assistant panel
        tab.locator(".ag-center-cols-container [role=row]").first.wait_for(timeout=60_000)
        yield tab
        browser.close()


def trials(swept) -> list:
    client = swept["client"]
    experiment = client.get_experiment_by_name("browser").experiment_id
    return [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" in r.data.tags]


def test_the_printed_link_opens_the_ranked_table(page, swept):
    runs = trials(swept)
    best = min(runs, key=lambda r: r.data.metrics["fid"])
    assert len({r.data.metrics["fid"] for r in runs}) == 3, "distinct values, so the order is checkable"

    header = page.locator(".ag-header-cell[col-id='metrics.`fid`']")
    assert header.is_visible(), "the ranking metric's column is on screen, no column picking"
    assert page.locator(".ag-header-cell[col-id='tags.`gansweep.status`']").count() == 1
    first_row = page.locator(".ag-center-cols-container [role=row][row-index='0']")
    assert first_row.get_attribute("row-id") == best.info.run_id, "the best trial is the first row"
    assert best.info.run_name in page.locator("[role=row][row-index='0']").first.inner_text()
    fid_cell = page.locator("[row-index='0'] [col-id='metrics.`fid`']").first
    assert fid_cell.is_visible()
    assert fid_cell.inner_text().startswith(f"{best.data.metrics['fid']:.4f}"[:-1])
    page.screenshot(path=str(SCREENSHOTS / "runs_table.png"))


def test_the_chart_view_shows_sample_grids_of_several_runs(page, swept):
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    cards = page.locator("[data-testid=experiment-view-compare-runs-card]")
    cards.first.wait_for(timeout=60_000)
    titles = [cards.nth(i).inner_text().split("\n")[0] for i in range(cards.count())]
    assert titles == ["fid", "Parallel Coordinates", "samples"], "the view's own charts, nothing buried"
    samples = cards.nth(2).locator("img[src*='samples']")
    samples.first.wait_for(timeout=60_000)
    page.wait_for_function(  # drawn, not only requested
        "() => [...document.querySelectorAll(\"img[src*='samples']\")].filter("
        "i => i.complete && i.naturalWidth > 0).length >= 2", timeout=60_000)
    shown = {re.search(r"run_uuid=(\w+)", samples.nth(i).get_attribute("src")).group(1)
             for i in range(samples.count())}
    assert len(shown) >= 2 and shown <= {r.info.run_id for r in trials(swept)}
    # Drawn before the picture: the metric curves (plotly) and the parallel coordinates (canvas).
    for chart, drawing in ((0, ".js-plotly-plot"), (1, "canvas")):
        cards.nth(chart).locator(drawing).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SCREENSHOTS / "charts.png"))
    cards.nth(2).screenshot(path=str(SCREENSHOTS / "samples.png"))
