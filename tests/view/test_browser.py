"""The live view in a real browser: headless Chromium (Debian's chromium + chromium-driver, installed by
scripts/ci-counterparts-browser.sh) driven by Selenium, against a real pipeline (synthetic camera, tiny model).
The page loads, its counters move as parts flow, the image updates, and a screenshot is not blank."""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
import pytest

from tests.view.conftest import running_view

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [pytest.mark.counterpart, pytest.mark.slow]


@pytest.fixture
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs chromium and chromedriver (scripts/ci-counterparts-browser.sh installs them as root)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_js(driver, script: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"browser never satisfied: {script}")


def counter(driver, name: str) -> int:
    return int(driver.find_element("id", name).text or 0)


def test_live_view_in_headless_chromium(tiny_model_dir, browser, tmp_path):
    with running_view(tiny_model_dir, token="s3cret") as (pipeline, _view, server):
        browser.get(server.url + "?token=s3cret")
        assert browser.title == "edge-inspect live view"
        wait_js(browser, "return document.getElementById('conn').textContent === 'live'")
        wait_js(browser, "const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0")
        judged0, src0 = counter(browser, "c-judged"), browser.find_element("id", "frame").get_attribute("src")
        assert judged0 > 0
        wait_js(browser, f"return Number(document.getElementById('c-judged').textContent) > {judged0 + 10}")
        wait_js(browser, f"return document.getElementById('frame').src !== {src0!r}")  # a newer frame was loaded
        wait_js(browser, "const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0")
        ok, ng = counter(browser, "c-ok"), counter(browser, "c-ng")
        assert ok + ng + counter(browser, "c-unknown") == counter(browser, "c-judged")
        assert browser.find_element("id", "verdict").text in ("OK", "NG")
        assert browser.find_element("id", "model").text.startswith("tiny-test-model")
        assert browser.find_element("id", "camstate").text.startswith("ok")
        assert int(browser.find_element("id", "trendn").text) > 10
        wait_js(browser, "return document.querySelectorAll('#thumbs img').length > 0")
        shot = tmp_path / "view.png"
        assert browser.save_screenshot(str(shot))
        frame_png = browser.find_element("id", "frame").screenshot_as_png
    page = cv2.imread(str(shot))
    assert page is not None and page.shape[0] > 500 and page.shape[1] > 1000
    assert page.std() > 10 and len(np.unique(page.reshape(-1, 3), axis=0)) > 50  # not a blank page
    frame = cv2.imdecode(np.frombuffer(frame_png, np.uint8), cv2.IMREAD_COLOR)
    assert frame is not None and frame.std() > 5  # the part with its heat map, not an empty box


def test_page_without_token_is_refused(tiny_model_dir, browser):
    with running_view(tiny_model_dir, token="s3cret") as (_p, _v, server):
        browser.get(server.url)
        assert "403" in browser.page_source or "token required" in browser.page_source
