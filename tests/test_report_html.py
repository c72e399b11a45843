"""report.html: one self-contained page per output folder, checked as text and in a real headless browser
(Debian's chromium driven by Selenium): it loads without console errors, holds every table, and sorts."""

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks.cli import run_benchmark
from tests.conftest import write_tiny_dataset

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOW = ("no headless browser for the report.html test: apt-get install -y chromium chromium-driver "
       "and pip install -e '.[test]' (selenium)")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A GL-free run of two methods, then a run of one method with the first as --reference: its report.html."""
    root = tmp_path_factory.mktemp("html")
    data = root / "tiny.h5"
    write_tiny_dataset(data, n_frames=8, size=8)
    common = ["--data", str(data), "--gap", "1", "2", "--cache", str(root / "c"), "--quiet"]
    for methods_, extra, out in ((["copy-x0", "pixel-average"], [], "first"),
                                 (["copy-x0"], ["--reference", str(root / "first")], "second")):
        r = CliRunner().invoke(run_benchmark, [*common, "--methods", *methods_, *extra, "--out", str(root / out)])
        assert r.exit_code == 0, r.output
    return root / "second"


def test_report_is_one_self_contained_page(page):
    html = (page / "report.html").read_text()
    md = (page / "results.md").read_text()
    figures = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", md, re.M)
    # every figure of results.md, inline, and the reference run's own in-between grid
    assert figures and html.count('<img ') == len(figures) + 1 and "first: dof 2 in-betweens" in html
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    assert "http://" not in html and "https://" not in html and "<link" not in html  # nothing fetched
    assert html.count("<table>") == len(re.findall(r"^\|---", md, re.M)) > 3
    assert '<tr class="reference"><td>pixel-average [ref first]</td>' in html
    assert '<tr class="ceiling"><td><em>true frame (ceiling)</em></td>' in html


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip(HOW)
    if not (CHROMIUM and DRIVER):
        pytest.skip(HOW)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)  # --no-sandbox: CI runs as root
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    yield driver
    driver.quit()


def column(table, i: int) -> list[str]:
    from selenium.webdriver.common.by import By

    return [row.find_elements(By.TAG_NAME, "td")[i].text for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]


def test_report_loads_and_sorts_in_a_headless_browser(page, browser):
    from selenium.webdriver.common.by import By

    browser.get(Path(page / "report.html").resolve().as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    tables = browser.find_elements(By.TAG_NAME, "table")
    assert len(tables) == len(re.findall(r"^\|---", (page / "results.md").read_text(), re.M)) > 3
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images and all(browser.execute_script("return arguments[0].naturalWidth", im) > 100 for im in images)
    assert browser.find_elements(By.CSS_SELECTOR, "tr.reference")
    mse = tables[0]  # MSE: copy-x0, the reference's rows, then the ceiling
    header = mse.find_elements(By.CSS_SELECTOR, "thead th")[1]
    for order in ("ascending", "descending"):
        header.click()
        assert header.get_attribute("aria-sort") == order
        values = [float(v.split(" ")[0]) for v in column(mse, 1)[:-1]]
        assert len(values) == 3 and values == sorted(values, reverse=order == "descending")
        assert column(mse, 0)[-1] == "true frame (ceiling)"  # the ceiling stays under the rows
    mse.find_elements(By.CSS_SELECTOR, "thead th")[0].click()  # by name
    assert column(mse, 0)[:-1] == sorted(column(mse, 0)[:-1])
    assert [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
