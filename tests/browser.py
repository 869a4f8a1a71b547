"""Debian's Chromium, headless, driven by selenium through Debian's chromedriver (no browser
download), for the tests that open a page the pipeline writes: the ``browser`` fixture, a wait
helper and the console's SEVERE messages.

Skips where Chromium, chromedriver or selenium is absent, unless MRICHAIN_REQUIRE_CHROMIUM=1
(set by .ci/run, which installs them): then their absence is a failure. A test module uses the
fixture ``browser`` by importing it: ``from browser import chromium  # noqa: F401``.
"""
import os
import shutil
import time

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Flags for a closed network and a root user (no sandbox); no background connections to Google.
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1200"]


def require_browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("MRICHAIN_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"MRICHAIN_REQUIRE_CHROMIUM=1 but missing: {missing}")
        pytest.skip(f"no browser here: {missing} (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module", name="browser")
def chromium(tmp_path_factory):
    """A headless Chromium (selenium WebDriver) for a test module, its console log kept."""
    require_browser()
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


def wait_for(driver, predicate, timeout=60.0, what=""):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; page text: {driver.find_element('tag name', 'body').text[:2000]}")


def severe_errors(driver) -> list[dict]:
    """The browser console's SEVERE entries since the last call (selenium drains the log)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
