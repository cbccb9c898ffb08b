"""A real headless Chromium for the reader's tests (Debian ``chromium`` + ``chromium-driver``,
driven by selenium), with its performance log on so a test can list every request it made.

The flags keep the browser from calling home (background networking, component updates, sync,
QUIC): on this machine's closed network those would be refused connections, and a test that
counts requests must see only the page's own. Each browser gets a fresh profile directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--disable-features=Translate,OptimizationHints,MediaRouter,InterestFeedContentSuggestions",
    "--window-size=1280,900",
)  # fmt: skip

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium and chromedriver are needed (Debian chromium, chromium-driver; "
    "scripts/bootstrap installs them)",
)


def start_browser(downloads: Path | None = None, width: int = 1280, height: int = 900) -> Any:
    """A new headless Chromium (a selenium WebDriver) with a fresh profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="reader-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    driver._reader_profile = profile  # noqa: SLF001 - removed in stop_browser
    if downloads is not None:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
    return driver


def stop_browser(driver: Any) -> None:
    """Quit the browser and remove its profile."""
    profile = getattr(driver, "_reader_profile", None)
    try:
        driver.quit()
    finally:
        if profile is not None:
            shutil.rmtree(profile, ignore_errors=True)


def browser_fixture(downloads: Path | None = None) -> Iterator[Any]:
    driver = start_browser(downloads)
    try:
        yield driver
    finally:
        stop_browser(driver)


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser asked for (or tried to) since the last call, from the performance
    log's Network.requestWillBeSent events (the log is drained by reading it)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message.get("method") == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def leaving_loopback(urls: list[str]) -> list[str]:
    """The URLs among ``urls`` that would leave 127.0.0.1 (data: and about: stay in the
    browser)."""
    outside = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("data", "about", "blob", "chrome", "devtools"):
            continue
        if parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            outside.append(url)
    return outside


def screenshot(driver: Any, directory: Path, name: str) -> Path:
    """Save a full-window PNG of the current page as ``directory/name.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds, failing the test after ``timeout`` seconds.

    The reader re-renders parts of a page when new mail arrives, so an element found a moment
    ago can vanish while the condition reads it (selenium's StaleElementReferenceException):
    that is "not yet", not a failure, and the condition is asked again.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except StaleElementReferenceException:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition still false after {timeout} s")
        time.sleep(0.1)
