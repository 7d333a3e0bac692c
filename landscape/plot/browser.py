"""A headless system browser for the HTML page: the demo's screenshot and the browser test.

Debian's ``chromium`` with its ``chromedriver`` (``apt-get install chromium chromium-driver``), driven by
selenium; nothing is downloaded (selenium's own driver manager is bypassed by naming the driver), no
profile is reused (a fresh ``--user-data-dir`` per run) and nothing phones home (background networking,
component updates and sync switched off). WebGL (the 3D plots) runs on SwiftShader, the CPU renderer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--enable-unsafe-swiftshader", "--use-angle=swiftshader")


def find_browser() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths, or None when either is missing or selenium is not installed."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    browser = next((p for p in CHROMIUM if os.path.exists(p)), None) or shutil.which("chromium")
    driver = next((p for p in DRIVER if os.path.exists(p)), None) or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def missing_reason() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return "no chromium + chromedriver (apt-get install chromium chromium-driver)"


@contextmanager
def headless(width: int = 1300, height: int = 1000) -> Iterator:
    """A selenium Chrome driver on the system chromium, with the browser console log captured."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_browser()
    if found is None:
        raise RuntimeError(missing_reason())
    browser, driver = found
    profile = tempfile.mkdtemp(prefix="landscape-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        yield d
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_rendered(d, timeout: float = 60.0) -> int:
    """Wait until every figure of the page is drawn; returns how many."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        n = d.execute_script("return document.body && document.body.dataset.rendered")
        if n:
            return int(n)
        time.sleep(0.1)
    raise TimeoutError(f"the page did not finish drawing in {timeout:.0f} s")


def screenshot(page: str, png: str, width: int = 1300, max_height: int = 12000) -> str:
    """A PNG of the whole page ``page`` (every section, up to ``max_height`` pixels)."""
    with headless(width) as d:
        d.get("file://" + os.path.abspath(page))
        wait_rendered(d)
        height = int(d.execute_script("return document.body.scrollHeight"))
        d.set_window_size(width, min(height + 40, max_height))
        time.sleep(0.5)  # let the resized plots redraw
        d.save_screenshot(png)
    return png
