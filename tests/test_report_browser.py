"""The Snakemake report of the test run, opened in Debian's Chromium (headless, driven by selenium
through Debian's chromedriver: no browser download; tests/browser.py): it loads without console
errors and shows the error-budget and sweep figures and the metrics table.
"""
import pytest
from browser import chromium, severe_errors, wait_for  # noqa: F401  (chromium: the fixture "browser")
from dag import snakemake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(local_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(local_run, "--report", str(path))
    return path


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
    body = lambda: browser.find_element(By.TAG_NAME, "body").text
    wait_for(browser, lambda: "Error budget" in body(), what="the report's menu")
    errors = severe_errors(browser)
    assert not errors, errors

    _click_text(browser, "Error budget")
    wait_for(browser, lambda: "error_budget.png" in body() and "error_budget.tsv" in body(), what="the error budget")
    _click_text(browser, "Results")  # back to the list of result categories (breadcrumb)
    wait_for(browser, lambda: "Acceleration sweep" in body() and "Montages" in body(), what="the categories")
    _click_text(browser, "Acceleration sweep")
    wait_for(browser, lambda: "sweep.png" in body() and "acceleration_limits.tsv" in body(), what="the sweep")
    _click_text(browser, "Results")
    wait_for(browser, lambda: "Metrics" in body() and "Montages" in body(), what="the categories")
    _click_text(browser, "Metrics")
    wait_for(browser, lambda: "summary.tsv" in body() and "comparison.tsv" in body(), what="the metrics table")
    errors = severe_errors(browser)
    assert not errors, errors
