"""The tiny run's results/report.html in a real headless Chromium (Debian's chromium
and chromium-driver, driven by Selenium): it loads without console errors, every
figure has rendered and every section shows its tables."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from exsitu import reporting

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        message = f"{CHROMIUM} / {CHROMEDRIVER} not installed (scripts/install-system-deps.sh installs them)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # Selenium Manager would otherwise try to download a browser/driver: this machine is offline.
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_report_renders_without_console_errors(tiny_run: Path, browser):
    report = tiny_run / "results" / "report.html"
    assert report.is_file()
    browser.get(report.as_uri())
    browser.execute_script(
        "return Promise.all(Array.from(document.images).map(i => i.complete ? null :"
        " new Promise(r => { i.onload = i.onerror = r; })));"
    )
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt || i.src.slice(0, 40), i.naturalWidth, i.naturalHeight]);"
    )
    assert len(images) == len(reporting.FIGURES), images
    broken = [img for img in images if img[1] <= 0 or img[2] <= 0]
    assert not broken, f"figures that did not render: {broken}"
    # Per section (h2): the tables it shows, as laid out (a table with no rendered rows would be height 0).
    sections = browser.execute_script(
        "const out = {}; let h = null;"
        " for (const e of document.body.children) {"
        "  if (e.tagName === 'H2') { h = e.textContent; out[h] = []; }"
        "  else if (h && e.querySelector && e.querySelector('table')) {"
        "   out[h].push(e.querySelector('table').getBoundingClientRect().height); } }"
        " return out;"
    )
    tables = {name: len(heights) for name, heights in sections.items()}
    # At least: the Data section's check table is there only when the simulation was checked against TNG100.
    for name, count in (("Data", 4), ("Accuracy and the baselines", 3), ("by stellar mass", 1), ("Calibration", 5),
                        ("Residual diagnostics", 3), ("cost", 1), ("model directory", 1)):  # fmt: skip
        section = next(s for s in sections if name in s)
        assert tables[section] >= count, (section, tables)
        assert all(height > 20 for height in sections[section]), (section, sections[section])
    severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert not severe, f"console errors: {severe}"
    assert browser.title, "the report has no <title>"
