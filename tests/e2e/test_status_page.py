"""The status page `mlops local up` serves at `GET <api_url>/status`, as a person sees it: in headless Chromium (the
distribution's `chromium` and `chromium-driver`, driven by Selenium), with a champion, a canary at its weight
holding feedback, live figures, a drift verdict and the pipeline's runs. A screenshot is kept as an artefact (the
test's own directory, and `test-artefacts/status-page.png` in the checkout, or under $MLOPS_TEST_ARTEFACTS), and the
page must load without a console error."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from selenium.webdriver import Chrome, ChromeOptions
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

if TYPE_CHECKING:
    from conftest import LocalUp  # tests/e2e/conftest.py

pytestmark = pytest.mark.slow

MODEL = "e2e"  # conftest.E2E_CONFIG: a canary at 50 %, whose rollout keeps looking until 100 labels in each arm
ROOT = Path(__file__).resolve().parents[2]
INSTALL = ("headless Chromium and its WebDriver from the distribution's packages: "
           "`apt-get install chromium chromium-driver` (Debian; .ci/run installs them)")
# Chromium as root in a container, with nothing of its own on the network
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,1000")
# Chromium asks for /favicon.ico just after the load event: console errors are read over this long after the load
SETTLE_SECONDS = 2.0
LOOK = re.compile(r"canary v2 at 50%: look \d+, continue \(n (\d+)/(\d+), p ")
LIVE = re.compile(r"(\d+) req, p95 [0-9.]+ ms, errors 0\.00%")
# labelled answers: enough rows for a drift verdict (min_samples 100), too few for the rollout to decide (its burn-in
# wants 100 in the smaller arm), so the canary stays on the page
TRAFFIC = 120


def _executable(name: str, override: str) -> str:
    """The program ``name`` on PATH, or the one $``override`` names (another Chromium build and its driver)."""
    wanted = os.environ.get(override) or name
    found = shutil.which(wanted)
    if found is None:
        pytest.fail(f"`{wanted}` is not on PATH: the status page test needs {INSTALL}, or ${override} naming one",
                    pytrace=False)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    """A fresh headless Chromium with its own profile, keeping the page's console (missing Chromium fails here,
    before half a minute of training)."""
    chromium = _executable("chromium", "MLOPS_CHROMIUM")
    chromedriver = _executable("chromedriver", "MLOPS_CHROMEDRIVER")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = Chrome(options=options, service=Service(chromedriver))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def server(browser: Chrome, start_local_up: Callable[..., LocalUp]) -> LocalUp:
    return start_local_up(None, "--schedule-scale", "6")  # drift checked every 10 seconds


def _page_html(server: LocalUp) -> str:
    with urllib.request.urlopen(server.info["status_url"], timeout=60) as page:
        html: str = page.read().decode()
        return html


@pytest.fixture(scope="module")
def status_page(browser: Chrome, server: LocalUp, world: Callable[..., list[dict[str, Any]]],
                csv_of: Callable[..., bytes], features: Callable[..., dict[str, Any]],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A champion (world a), a better challenger (world b) at 50 % with labelled traffic whose x1 moved three sigmas
    (drift), then the page in Chromium: its screenshot and its console."""
    [model] = [m for m in server.info["models"] if m["name"] == MODEL]
    server.serve(model, "world_a.csv", csv_of(world("a", 600, seed=1)), role="champion")
    server.serve(model, "world_b.csv", csv_of(world("b", 600, seed=2)), role="challenger")
    for row in world("b", TRAFFIC, seed=3):
        status, answer = server.http("POST", f"/models/{MODEL}/predict",
                                     {"features": {**features(row), "x1": row["x1"] + 3.0}})
        assert status == 200, answer
        status, body = server.http("POST", f"/models/{MODEL}/feedback",
                                   {"request_id": answer["request_id"], "label": str(row["label"])})
        assert status == 200, body

    def everything_shown() -> bool:
        html = _page_html(server)
        look = LOOK.search(html)  # every labelled answer joined by the rollout, every request in the live figures
        return (look is not None and int(look[1]) + int(look[2]) == TRAFFIC and "drifted (x1" in html
                and html.count("<svg") >= 2 and sum(map(int, LIVE.findall(html))) == TRAFFIC)

    server.wait_for("a look with feedback in both arms, a drifted window and live figures on the page",
                    everything_shown, timeout=120, every=1)

    browser.get(server.info["status_url"])
    loaded = time.monotonic()
    # the whole page in the viewport: one screenshot of all of it, and every element where a person would see it
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 1280, "height": min(height, 8000), "deviceScaleFactor": 1, "mobile": False})
    screenshot = tmp_path_factory.mktemp("status-page") / "status-page.png"
    assert browser.save_screenshot(str(screenshot)), "Chromium took no screenshot"
    artefacts = Path(os.environ.get("MLOPS_TEST_ARTEFACTS") or ROOT / "test-artefacts")
    artefacts.mkdir(parents=True, exist_ok=True)
    partial = artefacts / f".status-page-{os.getpid()}.png"
    shutil.copyfile(screenshot, partial)
    partial.replace(artefacts / "status-page.png")  # whole, even with another run writing beside it
    console = list(browser.get_log("browser"))
    time.sleep(max(0.0, SETTLE_SECONDS - (time.monotonic() - loaded)))
    console += browser.get_log("browser")
    return {"screenshot": screenshot, "console": console}


def _section(browser: Chrome) -> WebElement:
    return browser.find_element(By.ID, f"model-{MODEL}")


def _row(section: WebElement, header: str) -> list[str]:
    """The visible cells of the row headed ``header`` in the model's table."""
    row = section.find_element(By.XPATH, f".//tr[th[normalize-space()='{header}']]")
    assert row.is_displayed()
    return [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]


def test_the_page_loads_without_console_errors(status_page: dict[str, Any]) -> None:
    errors = [entry for entry in status_page["console"] if entry["level"] == "SEVERE"]
    assert errors == [], f"the browser's console: {status_page['console']}"


def test_a_person_sees_the_model_its_champion_canary_and_quality(browser: Chrome,
                                                                  status_page: dict[str, Any]) -> None:
    assert status_page["screenshot"].stat().st_size > 10_000
    assert browser.title == "Every model - status"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Every model"
    section = _section(browser)
    assert section.is_displayed()
    assert section.find_element(By.TAG_NAME, "h2").text == f"{MODEL} (binary)"

    champion, champion_live = _row(section, "champion")
    quality = re.fullmatch(r"v1 \(accuracy ([0-9.]+)\)", champion)
    assert quality, champion
    assert 0.85 <= float(quality[1]) <= 1.0  # the gate's threshold (conftest.E2E_CONFIG) up to perfect
    challenger, challenger_live = _row(section, "challenger")
    quality = re.fullmatch(r"v2 \(accuracy ([0-9.]+)\)", challenger)
    assert quality, challenger
    assert 0.85 <= float(quality[1]) <= 1.0
    # live figures per version, from the metrics the guardrails read: the answers split between the arms
    served = []
    for live in (champion_live, challenger_live):
        figures = LIVE.fullmatch(live)
        assert figures, live
        served.append(int(figures[1]))
    assert sum(served) == TRAFFIC, served
    assert min(served) > 0, served
    # the split and the rollout's last look: each arm's labelled answers are the answers it gave
    [rollout] = _row(section, "rollout")
    look = LOOK.match(rollout)
    assert look, rollout
    assert [int(look[1]), int(look[2])] == served, (rollout, served)


def test_a_person_sees_the_drift_verdict_and_the_pipeline_runs(browser: Chrome,
                                                               status_page: dict[str, Any]) -> None:
    section = _section(browser)
    [drift] = _row(section, "drift")
    assert re.match(r"drifted \(x1\b.*\) at \d{4}-\d\d-\d\dT", drift), drift
    heading = section.find_element(By.XPATH, ".//h3[normalize-space()='last pipeline runs']")
    assert heading.is_displayed()
    runs = heading.find_element(By.XPATH, "following-sibling::table[1]")
    outcomes = [row.find_elements(By.TAG_NAME, "td")[1].text for row in runs.find_elements(By.TAG_NAME, "tr")[1:]]
    assert outcomes.count("registered") == 2, outcomes  # the champion's run and the challenger's


def test_the_plots_are_drawn(browser: Chrome, status_page: dict[str, Any]) -> None:
    charts = {chart.find_element(By.TAG_NAME, "title").get_attribute("textContent"): chart
              for chart in _section(browser).find_elements(By.TAG_NAME, "svg")}
    assert set(charts) == {"accuracy per arm (feedback)", "drift: features drifted per checked window"}
    assert "champion v1" in charts["accuracy per arm (feedback)"].text
    assert "challenger v2" in charts["accuracy per arm (feedback)"].text
    for title, chart in charts.items():
        assert chart.is_displayed(), title
        assert chart.size["width"] >= 600, (title, chart.size)
        assert chart.size["height"] >= 250, (title, chart.size)
        # a data point is painted where it is: the browser hit-tests its centre to a mark of this chart
        painted = browser.execute_script("""
            const svg = arguments[0];
            return [...svg.querySelectorAll('circle')].filter(point => {
                const box = point.getBoundingClientRect();
                const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
                return box.width > 0 && hit !== null && svg.contains(hit) && hit.tagName !== 'svg';
            }).length;""", chart)
        assert painted > 0, f"{title}: no data point painted"
