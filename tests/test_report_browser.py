"""The Snakemake report of the test run, opened in Debian's Chromium (headless, driven by selenium
through Debian's chromedriver: no browser download): it loads without console errors and shows
the error-budget and sweep figures and the metrics table.

Skips where Chromium, chromedriver or selenium is absent, unless MRICHAIN_REQUIRE_CHROMIUM=1
(set by .ci/run, which installs them): then their absence is a failure.
"""
import os
import shutil
import time

import pytest

from dag import snakemake

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Flags for a closed network and a root user (no sandbox); no background connections to Google.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1200"]


def _require_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("MRICHAIN_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"MRICHAIN_REQUIRE_CHROMIUM=1 but missing: {missing}")
        pytest.skip(f"no browser here: {missing} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(local_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(local_run, "--report", str(path))
    return path


def _wait_for(driver, predicate, timeout=60.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; page text: {driver.find_element('tag name', 'body').text[:2000]}")


def _click_text(driver, text):
    """Click the first visible element whose own text is ``text`` (the report's menu entries and
    breadcrumbs; the sidebar comes before the page text in the DOM, whose words may repeat them)."""
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']"):
        if el.is_displayed():
            driver.execute_script("arguments[0].click();", el)
            return
    raise AssertionError(f"no visible {text!r} in the report; page text: {driver.find_element(By.TAG_NAME, 'body').text[:2000]}")


def test_report_renders_budget_sweep_and_metrics(browser, report):
    from selenium.webdriver.common.by import By

    browser.get(report.as_uri())
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    _wait_for(browser, lambda: "Error budget" in body(), what="the report's menu")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    _click_text(browser, "Error budget")
    _wait_for(browser, lambda: "error_budget.png" in body() and "error_budget.tsv" in body(), what="the error budget")
    _click_text(browser, "Results")  # back to the list of result categories (breadcrumb)
    _wait_for(browser, lambda: "Acceleration sweep" in body() and "Montages" in body(), what="the categories")
    _click_text(browser, "Acceleration sweep")
    _wait_for(browser, lambda: "sweep.png" in body() and "acceleration_limits.tsv" in body(), what="the sweep")
    _click_text(browser, "Results")
    _wait_for(browser, lambda: "Metrics" in body() and "Montages" in body(), what="the categories")
    _click_text(browser, "Metrics")
    _wait_for(browser, lambda: "summary.tsv" in body() and "comparison.tsv" in body(), what="the metrics table")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
