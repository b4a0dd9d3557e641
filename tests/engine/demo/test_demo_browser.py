"""The demo page in a real headless Chromium: upload, the mask shown equals predict's, refusals shown.

Skips when Chromium, ChromeDriver or Selenium is missing (``.ci/run`` installs them).
"""
import base64
import shutil

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason='the [demo] extra is not installed: pip install -e ".[demo]"')
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (it is in the [dev] extra)")

from _demo_helpers import (IMAGE_SIZE, MAX_UPLOAD, make_inputs, predict_mask, read_frames, start_server,  # noqa: E402
                           write_clip)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no chromium/chromedriver on this machine (apt-get install chromium chromium-driver)",
)
# The machine has no network: Chromium must not try to reach update and sync services.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,900")
# The bytes of what the download button points at, as the page fetches them.
FETCH_DOWNLOAD = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById("download").href).then((r) => r.arrayBuffer()).then((buf) => {
  let text = ""; new Uint8Array(buf).forEach((b) => { text += String.fromCharCode(b); }); done(btoa(text));
}).catch((err) => done("error: " + err));
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    """The page loaded from a fresh server; yields ``(driver, checkpoint, image)``."""
    ckpt, image = make_inputs(tmp_path_factory.mktemp("demo-page"))
    server = start_server(ckpt)
    browser.get(server.url)
    yield browser, ckpt, image
    server.stop()


def settle(driver, action) -> str:
    """Run ``action``, then wait until the page is ready or shows a refusal; returns which."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("document.body.dataset.state = 'waiting';")
    action()
    WebDriverWait(driver, 30).until(lambda d: d.find_element("tag name", "body").get_attribute("data-state")
                                    in ("ready", "error"))
    return driver.find_element("tag name", "body").get_attribute("data-state")


def pick(driver, path) -> str:
    return settle(driver, lambda: driver.find_element("id", "file").send_keys(str(path)))


def shown_mask(driver) -> bytes:
    data = driver.execute_async_script(FETCH_DOWNLOAD)
    assert not data.startswith("error"), data
    return base64.b64decode(data)


def test_upload_shows_the_mask_predict_writes(page, tmp_path):
    driver, ckpt, image = page
    assert pick(driver, image) == "ready"
    size = driver.execute_script("const m = document.getElementById('mask'); return [m.naturalHeight, m.naturalWidth];")
    assert tuple(size) == IMAGE_SIZE
    assert driver.find_element("id", "download").get_attribute("download") == "scene.png"
    png = shown_mask(driver)
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).shape == IMAGE_SIZE
    assert png == predict_mask(ckpt, image, tmp_path / "maps")

    slide = "const s = document.getElementById('threshold'); s.value = '0.5'; s.dispatchEvent(new Event('input'));"
    assert settle(driver, lambda: driver.execute_script(slide)) == "ready"
    assert shown_mask(driver) == predict_mask(ckpt, image, tmp_path / "binary", threshold=0.5)


def test_non_image_shows_a_message(page, tmp_path):
    driver = page[0]
    notes = tmp_path / "notes.png"
    notes.write_text("these are words, not pixels")
    assert pick(driver, notes) == "error"
    message = driver.find_element("id", "message")
    assert message.is_displayed() and "not an image" in message.text


def test_too_large_file_shows_the_limit(page, tmp_path):
    driver = page[0]
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_UPLOAD + 1))
    assert pick(driver, big) == "error"
    message = driver.find_element("id", "message")
    assert message.is_displayed() and "limit" in message.text


def test_a_video_shows_three_players_and_offers_the_mask_video(page, tmp_path):
    driver = page[0]
    clip = write_clip(tmp_path / "clip.mp4", frames=5)
    assert pick(driver, clip) == "ready"
    for element in ("image-video", "mask-video", "overlay-video"):
        video = driver.find_element("id", element)
        assert video.is_displayed() and video.get_attribute("controls") is not None
        assert video.get_attribute("src").endswith(".webm")  # the copies the browser plays
    assert not driver.find_element("id", "mask").is_displayed()
    assert driver.find_element("id", "download").get_attribute("download") == "clip_mask.mp4"
    from selenium.webdriver.support.ui import WebDriverWait

    # The browser decodes the mask video: its size is known once the first frame is loaded.
    playing = "const v = document.getElementById('mask-video'); return v.readyState >= 1 && v.videoWidth > 0"
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(playing))
    assert not driver.find_element("id", "video-note").is_displayed()
    served = tmp_path / "served.mp4"
    served.write_bytes(shown_mask(driver))
    assert len(read_frames(served)) == 5


def test_an_image_after_a_video_shows_the_image_panels_again(page, tmp_path):
    driver, _, image = page
    assert pick(driver, write_clip(tmp_path / "clip.mp4", frames=4)) == "ready"
    assert pick(driver, image) == "ready"
    assert driver.find_element("id", "mask").is_displayed()
    assert not driver.find_element("id", "mask-video").is_displayed()
    assert driver.find_element("id", "download").get_attribute("download") == "scene.png"
