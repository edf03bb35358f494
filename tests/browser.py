"""Headless Chromium for tests that look at a page as a person would (shared helper).

Uses Debian's `chromium` + `chromium-driver` (apt, installed by `make setup`)
through selenium: no browser download. `browser` is a pytest fixture
(function scope: a fresh profile per test); `console_errors(driver)` returns
the page's JavaScript errors; `png_pixels` decodes a screenshot.

    from tests.browser import browser, console_errors  # noqa: F401  (fixture)

    def test_page(browser):
        browser.get("file:///tmp/report.html")
        assert console_errors(browser) == []
        browser.save_screenshot("shot.png")
"""

from __future__ import annotations

import io
import shutil
import tempfile

import numpy as np
import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
)


def launch(width: int = 1280, height: int = 1000):
    """A selenium WebDriver on headless Chromium with a fresh profile; quit() it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        pytest.fail(f"{CHROMIUM} / {DRIVER} missing: run `make setup` (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="imgfeat-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.profile_dir = profile
    return driver


@pytest.fixture
def browser():
    driver = launch()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(driver.profile_dir, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """SEVERE entries of the browser console (JS errors, failed loads) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def png_pixels(png: bytes) -> np.ndarray:
    """A screenshot (PNG bytes) as an (H, W, 3) uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))
