"""Real-browser tests of the reference web app (/app/): Playwright for Python driving Debian's
Chromium (/usr/bin/chromium, PEERLINK_CHROMIUM to change it; never a downloaded browser).
Without Chromium or Playwright they are skipped, except under CI=true, where they fail."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "artifacts" / "browser"
CHROMIUM = os.environ.get("PEERLINK_CHROMIUM", "/usr/bin/chromium")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture()
def chromium() -> Iterator[Any]:
    """Per test: Playwright's sync API runs an event loop in this thread while it lives, and
    the rest of the suite (asyncio.run in the same xdist worker) needs it gone."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (the dev extra pins it)")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                 args=["--no-sandbox", "--disable-dev-shm-usage"])
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture()
def new_page(chromium, live_server, request):  # type: ignore[no-untyped-def]
    """Pages on a tablet-sized screen, each in its own context (its own cookies); each
    page's console errors fail the test, and a screenshot of each is kept in var/artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pages: list[tuple[str, Any]] = []
    errors: list[str] = []
    hosts: list[str] = []

    def make(name: str) -> Any:
        context = chromium.new_context(base_url=live_server, viewport={"width": 1024, "height": 768})
        page = context.new_page()
        # Script errors fail the test; an API answer the app handles (a 401 before sign-in,
        # a refusal it shows) is logged by the browser too and is not one.
        page.on("console", lambda m: errors.append(f"{name}: {m.text}")
                if m.type == "error" and "Failed to load resource" not in m.text else None)
        page.on("pageerror", lambda e: errors.append(f"{name}: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"{name}: failed {r.url}"))
        page.on("request", lambda r: hosts.append(r.url))
        pages.append((name, page))
        return page

    yield make
    for name, page in pages:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{name}.png"), full_page=True)
        page.context.close()
    foreign = [url for url in hosts if not url.startswith((live_server, "data:"))]
    assert foreign == [], "the app loaded something from another host"
    assert errors == [], errors
