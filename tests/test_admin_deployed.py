"""The admin under a real 2-worker gunicorn: metrics sum both workers, and the dashboard
works in a real headless Chromium (sign in, read the numbers, purge)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import Select, WebDriverWait

from .conftest import Origin
from .servers import get, gunicorn

pytestmark = pytest.mark.slow
TOKEN = "deployed-admin-token-0123456789"
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "var"


@pytest.fixture
def deployed(origin: Origin, tmp_path: Path) -> Iterator[str]:
    env = {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"t={origin.base}",
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_ADMIN_TOKEN": TOKEN}
    with gunicorn("tests.apps.gunicorn_app:app", env, ["--workers", "2"]) as base:
        yield base


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def test_metrics_sum_every_worker(deployed: str) -> None:
    get(f"{deployed}/_fic/o/t/img/m.png")
    hits_by_worker: dict[str, int] = {}
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            for status, headers, _ in pool.map(lambda _: get(f"{deployed}/_fic/o/t/img/m.png"),
                                               range(50)):
                assert status == 200
                pid = headers["X-Worker-Pid"]
                hits_by_worker[pid] = hits_by_worker.get(pid, 0) + 1
            if len(hits_by_worker) == 2:
                break
    assert len(hits_by_worker) == 2
    time.sleep(1.5)  # each worker writes its counters once a second
    status, headers, body = get(f"{deployed}/_fic/_admin/metrics",
                                {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert metric(text, 'fic_requests_total{result="hit"}') == sum(hits_by_worker.values())
    assert metric(text, 'fic_requests_total{result="miss"}') == 1
    assert metric(text, "fic_processes") == 2


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # This machine has no network beyond loopback: keep Chromium from reaching out.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--window-size=1200,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_dashboard_in_a_browser(deployed: str, tmp_path: Path) -> None:
    for name in ("b1", "b2", "b1", "b1"):
        get(f"{deployed}/_fic/o/t/img/{name}.png")
    browser = chromium()
    try:
        wait = WebDriverWait(browser, 15)
        browser.get(f"{deployed}/_fic/_admin/")
        browser.find_element(By.ID, "token").send_keys("wrong-token")
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "login-error"), "refused"))

        browser.find_element(By.ID, "token").clear()
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login-form button").click()
        wait.until(ready.visibility_of_element_located((By.ID, "board")))
        wait.until(lambda b: b.find_element(By.ID, "entries").text == "2")
        # Workers write their counters once a second; the page refreshes every 5 s.
        wait.until(lambda b: b.find_element(By.ID, "hit-ratio").text == "50.0 %")  # 2 hits, 2 misses
        assert browser.find_element(By.ID, "origins").text.startswith("t 2")
        browser.save_screenshot(str(SCREENSHOT_DIR / "dashboard.png"))

        Select(browser.find_element(By.ID, "purge-kind")).select_by_value("all")
        browser.find_element(By.CSS_SELECTOR, "#purge-form button").click()
        wait.until(ready.text_to_be_present_in_element((By.ID, "purge-result"), "Purged 2 entries"))
        wait.until(lambda b: b.find_element(By.ID, "entries").text == "0")
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert all("status of 401" in message for message in errors), errors  # the wrong token
    finally:
        browser.quit()
    status, headers, _ = get(f"{deployed}/_fic/o/t/img/b1.png")
    assert headers["Cache-Status"] == "fic; fwd=miss; stored"


def test_browser_sees_images_through_the_middleware(deployed: str) -> None:
    """Chromium renders an image the middleware serves (nosniff, real PNG)."""
    browser = chromium()
    try:
        browser.get(f"{deployed}/_fic/o/t/img/render.png")
        size: Any = browser.execute_script(
            "const i = document.querySelector('img'); return i && [i.naturalWidth, i.naturalHeight];")
        assert size == [16, 16]
    finally:
        browser.quit()
