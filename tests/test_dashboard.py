"""The controller's dashboard in a real headless browser (Debian's chromium, driven by Selenium)
against a real cluster: the page loads, shows the workers, and shows a queued task go from
PENDING to COMPLETED; with a token, the page asks for it.

`scripts/test.sh` installs ``chromium`` and ``chromium-driver`` when they are missing: this test
never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from fray_tasks import wait_for_file
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from fray.client.context import FrayContext
from fray.controller.server import ControllerServer
from fray.local_cluster import LocalFrayCluster

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30.0  # seconds the page gets to show something (it refreshes every 2 s)

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


def boom() -> None:
    raise ValueError("the dashboard shows this")


def new_browser(profile: str) -> WebDriver:
    for path in (CHROMIUM, CHROMEDRIVER):
        assert os.access(path, os.X_OK), f"{path} is missing: scripts/test.sh installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="fray-chromium-")
    driver = new_browser(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def one_slot_cluster() -> Iterator[LocalFrayCluster]:
    """One worker with one slot and no prefetch: a second task waits, PENDING, at the
    controller."""
    with LocalFrayCluster(workers=1, concurrency=1, worker_args=("--prefetch", "0")) as cluster:
        yield cluster


def text_of(driver: WebDriver, css: str) -> str:
    """The text of the first element matching `css` ("" when there is none yet), read in one
    step: the page replaces its elements at every refresh."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
    return str(driver.execute_script(script, css))


def wait_for_text(driver: WebDriver, css: str, wanted: str) -> None:
    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.1).until(lambda d: wanted in text_of(d, css))
    except Exception:
        raise AssertionError(
            f"{css!r} never showed {wanted!r}; it shows {text_of(driver, css)!r}"
        ) from None


def task_state(task_id: str) -> str:
    return f'#latest tr[data-task-id="{task_id}"] td.state'


def test_dashboard_shows_workers_and_a_task_from_pending_to_completed(
    one_slot_cluster: LocalFrayCluster, browser: WebDriver, tmp_path: Path
) -> None:
    address = one_slot_cluster.address
    with urllib.request.urlopen(address + "/api/dashboard", timeout=10) as answer:
        (worker,) = json.load(answer)["workers"]
    browser.get(address + "/")
    assert browser.title == "fray dashboard"
    wait_for_text(
        browser, f'#workers tr[data-worker-id="{worker["worker_id"]}"]', worker["address"]
    )

    gate = tmp_path / "gate"
    ctx = FrayContext(address, direct=False)  # queued at the controller, where the page looks
    try:
        blocker = ctx.options(name="blocker").run(wait_for_file, str(gate), 1)
        wait_for_text(browser, task_state(blocker.task_id), "RUNNING")
        queued = ctx.options(name="queued").run(wait_for_file, str(gate), 2)
        wait_for_text(browser, task_state(queued.task_id), "PENDING")
        assert "queue depth\n1" in text_of(browser, "#cards")
        gate.write_text("open")
        assert ctx.get([blocker, queued]) == [1, 2]
        wait_for_text(browser, task_state(queued.task_id), "COMPLETED")
        wait_for_text(browser, task_state(blocker.task_id), "COMPLETED")
        wait_for_text(browser, "#rate", "tasks/s over the last minute")
        assert "No failures" in text_of(browser, "#failures")
    finally:
        gate.touch()
        ctx.close()


def test_dashboard_shows_a_failure_with_its_traceback(
    one_slot_cluster: LocalFrayCluster, browser: WebDriver
) -> None:
    ctx = FrayContext(one_slot_cluster.address, direct=False)
    try:
        future = ctx.options(name="boom").run(boom)
        with pytest.raises(ValueError):
            ctx.get(future)
    finally:
        ctx.close()
    browser.get(one_slot_cluster.address + "/")
    css = f'#failures details[data-task-id="{future.task_id}"]'
    wait_for_text(browser, css, "ValueError: the dashboard shows this")
    browser.find_element(By.CSS_SELECTOR, css + " summary").click()
    wait_for_text(browser, css + " pre", "in boom")


def test_dashboard_asks_for_the_token(browser: WebDriver) -> None:
    server = ControllerServer("127.0.0.1", 0, token="s3cret-token").start()
    try:
        browser.get(server.address + "/")
        WebDriverWait(browser, WAIT).until(lambda d: d.find_element(By.ID, "login").is_displayed())
        assert text_of(browser, "#controller") == "-"  # no data without the token
        field = browser.find_element(By.ID, "token")
        field.send_keys("wrong")
        field.submit()
        wait_for_text(browser, "#error", "wrong token")
        field.send_keys("s3cret-token")
        field.submit()
        wait_for_text(browser, "#controller", server.service.controller_id)
        assert not browser.find_element(By.ID, "login").is_displayed()
        # The URL fragment works too, and is gone from the address bar once read.
        browser.execute_script("sessionStorage.clear()")
        browser.get("about:blank")
        browser.get(server.address + "/#token=s3cret-token")
        wait_for_text(browser, "#controller", server.service.controller_id)
        wait_for_text(browser, "#workers", "No workers registered.")
        assert "token" not in browser.current_url
    finally:
        server.stop()
