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


def field(cam: str, name: str) -> str:
    """A tile's field, as a JS expression (the page makes one tile per camera: data-camera, data-f)."""
    return f"document.querySelector('[data-camera=\"{cam}\"] [data-f=\"{name}\"]')"


def frame(cam: str) -> str:
    return f"document.querySelector('.tile[data-camera=\"{cam}\"] img.frame')"


def text(driver, cam: str, name: str) -> str:
    return driver.execute_script(f"return {field(cam, name)}.textContent")


def counter(driver, cam: str, name: str) -> int:
    return int(text(driver, cam, name) or 0)


def check_tile(driver, cam: str, model_prefix: str = "tiny-test-model") -> None:
    """The tile of ``cam`` shows frames that change, counters that move and add up, the model, the trend."""
    wait_js(driver, f"const i = {frame(cam)}; return i !== null && i.complete && i.naturalWidth > 0")
    judged0 = counter(driver, cam, "c-judged")
    src0 = driver.execute_script(f"return {frame(cam)}.src")
    assert judged0 > 0 and f"camera={cam}" in src0
    wait_js(driver, f"return Number({field(cam, 'c-judged')}.textContent) > {judged0 + 5}")
    wait_js(driver, f"return {frame(cam)}.src !== {src0!r}")  # a newer frame was loaded
    wait_js(driver, f"const i = {frame(cam)}; return i.complete && i.naturalWidth > 0")
    names = ("c-ok", "c-ng", "c-unknown", "c-judged")  # read at once: the page may update between two reads
    ok, ng, unknown, judged = driver.execute_script(
        "return [" + ", ".join(f"Number({field(cam, n)}.textContent)" for n in names) + "]")
    assert ok + ng + unknown == judged
    assert text(driver, cam, "verdict") in ("OK", "NG")
    assert text(driver, cam, "camera") == cam
    assert text(driver, cam, "model").startswith(model_prefix)
    assert text(driver, cam, "camstate").startswith("ok")
    assert int(text(driver, cam, "trendn")) > 5


def test_live_view_in_headless_chromium(tiny_model_dir, browser, tmp_path):
    with running_view(tiny_model_dir, token="s3cret") as (pipeline, _view, server):
        browser.get(server.url + "?token=s3cret")
        assert browser.title == "edge-inspect live view"
        wait_js(browser, "return document.getElementById('conn').textContent === 'live'")
        wait_js(browser, "return document.querySelectorAll('.tile').length === 1")
        check_tile(browser, "cam0")
        assert not browser.execute_script("return document.body.classList.contains('multi')")  # one camera: full size
        wait_js(browser, "return document.querySelectorAll('#thumbs img').length > 0")
        shot = tmp_path / "view.png"
        assert browser.save_screenshot(str(shot))
        frame_png = browser.find_element("css selector", ".tile img.frame").screenshot_as_png
    page = cv2.imread(str(shot))
    assert page is not None and page.shape[0] > 500 and page.shape[1] > 1000
    assert page.std() > 10 and len(np.unique(page.reshape(-1, 3), axis=0)) > 50  # not a blank page
    shown = cv2.imdecode(np.frombuffer(frame_png, np.uint8), cv2.IMREAD_COLOR)
    assert shown is not None and shown.std() > 5  # the part with its heat map, not an empty box


def test_two_camera_station_shows_a_tile_per_camera(tiny_model_dir, browser, tmp_path):
    from tests.view.test_station_view import running_station

    with running_station(tiny_model_dir, tmp_path / "arch") as (_station, outputs):
        browser.get(outputs._server.url + "?token=s3cret")
        wait_js(browser, "return document.querySelectorAll('.tile').length === 2")
        assert browser.execute_script("return [...document.querySelectorAll('.tile')].map(t => t.dataset.camera)") \
            == ["top", "side"]
        for cam in ("top", "side"):
            check_tile(browser, cam)
        assert browser.execute_script("return document.body.classList.contains('multi')")
        wait_js(browser, "const c = new Set([...document.querySelectorAll('#thumbs figure')]"
                         ".map(f => f.dataset.camera)); return c.has('top') && c.has('side')")
        caption = browser.execute_script("return document.querySelector('#thumbs figcaption').textContent")
        assert caption.split(" #")[0] in ("top", "side")  # each NG thumbnail says its camera
        shot = browser.find_element("css selector", '.tile[data-camera="side"] img.frame').screenshot_as_png
    shown = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    assert shown is not None and shown.std() > 5


def test_page_without_token_is_refused(tiny_model_dir, browser):
    with running_view(tiny_model_dir, token="s3cret") as (_p, _v, server):
        browser.get(server.url)
        assert "403" in browser.page_source or "token required" in browser.page_source
