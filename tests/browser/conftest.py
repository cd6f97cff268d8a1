"""Fixtures for the dashboard's browser tests: Playwright driving Debian's Chromium.

No browser is downloaded (never ``playwright install``): Playwright launches
``/usr/bin/chromium`` from Debian (``scripts/setup.sh`` installs it). Outside CI
the browser tests skip with a reason when Chromium or Playwright is missing; in
CI they fail instead. Screenshots land in ``artifacts/screenshots/`` (or
``$DOCKYARD_SCREENSHOTS``), which CI keeps as artifacts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_helpers import UI_TIMEOUT_MS, PageWatch, shot

from dockyard.testing.cluster import ProcessCluster
from dockyard.testing.dockerclean import remove_node_resources
from dockyard.testing.images import ensure_busybox_image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = _missing_browser()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser: Any, watch: PageWatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_console(msg: Any) -> None:
        # a failed fetch while the server stops is not the page's fault
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            watch.errors.append(msg.text)

    def on_nav(frame: Any) -> None:
        if frame == pg.main_frame:
            watch.navigations += 1

    pg.on("dialog", on_dialog)
    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: watch.errors.append(f"pageerror: {exc}"))
    pg.on("framenavigated", on_nav)
    pg.on("requestfailed", lambda req: watch.failed.append(f"{req.url}: {req.failure}"))
    pg.on(
        "response",
        lambda resp: (
            watch.failed.append(f"{resp.url}: HTTP {resp.status}") if resp.status >= 400 else None
        ),
    )
    try:
        yield pg
        assert watch.dialogs == [], f"the page opened dialogs: {watch.dialogs}"
        assert watch.errors == [], f"JavaScript errors: {watch.errors}"
    finally:
        if getattr(request.node, "rep_call_failed", False):
            shot(pg, f"FAILED-{request.node.name}")
            print(f"requests that failed or answered >= 400: {watch.failed}")
            print(f"console errors: {watch.errors}")
        context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.rep_call_failed = True  # type: ignore[attr-defined]
    return report


@pytest.fixture(scope="session")
def image() -> str:
    return ensure_busybox_image()


def _cleanup_containers(cluster: ProcessCluster) -> None:
    node_ids = []
    for name in list(cluster.agents):
        try:
            node_ids.append(cluster.node_id(name))
        except OSError:
            pass
    cluster.close()
    remove_node_resources(node_ids)  # containers and networks; fails on a leaked network


@pytest.fixture(scope="module")
def cluster_factory(image: str) -> Iterator[Callable[..., ProcessCluster]]:
    """Start a real server + Docker agent per test module (``factory(**kwargs)``)."""
    made: list[ProcessCluster] = []

    def make(**kwargs: Any) -> ProcessCluster:
        cl = ProcessCluster(heartbeat=0.5, node_grace=3.0, **kwargs)
        made.append(cl)
        try:
            cl.start(agents=1)
        except BaseException:
            print(cl.logs())
            raise
        return cl

    yield make
    for cl in made:
        _cleanup_containers(cl)
