"""Helpers shared by the browser tests (importable as ``browser_helpers``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[2]
#: Where screenshots land (kept by CI as artifacts; gitignored).
SCREENSHOTS = Path(os.environ.get("DOCKYARD_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
#: How long the UI may take to show something the server already knows (SSE + debounce).
UI_TIMEOUT_MS = 15_000


class PageWatch:
    """What the page did that it must not: dialogs (alert from injected script), JS errors."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.navigations = 0
        #: Requests that failed or answered >= 400 (the reason a page did not boot).
        self.failed: list[str] = []


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under the documented folder; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


def login(page: Any, url: str, token: str) -> None:
    page.goto(url + "/")
    try:
        page.wait_for_selector("#login:not([hidden])", timeout=5_000)
    except PlaywrightTimeout:
        # A network interface that appears mid-load (an agent making a Docker bridge)
        # makes Chromium abort the page's module loads (net::ERR_NETWORK_CHANGED) and
        # the page never boots; a user reloads, and so do we, once.
        page.reload()
    page.fill("#login-token", token)
    page.click("#login-submit")
    page.wait_for_selector("#shell:not([hidden])")
    page.wait_for_selector("#live[data-state='live']")
